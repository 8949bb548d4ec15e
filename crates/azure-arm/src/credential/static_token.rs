//! A fixed token: for the local emulator and tests, where no identity
//! provider exists and any bearer token is accepted.

use std::time::Duration;

use super::{AccessToken, Secret, TokenCredential, TokenFuture};

/// Always returns the same token, reported as valid for `lifetime` from the
/// moment of each call (so caches never consider it expired).
#[derive(Clone, Debug)]
pub struct StaticTokenCredential {
    token: Secret,
    lifetime: Duration,
}

impl StaticTokenCredential {
    /// A credential handing out `token`, valid for an hour per call.
    pub fn new(token: impl Into<Secret>) -> Self {
        StaticTokenCredential {
            token: token.into(),
            lifetime: Duration::from_secs(3600),
        }
    }
}

impl TokenCredential for StaticTokenCredential {
    fn get_token<'a>(&'a self, _scope: &'a str) -> TokenFuture<'a> {
        Box::pin(async move { Ok(AccessToken::expiring_in(self.token.clone(), self.lifetime)) })
    }

    fn name(&self) -> &'static str {
        "StaticTokenCredential"
    }
}
