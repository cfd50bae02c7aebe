//! `PeerAuthentication` (`security.istio.io`): whether workloads accept
//! plaintext, mutual TLS, or both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::FieldError;
use super::resource::resource;
use super::selector::WorkloadSelector;
use super::serde_util::port_keyed_map;
use super::validate::{Errors, check_metadata, port_number};

resource! {
    /// Mutual TLS mode for the selected workloads (or the namespace / mesh
    /// when there is no selector).
    PeerAuthentication(PeerAuthenticationSpec),
    group = "security.istio.io",
    kind = "PeerAuthentication",
    versions = ["v1", "v1beta1"],
}

/// `spec` of a [`PeerAuthentication`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Workloads the policy applies to; none means the whole namespace (or
    /// mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Mode for every port not listed in `port_level_mtls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port modes, keyed by the workload's (target) port. Needs a
    /// `selector`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "port_keyed_map"
    )]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// `mtls:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// The mode; absent means [`MtlsMode::Unset`] (inherit from the parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// `mtls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent (namespace, then mesh); PERMISSIVE at the top.
    Unset,
    /// Plaintext only.
    Disable,
    /// Plaintext and mutual TLS.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl PeerAuthentication {
    /// Checks: metadata, selector label syntax, `portLevelMtls` needs a
    /// non-empty selector and port keys in 1..=65535.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Errors::default();
        check_metadata(&self.metadata, &mut errs);
        let spec = &self.spec;
        if let Some(selector) = &spec.selector {
            selector.check(&mut errs, "spec.selector");
        }
        if !spec.port_level_mtls.is_empty() && spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
            errs.add(
                "spec.portLevelMtls",
                "requires a selector with matchLabels (port-level settings apply to selected workloads only)",
            );
        }
        for port in spec.port_level_mtls.keys() {
            errs.check(format!("spec.portLevelMtls[{port}]"), port_number(*port));
        }
        errs.into_vec()
    }
}
