//! Ingest: events from partner systems into the log.
//!
//! [`Ingest::publish`] is the core, a plain async function: convert each event at the edge,
//! check it with the domain's rules, encode the valid ones and append them to the log in one
//! call, then answer every event in order. [`IngestGrpc`] is the thin gRPC adapter over it:
//! authenticate, call the core, map the error once.

use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, StreamExt};
use prost::Message;
use rand::Rng;
use tellonce_domain::access::ConsentGiven;
use tellonce_domain::seal;
use tellonce_domain::validate::check_special_consent;
use tellonce_domain::{check, Event, LawfulBasis, Record, RejectCode, Timestamp, ValidationError};
use tellonce_log::{AppendOutcome, Log, NewEntry};
use tellonce_projection::KeyStore;
use tellonce_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn, Instrument};

use crate::auth::{Authenticator, Caller, CallerKind};
use crate::convert::event_from_pb;
use crate::telemetry::{self, TraceLinks};
use crate::ServerError;

/// The largest encoded event accepted, in bytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// A source of the current time (the server's clock; a fixed one in tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    })
}

/// The ingest core.
#[derive(Clone)]
pub struct Ingest {
    log: Arc<dyn Log>,
    clock: Clock,
    max_batch: usize,
    wake: Option<Arc<tokio::sync::Notify>>,
    consents: Option<ConsentLookup>,
    keys: Option<Arc<KeyStore>>,
    links: Option<TraceLinks>,
}

/// Finds a consent the hub holds by id, with the time it was withdrawn from (if it was).
pub type ConsentLookup =
    Arc<dyn Fn(&str) -> Option<(ConsentGiven, Option<Timestamp>)> + Send + Sync>;

fn rejected(event_id: String, e: &ValidationError) -> pb::EventResult {
    let code = match e.code {
        RejectCode::InvalidArgument => tonic::Code::InvalidArgument,
        RejectCode::PermissionDenied => tonic::Code::PermissionDenied,
        RejectCode::FailedPrecondition => tonic::Code::FailedPrecondition,
    };
    pb::EventResult {
        event_id,
        outcome: Some(pb::event_result::Outcome::Rejected(pb::Rejected {
            code: code as i32,
            reason: e.reason.to_string(),
            field: e.field.clone(),
            message: e.message.clone(),
        })),
    }
}

impl Ingest {
    /// An ingest core writing to `log`, taking the time from `clock`.
    pub fn new(log: Arc<dyn Log>, clock: Clock, max_batch: usize) -> Self {
        Ingest {
            log,
            clock,
            max_batch,
            wake: None,
            consents: None,
            keys: None,
            links: None,
        }
    }

    /// Remembers which span appended which offsets in `links` (for the projection's apply
    /// span to link to).
    pub fn with_trace_links(mut self, links: TraceLinks) -> Self {
        self.links = Some(links);
        self
    }

    /// Notifies `wake` after every append that wrote something (the projection follower).
    pub fn with_wake(mut self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// Checks the consents that health and criminal-offence events cite with `lookup`.
    /// Without one, such events on a consent basis are refused (the hub cannot tell that the
    /// consent names their category).
    pub fn with_consents(mut self, lookup: ConsentLookup) -> Self {
        self.consents = Some(lookup);
        self
    }

    /// Seals every payload under its subjects' data keys from `keys` before it is written
    /// (see [`tellonce_domain::seal`]).
    pub fn with_sealing(mut self, keys: Arc<KeyStore>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Encodes the valid events of a batch: sealed when a key store is set, with one fsync
    /// for any keys the batch makes.
    async fn encode(
        &self,
        valid: Vec<Event>,
        now: Timestamp,
    ) -> Result<Vec<NewEntry>, ServerError> {
        let Some(ks) = &self.keys else {
            return Ok(valid
                .into_iter()
                .map(|e| NewEntry::of(&Record::PartnerEvent(e), now.0))
                .collect());
        };
        let unavailable = |e: &dyn std::fmt::Display| {
            ServerError::Unavailable(format!(
                "{e}; nothing from this request was acknowledged, retry it (publishing is idempotent)"
            ))
        };
        let names: Vec<Vec<String>> = valid.iter().map(seal::key_names).collect();
        let (keys, need) = ks.take_keys(&names).map_err(|e| unavailable(&e))?;
        if !ks.is_synced(need) {
            // New keys must be on disk before any ciphertext that needs them; the fsync runs
            // off the async workers.
            let ks = ks.clone();
            tokio::task::spawn_blocking(move || ks.sync_to(need))
                .await
                .map_err(|e| unavailable(&e))?
                .map_err(|e| unavailable(&e))?;
        }
        let mut rng = rand::rng();
        Ok(valid
            .into_iter()
            .zip(keys)
            .map(|(e, k)| {
                let sealed = seal::seal(e, &k, rng.random());
                NewEntry::of(&Record::SealedEvent(sealed), now.0)
            })
            .collect())
    }

    /// Validates and appends a batch from `partner`; one result per event, in order. Fails as a
    /// whole only when the batch is malformed or the log cannot write, and then writes nothing.
    pub async fn publish(
        &self,
        partner: &Caller,
        events: Vec<pb::Event>,
    ) -> Result<Vec<pb::EventResult>, ServerError> {
        if events.is_empty() {
            return Err(ServerError::BadRequest("the batch has no events".into()));
        }
        if events.len() > self.max_batch {
            return Err(ServerError::BadRequest(format!(
                "the batch has {} events; the limit is {} (split it, or use PublishStream)",
                events.len(),
                self.max_batch
            )));
        }
        let now = (self.clock)();
        let mut results: Vec<Option<pb::EventResult>> = Vec::with_capacity(events.len());
        let mut valid = Vec::new();
        let mut slots = Vec::new();
        let validating = tracing::info_span!("ingest.validate", events = events.len()).entered();
        for event in events {
            let event_id = event.event_id.clone();
            let size = event.encoded_len();
            let checked = if size > MAX_EVENT_BYTES {
                Err(ValidationError::invalid(
                    "event_too_large",
                    "",
                    format!("the event is {size} bytes encoded; the limit is {MAX_EVENT_BYTES}"),
                ))
            } else {
                event_from_pb(event)
                    .and_then(|e| check(e, &partner.id, now))
                    .and_then(|e| {
                        let cited = match &e.lawful_basis {
                            Some(LawfulBasis::Consent { consent_reference }) => self
                                .consents
                                .as_ref()
                                .and_then(|lookup| lookup(consent_reference)),
                            _ => None,
                        };
                        let cited = cited
                            .as_ref()
                            .map(|(c, w)| (c, w.is_some_and(|w| w <= now)));
                        check_special_consent(&e, cited).map(|()| e)
                    })
            };
            match checked {
                Ok(e) => {
                    slots.push(results.len());
                    results.push(None);
                    valid.push(e);
                }
                Err(e) => {
                    debug!(partner = %partner.id, event_id = %event_id, reason = e.reason, field = %e.field, "event rejected");
                    results.push(Some(rejected(event_id, &e)));
                }
            }
        }
        drop(validating);
        // Held until the events are in the log, so no erasure destroys a key in between.
        let _sealing = match &self.keys {
            Some(ks) => Some(ks.sealing().read().await),
            None => None,
        };
        let entries = self
            .encode(valid, now)
            .instrument(tracing::info_span!(
                "ingest.seal",
                sealed = self.keys.is_some()
            ))
            .await?;
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let outcomes = self
            .log
            .append(entries)
            .instrument(tracing::info_span!("log.append", entries = ids.len()))
            .await?;
        drop(_sealing);
        if let Some(links) = &self.links {
            let appended = outcomes.iter().filter_map(|o| match o {
                AppendOutcome::Appended(x) => Some(*x),
                AppendOutcome::Duplicate(_) => None,
            });
            if let (Some(first), Some(last)) = (appended.clone().min(), appended.max()) {
                links.appended(first, last);
            }
        }
        if let Some(w) = &self.wake {
            if outcomes
                .iter()
                .any(|o| matches!(o, AppendOutcome::Appended(_)))
            {
                w.notify_one();
            }
        }
        for ((slot, id), outcome) in slots.into_iter().zip(ids).zip(outcomes) {
            let outcome = match outcome {
                AppendOutcome::Appended(offset) => {
                    pb::event_result::Outcome::Accepted(pb::Accepted { offset })
                }
                AppendOutcome::Duplicate(offset) => {
                    debug!(partner = %partner.id, event_id = %id, offset, "duplicate event");
                    pb::event_result::Outcome::Duplicate(pb::Duplicate { offset })
                }
            };
            results[slot] = Some(pb::EventResult {
                event_id: id,
                outcome: Some(outcome),
            });
        }
        Ok(results.into_iter().flatten().collect())
    }
}

/// The span of one published batch.
fn publish_span(partner: &Caller, events: usize) -> tracing::Span {
    tracing::info_span!(
        "ingest.publish",
        partner = %partner.id,
        events,
        trace_id = tracing::field::Empty
    )
}

/// The gRPC adapter of [`Ingest`].
pub struct IngestGrpc {
    ingest: Ingest,
    auth: Arc<dyn Authenticator>,
    stream_window: usize,
}

impl IngestGrpc {
    /// Serves `ingest` to partners that `auth` recognises.
    pub fn new(ingest: Ingest, auth: Arc<dyn Authenticator>, stream_window: usize) -> Self {
        IngestGrpc {
            ingest,
            auth,
            stream_window,
        }
    }

    fn partner<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let caller = self
            .auth
            .caller(req.metadata(), req.extensions())
            .map_err(|e| {
                warn!(error = %e, "unauthenticated publish");
                Status::unauthenticated(e.to_string())
            })?;
        if caller.kind != CallerKind::System {
            return Err(Status::permission_denied(
                "only partner systems publish events; people record consent with ConsentService and read with QueryService",
            ));
        }
        Ok(caller)
    }
}

type ResponseStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::PublishResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::ingest_service_server::IngestService for IngestGrpc {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let partner = self.partner(&request)?;
        let span = publish_span(&partner, request.get_ref().events.len());
        telemetry::adopt(&span, request.metadata());
        let req = request.into_inner();
        let results = self
            .ingest
            .publish(&partner, req.events)
            .instrument(span)
            .await?;
        Ok(Response::new(pb::PublishResponse {
            results,
            request_id: req.request_id,
        }))
    }

    type PublishStreamStream = ResponseStream;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let partner = self.partner(&request)?;
        // One trace per stream: each batch is a span in it.
        let stream_span = tracing::info_span!(
            "ingest.publish_stream",
            partner = %partner.id,
            trace_id = tracing::field::Empty
        );
        telemetry::adopt(&stream_span, request.metadata());
        let mut inbound = request.into_inner();
        let ingest = self.ingest.clone();
        let window = self.stream_window;
        let (tx, rx) = mpsc::channel::<Result<pb::PublishResponse, Status>>(window);
        tokio::spawn(async move {
            // Batches are validated and appended concurrently (so they share fsyncs), and
            // answered in the order they arrived.
            let mut inflight = FuturesOrdered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    msg = inbound.message(), if open && inflight.len() < window => match msg {
                        Ok(Some(req)) => {
                            let (ingest, partner) = (ingest.clone(), partner.clone());
                            let span = stream_span.in_scope(|| publish_span(&partner, req.events.len()));
                            inflight.push_back(tokio::spawn(async move {
                                let request_id = req.request_id;
                                ingest
                                    .publish(&partner, req.events)
                                    .await
                                    .map(|results| pb::PublishResponse { results, request_id })
                                    .map_err(Status::from)
                            }.instrument(span)));
                        }
                        Ok(None) => open = false,
                        Err(status) => {
                            debug!(error = %status, "publish stream ended by the client");
                            open = false;
                        }
                    },
                    Some(done) = inflight.next(), if !inflight.is_empty() => {
                        let answer = done.unwrap_or_else(|e| Err(Status::internal(format!("publish task failed: {e}"))));
                        let failed = answer.is_err();
                        if tx.send(answer).await.is_err() || failed {
                            break;
                        }
                    },
                    else => break,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
