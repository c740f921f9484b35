//! Compiles `sandbox.proto` with the pure-Rust `protox` compiler, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=sandbox.proto");
    let descriptors = protox::compile(["sandbox.proto"], ["."])?;
    prost_build::Config::new()
        // Payload fields decode as zero-copy slices of the frame buffer.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
