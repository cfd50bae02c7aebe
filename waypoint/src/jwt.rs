//! RequestAuthentication: JWT validation in the waypoint, like Envoy's `jwt_authn` as
//! Istio configures it. [`compile`] turns a RequestAuthentication into a
//! [`CompiledRequestAuthentication`]; [`Authenticator::authenticate`] finds tokens in a
//! request, verifies them, and returns the [`AuthInfo`] that authorization reads.
//!
//! - No token in any location of the applicable rules: `Ok(None)` (authorization
//!   decides whether that is acceptable, e.g. with `requestPrincipals: ["*"]`).
//! - A token that is present but invalid: `Err`, answered with 401
//!   ([`AuthError::status`], [`AuthError::body`]). Every token found must verify; the
//!   first one's claims are returned.
//! - A token is verified by the rules whose `issuer` equals its `iss` and that look for
//!   tokens where it was found; a token from an issuer no rule names is invalid.
//! - Default locations (no `fromHeaders`, `fromParams` or `fromCookies`):
//!   `Authorization: Bearer <token>` and the `access_token` query parameter. A header
//!   value without the configured prefix (compared case-insensitively) holds no token.
//! - Checks: signature (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA; `none` and
//!   HMAC are refused), `exp` and `nbf` with [`CLOCK_SKEW_SECS`] of skew (no `exp`: no
//!   expiry), `aud` against `audiences` when set (compared without scheme and trailing
//!   `/`; an empty list accepts any audience, as Envoy does).
//! - Keys: inline `jwks`, or `jwksUri` fetched into a [`JwksCache`] (see its docs for the
//!   refresh rules; tokens fail while the keys were never fetched).

mod cache;
mod compile;
mod extract;
mod fetch;
mod jwks;
mod token;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use http::request::Parts;
use serde_json::Value;

pub use cache::{JwksCache, KeyState, REFRESH_INTERVAL, RETRY_INTERVAL};
pub use compile::{
    CompileContext, CompiledRequestAuthentication, DEFAULT_FETCH_TIMEOUT, JwtProvider, KeySource,
    Location, compile,
};
pub use fetch::{FetchError, FetchFuture, HttpFetcher, JwksFetcher, MAX_JWKS_BYTES};
pub use jwks::{Jwk, KeySet};
pub use token::{Algorithm, CLOCK_SKEW_SECS};

use crate::authz::Binding;
use crate::context::Destination;
use cache::Need;
use token::{Token, normalize_audience};

/// A verified JWT, as authorization sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthInfo {
    /// `iss`.
    pub issuer: String,
    /// `sub` (empty when the token has none).
    pub subject: String,
    /// `iss/sub`: what `requestPrincipals` and `request.auth.principal` match.
    pub principal: String,
    /// `aud` (a string or an array of strings).
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The whole payload.
    pub claims: Value,
}

/// Why a present token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a decodable compact JWS with JSON header and payload.
    #[error("malformed JWT: {0}")]
    Malformed(String),
    /// `alg` is `none`, HMAC or unknown.
    #[error("JWT algorithm refused: {0}")]
    UnsupportedAlgorithm(String),
    /// No applicable rule names the token's `iss` (for where it was found).
    #[error("JWT issuer {0:?} is not configured")]
    UnknownIssuer(String),
    /// The issuer's remote key set is not available.
    #[error("JWKS for issuer {issuer:?} from {uri} is not available: {reason}")]
    KeysUnavailable {
        /// The token's issuer.
        issuer: String,
        /// The `jwksUri`.
        uri: String,
        /// The last fetch error, or that no fetch finished yet.
        reason: String,
    },
    /// No key of the set fits the token's `kid` and `alg`.
    #[error("no JWKS key matches kid {kid:?} and alg {alg}")]
    NoMatchingKey {
        /// The token's `kid`.
        kid: Option<String>,
        /// The token's `alg`.
        alg: Algorithm,
    },
    /// The signature does not verify.
    #[error("JWT signature verification failed")]
    BadSignature,
    /// `exp` is in the past.
    #[error("JWT is expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("JWT is not yet valid")]
    NotYetValid,
    /// `aud` has none of the rule's audiences.
    #[error("JWT audiences {0:?} are not allowed")]
    AudienceNotAllowed(Vec<String>),
}

impl AuthError {
    /// The status of the answer: 401.
    pub fn status(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }

    /// The body of the answer, Envoy's wording.
    pub fn body(&self) -> &'static str {
        match self {
            AuthError::Expired => "Jwt is expired",
            AuthError::NotYetValid => "Jwt not yet valid",
            AuthError::UnknownIssuer(_) => "Jwt issuer is not configured",
            AuthError::AudienceNotAllowed(_) => "Audiences in Jwt are not allowed",
            AuthError::KeysUnavailable { .. } => "Jwks remote fetch is failed",
            AuthError::NoMatchingKey { .. } => "Jwks doesn't have key to match kid or alg from Jwt",
            AuthError::Malformed(_)
            | AuthError::UnsupportedAlgorithm(_)
            | AuthError::BadSignature => "Jwt verification fails",
        }
    }
}

/// Seconds since the Unix epoch.
pub type Clock = fn() -> u64;

fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Validates requests against the compiled RequestAuthentications.
#[derive(Debug, Clone)]
pub struct Authenticator {
    policies: Vec<Arc<CompiledRequestAuthentication>>,
    keys: Arc<JwksCache>,
    now: Clock,
}

impl Authenticator {
    /// An authenticator over `policies`, with remote keys from `keys`.
    pub fn new(policies: Vec<Arc<CompiledRequestAuthentication>>, keys: Arc<JwksCache>) -> Self {
        Authenticator {
            policies,
            keys,
            now: system_clock,
        }
    }

    /// Uses `now` instead of the system clock for `exp` / `nbf`.
    pub fn with_clock(mut self, now: Clock) -> Self {
        self.now = now;
        self
    }

    /// Starts fetching every remote key set not fetched yet. Must be called within a
    /// Tokio runtime.
    pub fn prefetch(&self) {
        for p in self.policies.iter().flat_map(|p| &p.providers) {
            if let KeySource::Remote { uri, timeout } = &p.keys {
                self.keys.poll(uri, *timeout, Need::Use);
            }
        }
    }

    /// Finds and verifies the tokens of `parts` for the rules that apply to `dest`
    /// through `binding`, and on success applies the rules' header outputs and token
    /// removal to `parts`.
    pub async fn authenticate(
        &self,
        binding: &Binding,
        dest: &Destination,
        parts: &mut Parts,
    ) -> Result<Option<AuthInfo>, AuthError> {
        let providers: Vec<&Arc<JwtProvider>> = self
            .policies
            .iter()
            .filter(|p| binding.applies(&p.targets, dest))
            .flat_map(|p| &p.providers)
            .collect();
        let mut found: Vec<(&Location, String)> = Vec::new();
        for location in providers.iter().flat_map(|p| &p.locations) {
            for raw in extract::find(parts, location) {
                if !found.iter().any(|(l, t)| *l == location && *t == raw) {
                    found.push((location, raw));
                }
            }
        }
        let mut verified = Vec::new();
        for (location, raw) in found {
            let token = Token::decode(&raw)?;
            let issuer = token
                .issuer()
                .ok_or_else(|| AuthError::Malformed("no \"iss\" claim".into()))?
                .to_owned();
            let mut outcome = Err(AuthError::UnknownIssuer(issuer.clone()));
            for p in providers
                .iter()
                .filter(|p| p.issuer == issuer && p.locations.contains(location))
            {
                outcome = self.verify(p, &token).map(|()| *p);
                if outcome.is_ok() {
                    break;
                }
            }
            verified.push((outcome?, location, token));
        }
        for (provider, location, token) in &verified {
            extract::apply(parts, provider, location, token);
        }
        Ok(verified.into_iter().next().map(|(_, _, t)| auth_info(t)))
    }

    fn verify(&self, p: &JwtProvider, token: &Token) -> Result<(), AuthError> {
        let keys = match &p.keys {
            KeySource::Inline(keys) => keys.clone(),
            KeySource::Remote { uri, timeout } => {
                self.keys.poll(uri, *timeout, Need::Use);
                match self.keys.state(uri) {
                    KeyState::Ready(keys) => keys,
                    KeyState::Unavailable(error) => {
                        return Err(AuthError::KeysUnavailable {
                            issuer: p.issuer.clone(),
                            uri: uri.clone(),
                            reason: error.unwrap_or_else(|| "not fetched yet".into()),
                        });
                    }
                }
            }
        };
        let mut candidates = keys.candidates(token.alg, token.kid.as_deref()).peekable();
        if candidates.peek().is_none() {
            if let KeySource::Remote { uri, timeout } = &p.keys {
                self.keys.poll(uri, *timeout, Need::UnknownKid);
            }
            return Err(AuthError::NoMatchingKey {
                kid: token.kid.clone(),
                alg: token.alg,
            });
        }
        let message = token.signing_input.as_bytes();
        if !candidates.any(|k| k.verify(token.alg, message, &token.signature)) {
            return Err(AuthError::BadSignature);
        }
        token.check_times((self.now)())?;
        let audiences = token.audiences();
        let accepted = p.audiences.is_empty()
            || audiences
                .iter()
                .any(|a| p.audiences.iter().any(|want| want == normalize_audience(a)));
        if !accepted {
            return Err(AuthError::AudienceNotAllowed(audiences));
        }
        Ok(())
    }
}

fn auth_info(token: Token) -> AuthInfo {
    let text = |name: &str| {
        token
            .claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let issuer = text("iss").unwrap_or_default();
    let subject = text("sub").unwrap_or_default();
    AuthInfo {
        principal: format!("{issuer}/{subject}"),
        audiences: token.audiences(),
        presenter: text("azp"),
        issuer,
        subject,
        claims: Value::Object(token.claims),
    }
}

#[cfg(test)]
mod tests;
