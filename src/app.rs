//! The application assembled: every context's router merged, the one page that
//! belongs to several contexts dispatched, and the middleware stack. The only
//! module that knows every context.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::middleware::{from_fn, map_response, map_response_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::CompressionLevel;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::identity::{AgentUnderwriterOrAuditor, Sessions, csrf};
use crate::kernel::Role;
use crate::state::AppState;
use crate::web::middleware::{
    BODY_LIMIT, REQUEST_ID, REQUEST_TIMEOUT, html_error_pages, security_headers,
};
use crate::web::{AppError, QuoteId, assets, compression};
use crate::{audit, identity, on_backend, quoting, telemetry, underwriting};

pub fn router(state: AppState) -> Router {
    let sessions = state.sessions.clone();
    let routes = Router::new()
        .merge(identity::router())
        .merge(quoting::router())
        .merge(underwriting::router())
        .merge(audit::router())
        .route("/quotes/{id}", get(quote_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(telemetry::page))
        .route("/static/style.css", get(stylesheet))
        .route("/static/favicon.svg", get(favicon))
        .route_layer(from_fn(telemetry::track))
        .fallback(|| async { AppError::not_found() })
        .with_state(state);
    // Installed before the first request, so that nothing counted is lost.
    telemetry::handle();
    middleware(routes, &sessions)
}

/// `GET /quotes/{id}`, which three roles share: the quote's own agent gets the task
/// list to work on it; underwriters and auditors read it whole, with its history
/// and (for an underwriter who may) the decisions; any other agent finds nothing.
async fn quote_page(
    State(state): State<AppState>,
    AgentUnderwriterOrAuditor(user): AgentUnderwriterOrAuditor,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    let quote = state
        .quotes
        .load(id, None)
        .await?
        .ok_or_else(AppError::not_found)?;
    if quote.agent == user.username && user.has_role(Role::Agent) {
        quoting::task_list(&user, id, &quote)
    } else if user.has_role(Role::Underwriter) || user.has_role(Role::Auditor) {
        underwriting::quote_view(&state, &user, id).await
    } else {
        Err(AppError::not_found())
    }
}

/// The middleware stack, built from the handlers outwards; within each
/// `ServiceBuilder` the first layer listed is the first to see a request.
///
/// Only what needs the route is layered on the router (each `Router::layer` wraps
/// every route in a boxed service, and a request's route is cloned through every
/// one of them); the rest wraps the whole router once, as one service.
pub fn middleware(router: Router, sessions: &Sessions) -> Router {
    // Innermost, next to the handlers: the form's CSRF token is checked against the
    // session, which the session layer loads. `layer` wraps every method a route has
    // and also its 405 fallback; that fallback is replaced after it, unwrapped, so a
    // method the route does not have gets 405 and `Allow` before any token check.
    let router = router
        .layer(from_fn(csrf::verify_form_token))
        .method_not_allowed_fallback(method_not_allowed);
    let router = sessions.layer(router);

    // Layers that make their own error responses (a panic, a timeout, a body over
    // the limit, a cross-site request) sit inside `html_error_pages`, so those
    // responses get our page too. Their bodies are not axum's; the router they are
    // wrapped in makes them so for the layers outside.
    let guarded = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            AppError::for_status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        // Requests a browser marks as cross-site are refused before the session or
        // the form's token is touched.
        .layer(csrf::cross_origin_layer())
        .service(router);

    let stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            // Small bodies cost more to compress than they save on the wire. Pages
            // for clients that prefer zstd come encoded from inside; this layer does
            // the rest (brotli, gzip, and zstd for streamed exports, where its fresh
            // context per response is paid once a download).
            CompressionLayer::new()
                .quality(CompressionLevel::Fastest)
                .compress_when(
                    SizeAbove::new(compression::MIN_BODY)
                        .and(NotForContentType::GRPC)
                        .and(NotForContentType::IMAGES)
                        .and(NotForContentType::SSE),
                ),
        )
        .layer(map_response_with_state(
            sessions.settings().secure,
            security_headers,
        ))
        // Inside the compression layer, which leaves what this encoded alone: zstd
        // from a context each thread keeps, for the clients that prefer it. (A HEAD
        // request's body is gone by here, so its response names no encoding; HTTP
        // lets a server omit what only the content determines.)
        .layer(from_fn(compression::zstd_pages))
        .layer(map_response(html_error_pages))
        .service(Router::new().fallback_service(guarded));
    Router::new().fallback_service(stack)
}

/// A method the route does not have. The route adds the `Allow` header.
async fn method_not_allowed() -> AppError {
    AppError::for_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Liveness: the process answers and its database does too.
async fn healthz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    on_backend!(&state.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
    Ok("ok")
}

async fn stylesheet(request: HeaderMap) -> Response {
    assets::STYLESHEET.respond(&request)
}

async fn favicon(request: HeaderMap) -> Response {
    assets::FAVICON.respond(&request)
}
