//! The pure core of TellOnce: what an event is, which events are valid, and what the log holds.
//!
//! Everything here is deterministic code over values: no I/O, no clock, no randomness. The
//! current time and every id come in as arguments, so the rules can be tested exhaustively and
//! a replay of the log always reaches the same answer. The server converts the gRPC contract to
//! these types at its edge; the log engines store [`record::Record`]s as bytes.

pub mod access;
pub mod event;
pub mod identity;
pub mod merkle;
pub mod names;
pub mod record;
pub mod sample;
pub mod seal;
pub mod time;
pub mod validate;
pub mod view;

pub use event::{Event, LawfulBasis, Payload, Subject};
pub use record::Record;
pub use time::{Date, Timestamp};
pub use validate::{check, RejectCode, ValidationError};
