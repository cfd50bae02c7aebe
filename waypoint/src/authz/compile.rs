//! AuthorizationPolicy -> [`CompiledPolicy`]: wildcards, IP blocks, ports, path
//! templates and `when` keys are parsed once, so evaluation only compares.

use api::config::AuthorizationPolicy;
use api::config::authorization_policy::{Action, Condition, Operation, Rule, Source};
use http::HeaderName;

use super::binding::Targets;
use super::matcher::{Cidr, HostMatch, PathMatch, StringMatch};
use crate::problem::Problem;

/// The annotation that turns a policy into a dry-run (evaluated and reported, never
/// enforced).
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

const KIND: &str = "AuthorizationPolicy";

/// What compilation needs besides the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileContext {
    /// The mesh trust domain.
    pub trust_domain: String,
    /// Other trust domains that identify the same workloads: a principal written with
    /// any of these or [`Self::trust_domain`] matches peers of all of them.
    pub trust_domain_aliases: Vec<String>,
}

impl Default for CompileContext {
    fn default() -> Self {
        CompileContext {
            trust_domain: hbone::DEFAULT_TRUST_DOMAIN.to_owned(),
            trust_domain_aliases: Vec::new(),
        }
    }
}

/// An AuthorizationPolicy ready for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) action: Action,
    pub(crate) dry_run: bool,
    pub(crate) targets: Targets,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) warnings: Vec<Problem>,
}

impl CompiledPolicy {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The policy's action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Whether the policy is a dry run (`istio.io/dry-run: "true"`).
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// What the policy attaches to.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Parts the waypoint cannot enforce as written (CUSTOM, `experimental.*` keys), and
    /// what it does instead. The policy is still applied.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }
}

/// Positive and negative (`not*`) values of one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field<T> {
    pub(crate) any: Vec<T>,
    pub(crate) none: Vec<T>,
}

impl<T> Field<T> {
    fn new<E>(
        any: &[String],
        none: &[String],
        parse: impl Fn(&str) -> Result<Vec<T>, E>,
    ) -> Result<Self, E> {
        let all = |list: &[String]| -> Result<Vec<T>, E> {
            let mut out = Vec::new();
            for v in list {
                out.extend(parse(v)?);
            }
            Ok(out)
        };
        Ok(Field {
            any: all(any)?,
            none: all(none)?,
        })
    }

    /// Some positive value matches (or there is none) and no negative value matches.
    pub(crate) fn holds(&self, matches: impl Fn(&T) -> bool) -> bool {
        (self.any.is_empty() || self.any.iter().any(&matches)) && !self.none.iter().any(&matches)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) from: Vec<SourceMatch>,
    pub(crate) to: Vec<OperationMatch>,
    pub(crate) when: Vec<ConditionMatch>,
}

#[derive(Debug, Clone)]
pub(crate) struct SourceMatch {
    pub(crate) principals: Field<StringMatch>,
    pub(crate) request_principals: Field<StringMatch>,
    pub(crate) namespaces: Field<StringMatch>,
    /// `(namespace, service account)`.
    pub(crate) service_accounts: Field<(String, String)>,
    pub(crate) ip_blocks: Field<Cidr>,
    pub(crate) remote_ip_blocks: Field<Cidr>,
}

#[derive(Debug, Clone)]
pub(crate) struct OperationMatch {
    pub(crate) hosts: Field<HostMatch>,
    pub(crate) ports: Field<u16>,
    pub(crate) methods: Field<StringMatch>,
    pub(crate) paths: Field<PathMatch>,
}

/// A `when` attribute.
#[derive(Debug, Clone)]
pub(crate) enum Attribute {
    Header(HeaderName),
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    SourceNamespace,
    SourcePrincipal,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    /// `request.auth.claims[a][b]...`: the path into the claims object.
    AuthClaim(Vec<String>),
    /// No SNI reaches the waypoint: never has a value.
    ConnectionSni,
    /// An attribute the waypoint cannot evaluate: the condition's fixed outcome.
    Unsupported(bool),
}

/// One `when` value.
#[derive(Debug, Clone)]
pub(crate) enum ValueMatch {
    String(StringMatch),
    Ip(Cidr),
    Port(u16),
}

#[derive(Debug, Clone)]
pub(crate) struct ConditionMatch {
    pub(crate) attribute: Attribute,
    pub(crate) values: Field<ValueMatch>,
}

/// Compiles `p`: validation errors and anything that cannot be parsed are returned as
/// problems naming the policy and field.
pub fn compile(
    p: &AuthorizationPolicy,
    cx: &CompileContext,
) -> Result<CompiledPolicy, Vec<Problem>> {
    let namespace = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let problem =
        |field: &str, message: &str| Problem::new(KIND, &namespace, &name, field, message);
    let mut problems: Vec<Problem> = p
        .validate()
        .into_iter()
        .map(|e| problem(&e.field, &e.message))
        .collect();
    let spec = &p.spec;
    let action = spec.action();
    let dry_run = match p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
    {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            problems.push(problem(
                &format!("metadata.annotations[{DRY_RUN_ANNOTATION}]"),
                &format!("{v:?} is not \"true\" or \"false\""),
            ));
            false
        }
    };
    let mut warnings = Vec::new();
    if action == Action::Custom {
        warnings.push(problem(
            "spec.action",
            "CUSTOM (external authorization) is not supported by the waypoint; requests the policy matches are denied",
        ));
    }
    // An attribute the waypoint cannot evaluate must not widen access: it matches in a
    // policy that denies (DENY, CUSTOM) and never matches in one that allows or audits.
    let unsupported_matches = matches!(action, Action::Deny | Action::Custom);
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        match compile_rule(rule, &at, cx, unsupported_matches, &mut warnings, &problem) {
            Ok(r) => rules.push(r),
            Err(mut e) => problems.append(&mut e),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CompiledPolicy {
        targets: Targets::new(&namespace, spec.target_ref.as_ref(), &spec.target_refs),
        namespace,
        name,
        action,
        dry_run,
        rules,
        warnings,
    })
}

fn compile_rule(
    rule: &Rule,
    at: &str,
    cx: &CompileContext,
    unsupported_matches: bool,
    warnings: &mut Vec<Problem>,
    problem: &dyn Fn(&str, &str) -> Problem,
) -> Result<CompiledRule, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut from = Vec::new();
    for (i, f) in rule.from.iter().enumerate() {
        if let Some(source) = &f.source {
            match compile_source(source, cx) {
                Ok(s) => from.push(s),
                Err(e) => problems.push(problem(&format!("{at}.from[{i}].source"), &e)),
            }
        }
    }
    let mut to = Vec::new();
    for (i, t) in rule.to.iter().enumerate() {
        if let Some(op) = &t.operation {
            match compile_operation(op) {
                Ok(o) => to.push(o),
                Err(e) => problems.push(problem(&format!("{at}.to[{i}].operation"), &e)),
            }
        }
    }
    let mut when = Vec::new();
    for (i, cond) in rule.when.iter().enumerate() {
        let field = format!("{at}.when[{i}]");
        match compile_condition(cond, unsupported_matches) {
            Ok(m) => {
                if let Attribute::Unsupported(outcome) = m.attribute {
                    let effect = if outcome {
                        "always holds"
                    } else {
                        "never holds"
                    };
                    let message = format!(
                        "{:?} is not supported by the waypoint; the condition {effect}",
                        cond.key
                    );
                    warnings.push(problem(&format!("{field}.key"), &message));
                }
                when.push(m);
            }
            Err(e) => problems.push(problem(&field, &e)),
        }
    }
    if problems.is_empty() {
        Ok(CompiledRule { from, to, when })
    } else {
        Err(problems)
    }
}

fn strings(v: &str) -> Result<Vec<StringMatch>, String> {
    Ok(vec![StringMatch::parse(v)])
}

fn cidrs(v: &str) -> Result<Vec<Cidr>, String> {
    Cidr::parse(v).map(|c| vec![c])
}

fn port(v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{v:?} is not a port"))
}

fn compile_source(s: &Source, cx: &CompileContext) -> Result<SourceMatch, String> {
    let principals = |v: &str| Ok::<_, String>(principal_variants(v, cx));
    let service_account = |v: &str| {
        v.split_once('/')
            .map(|(ns, sa)| vec![(ns.to_owned(), sa.to_owned())])
            .ok_or_else(|| format!("{v:?} is not <namespace>/<service account>"))
    };
    Ok(SourceMatch {
        principals: Field::new(&s.principals, &s.not_principals, principals)?,
        request_principals: Field::new(&s.request_principals, &s.not_request_principals, strings)?,
        namespaces: Field::new(&s.namespaces, &s.not_namespaces, strings)?,
        service_accounts: Field::new(
            &s.service_accounts,
            &s.not_service_accounts,
            service_account,
        )?,
        ip_blocks: Field::new(&s.ip_blocks, &s.not_ip_blocks, cidrs)?,
        remote_ip_blocks: Field::new(&s.remote_ip_blocks, &s.not_remote_ip_blocks, cidrs)?,
    })
}

/// A principal pattern, repeated for every equivalent trust domain.
fn principal_variants(v: &str, cx: &CompileContext) -> Vec<StringMatch> {
    let domains: Vec<&str> = std::iter::once(cx.trust_domain.as_str())
        .chain(cx.trust_domain_aliases.iter().map(String::as_str))
        .collect();
    match v.split_once('/') {
        Some((td, rest)) if domains.contains(&td) => domains
            .iter()
            .map(|d| StringMatch::parse(&format!("{d}/{rest}")))
            .collect(),
        _ => vec![StringMatch::parse(v)],
    }
}

fn compile_operation(o: &Operation) -> Result<OperationMatch, String> {
    Ok(OperationMatch {
        hosts: Field::new(&o.hosts, &o.not_hosts, |v| {
            Ok::<_, String>(vec![HostMatch::parse(v)])
        })?,
        ports: Field::new(&o.ports, &o.not_ports, |v| port(v).map(|p| vec![p]))?,
        methods: Field::new(&o.methods, &o.not_methods, strings)?,
        paths: Field::new(&o.paths, &o.not_paths, |v| {
            PathMatch::parse(v).map(|p| vec![p])
        })?,
    })
}

fn compile_condition(c: &Condition, unsupported_matches: bool) -> Result<ConditionMatch, String> {
    let attribute = attribute(&c.key, unsupported_matches)?;
    let parse = |v: &str| -> Result<Vec<ValueMatch>, String> {
        Ok(vec![match attribute {
            Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
                ValueMatch::Ip(Cidr::parse(v)?)
            }
            Attribute::DestinationPort => ValueMatch::Port(port(v)?),
            _ => ValueMatch::String(StringMatch::parse(v)),
        }])
    };
    Ok(ConditionMatch {
        values: Field::new(&c.values, &c.not_values, parse)?,
        attribute,
    })
}

fn attribute(key: &str, unsupported_matches: bool) -> Result<Attribute, String> {
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(']'))
            .filter(|inner| !inner.is_empty())
    };
    Ok(match key {
        "source.ip" => Attribute::SourceIp,
        "remote.ip" => Attribute::RemoteIp,
        "destination.ip" => Attribute::DestinationIp,
        "destination.port" => Attribute::DestinationPort,
        "source.namespace" => Attribute::SourceNamespace,
        "source.principal" => Attribute::SourcePrincipal,
        "request.auth.principal" => Attribute::AuthPrincipal,
        "request.auth.audiences" => Attribute::AuthAudiences,
        "request.auth.presenter" => Attribute::AuthPresenter,
        "connection.sni" => Attribute::ConnectionSni,
        _ if key.starts_with("experimental.envoy.filters.") => {
            Attribute::Unsupported(unsupported_matches)
        }
        _ => {
            if let Some(name) = bracketed("request.headers[") {
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a header name"))?;
                Attribute::Header(header)
            } else if let Some(inner) = bracketed("request.auth.claims[") {
                // `a][b` for `claims[a][b]`.
                let path: Vec<String> = inner.split("][").map(str::to_owned).collect();
                if path.iter().any(|p| p.is_empty() || p.contains(['[', ']'])) {
                    return Err(format!("{key:?} is not request.auth.claims[a][b]..."));
                }
                Attribute::AuthClaim(path)
            } else {
                return Err(format!("unknown attribute {key:?}"));
            }
        }
    })
}
