//! Token responses: AAD v2 (`/oauth2/v2.0/token`) and IMDS (`/metadata/identity/oauth2/token`).
//!
//! The two differ in a way that bites: AAD returns `expires_in` as a JSON **number**, IMDS
//! (and ACI's IMDS-compatible endpoint) returns every number as a **string**
//! (`"expires_in":"3599"`). Both types here accept either form when deserializing.

use serde::{Deserialize, Deserializer, Serialize};

/// A successful AAD v2 token response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AadTokenResponse {
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    #[serde(deserialize_with = "number_or_string")]
    pub expires_in: u64,
    /// Extended lifetime in seconds (used by AAD during outages).
    #[serde(default, deserialize_with = "number_or_string")]
    pub ext_expires_in: u64,
    /// The bearer token.
    pub access_token: String,
}

/// An AAD error body (`invalid_client`, `unauthorized_client`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AadError {
    /// OAuth error code, e.g. `invalid_client`.
    pub error: String,
    /// Message starting with the AADSTS code, e.g. `AADSTS7000215: Invalid client secret ...`.
    #[serde(default)]
    pub error_description: String,
    /// Numeric AADSTS codes.
    #[serde(default)]
    pub error_codes: Vec<u64>,
    /// Server time of the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Server-side trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// A successful IMDS token response; numbers are serialized as strings, like the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImdsTokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// Unused by managed identity; the service sends `""`.
    #[serde(default)]
    pub refresh_token: String,
    /// Lifetime in seconds, as a string.
    #[serde(serialize_with = "as_string", deserialize_with = "number_or_string")]
    pub expires_in: u64,
    /// Expiry as Unix seconds, as a string.
    #[serde(serialize_with = "as_string", deserialize_with = "number_or_string")]
    pub expires_on: u64,
    /// Start of validity as Unix seconds, as a string.
    #[serde(
        default,
        serialize_with = "as_string",
        deserialize_with = "number_or_string"
    )]
    pub not_before: u64,
    /// The resource (audience) the token is for.
    #[serde(default)]
    pub resource: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// The client id of the identity, when the service includes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

fn as_string<S: serde::Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&n.to_string())
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(u64),
        Float(f64),
        Str(String),
    }
    match N::deserialize(d)? {
        N::Num(n) => Ok(n),
        N::Float(f) if f >= 0.0 => Ok(f as u64),
        N::Float(f) => Err(serde::de::Error::custom(format!("negative number {f}"))),
        N::Str(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imds_numbers_are_strings_both_ways() {
        let json = r#"{"access_token":"t","refresh_token":"","expires_in":"28799","expires_on":"1539927532","not_before":"1539898432","resource":"https://management.azure.com/","token_type":"Bearer"}"#;
        let t: ImdsTokenResponse = serde_json::from_str(json).unwrap();
        assert_eq!(t.expires_in, 28799);
        assert_eq!(t.expires_on, 1539927532);
        let back = serde_json::to_value(&t).unwrap();
        assert_eq!(back["expires_in"], "28799");
        assert_eq!(back["not_before"], "1539898432");
    }

    #[test]
    fn aad_accepts_number_or_string() {
        let t: AadTokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":"3599","ext_expires_in":3599,"access_token":"x"}"#,
        )
        .unwrap();
        assert_eq!(t.expires_in, 3599);
        assert_eq!(t.ext_expires_in, 3599);
    }
}
