//! Password hashing with argon2id. Both directions cost tens of milliseconds of CPU
//! on purpose, so they run on the blocking pool, never on a request's worker thread.

use std::sync::LazyLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// The shortest password `user add` accepts.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The PHC string (`$argon2id$v=19$m=…`) for `password`, with a fresh random salt.
pub async fn hash(password: &str) -> anyhow::Result<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|error| anyhow::anyhow!("cannot hash a password: {error}"))
    })
    .await?
}

/// Whether `password` matches `stored` (a PHC string). `None` checks against a hash
/// of no one's password, so that an unknown username takes as long to refuse as a
/// wrong password and the timing does not tell which usernames exist.
pub async fn verify(password: &str, stored: Option<String>) -> anyhow::Result<bool> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| NO_ONES_HASH.clone());
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), stored.as_str())
            .is_ok();
        known && matches
    })
    .await
    .map_err(Into::into)
}

static NO_ONES_HASH: LazyLock<String> = LazyLock::new(|| {
    let random: [u8; 32] = rand::random();
    Argon2::default()
        .hash_password(&random)
        .expect("argon2 hashes 32 random bytes")
        .to_string()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_an_argon2id_phc_string_that_verifies_only_its_password() {
        let stored = hash("correct horse").await.unwrap();

        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert!(verify("correct horse", Some(stored.clone())).await.unwrap());
        assert!(!verify("correct hors", Some(stored)).await.unwrap());
    }

    #[tokio::test]
    async fn no_password_matches_an_unknown_user() {
        assert!(!verify("anything at all", None).await.unwrap());
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        assert_ne!(
            hash("same words").await.unwrap(),
            hash("same words").await.unwrap()
        );
    }
}
