//! `RequestAuthentication` (`security.istio.io`): which JWTs a workload
//! accepts and where to find them.

use serde::{Deserialize, Serialize};

use super::FieldError;
use super::resource::resource;
use super::selector::{PolicyTargetReference, WorkloadSelector, check_policy_targets};
use super::serde_util::is_false;
use super::validate::{Errors, check_metadata, duration, header_name};

resource! {
    /// JWT validation for the selected workloads (or targets).
    RequestAuthentication(RequestAuthenticationSpec),
    group = "security.istio.io",
    kind = "RequestAuthentication",
    versions = ["v1", "v1beta1"],
}

/// `spec` of a [`RequestAuthentication`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// Workloads the policy applies to. Exclusive with `target_ref(s)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single attachment target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Attachment targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Accepted issuers and how to validate their tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// `jwtRules[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// Expected `iss` claim. Required.
    #[serde(default)]
    pub issuer: String,
    /// Accepted `aud` values; empty accepts the service name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// URL of the issuer's JWKS (http or https).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks_uri: String,
    /// Inline JWKS (a JSON document).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks: String,
    /// Headers carrying the token; default `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters carrying the token; default `access_token`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies carrying the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Header to receive the verified payload (base64url JSON).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_payload_to_header: String,
    /// Keep the token in the forwarded request.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forward_original_token: bool,
    /// Copy claims to request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Timeout of the JWKS fetch (duration string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `fromHeaders[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name. Required.
    #[serde(default)]
    pub name: String,
    /// Prefix before the token (e.g. `"Bearer "`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// `outputClaimToHeaders[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header to set. Required.
    #[serde(default)]
    pub header: String,
    /// Claim to copy (nested claims as `a.b`). Required.
    #[serde(default)]
    pub claim: String,
}

impl RequestAuthentication {
    /// Checks: metadata; selector / targetRef / targetRefs exclusive and
    /// well-formed; per rule: issuer set, audiences / params / cookies
    /// non-empty, `jwksUri` an http(s) URL, `jwks` a JSON object with `keys`,
    /// header names valid, claims non-empty, timeout a duration.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Errors::default();
        check_metadata(&self.metadata, &mut errs);
        let spec = &self.spec;
        check_policy_targets(
            &mut errs,
            self.metadata.namespace.as_deref(),
            spec.selector.as_ref(),
            spec.target_ref.as_ref(),
            &spec.target_refs,
        );
        for (i, rule) in spec.jwt_rules.iter().enumerate() {
            check_jwt_rule(&mut errs, &format!("spec.jwtRules[{i}]"), rule);
        }
        errs.into_vec()
    }
}

fn check_jwt_rule(errs: &mut Errors, path: &str, rule: &JwtRule) {
    if rule.issuer.is_empty() {
        errs.add(format!("{path}.issuer"), "required");
    }
    for (name, list) in [
        ("audiences", &rule.audiences),
        ("fromParams", &rule.from_params),
        ("fromCookies", &rule.from_cookies),
    ] {
        super::validate::check_non_empty_entries(errs, &format!("{path}.{name}"), list);
    }
    if !rule.jwks_uri.is_empty() {
        errs.check(format!("{path}.jwksUri"), jwks_uri(&rule.jwks_uri));
    }
    if !rule.jwks.is_empty() {
        errs.check(format!("{path}.jwks"), jwks(&rule.jwks));
    }
    for (i, header) in rule.from_headers.iter().enumerate() {
        errs.check(
            format!("{path}.fromHeaders[{i}].name"),
            header_name(&header.name),
        );
    }
    if !rule.output_payload_to_header.is_empty() {
        errs.check(
            format!("{path}.outputPayloadToHeader"),
            header_name(&rule.output_payload_to_header),
        );
    }
    for (i, out) in rule.output_claim_to_headers.iter().enumerate() {
        let at = format!("{path}.outputClaimToHeaders[{i}]");
        errs.check(format!("{at}.header"), header_name(&out.header));
        if out.claim.is_empty() {
            errs.add(format!("{at}.claim"), "required");
        }
    }
    if let Some(timeout) = &rule.timeout {
        errs.check(format!("{path}.timeout"), duration(timeout));
    }
}

/// An absolute `http://` or `https://` URL with a host.
fn jwks_uri(uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or_else(|| format!("{uri:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') || uri.contains(char::is_whitespace) {
        return Err(format!("{uri:?} has no host"));
    }
    Ok(())
}

/// A JSON Web Key Set: a JSON object with a `keys` array.
fn jwks(doc: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(doc).map_err(|e| format!("not valid JSON: {e}"))?;
    match value.get("keys") {
        Some(serde_json::Value::Array(_)) => Ok(()),
        _ => Err("a JWKS must be a JSON object with a \"keys\" array".into()),
    }
}
