//! Manifests: multi-document YAML (or JSON) text -> typed, validated resources, with errors
//! that name the file, the object and the field.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::resource::{Kind, PodRecord, Resource, ResourceKey};
use crate::validate;

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// Shared by every object of the file.
    pub file: Arc<Path>,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based YAML document index, when the problem is inside one document.
    pub document: Option<usize>,
    /// `Kind namespace/name` when the object could be identified.
    pub object: Option<String>,
    /// Path of the offending field, e.g. `spec.ports[0].port`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(d) = self.document {
            write!(f, " (document {d})")?;
        }
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A valid object read from a manifest.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub key: ResourceKey,
    pub resource: Arc<Resource>,
    pub origin: Origin,
}

/// Everything read from one file.
#[derive(Debug, Default)]
pub struct FileContents {
    /// Objects that parsed and validated.
    pub objects: Vec<Parsed>,
    /// Objects that were identified (kind and name) but are invalid: a previous good
    /// version of each stays in force.
    pub rejected: Vec<ResourceKey>,
    pub errors: Vec<ConfigError>,
    /// The file is not valid YAML at all: nothing in it can be trusted, so everything it
    /// held before stays in force.
    pub unreadable: bool,
}

/// Parses every document of `text` (the contents of `file`).
pub fn parse_file(file: &Path, text: &str) -> FileContents {
    let mut out = FileContents::default();
    let shared: Arc<Path> = Arc::from(file);
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: shared.clone(),
            document: index + 1,
        };
        let value = match Value::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                out.errors.push(ConfigError {
                    file: file.to_owned(),
                    document: Some(origin.document),
                    object: None,
                    field: None,
                    message: format!("not valid YAML: {e}"),
                });
                out.unreadable = true;
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        };
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        match parse_object(value, &origin) {
            Ok(parsed) => out.objects.push(parsed),
            Err((key, mut errors)) => {
                out.rejected.extend(key);
                out.errors.append(&mut errors);
            }
        }
    }
    out
}

type Rejection = (Option<ResourceKey>, Vec<ConfigError>);

fn parse_object(value: Value, origin: &Origin) -> Result<Parsed, Rejection> {
    let error = |object: Option<String>, field: Option<&str>, message: String| ConfigError {
        file: origin.file.to_path_buf(),
        document: Some(origin.document),
        object,
        field: field.map(str::to_owned),
        message,
    };
    let Some(map) = value.as_mapping() else {
        return Err((
            None,
            vec![error(
                None,
                None,
                "expected a Kubernetes object (a mapping with apiVersion, kind and metadata)"
                    .into(),
            )],
        ));
    };
    let text = |name: &str| map.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind_name)) = (text("apiVersion"), text("kind")) else {
        let missing = if text("apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        return Err((
            None,
            vec![error(None, Some(missing), "missing or not a string".into())],
        ));
    };
    let kind = match Kind::from_type(&api_version, &kind_name) {
        Ok(k) => k,
        Err(message) => {
            let name = metadata_text(map, "name").unwrap_or_default();
            return Err((
                None,
                vec![error(
                    Some(format!("{kind_name} {name}")),
                    Some("kind"),
                    message,
                )],
            ));
        }
    };
    let Some(name) = metadata_text(map, "name") else {
        return Err((
            None,
            vec![error(
                Some(kind.name().to_owned()),
                Some("metadata.name"),
                "required".into(),
            )],
        ));
    };
    let namespace = kind
        .namespaced()
        .then(|| metadata_text(map, "namespace").unwrap_or_else(|| "default".to_owned()));
    let key = ResourceKey::new(kind, namespace.as_deref(), &name);
    let object = Some(key.to_string());
    let mut resource = match typed(kind, &value) {
        Ok(r) => r,
        Err((field, message)) => {
            let field = (!field.is_empty() && field != ".").then_some(field);
            return Err((Some(key), vec![error(object, field.as_deref(), message)]));
        }
    };
    let problems = validate::resource(&resource);
    if !problems.is_empty() {
        let errors = problems
            .into_iter()
            .map(|p| error(object.clone(), Some(&p.field), p.message))
            .collect();
        return Err((Some(key), errors));
    }
    if let Some(ns) = &key.namespace {
        // Downstream code reads the namespace from the object: make the default explicit.
        resource.default_namespace(ns);
    }
    Ok(Parsed {
        key,
        resource: Arc::new(resource),
        origin: origin.clone(),
    })
}

fn metadata_text(map: &serde_yaml_ng::Mapping, field: &str) -> Option<String> {
    map.get("metadata")?
        .as_mapping()?
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

/// Deserializes `value` as `kind`; on failure, the path of the offending field and why.
fn typed(kind: Kind, value: &Value) -> Result<Resource, (String, String)> {
    // From a reference, so strings are copied at their length: taking the YAML parser's
    // buffers over would keep their spare capacity (about 2 KiB per pod) for as long as
    // the object lives.
    fn de<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize(value)
            .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))
    }
    Ok(match kind {
        Kind::Namespace => Resource::Namespace(Box::new(de(value)?)),
        Kind::Pod => Resource::Pod(Box::new(PodRecord::from(de::<
            k8s_openapi::api::core::v1::Pod,
        >(value)?))),
        Kind::Service => Resource::Service(Box::new(de(value)?)),
        Kind::ServiceAccount => Resource::ServiceAccount(Box::new(de(value)?)),
        Kind::PeerAuthentication => Resource::PeerAuthentication(Box::new(de(value)?)),
        Kind::AuthorizationPolicy => Resource::AuthorizationPolicy(Box::new(de(value)?)),
        Kind::RequestAuthentication => Resource::RequestAuthentication(Box::new(de(value)?)),
        Kind::VirtualService => Resource::VirtualService(Box::new(de(value)?)),
        Kind::DestinationRule => Resource::DestinationRule(Box::new(de(value)?)),
        Kind::Gateway => Resource::Gateway(Box::new(de(value)?)),
    })
}

#[cfg(test)]
mod tests;
