//! `cargo xtask cupti-bindings [--check]`: regenerates `cupti-sys/src/v12.rs` and `v13.rs` from
//! the real CUPTI headers, or (with `--check`, the CI drift check) fails if the checked-in files
//! differ from a fresh generation.
//!
//! The headers come from NVIDIA's wheels on PyPI, pinned by version, URL and sha256: the CUPTI
//! wheel carries `cupti*.h`, the CUDA runtime wheel of the same release the `cuda.h` and
//! `builtin_types.h` they include, and the nvcc (12) or crt (13) wheel the `crt/host_defines.h`
//! those include. Wheels are downloaded with curl, cached and checked under
//! `target/cupti-wheels/`, and unpacked with unzip (both installed from apt when missing).
//! bindgen, with libclang 22 (also from apt), turns the headers into Rust through an allowlist
//! of what modelprobe uses; the output is formatted with the workspace's rustfmt settings so
//! `cargo fmt --check` leaves it alone.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::{is_root, run, say, succeeds, LLVM};

/// One pinned wheel and the folder inside it that holds the headers.
struct Wheel {
    package: &'static str,
    version: &'static str,
    url: &'static str,
    sha256: &'static str,
    /// Prefix of the header files inside the wheel (a zip).
    include: &'static str,
}

/// One checked-in bindings file and the wheels it is generated from.
struct Target {
    /// Path of the output, relative to the workspace root.
    out: &'static str,
    /// What the file covers, for its header comment.
    covers: &'static str,
    wheels: &'static [Wheel],
    /// Record structs to generate.
    records: &'static [&'static str],
}

const TARGETS: [Target; 2] = [
    Target {
        out: "cupti-sys/src/v12.rs",
        covers: "CUPTI for CUDA 12.x (CUPTI API versions 18..=28)",
        records: RECORDS_12,
        wheels: &[
            Wheel {
                package: "nvidia-cuda-cupti-cu12",
                version: "12.9.79",
                url: "https://files.pythonhosted.org/packages/c1/2e/b84e32197e33f39907b455b83395a017e697c07a449a2b15fd07fc1c9981/nvidia_cuda_cupti_cu12-12.9.79-py3-none-manylinux_2_25_x86_64.whl",
                sha256: "096bcf334f13e1984ba36685ad4c1d6347db214de03dbb6eebb237b41d9d934f",
                include: "nvidia/cuda_cupti/include/",
            },
            Wheel {
                package: "nvidia-cuda-runtime-cu12",
                version: "12.9.79",
                url: "https://files.pythonhosted.org/packages/bc/46/a92db19b8309581092a3add7e6fceb4c301a3fd233969856a8cbf042cd3c/nvidia_cuda_runtime_cu12-12.9.79-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                sha256: "25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3",
                include: "nvidia/cuda_runtime/include/",
            },
            // Only for crt/host_defines.h, which the runtime headers include.
            Wheel {
                package: "nvidia-cuda-nvcc-cu12",
                version: "12.9.86",
                url: "https://files.pythonhosted.org/packages/25/48/b54a06168a2190572a312bfe4ce443687773eb61367ced31e064953dd2f7/nvidia_cuda_nvcc_cu12-12.9.86-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
                sha256: "5d6a0d32fdc7ea39917c20065614ae93add6f577d840233237ff08e9a38f58f0",
                include: "nvidia/cuda_nvcc/include/",
            },
        ],
    },
    Target {
        out: "cupti-sys/src/v13.rs",
        covers: "CUPTI for CUDA 13.x (CUPTI API versions 130000 and later)",
        records: RECORDS_13,
        wheels: &[
            Wheel {
                package: "nvidia-cuda-cupti",
                version: "13.5.25",
                url: "https://files.pythonhosted.org/packages/37/0b/a5a498188dc541d00782394e28be7cbac5065f8334f44c9f7d5f64952456/nvidia_cuda_cupti-13.5.25-py3-none-manylinux_2_25_x86_64.whl",
                sha256: "9dcca41c12a734192b14e7128ae116bc9ce1b9da686e2ebf48ae7a4415f76650",
                include: "nvidia/cu13/include/",
            },
            Wheel {
                package: "nvidia-cuda-runtime",
                version: "13.5.37",
                url: "https://files.pythonhosted.org/packages/0b/7c/14b8f5518f8951e9dca57ea80f44f8ea8bcc8671812e6cc38009f3205e57/nvidia_cuda_runtime-13.5.37-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                sha256: "df2b79a8852f10d1fef8c848489c49eebb5754051bf870202a862831412b179d",
                include: "nvidia/cu13/include/",
            },
            // Only for crt/host_defines.h, which the runtime headers include.
            Wheel {
                package: "nvidia-cuda-crt",
                version: "13.5.37",
                url: "https://files.pythonhosted.org/packages/d5/ac/fb3ca43f437405ce33bfd8ba64503148fdc9198265f26f8ecd1bd6e76338/nvidia_cuda_crt-13.5.37-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                sha256: "e898b7f73d3035fa89915a3f7bf3b54a73e90249746111aed295822c4729bb29",
                include: "nvidia/cu13/include/",
            },
        ],
    },
];

/// CUPTI functions modelprobe resolves at run time. Functions a header lacks are skipped.
const FUNCTIONS: &[&str] = &[
    // Version, errors, time, teardown.
    "cuptiGetVersion",
    "cuptiGetResultString",
    "cuptiGetLastError",
    "cuptiGetTimestamp",
    "cuptiGetTimestamp_v2",
    "cuptiFinalize",
    // Callback API.
    "cuptiSubscribe",
    "cuptiSubscribe_v2",
    "cuptiUnsubscribe",
    "cuptiEnableCallback",
    "cuptiEnableDomain",
    "cuptiGetCallbackName",
    // Activity API (the `_v2` ones take a subscriber: CUPTI 13's multi-subscriber mode).
    "cuptiActivityEnable",
    "cuptiActivityEnable_v2",
    "cuptiActivityDisable",
    "cuptiActivityDisable_v2",
    "cuptiActivityRegisterCallbacks",
    "cuptiActivityRegisterCallbacks_v2",
    "cuptiActivityRegisterTimestampCallback",
    "cuptiActivityFlush",
    "cuptiActivityFlushAll",
    "cuptiActivityGetNextRecord",
    "cuptiActivityGetNextRecord_v2",
    "cuptiActivityGetNumDroppedRecords",
    "cuptiActivityGetNumDroppedRecords_v2",
    "cuptiActivitySetAttribute",
    "cuptiActivitySetAttribute_v2",
    "cuptiActivityGetStructSize",
    "cuptiActivityPushExternalCorrelationId",
    "cuptiActivityPushExternalCorrelationId_v2",
    "cuptiActivityPopExternalCorrelationId",
    "cuptiActivityPopExternalCorrelationId_v2",
];

/// Types generated even when no allowlisted function names them: the enums record fields hold,
/// and the callback-API structs. The runtime and driver callback-id enums (about 1,500
/// constants) are left out to keep the files small: `cuptiGetCallbackName` names a cbid at run
/// time.
const TYPES: &[&str] = &[
    "CUpti_Activity",
    "CUpti_ActivityKind",
    "CUpti_ActivityFlag",
    "CUpti_ActivityMemcpyKind",
    "CUpti_ActivityMemoryKind",
    "CUpti_ActivitySynchronizationType",
    "CUpti_ActivityLaunchType",
    "CUpti_ActivityObjectKind",
    "CUpti_ActivityAttribute",
    "CUpti_ExternalCorrelationKind",
    "CUpti_CallbackData",
    "CUpti_ResourceData",
    "CUpti_CallbackDomain",
    "CUpti_ApiCallbackSite",
    "CUpti_CallbackIdResource",
];

/// Record structs: every version some CUPTI release of that major writes for the kinds
/// modelprobe decodes (older versions live in cupti_activity_deprecated.h). Which release
/// writes which is in cupti-sys/src/layout.rs.
const RECORDS_12: &[&str] = &[
    "CUpti_ActivityKernel9",
    "CUpti_ActivityMemcpy5",
    "CUpti_ActivityMemcpy6",
    "CUpti_ActivityMemcpyPtoP4",
    "CUpti_ActivityMemset4",
    "CUpti_ActivitySynchronization",
    "CUpti_ActivitySynchronization2",
    "CUpti_ActivityAPI",
    "CUpti_ActivityMarker2",
    "CUpti_ActivityExternalCorrelation",
];
const RECORDS_13: &[&str] = &[
    "CUpti_ActivityKernel10",
    "CUpti_ActivityKernel11",
    "CUpti_ActivityKernel12",
    "CUpti_ActivityKernel13",
    "CUpti_ActivityMemcpy6",
    "CUpti_ActivityMemcpy7",
    "CUpti_ActivityMemcpyPtoP4",
    "CUpti_ActivityMemset4",
    "CUpti_ActivityMemset5",
    "CUpti_ActivitySynchronization2",
    "CUpti_ActivityAPI",
    "CUpti_ActivityMarker2",
    "CUpti_ActivityExternalCorrelation",
];

const VARS: &[&str] = &[
    "CUPTI_API_VERSION",
    "CUPTI_SUBSCRIBER_NAME_MAX_LEN",
    "CUPTI_OLD_SUBSCRIBER_NAME_MIN_LEN",
];

/// A wheel could not be downloaded (no network, or PyPI unreachable): not a drift.
#[derive(Debug)]
pub struct Offline(String);

impl std::fmt::Display for Offline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot download {}", self.0)
    }
}

impl std::error::Error for Offline {}

/// Regenerates the bindings into `cupti-sys/src/`, or with `check`, generates them into
/// `target/cupti-bindings/` and fails if they differ from the checked-in ones.
pub fn generate(root: &Path, check: bool) -> Result<()> {
    let libclang_dir = ensure_libclang()?;
    ensure_tool("curl", "the CUPTI headers are downloaded from PyPI")?;
    ensure_tool("unzip", "the CUPTI headers are unpacked from wheels")?;
    let work = root.join("target/cupti-bindings");
    let cache = root.join("target/cupti-wheels");
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let mut drift = Vec::new();
    for target in &TARGETS {
        let name = Path::new(target.out)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("target names are plain");
        let unpacked = work.join(name).join("wheels");
        if unpacked.exists() {
            fs::remove_dir_all(&unpacked)
                .with_context(|| format!("clearing {}", unpacked.display()))?;
        }
        let mut includes = Vec::new();
        for wheel in target.wheels {
            let file = fetch_wheel(&cache, wheel)?;
            includes.push(unpack_headers(&file, wheel, &unpacked.join(wheel.package))?);
        }
        let generated = bindgen_target(root, target, &includes, &libclang_dir)?;
        let dest = root.join(target.out);
        let current = fs::read_to_string(&dest).unwrap_or_default();
        if current == generated {
            say(&format!("{} is up to date", target.out));
        } else if check {
            let fresh = work.join(name).join(format!("{name}.rs"));
            fs::write(&fresh, &generated)
                .with_context(|| format!("writing {}", fresh.display()))?;
            drift.push(diff_summary(
                target.out, &dest, &fresh, &current, &generated,
            ));
        } else {
            fs::write(&dest, &generated).with_context(|| format!("writing {}", dest.display()))?;
            say(&format!(
                "wrote {} ({} lines)",
                target.out,
                generated.lines().count()
            ));
        }
    }
    if !drift.is_empty() {
        bail!(
            "the checked-in CUPTI bindings differ from the pinned headers:\n{}\n\
             run `cargo xtask cupti-bindings` and commit the result",
            drift.join("\n")
        );
    }
    Ok(())
}

/// The directory holding libclang.so for LLVM 22, installing libclang-22-dev when it or
/// clang's own headers (`stddef.h`, which the CUPTI headers include) are missing.
fn ensure_libclang() -> Result<PathBuf> {
    let dir = PathBuf::from(format!("/usr/lib/llvm-{LLVM}/lib"));
    let any_entry = |path: &Path, pred: &dyn Fn(&fs::DirEntry) -> bool| {
        fs::read_dir(path).is_ok_and(|entries| entries.flatten().any(|e| pred(&e)))
    };
    let found = || {
        let library = any_entry(&dir, &|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libclang") && name.contains(".so") && !name.contains("-cpp")
        });
        let builtin_headers = any_entry(&dir.join("clang"), &|e| {
            e.path().join("include/stddef.h").is_file()
        });
        library && builtin_headers
    };
    if found() {
        return Ok(dir);
    }
    let package = format!("libclang-{LLVM}-dev");
    if !is_root() {
        bail!(
            "generating the CUPTI bindings needs libclang {LLVM}: run \
             `sudo apt-get install -y {package}` and try again"
        );
    }
    say(&format!(
        "installing {package} with apt (bindgen parses the CUPTI headers with libclang)"
    ));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", &package])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    ensure!(
        found(),
        "{package} is installed but {} has no libclang",
        dir.display()
    );
    Ok(dir)
}

/// A command-line tool from the Debian package of the same name, installed when missing.
fn ensure_tool(tool: &str, why: &str) -> Result<()> {
    if succeeds(Command::new(tool).arg("-v")) || succeeds(Command::new(tool).arg("--version")) {
        return Ok(());
    }
    if !is_root() {
        bail!("{why}, which needs {tool}: run `sudo apt-get install -y {tool}` and try again");
    }
    say(&format!("installing {tool} with apt ({why})"));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", tool])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The wheel's path in the cache, downloading it when missing or not matching its sha256.
fn fetch_wheel(cache: &Path, wheel: &Wheel) -> Result<PathBuf> {
    let file_name = wheel.url.rsplit('/').next().expect("URL has a file name");
    let path = cache.join(file_name);
    if let Ok(bytes) = fs::read(&path) {
        if sha256_hex(&bytes) == wheel.sha256 {
            return Ok(path);
        }
        say(&format!(
            "{} does not match its sha256, downloading again",
            path.display()
        ));
    }
    say(&format!(
        "downloading {} {} from PyPI (headers only are used)",
        wheel.package, wheel.version
    ));
    let partial = path.with_extension("part");
    let fetched = Command::new("curl")
        .args(["-fsSL", "--retry", "3", "-o"])
        .arg(&partial)
        .arg(wheel.url)
        .status()
        .is_ok_and(|s| s.success());
    if !fetched {
        return Err(anyhow::Error::new(Offline(wheel.url.to_string())));
    }
    let bytes = fs::read(&partial).with_context(|| format!("reading {}", partial.display()))?;
    let got = sha256_hex(&bytes);
    if got != wheel.sha256 {
        let _ = fs::remove_file(&partial);
        bail!(
            "{} {} has sha256 {got}, expected {}: the download is corrupt or the file changed",
            wheel.package,
            wheel.version,
            wheel.sha256
        );
    }
    fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Unpacks the wheel's header folder into `dest` and returns the folder to put on the include
/// path.
fn unpack_headers(file: &Path, wheel: &Wheel, dest: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    run(Command::new("unzip")
        .args(["-q", "-o"])
        .arg(file)
        .arg(format!("{}*", wheel.include))
        .arg("-d")
        .arg(dest))?;
    let include = dest.join(wheel.include);
    ensure!(
        include.is_dir(),
        "{} {} has no {}",
        wheel.package,
        wheel.version,
        wheel.include
    );
    Ok(include)
}

/// Runs bindgen over `cupti.h` and returns the formatted file, header comment included.
fn bindgen_target(
    root: &Path,
    target: &Target,
    includes: &[PathBuf],
    libclang_dir: &Path,
) -> Result<String> {
    // clang-sys finds libclang through LIBCLANG_PATH first; pin it to LLVM 22 so the output does
    // not depend on which other LLVM versions are installed.
    std::env::set_var("LIBCLANG_PATH", libclang_dir);
    let bindings = bindgen::Builder::default()
        .header_contents("modelprobe_cupti.h", "#include <cupti.h>\n")
        .clang_arg("--target=x86_64-unknown-linux-gnu")
        .clang_args(includes.iter().map(|i| format!("-I{}", i.display())))
        .rust_target(bindgen::RustTarget::stable(82, 0).map_err(|e| anyhow::anyhow!("{e}"))?)
        .allowlist_function(alternatives(FUNCTIONS))
        .allowlist_type(alternatives(TYPES))
        .allowlist_type(alternatives(target.records))
        .allowlist_var(alternatives(VARS))
        // An enum value a newer CUPTI adds must stay representable: newtypes, not Rust enums.
        .default_enum_style(bindgen::EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .bitfield_enum("CUpti_ActivityFlag")
        .derive_default(true)
        .derive_eq(true)
        .derive_hash(true)
        .layout_tests(true)
        .generate_comments(false)
        .wrap_unsafe_ops(true)
        .merge_extern_blocks(true)
        .sort_semantically(true)
        // libcupti is opened at run time: function pointers in a struct, never link-time symbols.
        .dynamic_library_name("CuptiLib")
        .dynamic_link_require_all(false)
        .formatter(bindgen::Formatter::None)
        .generate()
        .map_err(|e| anyhow::anyhow!("bindgen failed on the headers of {}: {e}", target.out))?;
    let mut text = header_comment(target);
    text.push_str(&bindings.to_string());
    rustfmt(root, &text).with_context(|| format!("formatting {}", target.out))
}

fn alternatives(names: &[&str]) -> String {
    format!("^({})$", names.join("|"))
}

fn header_comment(target: &Target) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Generated by `cargo xtask cupti-bindings`; do not edit. {}, from:",
        target.covers
    );
    for w in target.wheels {
        let _ = writeln!(s, "//   {} {} (sha256 {})", w.package, w.version, w.sha256);
    }
    // bindgen names its own version on the line after this one.
    let _ = writeln!(
        s,
        "// with libclang {LLVM}, for x86_64 Linux (aarch64 has the same layouts)."
    );
    s
}

/// Formats generated code with the workspace's rustfmt settings, so `cargo fmt` keeps it as is.
fn rustfmt(root: &Path, code: &str) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout", "--config-path"])
        .arg(root.join("rustfmt.toml"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting rustfmt")?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = code.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().context("running rustfmt")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("rustfmt input thread panicked"))?
        .context("writing to rustfmt")?;
    ensure!(out.status.success(), "rustfmt failed with {}", out.status);
    String::from_utf8(out.stdout).context("rustfmt wrote non-UTF-8")
}

/// A short account of how `checked_in` differs from `fresh`: line counts, and the start of a
/// unified diff.
fn diff_summary(out: &str, dest: &Path, fresh: &Path, checked_in: &str, generated: &str) -> String {
    let mut s = format!(
        "- {out}: checked in {} lines, freshly generated {} lines",
        checked_in.lines().count(),
        generated.lines().count()
    );
    if checked_in.is_empty() {
        s.push_str(" (the checked-in file is missing or empty)");
        return s;
    }
    let diff = Command::new("diff")
        .args(["-u", "--label", "checked-in", "--label", "generated"])
        .arg(dest)
        .arg(fresh)
        .output();
    match diff {
        Ok(d) => {
            let text = String::from_utf8_lossy(&d.stdout);
            let changed = text
                .lines()
                .filter(|l| {
                    (l.starts_with('+') || l.starts_with('-'))
                        && !l.starts_with("+++")
                        && !l.starts_with("---")
                })
                .count();
            let _ = write!(s, ", {changed} lines changed; first hunks:");
            for line in text.lines().take(40) {
                let _ = write!(s, "\n    {line}");
            }
        }
        Err(e) => {
            let _ = write!(s, " (diff unavailable: {e})");
        }
    }
    s
}
