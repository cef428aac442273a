//! Compiles `proto/tellonce/v1/*.proto` with protox (pure Rust, no system protoc) and generates
//! the prost messages and tonic services, plus a file descriptor set for gRPC reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: a build script compiled
    // for one checkout may be reused for another sharing the target folder.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "tellonce/v1/ingest.proto",
        "tellonce/v1/query.proto",
        "tellonce/v1/consent.proto",
        "tellonce/v1/audit.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tellonce_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
