//! `headers.request` / `headers.response` operations.

use http::{HeaderMap, HeaderName, HeaderValue};

use api::config::virtual_service::HeaderOperations;

use super::compile::Problems;

/// Compiled header operations: removals, then overwrites (`set`), then appends (`add`).
/// Values are literal (Envoy's `%VAR%` substitutions are not interpreted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// `set`: replace every value of the header with this one.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// `add`: append a value, keeping existing ones.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// `remove`.
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// Applies the operations to `headers`: remove, then set, then add.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Compiles `ops` (at `path`, e.g. `spec.http[0].headers.request`). `:authority` in
    /// `set` is not a header operation: the caller takes it out first and treats it as an
    /// authority rewrite.
    pub(super) fn compile(
        ops: Option<&HeaderOperations>,
        p: &mut Problems,
        path: &str,
    ) -> HeaderOps {
        let mut out = HeaderOps::default();
        let Some(ops) = ops else { return out };
        let mut pair = |op: &str, name: &str, value: &str| {
            let at = format!("{path}.{op}[{name}]");
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes());
            let value = HeaderValue::from_str(value);
            match (name, value) {
                (Ok(n), Ok(v)) => Some((n, v)),
                (Err(e), _) => p.add(at, format!("invalid header name: {e}")),
                (_, Err(e)) => p.add(at, format!("invalid header value: {e}")),
            }
        };
        for (name, value) in &ops.set {
            if name != ":authority"
                && let Some(kv) = pair("set", name, value)
            {
                out.set.push(kv);
            }
        }
        for (name, value) in &ops.add {
            if let Some(kv) = pair("add", name, value) {
                out.add.push(kv);
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                Ok(n) => out.remove.push(n),
                Err(e) => {
                    p.add::<()>(
                        format!("{path}.remove[{i}]"),
                        format!("invalid header name: {e}"),
                    );
                }
            }
        }
        out
    }
}
