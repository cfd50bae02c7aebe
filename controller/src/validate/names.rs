//! IANA service (port) names; the other Kubernetes name rules live in `api::config`.

/// An IANA service name: 1-15 of `[a-z0-9-]`, at least one letter, no leading, trailing
/// or double '-' (named container and service ports).
pub fn port_name(s: &str) -> Result<(), String> {
    let ok = (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err("a port name is 1-15 lower-case letters, digits and single '-', with at least one letter".into())
    }
}
