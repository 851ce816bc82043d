//! Secrets referenced from configuration, and the small serde helpers the config types share.
//!
//! A config file never holds a secret inline: it names an environment variable or a file,
//! and the value is read when the daemon starts ([`Secret::resolve`]). A secret's value is
//! never printed (`Debug` shows only where it comes from).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Where a secret (API key, token, password) is read from: `{ env = "NAME" }` or
/// `{ file = "/path" }` in TOML. A file's content is trimmed of surrounding whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Secret {
    /// An environment variable.
    Env(String),
    /// A file (keep it mode 0600).
    File(PathBuf),
}

/// A secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set or empty.
    #[error("environment variable {0} is not set or empty")]
    MissingEnv(String),
    /// The file could not be read or is empty.
    #[error("cannot read secret file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Secret {
    /// Reads the secret's value now.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Secret::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
                _ => Err(SecretError::MissingEnv(name.clone())),
            },
            Secret::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| SecretError::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let v = text.trim();
                if v.is_empty() {
                    return Err(SecretError::File {
                        path: path.clone(),
                        reason: "file is empty".into(),
                    });
                }
                Ok(v.to_owned())
            }
        }
    }
}

/// Serde helper for durations written as humantime strings (`"500ms"`, `"5s"`, `"7d"`):
/// `#[serde(with = "crate::secret::duration")]`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Deserializes a humantime duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

/// Serde helper for optional humantime durations:
/// `#[serde(default, with = "crate::secret::opt_duration")]`.
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Deserializes an optional humantime duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            humantime::parse_duration(&s)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
        })
        .transpose()
    }
}

/// Parses a humantime duration (`"5s"`), for callers outside serde.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_from_toml_and_env() {
        #[derive(Deserialize)]
        struct C {
            key: Secret,
        }
        let c: C = toml::from_str(r#"key = { env = "METRICSPOOL_TEST_SECRET_X" }"#)
            .expect("a secret reference parses");
        assert_eq!(c.key, Secret::Env("METRICSPOOL_TEST_SECRET_X".into()));
        assert!(matches!(c.key.resolve(), Err(SecretError::MissingEnv(_))));
        let bad = toml::from_str::<C>(r#"key = "inline-secret""#);
        assert!(bad.is_err(), "inline secrets are refused");
    }

    #[test]
    fn secret_from_file_is_trimmed() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let p = dir.path().join("k");
        std::fs::write(&p, "  abc\n").expect("write the secret");
        assert_eq!(Secret::File(p).resolve().expect("readable"), "abc");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1500ms").expect("a duration"),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("soon").is_err());
    }
}
