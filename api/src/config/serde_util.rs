//! Small serde helpers: `skip_serializing_if` predicates, maps keyed by
//! port number, and string lists that refuse YAML numbers.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

pub(crate) fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

pub(crate) fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

/// A map whose keys are port numbers: YAML writes them as integers
/// (`8080:`), JSON (and quoted YAML) as strings (`"8080":`). Both are read;
/// the range is checked by validation, not here.
pub(crate) fn port_keyed_map<'de, D, V>(d: D) -> Result<BTreeMap<u32, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    d.deserialize_map(PortMapVisitor(PhantomData))
}

struct PortMapVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for PortMapVisitor<V> {
    type Value = BTreeMap<u32, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map from port numbers")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((PortKey(port), value)) = map.next_entry::<PortKey, V>()? {
            if out.insert(port, value).is_some() {
                return Err(de::Error::custom(format_args!("duplicate port key {port}")));
            }
        }
        Ok(out)
    }
}

struct PortKey(u32);

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PortKeyVisitor)
    }
}

struct PortKeyVisitor;

impl Visitor<'_> for PortKeyVisitor {
    type Value = PortKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortKey, E> {
        u32::try_from(v)
            .map(PortKey)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortKey, E> {
        u32::try_from(v)
            .map(PortKey)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PortKey, E> {
        if !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
            && let Ok(port) = v.parse()
        {
            return Ok(PortKey(port));
        }
        Err(E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// A list of strings where the schema says strings even though the values
/// look like numbers (AuthorizationPolicy `ports: ["8080"]`). YAML readers
/// would turn a plain `8080` into the string "8080"; like the Kubernetes API
/// server, this refuses it, so manifests stay valid for both.
pub(crate) fn strict_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(StrictStringsVisitor)
}

struct StrictStringsVisitor;

impl<'de> Visitor<'de> for StrictStringsVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictString(s)) = seq.next_element()? {
            out.push(s);
        }
        Ok(out)
    }
}

struct StrictString(String);

impl<'de> Deserialize<'de> for StrictString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictStringVisitor)
    }
}

struct StrictStringVisitor;

impl Visitor<'_> for StrictStringVisitor {
    type Value = StrictString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string (quote numbers, e.g. \"8080\")")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrictString, E> {
        Ok(StrictString(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<StrictString, E> {
        Ok(StrictString(v))
    }
}
