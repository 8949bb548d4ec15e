//! Azure CLI: borrow the developer's `az login` session.
//!
//! Runs `az account get-access-token --output json --scope <scope>` and reads
//! `accessToken` plus `expires_on` (POSIX seconds, CLI ≥ 2.54). Older CLIs
//! only print `expiresOn` as local wall-clock time without a zone
//! (`2030-01-02 03:04:05.000000`), which is the fallback.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use chrono::TimeZone;
use serde::Deserialize;

use super::aad::LenientU64;
use super::{AccessToken, CredentialError, Secret, TokenCredential, TokenFuture};

/// Gets tokens from the Azure CLI.
#[derive(Clone, Debug)]
pub struct AzureCliCredential {
    program: PathBuf,
    tenant_id: Option<String>,
    timeout: Duration,
}

impl Default for AzureCliCredential {
    fn default() -> Self {
        AzureCliCredential {
            program: PathBuf::from("az"),
            tenant_id: None,
            timeout: Duration::from_secs(20),
        }
    }
}

impl AzureCliCredential {
    /// Runs `az` from `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `program` instead of `az` (tests use a fake script).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Adds `--tenant <id>`.
    pub fn with_tenant(mut self, tenant_id: Option<String>) -> Self {
        self.tenant_id = tenant_id.filter(|t| !t.is_empty());
        self
    }

    /// Limit for one `az` run.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CliToken {
    access_token: String,
    #[serde(default, rename = "expires_on")]
    expires_on: Option<LenientU64>,
    #[serde(default, rename = "expiresOn")]
    expires_on_text: Option<String>,
}

/// Parses the JSON printed by `az account get-access-token`.
pub fn parse_cli_output(stdout: &[u8]) -> Result<AccessToken, CredentialError> {
    let invalid = |reason: String| CredentialError::InvalidResponse {
        credential: "AzureCliCredential",
        reason,
    };
    let t: CliToken = serde_json::from_slice(stdout).map_err(|e| {
        invalid(format!(
            "`az account get-access-token` printed unexpected JSON ({e})"
        ))
    })?;
    if t.access_token.is_empty() {
        return Err(invalid("`az` printed an empty accessToken".to_owned()));
    }
    let expires_on = if let Some(LenientU64(secs)) = t.expires_on {
        std::time::UNIX_EPOCH + Duration::from_secs(secs)
    } else if let Some(text) = t.expires_on_text.as_deref() {
        parse_local_time(text).ok_or_else(|| invalid(format!("cannot parse expiresOn {text:?}")))?
    } else {
        return Err(invalid(
            "`az` printed neither expires_on nor expiresOn".to_owned(),
        ));
    };
    Ok(AccessToken {
        token: Secret::new(t.access_token),
        expires_on,
    })
}

fn parse_local_time(text: &str) -> Option<SystemTime> {
    let naive = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let local = chrono::Local.from_local_datetime(&naive).earliest()?;
    Some(local.with_timezone(&chrono::Utc).into())
}

impl TokenCredential for AzureCliCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            let name = self.name();
            let mut cmd = tokio::process::Command::new(&self.program);
            cmd.args([
                "account",
                "get-access-token",
                "--output",
                "json",
                "--scope",
                scope,
            ]);
            if let Some(t) = &self.tenant_id {
                cmd.args(["--tenant", t]);
            }
            cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
            let output = match tokio::time::timeout(self.timeout, cmd.output()).await {
                Err(_) => {
                    return Err(CredentialError::Unavailable {
                        credential: name,
                        reason: format!("`az account get-access-token` did not finish within {:?}", self.timeout),
                    })
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(CredentialError::Unavailable {
                        credential: name,
                        reason: format!("{} was not found on PATH; install the Azure CLI or use another credential", self.program.display()),
                    })
                }
                Ok(Err(e)) => {
                    return Err(CredentialError::Unavailable {
                        credential: name,
                        reason: format!("cannot run {} ({e})", self.program.display()),
                    })
                }
                Ok(Ok(o)) => o,
            };
            if !output.status.success() {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let first = stderr
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("no error output")
                    .chars()
                    .take(300)
                    .collect::<String>();
                let hint = if stderr.contains("az login") {
                    " (run `az login`)"
                } else {
                    ""
                };
                return Err(CredentialError::Unavailable {
                    credential: name,
                    reason: format!(
                        "`az account get-access-token` failed with {}: {first}{hint}",
                        output.status
                    ),
                });
            }
            parse_cli_output(&output.stdout)
        })
    }

    fn name(&self) -> &'static str {
        "AzureCliCredential"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_posix_expires_on() {
        let out = br#"{"accessToken":"tok","expiresOn":"2030-01-02 03:04:05.000000","expires_on":1893553445,"subscription":"s","tenant":"t","tokenType":"Bearer"}"#;
        let t = parse_cli_output(out).unwrap();
        assert_eq!(t.token.expose(), "tok");
        assert_eq!(
            t.expires_on,
            std::time::UNIX_EPOCH + Duration::from_secs(1_893_553_445)
        );
    }

    #[test]
    fn falls_back_to_local_expires_on() {
        let out = br#"{"accessToken":"tok","expiresOn":"2030-01-02 03:04:05.000000","tokenType":"Bearer"}"#;
        let t = parse_cli_output(out).unwrap();
        let expected = chrono::Local
            .from_local_datetime(
                &chrono::NaiveDate::from_ymd_opt(2030, 1, 2)
                    .unwrap()
                    .and_hms_opt(3, 4, 5)
                    .unwrap(),
            )
            .earliest()
            .unwrap();
        assert_eq!(
            t.expires_on,
            SystemTime::from(expected.with_timezone(&chrono::Utc))
        );
    }

    #[test]
    fn bad_output_is_described_without_token() {
        let e = parse_cli_output(br#"{"accessToken":"tok-123"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("neither expires_on nor expiresOn") && !e.contains("tok-123"),
            "{e}"
        );
        assert!(parse_cli_output(b"ERROR: not logged in").is_err());
    }

    #[tokio::test]
    async fn missing_binary_is_unavailable() {
        let c = AzureCliCredential::new().with_program("/nonexistent/az-binary");
        let e = c
            .get_token("https://management.azure.com/.default")
            .await
            .unwrap_err();
        assert!(
            e.is_unavailable() && e.to_string().contains("not found on PATH"),
            "{e}"
        );
    }
}
