//! Config problems: what the waypoint could not apply, naming the object and field.

use std::fmt;

/// A problem with one object of the config: `VirtualService bookinfo/reviews:
/// spec.http[0].match[0].uri.regex: invalid regex: ...`. The object is not applied
/// (its last good version stays in force, or it is left out when there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `KIND NAMESPACE/NAME`.
    pub object: String,
    /// The field path inside the object, as in validation errors (`spec.http[0].route`).
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(
        kind: &str,
        namespace: &str,
        name: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            object: format!("{kind} {namespace}/{name}"),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

impl std::error::Error for Problem {}
