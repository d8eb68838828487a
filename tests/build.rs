//! Builds the C fixture libraries the end-to-end tests load into workloads
//! (`target/<profile>/fixtures/libmpfixture.so`).
use std::{env, path::PathBuf, process::Command};

/// C sources, what they become (relative to `target/<profile>/fixtures`), and extra flags.
const FIXTURES: &[(&str, &str, &[&str])] = &[
    (
        "fixtures/mpfixture.c",
        "libmpfixture.so",
        &["-shared", "-fPIC"],
    ),
    // Stand-ins named like the real CUDA libraries, in a directory of their own.
    (
        "fixtures/cudart_standin.c",
        "cuda/libcudart.so.12",
        &["-shared", "-fPIC", "-Wl,-soname,libcudart.so.12"],
    ),
    (
        "fixtures/cuda_standin.c",
        "cuda/libcuda.so.1",
        &["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1"],
    ),
    (
        "fixtures/cublas_nccl_standin.c",
        "cuda/libcublas.so.12",
        &["-shared", "-fPIC", "-DMP_CUBLAS"],
    ),
    (
        "fixtures/cublas_nccl_standin.c",
        "cuda/libnccl.so.2",
        &["-shared", "-fPIC", "-DMP_NCCL"],
    ),
    // -rdynamic: the stand-in runtime names kernels by their host stub's symbol (dladdr).
    ("fixtures/cuda_app.c", "mp-cuda-app", &["-ldl", "-rdynamic"]),
    (
        "fixtures/cuda_app.c",
        "mp-cuda-app-nofp",
        &[
            "-ldl",
            "-rdynamic",
            "-O2",
            "-fomit-frame-pointer",
            "-DMP_NESTED_LAUNCHES",
        ],
    ),
    ("fixtures/llama_app.c", "mp-llama-app", &[]),
    // PyTorch's caching-allocator tracepoints (pytorch:malloc, pytorch:free), as libc10_cuda.
    (
        "fixtures/c10_cuda_standin.c",
        "cuda/libc10_cuda.so",
        &["-shared", "-fPIC"],
    ),
    // Memory of known shape from named functions (tests/memory.rs).
    ("fixtures/mem_app.c", "mp-mem-app", &["-ldl"]),
    // The same as a library in a wheel-like folder no search path names, for a host that
    // loads it at run time (llama-cpp-python's ctypes load of site-packages/llama_cpp/lib).
    (
        "fixtures/llama_app.c",
        "wheel/llama_cpp/lib/libllama.so",
        &["-shared", "-fPIC", "-DMP_LLAMA_LIB"],
    ),
    // Processes of several shapes to inject into, and the library injected (tests/inject.rs).
    (
        "fixtures/inject_target.c",
        "mp-inject-target",
        &["-pthread", "-lm"],
    ),
    (
        "fixtures/inject_lib.c",
        "libmp_inject_test.so",
        &["-shared", "-fPIC", "-pthread"],
    ),
    // Native unwinding without frame pointers (tests/native_unwind.rs): built the way glibc
    // and most wheels are.
    (
        "fixtures/nofp_app.c",
        "mp-nofp-app",
        &["-O2", "-fomit-frame-pointer", "-ldl", "-pthread"],
    ),
    (
        "fixtures/nofp_plugin.c",
        "libnofp_plugin.so",
        &["-O2", "-fomit-frame-pointer", "-shared", "-fPIC"],
    ),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out: put the libraries beside the binaries.
    let dir = out
        .ancestors()
        .nth(3)
        .expect("OUT_DIR is inside target/<profile>")
        .join("fixtures");
    std::fs::create_dir_all(&dir).expect("create fixtures dir");
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    std::fs::create_dir_all(dir.join("cuda")).expect("create fixtures/cuda");
    std::fs::create_dir_all(dir.join("wheel/llama_cpp/lib")).expect("create fixtures/wheel");
    // The Rust fixture without frame pointers, with the rustc that builds this crate.
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let src = "fixtures/nofp_rust.rs";
    println!("cargo:rerun-if-changed={src}");
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "force-frame-pointers=no",
            "-C",
            "debuginfo=1",
        ])
        .arg("-o")
        .arg(dir.join("mp-nofp-rust"))
        .arg(manifest.join(src))
        .status()
        .unwrap_or_else(|e| panic!("running {rustc} for {src}: {e}"));
    assert!(status.success(), "{rustc} failed on {src}");
    for (src, lib, flags) in FIXTURES {
        println!("cargo:rerun-if-changed={src}");
        let status = Command::new(&cc)
            .args(["-O1", "-fno-omit-frame-pointer", "-o"])
            .arg(dir.join(lib))
            .arg(manifest.join(src))
            .args(*flags)
            .status()
            .unwrap_or_else(|e| panic!("running {cc} for {src}: {e} (install gcc)"));
        assert!(status.success(), "{cc} failed on {src}");
    }
}
