//! Compiles `paygrid/v1/*.proto` with protox (pure Rust, no protoc binary) and generates
//! tonic services plus the file descriptor set used by gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["paygrid/v1/workflows.proto", "paygrid/v1/agents.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("paygrid_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .bytes(".paygrid.v1")
        .compile_fds(descriptors)?;

    // The A2A protocol (vendored, see vendor/README.md), served by the control unit.
    println!("cargo:rerun-if-changed=vendor");
    let a2a = protox::compile(["a2a.proto"], ["vendor"])?;
    std::fs::write(
        out_dir.join("a2a_descriptor.bin"),
        prost::Message::encode_to_vec(&a2a),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(a2a)?;
    Ok(())
}
