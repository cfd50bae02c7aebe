//! `AuthorizationPolicy` (`security.istio.io`): allow / deny / audit /
//! custom access control on workloads.

use serde::{Deserialize, Serialize};

use super::FieldError;
use super::resource::resource;
use super::selector::{PolicyTargetReference, WorkloadSelector, check_policy_targets};
use super::serde_util::strict_strings;
use super::validate::{Errors, check_metadata, check_non_empty_entries, ip_or_cidr, port_string};

resource! {
    /// Access control for the selected workloads (or targets).
    AuthorizationPolicy(AuthorizationPolicySpec),
    group = "security.istio.io",
    kind = "AuthorizationPolicy",
    versions = ["v1", "v1beta1"],
}

/// `spec` of an [`AuthorizationPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Workloads the policy applies to. Exclusive with `target_ref(s)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single attachment target. Exclusive with `selector`, `target_refs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Attachment targets. Exclusive with `selector`, `target_ref`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// A request matches the policy if it matches any rule. No rules: an
    /// ALLOW policy matches nothing (so denies everything it applies to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What a match does; absent means [`Action::Allow`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicySpec {
    /// The effective action (ALLOW when unset).
    pub fn action(&self) -> Action {
        self.action.unwrap_or(Action::Allow)
    }
}

/// `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow matching requests.
    #[default]
    Allow,
    /// Deny matching requests.
    Deny,
    /// Audit matching requests (no effect on the decision).
    Audit,
    /// Delegate matching requests to the `provider`.
    Custom,
}

/// `provider:` of a CUSTOM policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Name of an extension provider in the mesh config.
    #[serde(default)]
    pub name: String,
}

/// `rules[]`: a request matches when it matches every non-empty part
/// (`from`, `to`, `when`); within a part, any entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Who the request comes from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// What the request does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// Extra conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// `from[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// `from[].source`: every non-empty field must match; `not*` fields must not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities (`<trust domain>/ns/<ns>/sa/<sa>`), from mTLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Negation of `principals`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// Request identities (`<iss>/<sub>`), from a JWT.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// Negation of `request_principals`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Peer namespaces, from mTLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Negation of `namespaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Peer Kubernetes service accounts as `<ns>/<sa>`, from mTLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Negation of `service_accounts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Peer (connection source) IPs / CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Negation of `ip_blocks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs / CIDRs (X-Forwarded-For, PROXY protocol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Negation of `remote_ip_blocks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

impl Source {
    /// Whether no field is set (an error: an empty source matches nothing
    /// useful and is almost always a mistake).
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, l)| l.is_empty())
    }

    fn lists(&self) -> [(&'static str, &[String]); 12] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ]
    }
}

/// `to[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// `to[].operation`: every non-empty field must match; `not*` must not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// HTTP `Host` / `:authority` values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Negation of `hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, as decimal strings (`"8080"`; a YAML number is
    /// refused, as the API server does).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "strict_strings"
    )]
    pub ports: Vec<String>,
    /// Negation of `ports`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "strict_strings"
    )]
    pub not_ports: Vec<String>,
    /// HTTP methods (or gRPC `POST`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Negation of `methods`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Request paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Negation of `paths`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

impl Operation {
    /// Whether no field is set (an error, like an empty [`Source`]).
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, l)| l.is_empty())
    }

    fn lists(&self) -> [(&'static str, &[String]); 8] {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
    }
}

/// `when[]`: an attribute (`key`) must have one of `values` and none of
/// `not_values`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Attribute name, e.g. `request.headers[x-token]`, `source.ip`.
    #[serde(default)]
    pub key: String,
    /// Accepted values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Rejected values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// What a `when` key's values must look like.
#[derive(Clone, Copy)]
enum ValueKind {
    Any,
    Ip,
    Port,
}

/// The attributes a `when` key may name (Istio's list), and how their values
/// are checked. `None` for an unknown key.
fn condition_key(key: &str) -> Option<ValueKind> {
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|inner| !inner.is_empty())
    };
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => Some(ValueKind::Ip),
        "destination.port" => Some(ValueKind::Port),
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Some(ValueKind::Any),
        _ if bracketed("request.headers[") || bracketed("request.auth.claims[") => {
            Some(ValueKind::Any)
        }
        _ if key
            .strip_prefix("experimental.envoy.filters.")
            .is_some_and(|rest| !rest.is_empty()) =>
        {
            Some(ValueKind::Any)
        }
        _ => None,
    }
}

impl AuthorizationPolicy {
    /// Checks: metadata; selector / targetRef / targetRefs exclusive and
    /// well-formed; CUSTOM needs a provider (and rules), other actions must
    /// not have one; every `from` has a non-empty `source`, every `to` a
    /// non-empty `operation`; no empty strings in value lists; IP blocks are
    /// IPs or CIDRs; ports are "1".."65535"; `serviceAccounts` are `ns/sa`;
    /// `when` keys are known attributes with `values` or `notValues`.
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
        match (spec.action(), &spec.provider) {
            (Action::Custom, None) => errs.add("spec.provider", "required for the CUSTOM action"),
            (Action::Custom, Some(p)) if p.name.is_empty() => {
                errs.add("spec.provider.name", "required")
            }
            (Action::Custom, Some(_)) => {}
            (action, Some(_)) => errs.add(
                "spec.provider",
                format!("only allowed with the CUSTOM action, not {action:?}"),
            ),
            (_, None) => {}
        }
        if spec.action() == Action::Custom && spec.rules.is_empty() {
            errs.add(
                "spec.rules",
                "a CUSTOM policy without rules never triggers; add an empty rule `{}` to match every request",
            );
        }
        for (i, rule) in spec.rules.iter().enumerate() {
            check_rule(&mut errs, &format!("spec.rules[{i}]"), rule);
        }
        errs.into_vec()
    }
}

fn check_rule(errs: &mut Errors, path: &str, rule: &Rule) {
    for (i, from) in rule.from.iter().enumerate() {
        let at = format!("{path}.from[{i}].source");
        match &from.source {
            None => errs.add(at, "required"),
            Some(source) if source.is_empty() => errs.add(at, "must not be empty"),
            Some(source) => check_source(errs, &at, source),
        }
    }
    for (i, to) in rule.to.iter().enumerate() {
        let at = format!("{path}.to[{i}].operation");
        match &to.operation {
            None => errs.add(at, "required"),
            Some(op) if op.is_empty() => errs.add(at, "must not be empty"),
            Some(op) => check_operation(errs, &at, op),
        }
    }
    for (i, condition) in rule.when.iter().enumerate() {
        check_condition(errs, &format!("{path}.when[{i}]"), condition);
    }
}

fn check_source(errs: &mut Errors, path: &str, source: &Source) {
    for (name, list) in source.lists() {
        check_non_empty_entries(errs, &format!("{path}.{name}"), list);
    }
    for (name, list) in [
        ("ipBlocks", &source.ip_blocks),
        ("notIpBlocks", &source.not_ip_blocks),
        ("remoteIpBlocks", &source.remote_ip_blocks),
        ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
    ] {
        for (i, block) in list.iter().enumerate() {
            if !block.is_empty() {
                errs.check(format!("{path}.{name}[{i}]"), ip_or_cidr(block));
            }
        }
    }
    for (name, list) in [
        ("serviceAccounts", &source.service_accounts),
        ("notServiceAccounts", &source.not_service_accounts),
    ] {
        for (i, sa) in list.iter().enumerate() {
            let well_formed = sa.split_once('/').is_some_and(|(ns, name)| {
                !ns.is_empty() && !name.is_empty() && !name.contains('/')
            });
            if !sa.is_empty() && !well_formed {
                errs.add(
                    format!("{path}.{name}[{i}]"),
                    format!("{sa:?} is not a service account reference (<namespace>/<name>)"),
                );
            }
        }
    }
}

fn check_operation(errs: &mut Errors, path: &str, op: &Operation) {
    for (name, list) in op.lists() {
        check_non_empty_entries(errs, &format!("{path}.{name}"), list);
    }
    for (name, list) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
        for (i, port) in list.iter().enumerate() {
            if !port.is_empty() {
                errs.check(format!("{path}.{name}[{i}]"), port_string(port));
            }
        }
    }
}

fn check_condition(errs: &mut Errors, path: &str, condition: &Condition) {
    if condition.values.is_empty() && condition.not_values.is_empty() {
        errs.add(path, "at least one of values or notValues is required");
    }
    check_non_empty_entries(errs, &format!("{path}.values"), &condition.values);
    check_non_empty_entries(errs, &format!("{path}.notValues"), &condition.not_values);
    if condition.key.is_empty() {
        errs.add(format!("{path}.key"), "required");
        return;
    }
    let Some(kind) = condition_key(&condition.key) else {
        errs.add(
            format!("{path}.key"),
            format!("unknown attribute {:?}", condition.key),
        );
        return;
    };
    for (name, list) in [
        ("values", &condition.values),
        ("notValues", &condition.not_values),
    ] {
        for (i, value) in list.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
            let at = format!("{path}.{name}[{i}]");
            match kind {
                ValueKind::Any => {}
                ValueKind::Ip => errs.check(at, ip_or_cidr(value)),
                ValueKind::Port => errs.check(at, port_string(value)),
            }
        }
    }
}
