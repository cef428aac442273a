//! The gRPC contract of TellOnce, generated from `proto/tellonce/v1` at build time.
//!
//! This crate holds only generated code: prost messages, tonic clients and servers, and the
//! encoded file descriptor set that the server offers through gRPC reflection. Nothing else in
//! the workspace should hand-write wire types; conversions to domain types live in the server.

#![allow(missing_docs, clippy::all)]

/// Version 1 of the contract (`tellonce.v1`).
pub mod v1 {
    tonic::include_proto!("tellonce.v1");
}

/// The encoded `FileDescriptorSet` of every TellOnce proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tellonce_descriptor");
