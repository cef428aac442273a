//! Connecting to a hub as a partner system.

use std::collections::HashMap;
use std::path::Path;

use tellonce_proto::v1::ingest_service_client::IngestServiceClient;
use tellonce_proto::v1::query_service_client::QueryServiceClient;
use tellonce_server::config::{dev_credentials_path, DevCredentials};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// An ingest client that presents a partner's token.
pub type Client = IngestServiceClient<InterceptedService<Channel, Bearer>>;

/// Normalises `127.0.0.1:50051` to `http://127.0.0.1:50051`.
pub fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Opens a connection to the hub at `addr`.
pub async fn connect(addr: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(url(addr))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .initial_stream_window_size(Some(4 * 1024 * 1024))
        .initial_connection_window_size(Some(8 * 1024 * 1024))
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the hub at {addr}: {e} (is `tellonce serve` running?)"))
}

/// An ingest client on `channel` presenting `token`.
pub fn ingest(channel: Channel, token: &str) -> Result<Client, String> {
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "the token contains characters not allowed in a header".to_string())?;
    Ok(
        IngestServiceClient::with_interceptor(channel, Bearer(value))
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024),
    )
}

/// A query client that presents a token.
pub type Query = QueryServiceClient<InterceptedService<Channel, Bearer>>;

/// A query client on `channel` presenting `token`.
pub fn query(channel: Channel, token: &str) -> Result<Query, String> {
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "the token contains characters not allowed in a header".to_string())?;
    Ok(QueryServiceClient::with_interceptor(channel, Bearer(value))
        .max_decoding_message_size(16 * 1024 * 1024))
}

/// Partner id to token, from a credentials file (`[[partners]]` with id and token), by default
/// the development credentials a dev hub writes in ./data (empty when there are none).
pub fn partner_tokens(credentials: Option<&Path>) -> Result<HashMap<String, String>, String> {
    let path = match credentials {
        Some(p) => p.to_path_buf(),
        None => {
            let dev = dev_credentials_path(Path::new("./data"));
            if !dev.exists() {
                return Ok(HashMap::new());
            }
            dev
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let creds: DevCredentials =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(creds
        .partners
        .into_iter()
        .map(|p| (p.id, p.token))
        .collect())
}

/// The token to query with: `--token`, else the first partner of the credentials file.
pub fn query_token(token: Option<&str>, credentials: Option<&Path>) -> Result<String, String> {
    if let Some(t) = token {
        return Ok(t.to_string());
    }
    let mut tokens: Vec<(String, String)> = partner_tokens(credentials)?.into_iter().collect();
    tokens.sort();
    tokens.into_iter().next().map(|(_, t)| t).ok_or_else(|| {
        "no credential: pass --token, or --credentials FILE, or run from the folder where `tellonce serve` wrote data/dev-credentials.toml".to_string()
    })
}
