//! Extractors every context's handlers share.

use axum::extract::{FromRequest, FromRequestParts, Path, RawForm, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::AppError;

/// The quote id of a `/quotes/{id}/…` route. Anything that is not one is a page
/// that does not exist (404), not a malformed request.
#[derive(Debug, Clone, Copy)]
pub struct QuoteId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for QuoteId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(id) = Path::<Uuid>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::not_found())?;
        Ok(QuoteId(id))
    }
}

const NOT_UTF8: &str = "The form was sent with text that is not UTF-8, so it cannot be read. \
                        Nothing was saved. Go back, reload the page and try again.";

/// A submitted form (`application/x-www-form-urlencoded`), read with serde_html_form
/// as `axum_extra`'s `Form` reads it (an input repeated on the page, such as the
/// family form's children, arrives as a `Vec`), except that a name or value that is
/// not UTF-8 once percent-decoded is refused with 400 and our page: decoded as
/// replacement characters, it would be saved. Not a form body: 415; a form that
/// does not fit `T`: 422.
#[derive(Debug, Clone, Copy, Default)]
pub struct Form<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let from_query = matches!(*request.method(), Method::GET | Method::HEAD);
        let RawForm(bytes) = RawForm::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !is_utf8_form(&bytes) {
            return Err(AppError::bad_request(NOT_UTF8).into_response());
        }
        serde_html_form::from_bytes(&bytes)
            .map(Form)
            .map_err(|error| {
                tracing::debug!(%error, "a form that does not fit its handler");
                let status = if from_query {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                AppError::for_status(status).into_response()
            })
    }
}

/// Whether every name and value of a urlencoded form is UTF-8 once percent-decoded.
/// (`form_urlencoded::parse`, which serde_html_form reads with, puts U+FFFD in place
/// of what is not, so this is checked on the raw decoding.)
fn is_utf8_form(form: &[u8]) -> bool {
    form.split(|b| *b == b'&')
        .flat_map(|pair| pair.splitn(2, |b| *b == b'='))
        .all(|part| percent_decode(part).decode_utf8().is_ok())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Numbers {
        n: u32,
        #[serde(default)]
        children: Vec<String>,
    }

    async fn extract(request: Request) -> Result<Numbers, StatusCode> {
        Form::<Numbers>::from_request(request, &())
            .await
            .map(|Form(numbers)| numbers)
            .map_err(|response| response.status())
    }

    fn post(content_type: &str, body: &'static [u8]) -> Request {
        Request::post("/")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    }

    const FORM: &str = "application/x-www-form-urlencoded";

    #[tokio::test]
    async fn a_form_is_read_with_repeated_inputs_and_refused_with_the_fitting_status() {
        let numbers = extract(post(FORM, b"n=2&children=Ravi&children=Meera"))
            .await
            .unwrap();
        assert_eq!(
            (numbers.n, numbers.children),
            (2, vec!["Ravi".into(), "Meera".into()])
        );

        assert_eq!(
            extract(post(FORM, b"n=2&children=Ravi%FF"))
                .await
                .unwrap_err(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            extract(post("application/json", b"{\"n\": 2}"))
                .await
                .unwrap_err(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            extract(post(FORM, b"n=two")).await.unwrap_err(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let query = Request::get("/?n=two").body(Body::empty()).unwrap();
        assert_eq!(extract(query).await.unwrap_err(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_form_is_utf8_when_each_decoded_name_and_value_is() {
        for good in [
            &b""[..],
            b"city=Pune",
            b"city=Pun%C3%A9+East&children=a&children=b",
            "city=Puné".as_bytes(),
            b"a=%zz&b=%&=&&c",
            b"emoji=%F0%9F%98%80",
        ] {
            assert!(is_utf8_form(good), "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"city=%C3%28"[..],
            b"city=\xC3\x28",
            b"city=Pun%E9",
            b"%FF=1",
            b"a=1&\xFF",
            b"split=%C3&rest=%A9",
            b"half=%F0%9F%98",
        ] {
            assert!(!is_utf8_form(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
