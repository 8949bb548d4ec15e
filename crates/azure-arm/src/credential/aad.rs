//! The AAD (Entra ID) v2 token endpoint, shared by the client-secret and
//! workload-identity credentials.
//!
//! Both send the same form POST to `{authority}/{tenant}/oauth2/v2.0/token`
//! with `grant_type=client_credentials`; they differ only in how the client
//! proves itself (`client_secret` vs `client_assertion`). Token requests are
//! retried with a short policy on 429/5xx and connection errors, like any
//! other call, but give up quickly: a stuck login must surface fast.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{redact_url, AccessToken, CredentialError, Secret};
use crate::retry::{self, RetryPolicy, Verdict};

/// The retry policy for token endpoints: a few quick attempts.
pub fn token_retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        max_elapsed: Duration::from_secs(30),
        ..RetryPolicy::default()
    }
}

/// A number that may arrive as a JSON string (`"3599"`), as IMDS and some
/// AAD versions send them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LenientU64(pub u64);

impl<'de> Deserialize<'de> for LenientU64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            F(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(LenientU64(n)),
            Raw::F(f) if f.is_finite() && f >= 0.0 => Ok(LenientU64(f as u64)),
            Raw::F(f) => Err(serde::de::Error::custom(format!(
                "expected a non-negative number, got {f}"
            ))),
            Raw::S(s) => s.trim().parse::<u64>().map(LenientU64).map_err(|_| {
                serde::de::Error::custom(format!("expected a number or numeric string, got {s:?}"))
            }),
        }
    }
}

/// The fields of a token response this crate reads (AAD v1/v2 and IMDS).
#[derive(Deserialize)]
pub struct TokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// Lifetime in seconds (v2 and IMDS).
    #[serde(default)]
    pub expires_in: Option<LenientU64>,
    /// Absolute expiry, POSIX seconds (v1 and IMDS).
    #[serde(default)]
    pub expires_on: Option<LenientU64>,
}

impl TokenResponse {
    /// Parses a token response; `credential` names the source in errors.
    pub fn parse(credential: &'static str, body: &[u8]) -> Result<AccessToken, CredentialError> {
        let r: TokenResponse =
            serde_json::from_slice(body).map_err(|e| CredentialError::InvalidResponse {
                credential,
                reason: format!("token response is not the expected JSON ({e})"),
            })?;
        if r.access_token.is_empty() {
            return Err(CredentialError::InvalidResponse {
                credential,
                reason: "token response has an empty access_token".to_owned(),
            });
        }
        let expires_on = match (r.expires_on, r.expires_in) {
            (Some(LenientU64(on)), _) => std::time::UNIX_EPOCH + Duration::from_secs(on),
            (None, Some(LenientU64(secs))) => {
                std::time::SystemTime::now() + Duration::from_secs(secs)
            }
            (None, None) => {
                return Err(CredentialError::InvalidResponse {
                    credential,
                    reason: "token response has neither expires_in nor expires_on".to_owned(),
                })
            }
        };
        Ok(AccessToken {
            token: Secret::new(r.access_token),
            expires_on,
        })
    }
}

#[derive(Deserialize)]
struct AadErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

/// Turns an AAD/IMDS error body into a one-line message: `code: description`
/// (first line only; AAD descriptions carry trace ids but never secrets).
pub fn describe_error_body(body: &[u8]) -> String {
    match serde_json::from_slice::<AadErrorBody>(body) {
        Ok(AadErrorBody {
            error,
            error_description,
        }) if error.is_some() || error_description.is_some() => {
            let desc = error_description
                .as_deref()
                .and_then(|d| d.lines().next())
                .unwrap_or("")
                .trim()
                .to_owned();
            match error {
                Some(code) if desc.is_empty() => code,
                Some(code) => format!("{code}: {desc}"),
                None => desc,
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let line = text.lines().next().unwrap_or("").trim();
            if line.is_empty() {
                "empty response body".to_owned()
            } else {
                line.chars().take(200).collect()
            }
        }
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/token`.
pub fn token_url(authority_host: &Url, tenant_id: &str) -> Result<Url, CredentialError> {
    let valid_tenant = !tenant_id.is_empty()
        && tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid_tenant {
        return Err(CredentialError::Config(format!(
            "tenant id {tenant_id:?} is not valid; expected a GUID or a domain like contoso.onmicrosoft.com"
        )));
    }
    let base = authority_host.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/{tenant_id}/oauth2/v2.0/token")).map_err(|e| {
        CredentialError::Config(format!("invalid authority host {authority_host}: {e}"))
    })
}

/// Sends the client-credentials form POST and parses the result.
///
/// `proof` holds the secret form fields (`client_secret` or
/// `client_assertion` + type); they are exposed only into the form body.
pub async fn request_token(
    credential: &'static str,
    http: &reqwest::Client,
    url: &Url,
    client_id: &str,
    scope: &str,
    proof: &[(&'static str, &Secret)],
) -> Result<AccessToken, CredentialError> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope),
    ];
    for (k, v) in proof {
        form.push((k, v.expose()));
    }
    let policy = token_retry_policy();
    let result = retry::run(
        &policy,
        classify_token_attempt,
        |e| {
            tracing::debug!(
                credential,
                attempt = e.attempt,
                status = e.status,
                delay_ms = e.delay.as_millis() as u64,
                "retrying token request"
            )
        },
        |_| async {
            let resp = http.post(url.clone()).form(&form).send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        },
    )
    .await;
    let (status, _headers, body) = result.map_err(|source| CredentialError::Transport {
        credential,
        endpoint: redact_url(url),
        source: source.without_url(),
    })?;
    if !(200..300).contains(&status) {
        return Err(CredentialError::Authentication {
            credential,
            status: Some(status),
            message: describe_error_body(&body),
        });
    }
    TokenResponse::parse(credential, &body)
}

/// Classifier for `(status, headers, body)` attempts of token requests.
pub fn classify_token_attempt(
    r: &Result<(u16, reqwest::header::HeaderMap, impl Sized), reqwest::Error>,
) -> Verdict {
    match r {
        Ok((status, _, _)) if (200..300).contains(status) => Verdict::Done,
        Ok((status, headers, _)) => Verdict::Status {
            status: *status,
            retry_after: retry::parse_retry_after(headers, std::time::SystemTime::now()),
        },
        Err(_) => Verdict::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_response_with_string_numbers() {
        let body = br#"{"access_token":"abc","refresh_token":"","expires_in":"28799","expires_on":"1539927532","not_before":"1539898432","resource":"https://management.azure.com/","token_type":"Bearer"}"#;
        let t = TokenResponse::parse("x", body).unwrap();
        assert_eq!(t.token.expose(), "abc");
        assert_eq!(
            t.expires_on,
            std::time::UNIX_EPOCH + Duration::from_secs(1_539_927_532)
        );
    }

    #[test]
    fn token_response_v2_integer_expires_in() {
        let body = br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"tok"}"#;
        let t = TokenResponse::parse("x", body).unwrap();
        let left = t
            .expires_on
            .duration_since(std::time::SystemTime::now())
            .unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3599));
    }

    #[test]
    fn token_response_errors_do_not_echo_the_token() {
        let e = TokenResponse::parse("x", br#"{"access_token":"secret-tok"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("neither expires_in nor expires_on") && !e.contains("secret-tok"),
            "{e}"
        );
        let e = TokenResponse::parse("x", br#"{"access_token":"t","expires_in":"soon"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("numeric string"), "{e}");
    }

    #[test]
    fn aad_error_descriptions() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x","error_codes":[7000215]}"#;
        assert_eq!(
            describe_error_body(body),
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(describe_error_body(b"Bad Request"), "Bad Request");
        assert_eq!(describe_error_body(b""), "empty response body");
    }

    #[test]
    fn token_url_validates_tenant() {
        let host = Url::parse("https://login.microsoftonline.com/").unwrap();
        assert_eq!(
            token_url(&host, "contoso.onmicrosoft.com")
                .unwrap()
                .as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert!(token_url(&host, "a/b").is_err());
        let nested = Url::parse("http://127.0.0.1:1/aad").unwrap();
        assert_eq!(
            token_url(&nested, "t").unwrap().as_str(),
            "http://127.0.0.1:1/aad/t/oauth2/v2.0/token"
        );
    }
}
