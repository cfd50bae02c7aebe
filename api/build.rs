//! Compiles `proto/**/*.proto` with protox (pure Rust; no `protoc` needed) and
//! generates prost messages plus tonic client/server stubs.

use std::{
    io,
    path::{Path, PathBuf},
};

const PROTO_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let mut files = Vec::new();
    collect_protos(Path::new(PROTO_ROOT), &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    // protox bundles the google/protobuf/*.proto well-known types, so only our
    // own root is on the include path. Errors come out as readable diagnostics.
    let fds = protox::compile(&files, [PROTO_ROOT]).map_err(|e| format!("{e:?}"))?;

    let mut config = tonic_prost_build::Config::new();
    // Emit `prost::Name` impls so `Any::from_msg` / `Any::to_msg` produce and
    // check the conventional `type.googleapis.com/<full name>` URLs.
    // BTreeMap for map fields: encoding is then byte-stable, which the controller relies on
    // (resource versions are hashes of the encoded bytes).
    config
        .btree_map(["."])
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // One file with the nested package modules (`envoy::service::...`),
        // so cross-package `super::` paths in the generated code resolve.
        .include_file("_includes.rs")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
