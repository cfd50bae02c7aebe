//! RequestAuthentication -> [`CompiledRequestAuthentication`]: one [`JwtProvider`] per
//! `jwtRules` entry, with its token locations, keys and outputs parsed.

use std::sync::Arc;
use std::time::Duration;

use api::config::RequestAuthentication;
use api::config::request_authentication::JwtRule;
use http::HeaderName;

use super::jwks::KeySet;
use super::token::normalize_audience;
use crate::authz::Targets;
use crate::problem::Problem;

const KIND: &str = "RequestAuthentication";

/// Istio's default JWKS fetch timeout.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What compilation needs besides the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileContext {
    /// The JWKS fetch timeout of rules without `timeout`.
    pub default_fetch_timeout: Duration,
}

impl Default for CompileContext {
    fn default() -> Self {
        CompileContext {
            default_fetch_timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// A RequestAuthentication ready to use.
#[derive(Debug, Clone)]
pub struct CompiledRequestAuthentication {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) targets: Targets,
    pub(crate) providers: Vec<Arc<JwtProvider>>,
}

impl CompiledRequestAuthentication {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// What the resource attaches to.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// One provider per `jwtRules` entry.
    pub fn providers(&self) -> &[Arc<JwtProvider>] {
        &self.providers
    }
}

/// Where a token is looked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A header whose value starts with `prefix` (a value without it is not a token).
    Header {
        /// The header.
        name: HeaderName,
        /// Stripped before the token (e.g. `Bearer `).
        prefix: String,
    },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `jwks`, parsed.
    Inline(Arc<KeySet>),
    /// `jwksUri`, fetched into the [`super::JwksCache`].
    Remote {
        /// The URI.
        uri: String,
        /// The fetch timeout.
        timeout: Duration,
    },
}

/// One `jwtRules` entry.
#[derive(Debug, Clone)]
pub struct JwtProvider {
    /// The required `iss`.
    pub issuer: String,
    /// Accepted audiences, normalised (no scheme, no trailing `/`); empty accepts any.
    pub audiences: Vec<String>,
    /// The verification keys.
    pub keys: KeySource,
    /// Where tokens are looked for.
    pub locations: Vec<Location>,
    /// Keep the token header in the forwarded request.
    pub forward_original_token: bool,
    /// Header to receive the base64url payload.
    pub payload_header: Option<HeaderName>,
    /// Headers to receive claims: `(header, path into the claims)`.
    pub claim_headers: Vec<(HeaderName, Vec<String>)>,
}

/// Compiles `r`: validation errors and unusable keys are returned as problems.
pub fn compile(
    r: &RequestAuthentication,
    cx: &CompileContext,
) -> Result<CompiledRequestAuthentication, Vec<Problem>> {
    let namespace = r.metadata.namespace.clone().unwrap_or_default();
    let name = r.metadata.name.clone().unwrap_or_default();
    let problem =
        |field: &str, message: &str| Problem::new(KIND, &namespace, &name, field, message);
    let spec = &r.spec;
    // Validation accepts only http(s) JWKS URIs; the waypoint also reads files.
    let file_uri_fields: Vec<String> = spec
        .jwt_rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| is_file_uri(&rule.jwks_uri))
        .map(|(i, _)| format!("spec.jwtRules[{i}].jwksUri"))
        .collect();
    let mut problems: Vec<Problem> = r
        .validate()
        .into_iter()
        .filter(|e| !file_uri_fields.contains(&e.field))
        .map(|e| problem(&e.field, &e.message))
        .collect();
    let mut providers = Vec::new();
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let at = format!("spec.jwtRules[{i}]");
        match provider(rule, &at, cx) {
            Ok(p) => providers.push(Arc::new(p)),
            Err((field, message)) => problems.push(problem(&field, &message)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CompiledRequestAuthentication {
        targets: Targets::new(&namespace, spec.target_ref.as_ref(), &spec.target_refs),
        namespace,
        name,
        providers,
    })
}

fn is_file_uri(uri: &str) -> bool {
    uri.starts_with("file://") || uri.starts_with('/')
}

fn header(name: &str, field: String) -> Result<HeaderName, (String, String)> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| (field, format!("{name:?} is not a header name")))
}

fn provider(
    rule: &JwtRule,
    at: &str,
    cx: &CompileContext,
) -> Result<JwtProvider, (String, String)> {
    let keys = match (rule.jwks.as_str(), rule.jwks_uri.as_str()) {
        ("", "") => {
            return Err((
                format!("{at}.jwksUri"),
                "jwksUri or jwks is required: OpenID discovery from the issuer is not supported"
                    .into(),
            ));
        }
        (jwks, "") => KeySource::Inline(Arc::new(
            KeySet::parse(jwks).map_err(|e| (format!("{at}.jwks"), e))?,
        )),
        ("", uri) => KeySource::Remote {
            uri: uri.to_owned(),
            timeout: match &rule.timeout {
                None => cx.default_fetch_timeout,
                Some(t) => {
                    api::config::parse_duration(t).map_err(|e| (format!("{at}.timeout"), e))?
                }
            },
        },
        (_, _) => {
            return Err((at.to_owned(), "jwks and jwksUri are exclusive".into()));
        }
    };
    let mut locations = Vec::new();
    for (i, h) in rule.from_headers.iter().enumerate() {
        locations.push(Location::Header {
            name: header(&h.name, format!("{at}.fromHeaders[{i}].name"))?,
            prefix: h.prefix.clone(),
        });
    }
    locations.extend(rule.from_params.iter().cloned().map(Location::Param));
    locations.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
    if locations.is_empty() {
        locations = vec![
            Location::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into(),
            },
            Location::Param("access_token".into()),
        ];
    }
    let payload_header = match rule.output_payload_to_header.as_str() {
        "" => None,
        name => Some(header(name, format!("{at}.outputPayloadToHeader"))?),
    };
    let mut claim_headers = Vec::new();
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        let name = header(&c.header, format!("{at}.outputClaimToHeaders[{i}].header"))?;
        claim_headers.push((name, c.claim.split('.').map(str::to_owned).collect()));
    }
    Ok(JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule
            .audiences
            .iter()
            .map(|a| normalize_audience(a).to_owned())
            .collect(),
        keys,
        locations,
        forward_original_token: rule.forward_original_token,
        payload_header,
        claim_headers,
    })
}
