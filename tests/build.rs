//! Builds the C fixture libraries the end-to-end tests load into workloads
//! (`target/<profile>/fixtures/libmpfixture.so`).
use std::{env, path::PathBuf, process::Command};

/// C sources and the shared libraries they become.
const FIXTURES: &[(&str, &str)] = &[("fixtures/mpfixture.c", "libmpfixture.so")];

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
    for (src, lib) in FIXTURES {
        println!("cargo:rerun-if-changed={src}");
        let status = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O1", "-fno-omit-frame-pointer", "-o"])
            .arg(dir.join(lib))
            .arg(manifest.join(src))
            .status()
            .unwrap_or_else(|e| panic!("running {cc} for {src}: {e} (install gcc)"));
        assert!(status.success(), "{cc} failed on {src}");
    }
}
