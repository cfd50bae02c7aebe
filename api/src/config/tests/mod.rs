//! Tests of `api::config`: realistic manifests parse and round-trip through
//! YAML and JSON, unknown fields are rejected, every validation rule has a
//! failing and a passing case, and the duration parser.

use std::fmt::Debug;

use super::{FieldError, Resource};

mod common;
mod destination_rule;
mod duration;
mod gateway;
mod security;
mod virtual_service;
mod virtual_service_http;

/// Parses a whole manifest, panicking with the document on failure.
#[track_caller]
fn parse<T: Resource>(yaml: &str) -> T {
    match serde_yaml_ng::from_str(yaml) {
        Ok(v) => v,
        Err(e) => panic!("parse failed: {e}\n{yaml}"),
    }
}

/// Removes the indentation common to all non-blank lines, so specs can be
/// written indented inside raw strings.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A manifest named `test` in namespace `ns` with this spec.
#[track_caller]
fn with_spec<T: Resource>(spec: &str) -> T {
    let mut doc = String::from("metadata:\n  name: test\n  namespace: ns\nspec:\n");
    for line in dedent(spec).lines() {
        doc.push_str("  ");
        doc.push_str(line);
        doc.push('\n');
    }
    parse(&doc)
}

/// The spec is valid; returns the parsed resource.
#[track_caller]
fn assert_valid<T: Resource>(spec: &str) -> T {
    let resource: T = with_spec(spec);
    let errs = resource.validate();
    assert!(
        errs.is_empty(),
        "expected no errors for\n{spec}\ngot: {errs:#?}"
    );
    resource
}

/// Validating the spec reports an error at `field` whose message contains
/// `needle`.
#[track_caller]
fn assert_invalid<T: Resource>(spec: &str, field: &str, needle: &str) {
    let errs = with_spec::<T>(spec).validate();
    assert_has_error(&errs, field, needle);
}

#[track_caller]
fn assert_has_error(errs: &[FieldError], field: &str, needle: &str) {
    assert!(
        errs.iter()
            .any(|e| e.field == field && e.message.contains(needle)),
        "expected an error at {field:?} containing {needle:?}, got: {errs:#?}"
    );
}

/// Serializing and parsing again (YAML and JSON) gives the same value.
#[track_caller]
fn round_trip<T: Resource + PartialEq + Debug>(value: &T) {
    let yaml = serde_yaml_ng::to_string(value).expect("to YAML");
    let back: T = serde_yaml_ng::from_str(&yaml).expect("from YAML");
    assert_eq!(&back, value, "YAML round trip changed the value:\n{yaml}");
    let json = serde_json::to_string(value).expect("to JSON");
    let back: T = serde_json::from_str(&json).expect("from JSON");
    assert_eq!(&back, value, "JSON round trip changed the value:\n{json}");
}

/// Parsing the spec fails with serde's unknown-field error naming `field`.
#[track_caller]
fn assert_unknown_field<T: Resource + Debug>(spec: &str, field: &str) {
    let doc = format!("metadata:\n  name: test\nspec:\n{}", indent(&dedent(spec)));
    let err = serde_yaml_ng::from_str::<T>(&doc).expect_err("unknown field must be rejected");
    let msg = err.to_string();
    assert!(
        msg.contains("unknown field") && msg.contains(&format!("`{field}`")),
        "expected an unknown-field error naming `{field}`, got: {msg}"
    );
}

/// Parsing the spec fails (a type or enum error); the message contains `needle`.
#[track_caller]
fn assert_parse_error<T: Resource + Debug>(spec: &str, needle: &str) {
    let doc = format!("metadata:\n  name: test\nspec:\n{}", indent(&dedent(spec)));
    let err = serde_yaml_ng::from_str::<T>(&doc).expect_err("must not parse");
    let msg = err.to_string();
    assert!(
        msg.contains(needle),
        "expected a parse error containing {needle:?}, got: {msg}"
    );
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
