//! JSON Web Key Sets: parsing the public keys (RSA, EC P-256 / P-384, Ed25519) and
//! verifying JWS signatures with them (ring).

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

use super::token::{Algorithm, b64url_decode};

/// A public key of a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`, when the key has one.
    pub kid: Option<String>,
    /// `alg`, when the key restricts itself to one algorithm.
    pub alg: Option<Algorithm>,
    key: PublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed point (`04 || x || y`).
    EcP256(Vec<u8>),
    EcP384(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// The usable signing keys of a JWKS document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySet {
    /// The keys, in document order.
    pub keys: Vec<Jwk>,
}

impl KeySet {
    /// Parses a JWKS (`{"keys": [...]}`). Keys of other types, curves or uses
    /// (`use: enc`) are skipped; a set without any usable key is an error.
    pub fn parse(doc: &str) -> Result<KeySet, String> {
        let value: Value =
            serde_json::from_str(doc).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
        let Some(Value::Array(keys)) = value.get("keys") else {
            return Err("JWKS has no \"keys\" array".into());
        };
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match Jwk::parse(key) {
                Ok(Some(jwk)) => set.keys.push(jwk),
                Ok(None) => {}
                Err(e) => skipped.push(format!("keys[{i}]: {e}")),
            }
        }
        if set.keys.is_empty() {
            let why = if skipped.is_empty() {
                "no RSA, EC (P-256, P-384) or Ed25519 signing key".to_owned()
            } else {
                skipped.join("; ")
            };
            return Err(format!("JWKS has no usable key: {why}"));
        }
        Ok(set)
    }

    /// The keys a token signed with `alg` may be verified with: when the token names a
    /// `kid`, keys with another `kid` are left out (keys without one stay in).
    pub fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| {
            k.accepts(alg) && kid.is_none_or(|kid| k.kid.as_deref().is_none_or(|k| k == kid))
        })
    }
}

impl Jwk {
    /// `Ok(None)` for a key of a type this verifier does not use.
    fn parse(key: &Value) -> Result<Option<Jwk>, String> {
        let field = |name: &str| key.get(name).and_then(Value::as_str);
        let bytes = |name: &str| {
            field(name)
                .ok_or_else(|| format!("missing \"{name}\""))
                .and_then(|v| b64url_decode(v).map_err(|e| format!("\"{name}\": {e}")))
        };
        if field("use").is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let alg = match field("alg") {
            None => None,
            Some(alg) => match Algorithm::parse(alg) {
                Ok(alg) => Some(alg),
                Err(_) => return Ok(None),
            },
        };
        let key = match (field("kty"), field("crv")) {
            (Some("RSA"), _) => PublicKey::Rsa {
                n: bytes("n")?,
                e: bytes("e")?,
            },
            (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                let len = if crv == "P-256" { 32 } else { 48 };
                if x.len() != len || y.len() != len {
                    return Err(format!("{crv} coordinates must be {len} bytes"));
                }
                let mut point = vec![4u8];
                point.extend(x);
                point.extend(y);
                if crv == "P-256" {
                    PublicKey::EcP256(point)
                } else {
                    PublicKey::EcP384(point)
                }
            }
            (Some("OKP"), Some("Ed25519")) => PublicKey::Ed25519(bytes("x")?),
            _ => return Ok(None),
        };
        Ok(Some(Jwk {
            kid: field("kid").map(str::to_owned),
            alg,
            key,
        }))
    }

    /// Whether this key can verify `alg` signatures.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        use Algorithm::*;
        matches!(
            (&self.key, alg),
            (
                PublicKey::Rsa { .. },
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512
            ) | (PublicKey::EcP256(_), ES256)
                | (PublicKey::EcP384(_), ES384)
                | (PublicKey::Ed25519(_), EdDSA)
        )
    }

    /// Whether `signature` is this key's `alg` signature of `message`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        use Algorithm::*;
        match &self.key {
            PublicKey::Rsa { n, e } => {
                let params = match alg {
                    RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, signature)
                    .is_ok()
            }
            PublicKey::EcP256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            PublicKey::EcP384(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            PublicKey::Ed25519(key) => UnparsedPublicKey::new(&signature::ED25519, key)
                .verify(message, signature)
                .is_ok(),
        }
    }
}
