//! Decoding a compact JWS and checking its registered claims.

use std::fmt;

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::AuthError;

/// Allowed difference between our clock and the issuer's for `exp` and `nbf` (Envoy's
/// default).
pub const CLOCK_SKEW_SECS: u64 = 60;

const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes base64url, with or without padding.
pub fn b64url_decode(s: &str) -> Result<Vec<u8>, String> {
    B64.decode(s).map_err(|e| format!("invalid base64url: {e}"))
}

/// The signature algorithms accepted. `none` and the HMAC ones are refused: a shared
/// secret cannot come from a public JWKS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Parses a JOSE `alg` name.
    pub fn parse(alg: &str) -> Result<Self, String> {
        use Algorithm::*;
        Ok(match alg {
            "RS256" => RS256,
            "RS384" => RS384,
            "RS512" => RS512,
            "PS256" => PS256,
            "PS384" => PS384,
            "PS512" => PS512,
            "ES256" => ES256,
            "ES384" => ES384,
            "EdDSA" => EdDSA,
            other => return Err(format!("unsupported algorithm {other:?}")),
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A decoded, not yet verified token.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    pub(crate) claims: Map<String, Value>,
    /// The payload as it appears in the token (base64url).
    pub(crate) payload_b64: String,
    /// `header.payload`, the signed bytes.
    pub(crate) signing_input: String,
    pub(crate) signature: Vec<u8>,
}

impl Token {
    /// Splits and decodes `header.payload.signature`.
    pub(crate) fn decode(jwt: &str) -> Result<Token, AuthError> {
        let malformed = |why: String| AuthError::Malformed(why);
        let mut parts = jwt.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three dot-separated sections".into()));
        };
        let json = |section: &str, what: &str| -> Result<Map<String, Value>, AuthError> {
            let bytes = b64url_decode(section).map_err(|e| malformed(format!("{what}: {e}")))?;
            match serde_json::from_slice(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(malformed(format!("{what} is not a JSON object"))),
            }
        };
        let header_map = json(header, "header")?;
        let alg = header_map
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("header has no \"alg\"".into()))?;
        let alg = Algorithm::parse(alg).map_err(AuthError::UnsupportedAlgorithm)?;
        let claims = json(payload, "payload")?;
        let signature =
            b64url_decode(signature).map_err(|e| malformed(format!("signature: {e}")))?;
        Ok(Token {
            alg,
            kid: header_map
                .get("kid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            claims,
            payload_b64: payload.to_owned(),
            signing_input: format!("{header}.{payload}"),
            signature,
        })
    }

    /// The `iss` claim.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The `aud` claim: a string or an array of strings.
    pub(crate) fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Checks `exp` and `nbf` against `now` (seconds since the epoch), allowing
    /// [`CLOCK_SKEW_SECS`]; a token without `exp` does not expire.
    pub(crate) fn check_times(&self, now: u64) -> Result<(), AuthError> {
        let time = |name: &str| -> Result<Option<u64>, AuthError> {
            match self.claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|t| *t >= 0.0)
                    .map(|t| Some(t as u64))
                    .ok_or_else(|| AuthError::Malformed(format!("\"{name}\" is not a number"))),
            }
        };
        if let Some(exp) = time("exp")?
            && now > exp.saturating_add(CLOCK_SKEW_SECS)
        {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = time("nbf")?
            && now.saturating_add(CLOCK_SKEW_SECS) < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }
}

/// An audience compared as Envoy does: without an `http://` / `https://` scheme and
/// without a trailing `/`.
pub(crate) fn normalize_audience(aud: &str) -> &str {
    let aud = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
        .unwrap_or(aud);
    aud.strip_suffix('/').unwrap_or(aud)
}
