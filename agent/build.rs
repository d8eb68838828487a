//! Embeds the BPF object built by `cargo xtask build-ebpf` and the CUPTI injection library
//! built by `cargo xtask build-inject` (at `$MODELPROBE_INJECT_LIBRARY`, else
//! `<workspace>/target/inject/libmodelprobe_inject.so`; when missing, GPU timings are off with
//! a one-line reason).
//!
//! The object is looked up at `$MODELPROBE_BPF_OBJECT`, else at
//! `<workspace>/target/bpf/modelprobe.bpf.o`. When it is missing the agent still builds (so
//! `cargo build`/`cargo test` of the userspace code never need the BPF toolchain), but profiling
//! commands then fail with a one-line error telling the user to run `cargo xtask build-ebpf`.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(modelprobe_bpf_missing)");
    println!("cargo::rustc-check-cfg=cfg(modelprobe_inject_missing)");
    embed_inject_library();
    println!("cargo:rerun-if-env-changed=MODELPROBE_BPF_OBJECT");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let source = env::var_os("MODELPROBE_BPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/bpf/modelprobe.bpf.o"));
    println!("cargo:rerun-if-changed={}", source.display());
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("modelprobe.bpf.o");
    match fs::read(&source) {
        Ok(bytes) => fs::write(&out, bytes).expect("write embedded BPF object"),
        Err(_) => {
            println!("cargo:rustc-cfg=modelprobe_bpf_missing");
            fs::write(&out, []).expect("write empty BPF object placeholder");
        }
    }
}

fn embed_inject_library() {
    println!("cargo:rerun-if-env-changed=MODELPROBE_INJECT_LIBRARY");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let source = env::var_os("MODELPROBE_INJECT_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/inject/libmodelprobe_inject.so"));
    println!("cargo:rerun-if-changed={}", source.display());
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("libmodelprobe_inject.so");
    match fs::read(&source) {
        Ok(bytes) => fs::write(&out, bytes).expect("write embedded injection library"),
        Err(_) => {
            println!("cargo:rustc-cfg=modelprobe_inject_missing");
            fs::write(&out, []).expect("write empty injection library placeholder");
        }
    }
}
