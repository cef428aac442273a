//! Partner authentication: who is calling.
//!
//! Today a partner system presents a bearer token from the config file. The [`Authenticator`]
//! trait is the seam where mTLS (the client certificate's subject) or signed tokens will plug
//! in without touching the services.

use std::collections::HashMap;

use tonic::metadata::MetadataMap;
use tonic::Extensions;

use crate::config::PartnerConfig;

/// An authenticated partner system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    /// The partner id, which its events must carry as `source`.
    pub id: String,
}

/// Why a caller could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header.
    #[error("no credential: send the header `authorization: Bearer <token>`")]
    Missing,
    /// A header that is not a bearer token, or a token no partner holds.
    #[error("the credential was not recognised")]
    Invalid,
}

/// Decides which partner a request comes from.
pub trait Authenticator: Send + Sync + 'static {
    /// The partner presenting the credential in a request's `metadata` (headers) or
    /// `extensions` (where the transport puts, for example, the TLS peer certificates).
    fn partner(
        &self,
        metadata: &MetadataMap,
        extensions: &Extensions,
    ) -> Result<Partner, AuthError>;
}

/// Bearer tokens from the configuration.
#[derive(Debug, Default)]
pub struct StaticTokens {
    by_token: HashMap<String, Partner>,
}

impl StaticTokens {
    /// Trusts each configured partner's token.
    pub fn new(partners: &[PartnerConfig]) -> Self {
        StaticTokens {
            by_token: partners
                .iter()
                .map(|p| (p.token.clone(), Partner { id: p.id.clone() }))
                .collect(),
        }
    }
}

impl Authenticator for StaticTokens {
    fn partner(
        &self,
        metadata: &MetadataMap,
        _extensions: &Extensions,
    ) -> Result<Partner, AuthError> {
        let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
        let text = value.to_str().map_err(|_| AuthError::Invalid)?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or(AuthError::Invalid)?;
        self.by_token
            .get(token.trim())
            .cloned()
            .ok_or(AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> StaticTokens {
        StaticTokens::new(&[PartnerConfig {
            id: "police".into(),
            name: String::new(),
            token: "police-token-0123456789".into(),
        }])
    }

    fn with_header(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn bearer_tokens_map_to_partners() {
        let ext = Extensions::new();
        let t = tokens();
        assert_eq!(
            t.partner(&with_header("Bearer police-token-0123456789"), &ext),
            Ok(Partner {
                id: "police".into()
            })
        );
        assert_eq!(
            t.partner(&MetadataMap::new(), &ext),
            Err(AuthError::Missing)
        );
        assert_eq!(
            t.partner(&with_header("Basic police-token-0123456789"), &ext),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            t.partner(&with_header("Bearer police-token-012345678"), &ext),
            Err(AuthError::Invalid)
        );
    }
}
