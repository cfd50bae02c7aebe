//! AuthorizationPolicy -> `istio.security.Authorization`: the L4 subset ztunnel
//! enforces.
//!
//! Each rule becomes one group; inside it `to`, `from` and each `when` condition become
//! one ANDed clause (`Rules`) whose matches are ORed. ztunnel never sees HTTP, so L7
//! attributes fail safe: an ALLOW rule using them is left out (it can never allow), a
//! DENY rule is kept without them (it denies more). Every such case is reported.

use api::config::AuthorizationPolicy;
use api::config::authorization_policy::{Action as PolicyAction, Condition, Rule};
use api::security::{Action, Authorization, Group, Match, Rules, Scope};

use super::MeshOptions;
use super::labels::{Labels, selects};
use crate::manifest::{ConfigError, Parsed};
use crate::resource::{Kind, Resource};
use crate::store::Store;

pub(super) mod matches;

use matches::{ip_prefixes, ports, service_accounts, string_matches};

/// A policy as sent to ztunnel, with what decides which workloads list it.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslatedPolicy {
    pub authorization: Authorization,
    /// `Some` for WORKLOAD_SELECTOR policies.
    pub selector: Option<Labels>,
}

impl TranslatedPolicy {
    pub fn resource_name(&self) -> String {
        format!(
            "{}/{}",
            self.authorization.namespace, self.authorization.name
        )
    }

    /// Whether a pod must list this policy in `Workload.authorization_policies`: a
    /// selector policy applies in its own namespace, or everywhere from the root one.
    pub fn selects(&self, namespace: &str, labels: &Labels, root_namespace: &str) -> bool {
        let Some(selector) = &self.selector else {
            return false;
        };
        let ns = self.authorization.namespace.as_str();
        (ns == namespace || ns == root_namespace) && selects(selector, labels)
    }
}

/// Every AuthorizationPolicy in the store that ztunnel enforces, in store order.
pub fn translate_all(
    store: &Store,
    options: &MeshOptions,
    problems: &mut Vec<ConfigError>,
) -> Vec<TranslatedPolicy> {
    store
        .of_kind(Kind::AuthorizationPolicy)
        .filter_map(|parsed| match parsed.resource.as_ref() {
            Resource::AuthorizationPolicy(policy) => {
                let mut report = Reporter { parsed, problems };
                translate(policy, &options.root_namespace, &mut report)
            }
            _ => None,
        })
        .collect()
}

/// Builds problems that point at the policy's manifest.
#[derive(Debug)]
pub struct Reporter<'a> {
    pub parsed: &'a Parsed,
    pub problems: &'a mut Vec<ConfigError>,
}

impl Reporter<'_> {
    pub(super) fn report(&mut self, field: String, message: String) {
        self.problems.push(ConfigError {
            file: self.parsed.origin.file.to_path_buf(),
            document: Some(self.parsed.origin.document),
            object: Some(self.parsed.key.to_string()),
            field: Some(field),
            message,
        });
    }
}

/// One policy; `None` when ztunnel does not evaluate it (bound to a waypoint with
/// targetRefs, or a CUSTOM action, which is reported). AUDIT policies and dry-run ones
/// (annotation `istio.io/dry-run: "true"`) are sent with our extensions of the workload
/// API (`Action::Audit`, `dry_run`): ztunnel logs what they match and enforces nothing.
pub fn translate(
    policy: &AuthorizationPolicy,
    root_namespace: &str,
    report: &mut Reporter<'_>,
) -> Option<TranslatedPolicy> {
    let spec = &policy.spec;
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        return None; // enforced by the waypoint it targets
    }
    let action = match spec.action() {
        PolicyAction::Allow => Action::Allow,
        PolicyAction::Deny => Action::Deny,
        // Our extension of the workload API (istiod does not send these to ztunnel):
        // matching connections are logged as audited, nothing is enforced.
        PolicyAction::Audit => Action::Audit,
        PolicyAction::Custom => {
            report.report(
                "spec.action".into(),
                "ztunnel does not enforce CUSTOM (external authorization) policies, so this \
                 policy is not sent to it and its provider is never asked; attach it to a \
                 waypoint with targetRefs to enforce it"
                    .into(),
            );
            return None;
        }
    };
    let namespace = policy.metadata.namespace.clone().unwrap_or_default();
    let selector = spec.selector.as_ref().map(|s| s.match_labels.clone());
    let scope = match (&selector, namespace == root_namespace) {
        (Some(_), _) => Scope::WorkloadSelector,
        (None, true) => Scope::Global,
        (None, false) => Scope::Namespace,
    };
    let groups = spec
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let path = format!("spec.rules[{i}]");
            group(rule, action, &namespace, &path, report)
        })
        .collect();
    Some(TranslatedPolicy {
        authorization: Authorization {
            name: policy.metadata.name.clone().unwrap_or_default(),
            namespace,
            scope: scope as i32,
            action: action as i32,
            groups,
            dry_run: dry_run(policy, report),
        },
        selector,
    })
}

/// The annotation that makes a policy dry-run: evaluated and logged, never enforced.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Whether `policy` is dry-run. Istio accepts `"true"` and `"false"`; anything else is
/// reported and read as `false` (the policy is enforced, as Istio does).
fn dry_run(policy: &AuthorizationPolicy, report: &mut Reporter<'_>) -> bool {
    let value = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRY_RUN_ANNOTATION));
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            report.report(
                format!("metadata.annotations.{DRY_RUN_ANNOTATION}"),
                format!(
                    "{:?} is not \"true\" or \"false\"; the policy is enforced",
                    value.map(String::as_str).unwrap_or_default()
                ),
            );
            false
        }
    }
}

/// One rule as a group of ANDed clauses; `None` for an ALLOW rule ztunnel cannot
/// evaluate (dropping it can only allow less).
fn group(
    rule: &Rule,
    action: Action,
    namespace: &str,
    path: &str,
    report: &mut Reporter<'_>,
) -> Option<Group> {
    let mut l7 = Vec::new();
    let mut rules = Vec::new();

    let to: Vec<Match> = rule
        .to
        .iter()
        .enumerate()
        .map(|(j, to)| {
            let op = to.operation.clone().unwrap_or_default();
            let at = format!("{path}.to[{j}].operation");
            for (name, values) in [
                ("hosts", &op.hosts),
                ("notHosts", &op.not_hosts),
                ("methods", &op.methods),
                ("notMethods", &op.not_methods),
                ("paths", &op.paths),
                ("notPaths", &op.not_paths),
            ] {
                if !values.is_empty() {
                    l7.push((format!("{at}.{name}"), format!("`{name}`")));
                }
            }
            Match {
                destination_ports: ports(&op.ports),
                not_destination_ports: ports(&op.not_ports),
                ..Match::default()
            }
        })
        .collect();
    push_clause(&mut rules, to);

    let from: Vec<Match> = rule
        .from
        .iter()
        .enumerate()
        .map(|(j, from)| {
            let src = from.source.clone().unwrap_or_default();
            let at = format!("{path}.from[{j}].source");
            for (name, values) in [
                ("requestPrincipals", &src.request_principals),
                ("notRequestPrincipals", &src.not_request_principals),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
            ] {
                if !values.is_empty() {
                    l7.push((format!("{at}.{name}"), format!("`{name}`")));
                }
            }
            Match {
                principals: string_matches(&src.principals, true),
                not_principals: string_matches(&src.not_principals, true),
                namespaces: string_matches(&src.namespaces, false),
                not_namespaces: string_matches(&src.not_namespaces, false),
                service_accounts: service_accounts(&src.service_accounts, namespace),
                not_service_accounts: service_accounts(&src.not_service_accounts, namespace),
                source_ips: ip_prefixes(&src.ip_blocks),
                not_source_ips: ip_prefixes(&src.not_ip_blocks),
                ..Match::default()
            }
        })
        .collect();
    push_clause(&mut rules, from);

    for (k, condition) in rule.when.iter().enumerate() {
        match condition_match(condition) {
            Some(m) => push_clause(&mut rules, vec![m]),
            None => l7.push((
                format!("{path}.when[{k}]"),
                format!("the condition on `{}`", condition.key),
            )),
        }
    }

    for (field, what) in &l7 {
        let effect = match action {
            Action::Allow => {
                "in an ALLOW policy the whole rule is left out, so it allows nothing \
                 (stricter than written)"
            }
            Action::Deny => {
                "in a DENY policy it is ignored, so the rule denies matching connections \
                 whatever their HTTP requests (stricter than written)"
            }
            Action::Audit => {
                "in an AUDIT policy it is ignored, so the rule audits matching connections \
                 whatever their HTTP requests (more than written)"
            }
        };
        report.report(
            field.clone(),
            format!(
                "{what} is an L7 (HTTP) attribute and ztunnel enforces only L4; {effect}. \
                 To enforce it, bind the policy to a waypoint with targetRefs"
            ),
        );
    }
    if action == Action::Allow && !l7.is_empty() {
        return None;
    }
    Some(Group { rules })
}

/// Adds the ORed `matches` as one clause. A clause with an entry that constrains
/// nothing (only L7 attributes, ignored in a DENY) matches every connection, so it is
/// left out: ztunnel skips empty matches rather than matching everything with them.
fn push_clause(rules: &mut Vec<Rules>, matches: Vec<Match>) {
    if !matches.is_empty() && !matches.iter().any(|m| *m == Match::default()) {
        rules.push(Rules { matches });
    }
}

/// The L4 match for a `when` condition; `None` when its key needs L7 (only
/// `source.ip`, `source.namespace`, `source.principal`, `destination.ip` and
/// `destination.port` can be read from a connection).
fn condition_match(c: &Condition) -> Option<Match> {
    let (values, not) = (&c.values, &c.not_values);
    let m = match c.key.as_str() {
        "source.ip" => Match {
            source_ips: ip_prefixes(values),
            not_source_ips: ip_prefixes(not),
            ..Match::default()
        },
        "source.namespace" => Match {
            namespaces: string_matches(values, false),
            not_namespaces: string_matches(not, false),
            ..Match::default()
        },
        "source.principal" => Match {
            principals: string_matches(values, true),
            not_principals: string_matches(not, true),
            ..Match::default()
        },
        "destination.ip" => Match {
            destination_ips: ip_prefixes(values),
            not_destination_ips: ip_prefixes(not),
            ..Match::default()
        },
        "destination.port" => Match {
            destination_ports: ports(values),
            not_destination_ports: ports(not),
            ..Match::default()
        },
        _ => return None,
    };
    Some(m)
}
