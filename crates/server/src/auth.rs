//! Partner authentication: who is calling.
//!
//! Today a partner system presents a bearer token from the config file. The [`Authenticator`]
//! trait is the seam where mTLS (the client certificate's subject) or signed tokens will plug
//! in without touching the services.

use std::collections::HashMap;

use tonic::metadata::MetadataMap;

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
    /// The partner presenting `metadata`'s credential.
    fn partner(&self, metadata: &MetadataMap) -> Result<Partner, AuthError>;
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
    fn partner(&self, metadata: &MetadataMap) -> Result<Partner, AuthError> {
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
