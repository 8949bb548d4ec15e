//! Token credentials: how the ARM client gets an `Authorization: Bearer` token.
//!
//! Everything here speaks one small contract, [`TokenCredential`]: given a scope
//! (`https://management.azure.com/.default`), return an [`AccessToken`] or a
//! [`CredentialError`]. The trait returns a boxed future instead of using
//! `async fn` so that it stays object-safe: the client holds an
//! `Arc<dyn TokenCredential>` and does not care which source it talks to.
//!
//! The sources, in the order [`DefaultAzureCredential`] tries them:
//!
//! | Source | Module | Protocol |
//! |---|---|---|
//! | explicit client secret / `AZURE_CLIENT_SECRET` | [`client_secret`] | AAD v2 form POST, `grant_type=client_credentials` |
//! | workload identity (`AZURE_FEDERATED_TOKEN_FILE`) | [`workload`] | same POST with a `client_assertion` read from a file |
//! | managed identity | [`managed_identity`] | IMDS `GET /metadata/identity/oauth2/token` (AAD v1, `resource=`) |
//! | Azure CLI | [`cli`] | `az account get-access-token --output json` |
//!
//! [`StaticTokenCredential`] (a fixed token) serves the local emulator and tests.
//!
//! [`CachedCredential`] sits in front of any of them and keeps one token per
//! scope until shortly before it expires, so the ARM pipeline can ask for a
//! token on every request without hitting AAD every time.
//!
//! **Secrets.** Tokens and client secrets live in [`Secret`], whose `Debug`
//! and `Display` print `***`. Error messages name the source and the reason,
//! never the secret or the token.

pub mod aad;
pub mod cache;
pub mod chain;
pub mod cli;
pub mod client_secret;
pub mod managed_identity;
pub mod static_token;
pub mod workload;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

pub use cache::CachedCredential;
pub use chain::{
    ChainedCredential, DefaultAzureCredential, DefaultCredentialOptions, ExplicitClientSecret,
};
pub use cli::AzureCliCredential;
pub use client_secret::ClientSecretCredential;
pub use managed_identity::{ManagedIdentityCredential, ManagedIdentityOptions};
pub use static_token::StaticTokenCredential;
pub use workload::WorkloadIdentityCredential;

/// The future returned by [`TokenCredential::get_token`].
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, CredentialError>> + Send + 'a>>;

/// A source of bearer tokens.
///
/// Implementations do not cache; wrap them in [`CachedCredential`] for that.
pub trait TokenCredential: Send + Sync {
    /// Fetches a token for `scope` (AAD v2 form, e.g. `https://management.azure.com/.default`).
    fn get_token<'a>(&'a self, scope: &'a str) -> TokenFuture<'a>;

    /// A short, stable name for logs and for the chain's error listing
    /// (e.g. `"ManagedIdentityCredential"`).
    fn name(&self) -> &'static str;
}

/// A string that must never be printed: tokens, client secrets, assertions.
///
/// `Debug` and `Display` print `***`; read the value with [`Secret::expose`]
/// only at the point where it goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a sensitive value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value. Call this only to put the value on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (an empty secret is a configuration error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

/// A bearer token and the moment it stops being valid.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The token itself (prints as `***`).
    pub token: Secret,
    /// When the token expires, as reported by the issuer.
    pub expires_on: SystemTime,
}

impl AccessToken {
    /// Builds a token that expires `expires_in` from now.
    pub fn expiring_in(token: impl Into<Secret>, expires_in: Duration) -> Self {
        AccessToken {
            token: token.into(),
            expires_on: SystemTime::now() + expires_in,
        }
    }

    /// Whether the token expires within `margin` of `now` (or already has).
    pub fn expires_within(&self, margin: Duration, now: SystemTime) -> bool {
        match self.expires_on.duration_since(now) {
            Ok(left) => left <= margin,
            Err(_) => true,
        }
    }
}

/// Why a credential could not produce a token.
///
/// Messages name the source and the cause. They never contain a token, a
/// client secret or an assertion.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The source is not set up here (missing environment variables, no IMDS
    /// endpoint, no `az` binary, not logged in). A chain moves on to the next
    /// source.
    #[error("{credential} is unavailable: {reason}")]
    Unavailable {
        /// Which credential.
        credential: &'static str,
        /// Why, with a hint how to fix it.
        reason: String,
    },
    /// The identity provider answered with an error (wrong secret, unknown
    /// client id, expired assertion, identity not assigned, ...). A chain
    /// stops here: the source was configured, so falling back to another
    /// identity would hide the mistake.
    #[error("{credential} authentication failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Authentication {
        /// Which credential.
        credential: &'static str,
        /// The HTTP status, if the failure came from an HTTP endpoint.
        status: Option<u16>,
        /// The provider's error code and description (e.g. `invalid_client: AADSTS7000215 ...`).
        message: String,
    },
    /// The token endpoint could not be reached.
    #[error("{credential} could not reach {endpoint}")]
    Transport {
        /// Which credential.
        credential: &'static str,
        /// The endpoint URL without query string.
        endpoint: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint answered, but not with something we understand.
    #[error("{credential} got an invalid token response: {reason}")]
    InvalidResponse {
        /// Which credential.
        credential: &'static str,
        /// What was wrong (never includes the token).
        reason: String,
    },
    /// The credential configuration is wrong (e.g. a partial client-secret block).
    #[error("invalid credential configuration: {0}")]
    Config(String),
    /// Every source of a chain failed; each entry says which and why.
    #[error("no credential source produced a token; tried: {}", format_attempts(.attempts))]
    ChainExhausted {
        /// `(credential name, failure message)` for each source tried, in order.
        attempts: Vec<(String, String)>,
    },
}

fn format_attempts(attempts: &[(String, String)]) -> String {
    if attempts.is_empty() {
        return "nothing (no source is configured)".to_owned();
    }
    attempts
        .iter()
        .enumerate()
        .map(|(i, (name, why))| format!("{}. {name}: {why}", i + 1))
        .collect::<Vec<_>>()
        .join("; ")
}

impl CredentialError {
    /// Whether a chain should move on to the next source after this error.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CredentialError::Unavailable { .. })
    }
}

/// Strips the query string (and any userinfo) from a URL for error messages.
pub(crate) fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        let t = AccessToken::expiring_in("tok-value", Duration::from_secs(60));
        assert!(!format!("{t:?}").contains("tok-value"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn expiry_margin() {
        let now = SystemTime::now();
        let t = AccessToken {
            token: "x".into(),
            expires_on: now + Duration::from_secs(600),
        };
        assert!(!t.expires_within(Duration::from_secs(300), now));
        assert!(t.expires_within(Duration::from_secs(600), now));
        assert!(t.expires_within(Duration::ZERO, now + Duration::from_secs(700)));
    }

    #[test]
    fn chain_error_lists_sources() {
        let e = CredentialError::ChainExhausted {
            attempts: vec![
                ("A".into(), "not configured".into()),
                ("B".into(), "refused".into()),
            ],
        };
        assert_eq!(
            e.to_string(),
            "no credential source produced a token; tried: 1. A: not configured; 2. B: refused"
        );
    }
}
