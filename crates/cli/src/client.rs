//! Connecting to a hub as a partner system.

use tellonce_proto::v1::ingest_service_client::IngestServiceClient;
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
