//! Authentication: who is calling, for which organisation, in which roles.
//!
//! Partner systems present a bearer token from the config file: they publish events and record
//! consents, and cannot read families. People (practitioners, safeguarding leads, auditors, the
//! data protection officer) present a JWT signed by the partnership's identity provider,
//! verified against the configured public key ([`crate::jwt`]); static practitioner tokens from
//! the config stand in for one during development. The [`Authenticator`] trait is the seam
//! where mTLS would plug in without touching the services.

use std::collections::HashMap;

use tellonce_domain::access::{Role, Viewer};
use tonic::metadata::MetadataMap;
use tonic::Extensions;

use crate::config::{Config, PartnerConfig, PractitionerConfig};
use crate::ingest::Clock;
use crate::jwt::{self, JwtError, Verifier};
use crate::ServerError;

/// What kind of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// A partner system: publishes, records consent; never reads families.
    System,
    /// A person, with roles.
    Person,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The partner id (a system) or user id (a person).
    pub id: String,
    /// The organisation: a partner id (a system's own id).
    pub organisation: String,
    /// A person's roles (none for a system).
    pub roles: Vec<Role>,
    /// System or person.
    pub kind: CallerKind,
}

impl Caller {
    /// A partner system.
    pub fn system(id: &str) -> Caller {
        Caller {
            id: id.to_string(),
            organisation: id.to_string(),
            roles: Vec::new(),
            kind: CallerKind::System,
        }
    }

    /// The caller as the access rule sees them.
    pub fn viewer(&self) -> Viewer {
        Viewer {
            user_id: self.id.clone(),
            organisation: self.organisation.clone(),
            roles: self.roles.clone(),
        }
    }

    /// Whether the caller is a person holding any of `roles`.
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.kind == CallerKind::Person && self.roles.iter().any(|r| roles.contains(r))
    }
}

/// Why a caller could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header.
    #[error("no credential: send the header `authorization: Bearer <token>`")]
    Missing,
    /// A header that is not a bearer token, or a token no one holds.
    #[error("the credential was not recognised")]
    Invalid,
    /// A JWT that does not verify.
    #[error(transparent)]
    Token(#[from] JwtError),
}

/// Decides who a request comes from.
pub trait Authenticator: Send + Sync + 'static {
    /// The caller presenting the credential in a request's `metadata` (headers) or
    /// `extensions` (where the transport puts, for example, the TLS peer certificates).
    fn caller(&self, metadata: &MetadataMap, extensions: &Extensions) -> Result<Caller, AuthError>;
}

fn bearer(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
    let text = value.to_str().map_err(|_| AuthError::Invalid)?;
    text.strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(AuthError::Invalid)
}

fn roles(names: &[String]) -> Vec<Role> {
    names.iter().filter_map(|n| Role::parse(n)).collect()
}

/// Static bearer tokens from the configuration, and JWTs when an identity provider is set.
pub struct Tokens {
    by_token: HashMap<String, Caller>,
    jwt: Option<(Verifier, Clock)>,
}

impl Tokens {
    /// Trusts each configured partner's and practitioner's token.
    pub fn new(partners: &[PartnerConfig], practitioners: &[PractitionerConfig]) -> Self {
        let mut by_token: HashMap<String, Caller> = partners
            .iter()
            .map(|p| (p.token.clone(), Caller::system(&p.id)))
            .collect();
        for p in practitioners {
            by_token.insert(
                p.token.clone(),
                Caller {
                    id: p.user_id.clone(),
                    organisation: p.organisation.clone(),
                    roles: roles(&p.roles),
                    kind: CallerKind::Person,
                },
            );
        }
        Tokens {
            by_token,
            jwt: None,
        }
    }

    /// Also accepts JWTs that `verifier` accepts at the time `clock` gives.
    pub fn with_jwt(mut self, verifier: Verifier, clock: Clock) -> Self {
        self.jwt = Some((verifier, clock));
        self
    }

    /// The authenticator a configuration describes.
    pub fn from_config(config: &Config, clock: Clock) -> Result<Self, ServerError> {
        let tokens = Tokens::new(&config.partners, &config.practitioners);
        let Some(j) = &config.auth.jwt else {
            return Ok(tokens);
        };
        let text = match (&j.public_key_pem, &j.public_key_file) {
            (Some(pem), _) => pem.clone(),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                ServerError::Config(format!("auth.jwt.public_key_file {}: {e}", path.display()))
            })?,
            (None, None) => {
                return Err(ServerError::Config(
                    "auth.jwt needs public_key_pem or public_key_file".into(),
                ))
            }
        };
        let key = jwt::public_key_from_pem(&text)
            .map_err(|e| ServerError::Config(format!("auth.jwt: {e}")))?;
        Ok(tokens.with_jwt(
            Verifier::new(key, &j.issuer, &j.audience, j.leeway_s),
            clock,
        ))
    }
}

impl Authenticator for Tokens {
    fn caller(
        &self,
        metadata: &MetadataMap,
        _extensions: &Extensions,
    ) -> Result<Caller, AuthError> {
        let token = bearer(metadata)?;
        if let Some(c) = self.by_token.get(token) {
            return Ok(c.clone());
        }
        match &self.jwt {
            Some((verifier, clock)) if token.matches('.').count() == 2 => {
                let claims = verifier.verify(token, clock().0)?;
                Ok(Caller {
                    id: claims.sub,
                    organisation: claims.org,
                    roles: roles(&claims.roles),
                    kind: CallerKind::Person,
                })
            }
            _ => Err(AuthError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tellonce_domain::Timestamp;

    use super::*;
    use crate::jwt::{keypair_pem, mint, public_key_from_pem, signing_key_from_pem, Claims};

    fn tokens() -> Tokens {
        Tokens::new(
            &[PartnerConfig {
                id: "police".into(),
                name: String::new(),
                token: "police-token-0123456789".into(),
            }],
            &[PractitionerConfig {
                user_id: "pc-1".into(),
                organisation: "police".into(),
                roles: vec!["practitioner".into(), "safeguarding_lead".into()],
                name: String::new(),
                token: "pc-1-token-0123456789".into(),
            }],
        )
    }

    fn with_header(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn bearer_tokens_map_to_callers() {
        let ext = Extensions::new();
        let t = tokens();
        assert_eq!(
            t.caller(&with_header("Bearer police-token-0123456789"), &ext),
            Ok(Caller::system("police"))
        );
        let pc = t
            .caller(&with_header("Bearer pc-1-token-0123456789"), &ext)
            .unwrap();
        assert_eq!(pc.kind, CallerKind::Person);
        assert_eq!(pc.roles, vec![Role::Practitioner, Role::SafeguardingLead]);
        assert_eq!(t.caller(&MetadataMap::new(), &ext), Err(AuthError::Missing));
        assert_eq!(
            t.caller(&with_header("Basic police-token-0123456789"), &ext),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            t.caller(&with_header("Bearer police-token-012345678"), &ext),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn jwts_verify_into_people_with_roles() {
        let (private, public) = keypair_pem([3; 32]);
        let key = signing_key_from_pem(&private).unwrap();
        let clock: Clock = Arc::new(|| Timestamp(1_800_000_000_000));
        let t = tokens().with_jwt(
            Verifier::new(public_key_from_pem(&public).unwrap(), "idp", "tellonce", 0),
            clock,
        );
        let token = mint(
            &key,
            &Claims {
                sub: "dpo-1".into(),
                org: "childrens-trust".into(),
                roles: vec!["dpo".into(), "something-else".into()],
                name: String::new(),
                iss: "idp".into(),
                aud: "tellonce".into(),
                exp: 1_800_000_100,
                nbf: None,
                iat: None,
            },
        );
        let c = t
            .caller(&with_header(&format!("Bearer {token}")), &Extensions::new())
            .unwrap();
        assert_eq!(c.id, "dpo-1");
        assert_eq!(c.roles, vec![Role::Dpo]);
        let tampered = format!("Bearer {token}x");
        assert!(matches!(
            t.caller(&with_header(&tampered), &Extensions::new()),
            Err(AuthError::Token(_))
        ));
    }
}
