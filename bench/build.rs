//! Compiles the benchmark's own protocol (`paygrid.bench.v1`) with protox: it is not part
//! of the product's protocol, and no control unit serves or lists it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/paygrid/bench/v1/bench.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".paygrid.bench.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
