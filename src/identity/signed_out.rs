//! The sign-in form's CSRF protection without a session, so a signed-out visitor
//! costs no row: the browser gets a random value in a cookie of its own
//! (`quoteline_sign_in`), and the form a token that signs it with an expiry
//! (HMAC-SHA-256 under a key kept in the database, so every process accepts every
//! other's forms). OWASP's signed double-submit cookie: another site can neither read
//! the cookie nor sign a token for it. `csrf::verify_form_token` checks it.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tower_sessions::cookie::{Cookie, SameSite};

use crate::db::Db;
use crate::on_backend;
use crate::web::{AppError, Layout};

/// 32 random bytes in hex: a browser's value, a key.
pub fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The cookie that ties a signed-out visitor's form token to their browser.
pub const SIGN_IN_COOKIE: &str = "quoteline_sign_in";
/// How long a signed-out visitor's form may be sent after it was drawn.
pub const SIGNED_OUT_TOKEN_SECONDS: i64 = 60 * 60;
const KEY_PURPOSE: &str = "sign_in_form";

const INSERT_KEY: &str =
    "INSERT INTO signing_keys (purpose, secret) VALUES ($1, $2) ON CONFLICT (purpose) DO NOTHING";
const SELECT_KEY: &str = "SELECT secret FROM signing_keys WHERE purpose = $1";

/// Signs and checks signed-out visitors' form tokens. Put into every request by the
/// session layer (`Sessions::layer`).
#[derive(Clone)]
pub struct FormSigner {
    key: Arc<[u8; 32]>,
    secure_cookies: bool,
}

/// Without the key.
impl std::fmt::Debug for FormSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormSigner").finish_non_exhaustive()
    }
}

impl FormSigner {
    /// The database's key, made by the first process that needs it.
    pub async fn open(db: &Db, secure_cookies: bool) -> anyhow::Result<FormSigner> {
        let secret: String = on_backend!(db, pool => {
            sqlx::query(INSERT_KEY)
                .bind(KEY_PURPOSE)
                .bind(random_hex())
                .execute(pool)
                .await?;
            sqlx::query_scalar(SELECT_KEY).bind(KEY_PURPOSE).fetch_one(pool).await
        })?;
        let mut key = [0; 32];
        hex::decode_to_slice(secret.trim(), &mut key).map_err(|error| {
            anyhow::anyhow!("the stored sign-in form key is not 32 bytes of hex: {error}")
        })?;
        Ok(FormSigner::with_key(key, secure_cookies))
    }

    pub fn with_key(key: [u8; 32], secure_cookies: bool) -> FormSigner {
        FormSigner {
            key: Arc::new(key),
            secure_cookies,
        }
    }

    /// The same key, its cookie `Secure` or not.
    pub fn with_secure_cookies(self, secure_cookies: bool) -> FormSigner {
        FormSigner {
            secure_cookies,
            ..self
        }
    }

    /// The token for the browser whose cookie holds `browser`, valid until
    /// `expires` (Unix seconds): `{expires}.{hex of the MAC}`.
    pub fn token(&self, browser: &str, expires: i64) -> String {
        let mac = self.mac(browser, expires).finalize().into_bytes();
        format!("{expires}.{}", hex::encode(mac))
    }

    /// Whether `token` was signed here for `browser` and has not expired at `now`.
    pub fn verify(&self, token: &str, browser: &str, now: i64) -> bool {
        let Some((expires, mac)) = token.split_once('.') else {
            return false;
        };
        let (Ok(expires), Ok(mac)) = (expires.parse::<i64>(), hex::decode(mac)) else {
            return false;
        };
        // Compared in constant time by `verify_slice`.
        expires > now && self.mac(browser, expires).verify_slice(&mac).is_ok()
    }

    fn mac(&self, browser: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.key.as_slice()).expect("HMAC takes any key");
        mac.update(format!("{KEY_PURPOSE}\n{browser}\n{expires}").as_bytes());
        mac
    }
}

/// A signed-out visitor's form protection: the token for their form, and the cookie
/// to set when their browser has none yet.
#[derive(Debug, Clone)]
pub struct SignedOutForm {
    token: String,
    new_cookie: Option<HeaderValue>,
}

impl SignedOutForm {
    /// The token for the browser that sent `headers` (a new browser value when it
    /// sent none), valid for [`SIGNED_OUT_TOKEN_SECONDS`] from `now`.
    pub fn new(signer: &FormSigner, headers: &HeaderMap, now: i64) -> SignedOutForm {
        let expires = now + SIGNED_OUT_TOKEN_SECONDS;
        if let Some(browser) = browser_value(headers) {
            return SignedOutForm {
                token: signer.token(&browser, expires),
                new_cookie: None,
            };
        }
        let browser = random_hex();
        let cookie = Cookie::build((SIGN_IN_COOKIE, browser.as_str()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(signer.secure_cookies)
            .build();
        SignedOutForm {
            token: signer.token(&browser, expires),
            new_cookie: HeaderValue::from_str(&cookie.to_string()).ok(),
        }
    }

    /// The frame of a page for someone signed out, whose forms carry this token.
    pub fn layout(&self) -> Layout {
        Layout {
            viewer: None,
            csrf_token: self.token.clone(),
        }
    }

    /// `response` with the browser's new cookie, when it needs one.
    pub fn respond(&self, response: impl IntoResponse) -> Response {
        let mut response = response.into_response();
        if let Some(cookie) = &self.new_cookie {
            response
                .headers_mut()
                .append(header::SET_COOKIE, cookie.clone());
        }
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SignedOutForm {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let signer = parts.extensions.get::<FormSigner>().ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "no form signer: the session layer is missing"
            ))
        })?;
        Ok(SignedOutForm::new(
            signer,
            &parts.headers,
            chrono::Utc::now().timestamp(),
        ))
    }
}

/// The browser's value from its sign-in cookie, if it is one we could have made.
pub fn browser_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == SIGN_IN_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_holds_for_its_browser_until_it_expires() {
        let signer = FormSigner::with_key([7; 32], false);
        let browser = random_hex();
        let token = signer.token(&browser, 1_000);

        assert!(signer.verify(&token, &browser, 999));
        assert!(!signer.verify(&token, &browser, 1_000), "expired");
        assert!(
            !signer.verify(&token, &random_hex(), 999),
            "another browser"
        );
        let later = token.replacen("1000.", "2000.", 1);
        assert!(!signer.verify(&later, &browser, 999), "expiry moved");
        let other_key = FormSigner::with_key([8; 32], false);
        assert!(!other_key.verify(&token, &browser, 999), "another key");
        for broken in [
            "",
            "1000",
            "1000.",
            "x.ab",
            "1000.zz",
            &token[..token.len() - 2],
        ] {
            assert!(!signer.verify(broken, &browser, 999), "{broken:?}");
        }
    }

    #[test]
    fn a_browser_value_is_read_only_from_a_well_formed_sign_in_cookie() {
        let value = random_hex();
        let mut headers = HeaderMap::new();
        assert_eq!(browser_value(&headers), None);
        headers.insert(
            header::COOKIE,
            format!("a=b; {SIGN_IN_COOKIE}={value}; c=d")
                .parse()
                .unwrap(),
        );
        assert_eq!(browser_value(&headers), Some(value));
        headers.insert(
            header::COOKIE,
            format!("{SIGN_IN_COOKIE}=short").parse().unwrap(),
        );
        assert_eq!(browser_value(&headers), None);
    }

    #[test]
    fn a_new_browser_gets_its_cookie_and_a_known_one_keeps_it() {
        let signer = FormSigner::with_key([7; 32], true);
        let fresh = SignedOutForm::new(&signer, &HeaderMap::new(), 0);
        let cookie = fresh.new_cookie.clone().unwrap();
        let cookie = cookie.to_str().unwrap();
        let parts: Vec<&str> = cookie.split("; ").collect();
        for part in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"] {
            assert!(parts.contains(&part), "{cookie}");
        }
        let mut headers = HeaderMap::new();
        let pair = cookie.split(';').next().unwrap();
        headers.insert(header::COOKIE, pair.parse().unwrap());

        let again = SignedOutForm::new(&signer, &headers, 0);
        assert!(again.new_cookie.is_none());
        let browser = browser_value(&headers).unwrap();
        assert!(signer.verify(&again.token, &browser, 1));
        assert!(signer.verify(&fresh.token, &browser, 1));
    }
}
