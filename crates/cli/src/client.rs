//! Connecting to a hub as a partner system or a person, with the credentials to do so.

use std::collections::HashMap;
use std::path::Path;

use tellonce_proto::v1::access_log_service_client::AccessLogServiceClient;
use tellonce_proto::v1::consent_service_client::ConsentServiceClient;
use tellonce_proto::v1::ingest_service_client::IngestServiceClient;
use tellonce_proto::v1::query_service_client::QueryServiceClient;
use tellonce_server::config::{dev_credentials_path, DevCredentials, PractitionerConfig};
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
    Ok(
        IngestServiceClient::with_interceptor(channel, bearer(token)?)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024),
    )
}

/// A gRPC error as a line for the terminal: its code and the hub's message.
pub fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Most items one page is asked for (the hub's own limit).
pub const MAX_PAGE: usize = 500;

/// Asks for pages from `cursor` on (`fetch(page_size, cursor)` answers a page's items and the
/// cursor after it), hands each page's items to `show`, until `limit` items were shown or none
/// are left. Returns how many were shown and the cursor to go on from (empty: none left).
pub async fn paged<T>(
    limit: usize,
    mut cursor: String,
    mut fetch: impl AsyncFnMut(u32, String) -> Result<(Vec<T>, String), String>,
    mut show: impl FnMut(&[T]),
) -> Result<(usize, String), String> {
    let mut shown = 0;
    while shown < limit {
        let (items, next) = fetch((limit - shown).min(MAX_PAGE) as u32, cursor).await?;
        show(&items);
        shown += items.len();
        cursor = next;
        if cursor.is_empty() || items.is_empty() {
            break;
        }
    }
    Ok((shown, cursor))
}

/// A query client that presents a token.
pub type Query = QueryServiceClient<InterceptedService<Channel, Bearer>>;

/// A query client on `channel` presenting `token`.
pub fn query(channel: Channel, token: &str) -> Result<Query, String> {
    Ok(
        QueryServiceClient::with_interceptor(channel, bearer(token)?)
            .max_decoding_message_size(16 * 1024 * 1024),
    )
}

/// The interceptor that presents `token`.
pub fn bearer(token: &str) -> Result<Bearer, String> {
    MetadataValue::try_from(format!("Bearer {token}"))
        .map(Bearer)
        .map_err(|_| "the token contains characters not allowed in a header".to_string())
}

/// A consent client on `channel` presenting `token`.
pub type Consent = ConsentServiceClient<InterceptedService<Channel, Bearer>>;

/// A consent client on `channel` presenting `token`.
pub fn consent(channel: Channel, token: &str) -> Result<Consent, String> {
    Ok(ConsentServiceClient::with_interceptor(
        channel,
        bearer(token)?,
    ))
}

/// An access log client on `channel` presenting `token`.
pub type AccessLog = AccessLogServiceClient<InterceptedService<Channel, Bearer>>;

/// An access log client on `channel` presenting `token`.
pub fn access_log(channel: Channel, token: &str) -> Result<AccessLog, String> {
    Ok(
        AccessLogServiceClient::with_interceptor(channel, bearer(token)?)
            .max_decoding_message_size(16 * 1024 * 1024),
    )
}

/// Reads a credentials file: by default the development credentials a dev hub writes in
/// ./data (`None` when there is none).
fn credentials_file(credentials: Option<&Path>) -> Result<Option<DevCredentials>, String> {
    let path = match credentials {
        Some(p) => p.to_path_buf(),
        None => {
            let dev = dev_credentials_path(Path::new("./data"));
            if !dev.exists() {
                return Ok(None);
            }
            dev
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Partner id to token, from a credentials file (`[[partners]]` with id and token), by default
/// the development credentials a dev hub writes in ./data (empty when there are none).
pub fn partner_tokens(credentials: Option<&Path>) -> Result<HashMap<String, String>, String> {
    Ok(credentials_file(credentials)?
        .map(|c| c.partners.into_iter().map(|p| (p.id, p.token)).collect())
        .unwrap_or_default())
}

/// The people of a credentials file.
pub fn people(credentials: Option<&Path>) -> Result<Vec<PractitionerConfig>, String> {
    Ok(credentials_file(credentials)?
        .map(|c| c.practitioners)
        .unwrap_or_default())
}

/// The token a person reads with: `--token`, else the token of `--as USER` from the
/// credentials file, else its first person.
pub fn person_token(
    token: Option<&str>,
    as_user: Option<&str>,
    credentials: Option<&Path>,
) -> Result<String, String> {
    if let Some(t) = token {
        return Ok(t.to_string());
    }
    let people = people(credentials)?;
    let pick = match as_user {
        Some(u) => people.iter().find(|p| p.user_id == u),
        None => people.first(),
    };
    match (pick, as_user) {
        (Some(p), _) => Ok(p.token.clone()),
        (None, Some(u)) => Err(format!(
            "no person {u:?} in the credentials; known: {}",
            people.iter().map(|p| p.user_id.as_str()).collect::<Vec<_>>().join(", ")
        )),
        (None, None) => Err("no credential: pass --token (a JWT from your identity provider), or --as USER with --credentials FILE, or run from the folder where `tellonce serve` wrote data/dev-credentials.toml".to_string()),
    }
}
