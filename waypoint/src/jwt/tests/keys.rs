//! Signing keys generated per test run, and token minting.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

/// A private key with its public JWK.
pub(super) struct Key {
    signer: Signer,
    pub(super) jwk: Value,
}

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One RSA key per test binary: generation is slow.
fn rsa_pkcs8() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    static KEY: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let der = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
        (der, key.n().to_bytes_be(), key.e().to_bytes_be())
    })
}

impl Key {
    /// A fresh P-256 key.
    pub(super) fn es256(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        });
        Key {
            signer: Signer::Ec(pair),
            jwk,
        }
    }

    /// The test run's RSA key (RS256 and PS256).
    pub(super) fn rsa(kid: &str) -> Key {
        let (der, n, e) = rsa_pkcs8();
        let pair = RsaKeyPair::from_pkcs8(der).unwrap();
        let jwk = json!({"kty": "RSA", "kid": kid, "n": b64(n), "e": b64(e)});
        Key {
            signer: Signer::Rsa(pair),
            jwk,
        }
    }

    fn alg(&self, pss: bool) -> &'static str {
        match (&self.signer, pss) {
            (Signer::Ec(_), _) => "ES256",
            (Signer::Rsa(_), false) => "RS256",
            (Signer::Rsa(_), true) => "PS256",
        }
    }

    /// A token for `claims`, with this key's `alg` and `kid`.
    pub(super) fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(false), "kid": self.jwk["kid"], "typ": "JWT"});
        self.sign_raw(&header, claims)
    }

    /// A PS256 token (RSA keys only).
    pub(super) fn sign_pss(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(true), "kid": self.jwk["kid"]});
        self.sign_raw(&header, claims)
    }

    /// A token with the given header, signed with this key's algorithm family.
    pub(super) fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.signer {
            Signer::Ec(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let pss = header["alg"] == "PS256";
                let padding: &dyn signature::RsaEncoding = if pss {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
        };
        format!("{input}.{}", b64(&sig))
    }
}

/// A JWKS document with `keys`.
pub(super) fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Claims from `https://issuer.example` for `alice`, valid for an hour.
pub(super) fn claims() -> Value {
    json!({
        "iss": "https://issuer.example",
        "sub": "alice",
        "aud": ["reviews", "https://ratings.example/"],
        "azp": "web-app",
        "exp": now() + 3600,
        "iat": now(),
        "team": "blue",
        "level": 3,
        "org": {"unit": "eng"},
        "groups": ["admins", "dev"],
    })
}
