//! Practitioner identities as JWTs signed by the partnership's identity provider (EdDSA,
//! Ed25519), and the key files that go with them.
//!
//! The hub only verifies: the signature against the configured public key, the algorithm
//! (`EdDSA` only: `none` and every other algorithm are refused), the issuer, the audience and
//! the validity period. `tellonce keygen` and `tellonce token` use [`keypair_pem`] and [`mint`]
//! to stand in for an identity provider in development and tests.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The DER prefix of an Ed25519 public key in SubjectPublicKeyInfo form (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The DER prefix of an Ed25519 private key in PKCS#8 form (RFC 8410).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a token or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts, or undecodable JSON.
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    /// An algorithm other than EdDSA.
    #[error("the token's algorithm {0:?} is not accepted (only EdDSA)")]
    Algorithm(String),
    /// The signature does not verify.
    #[error("the token's signature does not verify against the configured key")]
    Signature,
    /// Wrong issuer or audience, expired or not yet valid.
    #[error("the token is not valid here: {0}")]
    Claims(String),
    /// A key file that is not an Ed25519 key in PEM.
    #[error("not an Ed25519 {0} key in PEM form")]
    Key(&'static str),
}

/// The claims the hub reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's organisation: a partner id.
    pub org: String,
    /// Role names: practitioner, safeguarding_lead, auditor, dpo, admin.
    #[serde(default)]
    pub roles: Vec<String>,
    /// A display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = pem[start..].find(&end)? + start;
    let b64: String = pem[start..stop].split_whitespace().collect();
    STANDARD.decode(b64).ok()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads an Ed25519 public key from PEM (`BEGIN PUBLIC KEY`, SubjectPublicKeyInfo).
pub fn public_key_from_pem(text: &str) -> Result<VerifyingKey, JwtError> {
    let der = pem_body(text, "PUBLIC KEY").ok_or(JwtError::Key("public"))?;
    let raw: [u8; 32] = der
        .strip_prefix(&SPKI_PREFIX[..])
        .and_then(|k| k.try_into().ok())
        .ok_or(JwtError::Key("public"))?;
    VerifyingKey::from_bytes(&raw).map_err(|_| JwtError::Key("public"))
}

/// Reads an Ed25519 private key from PEM (`BEGIN PRIVATE KEY`, PKCS#8).
pub fn signing_key_from_pem(text: &str) -> Result<SigningKey, JwtError> {
    let der = pem_body(text, "PRIVATE KEY").ok_or(JwtError::Key("private"))?;
    let raw: [u8; 32] = der
        .strip_prefix(&PKCS8_PREFIX[..])
        .and_then(|k| k.try_into().ok())
        .ok_or(JwtError::Key("private"))?;
    Ok(SigningKey::from_bytes(&raw))
}

/// A key pair from a 32-byte secret, as (private PEM, public PEM).
pub fn keypair_pem(secret: [u8; 32]) -> (String, String) {
    let key = SigningKey::from_bytes(&secret);
    let mut private = PKCS8_PREFIX.to_vec();
    private.extend_from_slice(&secret);
    let mut public = SPKI_PREFIX.to_vec();
    public.extend_from_slice(key.verifying_key().as_bytes());
    (pem("PRIVATE KEY", &private), pem("PUBLIC KEY", &public))
}

/// Signs `claims` into a compact JWT.
pub fn mint(key: &SigningKey, claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    // Serialising plain claims cannot fail.
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{body}");
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// Verifies tokens from one identity provider.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: VerifyingKey,
    issuer: String,
    audience: String,
    leeway_s: i64,
}

impl Verifier {
    /// Trusts tokens signed by `key`, issued by `issuer` for `audience`, allowing `leeway_s`
    /// seconds of clock difference.
    pub fn new(key: VerifyingKey, issuer: &str, audience: &str, leeway_s: i64) -> Self {
        Verifier {
            key,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway_s,
        }
    }

    /// The claims of `token` if it verifies at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed(
                "expected header.payload.signature".into(),
            ));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| JwtError::Malformed(format!("{what} is not base64url")))
        };
        let header: Header = serde_json::from_slice(&decode(h, "header")?)
            .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
        if header.alg != "EdDSA" {
            return Err(JwtError::Algorithm(header.alg));
        }
        let sig: [u8; 64] = decode(s, "signature")?
            .try_into()
            .map_err(|_| JwtError::Signature)?;
        self.key
            .verify_strict(format!("{h}.{b}").as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| JwtError::Signature)?;
        let claims: Claims = serde_json::from_slice(&decode(b, "payload")?)
            .map_err(|e| JwtError::Malformed(format!("claims: {e}")))?;
        let now = now_ms.div_euclid(1000);
        if claims.iss != self.issuer {
            return Err(JwtError::Claims(format!(
                "issuer {:?} is not {:?}",
                claims.iss, self.issuer
            )));
        }
        if claims.aud != self.audience {
            return Err(JwtError::Claims(format!(
                "audience {:?} is not {:?}",
                claims.aud, self.audience
            )));
        }
        if claims.exp + self.leeway_s <= now {
            return Err(JwtError::Claims("expired".into()));
        }
        if claims.nbf.is_some_and(|n| n - self.leeway_s > now) {
            return Err(JwtError::Claims("not valid yet".into()));
        }
        if claims.sub.is_empty() || claims.org.is_empty() {
            return Err(JwtError::Claims("sub and org are required".into()));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "u-1".into(),
            org: "school-001".into(),
            roles: vec!["practitioner".into()],
            name: String::new(),
            iss: "idp".into(),
            aud: "tellonce".into(),
            exp,
            nbf: None,
            iat: None,
        }
    }

    #[test]
    fn tokens_verify_only_with_the_right_key_claims_and_algorithm() {
        let (private, public) = keypair_pem([7; 32]);
        let key = signing_key_from_pem(&private).unwrap();
        let v = Verifier::new(public_key_from_pem(&public).unwrap(), "idp", "tellonce", 60);
        let now = 1_800_000_000_000;
        let good = mint(&key, &claims(1_800_000_600));
        assert_eq!(v.verify(&good, now).unwrap().sub, "u-1");
        // Expired (beyond the leeway).
        let old = mint(&key, &claims(1_800_000_000 - 61));
        assert!(matches!(v.verify(&old, now), Err(JwtError::Claims(_))));
        // Another key.
        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(
            v.verify(&mint(&other, &claims(1_800_000_600)), now),
            Err(JwtError::Signature)
        );
        // A changed payload.
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                org: "police".into(),
                ..claims(1_800_000_600)
            })
            .unwrap(),
        );
        parts[1] = &forged;
        assert_eq!(v.verify(&parts.join("."), now), Err(JwtError::Signature));
        // alg none.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            good.split('.').nth(1).unwrap()
        );
        assert_eq!(
            v.verify(&none, now),
            Err(JwtError::Algorithm("none".into()))
        );
        // Wrong audience or issuer.
        let aud = mint(
            &key,
            &Claims {
                aud: "other".into(),
                ..claims(1_800_000_600)
            },
        );
        assert!(matches!(v.verify(&aud, now), Err(JwtError::Claims(_))));
        assert!(matches!(v.verify("a.b", now), Err(JwtError::Malformed(_))));
    }
}
