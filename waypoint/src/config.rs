//! The L7 config in force: the objects from xDS compiled into the structures each request
//! stage reads ([`L7Config`]), swapped atomically. Each object is compiled on its own: one
//! that does not compile is reported (naming the object and field) and its last good
//! version stays in force, or it is left out if it never compiled. Unchanged objects are
//! not compiled again.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tracing::warn;

use crate::problem::Problem;
use crate::xds::{L7Object, L7Objects};
use crate::{authz, jwt, route, upstream};

/// Settings of the compilers.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    pub domain_suffix: String,
    pub trust_domain: String,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            domain_suffix: "cluster.local".to_owned(),
            trust_domain: hbone::DEFAULT_TRUST_DOMAIN.to_owned(),
        }
    }
}

/// What every request reads, built once per accepted xDS update.
#[derive(Debug)]
pub struct L7Config {
    pub routes: route::RouteTable,
    pub destination_rules: upstream::DestinationRules,
    pub policies: authz::Policies,
    pub authenticator: jwt::Authenticator,
    /// Why objects are not (or not entirely) in force, and what they ask that the
    /// waypoint does not do (warnings).
    pub problems: Vec<Problem>,
}

impl L7Config {
    /// No VirtualServices, DestinationRules or policies.
    pub fn empty(keys: Arc<jwt::JwksCache>) -> Self {
        L7Config {
            routes: route::RouteTable::new(Vec::new()),
            destination_rules: upstream::DestinationRules::default(),
            policies: authz::Policies::new(Vec::new()),
            authenticator: jwt::Authenticator::new(Vec::new(), keys),
            problems: Vec::new(),
        }
    }
}

/// One object compiled.
#[derive(Debug, Clone)]
enum Compiled {
    VirtualService(Arc<route::CompiledVirtualService>),
    DestinationRule(Arc<upstream::CompiledDestinationRule>),
    AuthorizationPolicy(Arc<authz::CompiledPolicy>),
    RequestAuthentication(Arc<jwt::CompiledRequestAuthentication>),
}

/// The last object received under a name and what is in force for it.
#[derive(Debug)]
struct Entry {
    received: Arc<L7Object>,
    /// The last version that compiled.
    good: Option<Compiled>,
    problems: Vec<Problem>,
}

/// Compiles updates into [`L7Config`]s and publishes them.
#[derive(Debug)]
pub struct ConfigStore {
    options: CompileOptions,
    keys: Arc<jwt::JwksCache>,
    entries: std::sync::Mutex<BTreeMap<String, Entry>>,
    current: RwLock<Arc<L7Config>>,
}

impl ConfigStore {
    /// `keys`: the JWKS cache remote key sets are fetched into.
    pub fn new(options: CompileOptions, keys: Arc<jwt::JwksCache>) -> Self {
        ConfigStore {
            current: RwLock::new(Arc::new(L7Config::empty(keys.clone()))),
            options,
            keys,
            entries: std::sync::Mutex::default(),
        }
    }

    /// The config in force.
    pub fn current(&self) -> Arc<L7Config> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies the whole set of objects now held (from xDS) and publishes the result.
    pub fn update(&self, objects: L7Objects) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|name, _| objects.contains_key(name));
        for (name, object) in objects {
            match entries.get_mut(&name) {
                Some(entry) if Arc::ptr_eq(&entry.received, &object) => {}
                Some(entry) => {
                    let (good, problems) = self.compile(&object);
                    entry.received = object;
                    entry.problems = problems;
                    if good.is_some() {
                        entry.good = good;
                    } else if entry.good.is_some() {
                        warn!(object = %name, "the new version does not compile; the last good one stays in force");
                    }
                }
                None => {
                    let (good, problems) = self.compile(&object);
                    entries.insert(
                        name,
                        Entry {
                            received: object,
                            good,
                            problems,
                        },
                    );
                }
            }
        }
        let config = self.build(&entries);
        for problem in &config.problems {
            warn!(%problem, "waypoint config problem");
        }
        config.authenticator.prefetch();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// The compiled object (`None` if it does not compile) and its problems (errors or
    /// warnings).
    fn compile(&self, object: &L7Object) -> (Option<Compiled>, Vec<Problem>) {
        let o = &self.options;
        match object {
            L7Object::VirtualService(vs) => {
                let cx = route::CompileContext {
                    domain_suffix: o.domain_suffix.clone(),
                };
                match route::compile(vs, &cx) {
                    Ok(c) => {
                        let warnings = c.warnings.clone();
                        (Some(Compiled::VirtualService(Arc::new(c))), warnings)
                    }
                    Err(problems) => (None, problems),
                }
            }
            L7Object::DestinationRule(dr) => {
                let cx = upstream::CompileContext {
                    domain_suffix: o.domain_suffix.clone(),
                };
                match upstream::compile(dr, &cx) {
                    Ok(c) => (Some(Compiled::DestinationRule(Arc::new(c))), Vec::new()),
                    Err(problems) => (None, problems),
                }
            }
            L7Object::AuthorizationPolicy(p) => {
                let cx = authz::CompileContext {
                    trust_domain: o.trust_domain.clone(),
                    ..authz::CompileContext::default()
                };
                match authz::compile(p, &cx) {
                    Ok(c) => {
                        let warnings = c.warnings().to_vec();
                        (Some(Compiled::AuthorizationPolicy(Arc::new(c))), warnings)
                    }
                    Err(problems) => (None, problems),
                }
            }
            L7Object::RequestAuthentication(r) => {
                match jwt::compile(r, &jwt::CompileContext::default()) {
                    Ok(c) => (
                        Some(Compiled::RequestAuthentication(Arc::new(c))),
                        Vec::new(),
                    ),
                    Err(problems) => (None, problems),
                }
            }
        }
    }

    fn build(&self, entries: &BTreeMap<String, Entry>) -> L7Config {
        let (mut vs, mut dr, mut ap, mut ra) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut problems = Vec::new();
        for entry in entries.values() {
            problems.extend(entry.problems.iter().cloned());
            match entry.good.clone() {
                Some(Compiled::VirtualService(c)) => vs.push(c),
                Some(Compiled::DestinationRule(c)) => dr.push(c),
                Some(Compiled::AuthorizationPolicy(c)) => ap.push(c),
                Some(Compiled::RequestAuthentication(c)) => ra.push(c),
                None => {}
            }
        }
        L7Config {
            routes: route::RouteTable::new(vs),
            destination_rules: upstream::DestinationRules::new(dr),
            policies: authz::Policies::new(ap),
            authenticator: jwt::Authenticator::new(ra, self.keys.clone()),
            problems,
        }
    }
}
