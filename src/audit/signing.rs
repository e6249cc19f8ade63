//! The installation's key: an Ed25519 key pair that signs the proofs this
//! installation exports, so that whoever receives one knows which installation
//! vouches for it. Created once by `quoteline keys init` into a file of its own
//! (never the database: whoever can change the events in the database must not
//! also be able to sign them), read by every process that serves.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Where the key is kept unless configured otherwise, beside the demo database.
pub const DEFAULT_KEY_FILE: &str = "data/installation.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path} already holds a key; it was left as it is (remove it first to make a new one, and every proof signed with it will then name a key you no longer have)"
    )]
    Exists { path: PathBuf },
    #[error("cannot read the installation key at {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the installation key to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not hold an installation key (64 hexadecimal digits)")]
    Malformed { path: PathBuf },
}

/// The installation's signing key.
pub struct InstallationKey {
    key: SigningKey,
}

impl InstallationKey {
    /// A new key, written to `path` (its folder created) readable by its owner
    /// alone. Refuses to replace a key already there.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let write = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(write)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_owned(),
                }
            } else {
                write(source)
            }
        })?;
        let key = Self::from_seed(rand::random());
        writeln!(file, "{}", hex::encode(key.key.to_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(write)?;
        Ok(key)
    }

    /// The key at `path`, or `None` when there is no file there.
    pub fn load(path: &Path) -> Result<Option<Self>, KeyError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let malformed = || KeyError::Malformed {
            path: path.to_owned(),
        };
        let seed: [u8; 32] = hex::decode(text.trim())
            .map_err(|_| malformed())?
            .try_into()
            .map_err(|_| malformed())?;
        Ok(Some(Self::from_seed(seed)))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        InstallationKey {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The public half, as 64 hexadecimal digits: what a recipient compares.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The signature of `message`, as 128 hexadecimal digits.
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the public key is not 64 hexadecimal digits of an Ed25519 key")]
    Key,
    #[error("the signature is not 128 hexadecimal digits")]
    Malformed,
    #[error(
        "the signature does not match the file: it was changed after it was signed, or signed by another key"
    )]
    Mismatch,
}

/// Checks a signature made by [`InstallationKey::sign`] with the key whose public
/// half is `public_hex`.
pub fn verify(public_hex: &str, message: &[u8], signature_hex: &str) -> Result<(), SignatureError> {
    let public: [u8; 32] = hex::decode(public_hex)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(SignatureError::Key)?;
    let key = VerifyingKey::from_bytes(&public).map_err(|_| SignatureError::Key)?;
    let signature: [u8; 64] = hex::decode(signature_hex)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(SignatureError::Malformed)?;
    key.verify_strict(message, &Signature::from_bytes(&signature))
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_read_back_and_never_replaced() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("keys/installation.key");
        let created = InstallationKey::create(&path).unwrap();

        let loaded = InstallationKey::load(&path).unwrap().unwrap();
        assert_eq!(loaded.public_hex(), created.public_hex());
        assert!(matches!(
            InstallationKey::create(&path),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(
            InstallationKey::load(&path).unwrap().unwrap().public_hex(),
            created.public_hex()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            InstallationKey::load(&folder.path().join("none"))
                .unwrap()
                .is_none()
        );
        std::fs::write(folder.path().join("bad"), "not a key\n").unwrap();
        assert!(matches!(
            InstallationKey::load(&folder.path().join("bad")),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn a_signature_holds_for_its_message_and_key_only() {
        let key = InstallationKey::from_seed([7; 32]);
        let other = InstallationKey::from_seed([8; 32]);
        let signature = key.sign(b"the history");

        assert_eq!(
            verify(&key.public_hex(), b"the history", &signature),
            Ok(())
        );
        assert_eq!(
            verify(&key.public_hex(), b"the history!", &signature),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&other.public_hex(), b"the history", &signature),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("abc", b"the history", &signature),
            Err(SignatureError::Key)
        );
        assert_eq!(
            verify(&key.public_hex(), b"the history", "00"),
            Err(SignatureError::Malformed)
        );
    }
}
