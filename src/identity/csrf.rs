//! Cross-site request forgery protection, two layers deep: the browser's own word on
//! where a request came from (Sec-Fetch-Site / Origin, tower-http's `CsrfLayer`), and
//! a token that every form carries back as `csrf_token`: signed in, a random token
//! kept in the session; signed out (the sign-in form), a token signed for the
//! browser's sign-in cookie, with no session at all (`signed_out`).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tower_http::csrf::CsrfLayer;
use tower_sessions::Session;
use uuid::Uuid;

use super::sessions::{CSRF_TOKEN, USER_ID};
pub use super::signed_out::{FormSigner, SIGN_IN_COOKIE, SIGNED_OUT_TOKEN_SECONDS, SignedOutForm};
use super::signed_out::{browser_value, random_hex};
use crate::web::AppError;

/// The form field that carries the token.
pub const FIELD: &str = "csrf_token";

const EXPIRED: &str = "This form has expired. Go back, reload the page and try again.";

/// Refuses a POST (or other unsafe method) that a browser says came from another
/// site. Its bare 403 becomes our page in `html_error_pages`.
pub fn cross_origin_layer() -> CsrfLayer {
    CsrfLayer::new()
}

/// The session's token, made on first use. Pages that render a form call this
/// (through `CurrentUser`).
pub async fn token(session: &Session) -> Result<String, tower_sessions::session::Error> {
    if let Some(token) = session.get::<String>(CSRF_TOKEN).await? {
        return Ok(token);
    }
    let token = new_token();
    session.insert(CSRF_TOKEN, &token).await?;
    Ok(token)
}

/// Gives the session a fresh token, as at sign-in.
pub async fn renew_token(session: &Session) -> Result<String, tower_sessions::session::Error> {
    let token = new_token();
    session.insert(CSRF_TOKEN, &token).await?;
    Ok(token)
}

fn new_token() -> String {
    random_hex()
}

/// Middleware: every request that may change something must carry in its form body
/// the session's token, or (signed out) a token signed for its browser's sign-in
/// cookie, or it reaches no handler. The body (at most `BODY_LIMIT`, enforced
/// outside) is read here and handed on unchanged.
pub async fn verify_form_token(session: Session, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let (expected, signed_in) = match session_token(&session).await {
        Ok(found) => found,
        Err(error) => return AppError::Internal(error.into()).into_response(),
    };
    let (parts, body) = request.into_parts();
    let (sent, body) = if is_form(&parts.headers) {
        let bytes = match Bytes::from_request(Request::new(body), &()).await {
            Ok(bytes) => bytes,
            Err(rejection) => return rejection.into_response(),
        };
        (form_field(&bytes, FIELD), Body::from(bytes))
    } else {
        (None, Body::empty())
    };
    let passes = match (&expected, &sent) {
        (Some(expected), Some(sent)) if tokens_match(expected, sent) => true,
        (_, Some(sent)) if !signed_in => signed_for_browser(&parts, sent),
        _ => false,
    };
    if passes {
        return next.run(Request::from_parts(parts, body)).await;
    }
    tracing::warn!(
        path = %parts.uri.path(),
        signed_in,
        session_has_token = expected.is_some(),
        request_has_token = sent.is_some(),
        "refused a form without a valid CSRF token"
    );
    AppError::forbidden(EXPIRED).into_response()
}

/// The session's token, and whether someone is signed in to it.
async fn session_token(
    session: &Session,
) -> Result<(Option<String>, bool), tower_sessions::session::Error> {
    let token = session.get::<String>(CSRF_TOKEN).await?;
    let user: Option<Uuid> = session.get(USER_ID).await?;
    Ok((token, user.is_some()))
}

/// Whether `sent` is a live token signed for the browser's sign-in cookie.
fn signed_for_browser(parts: &Parts, sent: &str) -> bool {
    let (Some(signer), Some(browser)) = (
        parts.extensions.get::<FormSigner>(),
        browser_value(&parts.headers),
    ) else {
        return false;
    };
    signer.verify(sent, &browser, chrono::Utc::now().timestamp())
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The first value of `name` in a urlencoded body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Compares in time that does not depend on where the tokens differ (only on their
/// lengths, which are public), so the time taken does not tell an attacker how much
/// of a guess was right. `subtle` keeps the compiler from shortening the comparison.
fn tokens_match(expected: &str, sent: &str) -> bool {
    expected.as_bytes().ct_eq(sent.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_anywhere_in_the_form() {
        let body = b"username=al%20ice&csrf_token=abc123&password=p%26w";

        assert_eq!(form_field(body, "csrf_token").as_deref(), Some("abc123"));
        assert_eq!(form_field(body, "username").as_deref(), Some("al ice"));
        assert_eq!(form_field(body, "password").as_deref(), Some("p&w"));
        assert_eq!(form_field(b"csrf_token", "csrf_token").as_deref(), Some(""));
        assert_eq!(form_field(b"other=1", "csrf_token"), None);
        assert_eq!(
            form_field(b"csrf_token=%zz", "csrf_token").as_deref(),
            Some("%zz")
        );
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match("abcd", "abcd"));
        assert!(!tokens_match("abcd", "abce"));
        assert!(!tokens_match("abcd", "abc"));
        assert!(!tokens_match("abcd", ""));
    }

    #[test]
    fn new_tokens_are_long_and_different() {
        let (a, b) = (new_token(), new_token());

        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn only_urlencoded_bodies_are_forms() {
        let mut headers = HeaderMap::new();
        assert!(!is_form(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        assert!(is_form(&headers));
        headers.insert(header::CONTENT_TYPE, "multipart/form-data".parse().unwrap());
        assert!(!is_form(&headers));
    }
}
