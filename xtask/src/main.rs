//! Project automation, run as `cargo xtask <command>`.
//!
//! Every command installs what it needs first (idempotently, saying what it does), so the
//! README's two commands work on a fresh Debian machine:
//!
//! - `cargo xtask demo`: profile the bundled example workload and print where the outputs are;
//! - `cargo xtask test`: lints and the whole test suite, BPF tests included (never skipped).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// LLVM major version bpf-linker is built against.
const LLVM: &str = "22";
/// bpf-linker release known to work with LLVM 22 and this toolchain.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where the agent's build script looks for the BPF object.
const BPF_OBJECT: &str = "target/bpf/modelprobe.bpf.o";

#[derive(Parser)]
#[command(about = "modelprobe project tasks", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need: nightly rust-src, LLVM 22, bpf-linker, tracefs.
    Setup,
    /// Build the BPF programs (ebpf/) into target/bpf/modelprobe.bpf.o for the agent to embed.
    BuildEbpf,
    /// Build the CUPTI injection library (agent/inject/) into
    /// target/inject/libmodelprobe_inject.so for the agent to embed.
    BuildInject,
    /// Build a release `modelprobe` with its BPF programs and GPU library:
    /// target/release/modelprobe.
    Build,
    /// Profile the bundled example workload with `modelprobe run` (needs root).
    Demo,
    /// Check formatting and clippy, then run every test (needs root for the BPF tests).
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy`.
        #[arg(long)]
        no_lint: bool,
    },
    /// `cargo fmt --check` and `cargo clippy -D warnings` over the workspace.
    Lint,
    /// Regenerate cupti-sys/src/v12.rs and v13.rs from the CUPTI headers of the pinned PyPI
    /// wheels; with `--check`, fail if the checked-in files differ (the CI drift check).
    CuptiBindings {
        /// Compare with a fresh generation instead of writing.
        #[arg(long)]
        check: bool,
    },
    /// Run every cargo-fuzz target (fuzz/) for a while; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Benchmarks (needs root): target slowdown under sampling against perf and bpftrace, agent
    /// CPU and memory, cost per probed call and per CUDA call against bpftrace, zero-loss event
    /// rate, post-processing throughput against inferno's CLI, bounded fuzzing; writes
    /// bench/results/<date>.json and .md.
    /// On a machine with an NVIDIA GPU (root): a cudarc workload with known counts under
    /// `modelprobe run`, its recording held against what it did (counts, joins, durations
    /// against CUDA events, NVML, clock drift, the API error); prints a table of checks and
    /// writes the report, view.html and trace.json to OUT. Without a GPU: one line, exit 0.
    GpuCheck {
        /// Use the prebuilt binaries in this folder (`cargo xtask gpu-kit`) instead of
        /// building: how it runs on a GPU host without cargo.
        #[arg(long)]
        kit: Option<PathBuf>,
        /// Where the recording, report, view.html and trace.json go.
        #[arg(long, default_value = "out/gpu-check")]
        out: PathBuf,
    },
    /// Build stripped release binaries for a GPU host into target/gpu-kit/ (modelprobe,
    /// mp-gpu-fixture, xtask): carry that folder and run
    /// `target/gpu-kit/xtask gpu-check --kit target/gpu-kit` there.
    GpuKit,
    Bench {
        /// Baseline/profiled pairs per frequency.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Work rounds per thread (about 1 ms each).
        #[arg(long, default_value_t = 4000)]
        rounds: u64,
        /// Only one part: `cpu` (sampling slowdown, agent cost), `unwind` (table builds),
        /// `load` (a switch flood and process churn), `probe` (per-call cost), `cuda`
        /// (per-CUDA-call cost), `events`, `postproc`, `agent`, `debug`, `memory` (--memory's
        /// costs) or `fuzz`.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root).context("entering the workspace root")?;
    match cli.command {
        Task::Setup => setup(),
        Task::BuildEbpf => {
            setup()?;
            build_ebpf(&root)
        }
        Task::BuildInject => build_inject(&root),
        Task::Build => {
            setup()?;
            build_ebpf(&root)?;
            build_inject(&root)?;
            cargo(&["build", "--release", "-p", "modelprobe"])
        }
        Task::Demo => demo(&root),
        Task::Test { no_lint } => {
            setup()?;
            build_ebpf(&root)?;
            build_inject(&root)?;
            if !no_lint {
                lint()?;
            }
            test(&root)
        }
        Task::Lint => lint(),
        Task::CuptiBindings { check } => cupti::generate(&root, check),
        Task::Fuzz { seconds } => {
            let (lines, ok) = fuzz::run(&root, seconds)?;
            for l in lines {
                println!("{l}");
            }
            if !ok {
                bail!(
                    "a fuzz target crashed: see fuzz/README.md to turn it into a regression test"
                );
            }
            Ok(())
        }
        Task::GpuCheck { kit, out } => gpu_check::run(&root, kit.as_deref(), &out),
        Task::GpuKit => gpu_kit(&root),
        Task::Bench { runs, rounds, only } => bench::run(&root, runs, rounds, only.as_deref()),
    }
}

mod bench;
mod cupti;
mod fuzz;
mod gpu_check;
mod results;

/// The workspace this xtask was built in; when that folder is not here (a binary carried to
/// another machine, as the GPU kit is), the current directory.
fn workspace_root() -> PathBuf {
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    if built_in.join("Cargo.toml").exists() {
        return built_in;
    }
    std::env::current_dir().unwrap_or(built_in)
}

pub(crate) fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, failing with its name if it does not succeed.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// True if the command runs and exits 0 (output discarded).
fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(cargo_bin()).args(args))
}

pub(crate) fn cargo_home_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

pub(crate) fn setup() -> Result<()> {
    ensure_tracefs();
    ensure_nightly_rust_src()?;
    ensure_bpf_linker()
}

fn ensure_tracefs() {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return;
    }
    if !is_root() {
        say("tracefs is not mounted (modelprobe mounts it itself when run as root)");
        return;
    }
    say("mounting tracefs at /sys/kernel/tracing");
    if !succeeds(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])) {
        say("warning: mounting tracefs failed; tracepoint programs will not attach");
    }
}

fn ensure_nightly_rust_src() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output();
    match installed {
        Ok(out) if out.status.success() => {
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
            {
                return Ok(());
            }
            say("adding the rust-src component to the nightly toolchain (BPF programs build core)");
            run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))
        }
        _ => {
            say("installing the nightly toolchain with rust-src (BPF programs need it)");
            run(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
        }
    }
}

fn bpf_linker_works() -> bool {
    let local = cargo_home_bin().join("bpf-linker");
    succeeds(Command::new(&local).arg("--version"))
        || succeeds(Command::new("bpf-linker").arg("--version"))
}

fn ensure_bpf_linker() -> Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let packages = [
        format!("llvm-{LLVM}-dev"),
        format!("libpolly-{LLVM}-dev"),
        "libzstd-dev".to_string(),
    ];
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| !succeeds(Command::new("dpkg").args(["-s", p])))
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "bpf-linker needs {} from apt: run `sudo apt-get install -y {}` and try again",
                packages.join(", "),
                packages.join(" ")
            );
        }
        say(&format!(
            "installing {} with apt (bpf-linker links against LLVM {LLVM})",
            packages.join(" ")
        ));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    say(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM} (a few minutes, once)"
    ));
    let path = format!(
        "/usr/lib/llvm-{LLVM}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new(cargo_bin())
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{LLVM}"))
        .env("PATH", path))
}

pub(crate) fn build_ebpf(root: &Path) -> Result<()> {
    say("building BPF programs (ebpf/, nightly, bpfel-unknown-none)");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .current_dir(root.join("ebpf"))
        .env("CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS", "fallback")
        .env(
            "PATH",
            format!(
                "{}:{}",
                cargo_home_bin().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    // Let ebpf/rust-toolchain.toml and ebpf/.cargo/config.toml decide, not the outer cargo.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    run(&mut cmd)?;
    let built = root.join("ebpf/target/bpfel-unknown-none/release/modelprobe-ebpf");
    let dest = root.join(BPF_OBJECT);
    let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    if std::fs::read(&dest).ok().as_deref() != Some(&bytes[..]) {
        std::fs::create_dir_all(dest.parent().expect("has parent"))?;
        std::fs::write(&dest, &bytes).with_context(|| format!("writing {}", dest.display()))?;
        say(&format!("wrote {}", dest.display()));
    }
    Ok(())
}

/// Where the agent's build script finds the injection library to embed.
pub(crate) const INJECT_LIBRARY: &str = "target/inject/libmodelprobe_inject.so";

/// Builds the CUPTI injection library, optimized and stripped (it is embedded in every agent
/// and written into CUDA processes), in a target folder of its own so its profile settings
/// do not rebuild the rest of the workspace.
pub(crate) fn build_inject(root: &Path) -> Result<()> {
    say("building the CUPTI injection library (agent/inject/, release, stripped)");
    run(Command::new(cargo_bin())
        .args([
            "build",
            "--release",
            "-p",
            "modelprobe-inject",
            "--target-dir",
        ])
        .arg(root.join("target/inject-build"))
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env_remove("CARGO_TARGET_DIR"))?;
    let built = root.join("target/inject-build/release/libmodelprobe_inject.so");
    let dest = root.join(INJECT_LIBRARY);
    let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    if std::fs::read(&dest).ok().as_deref() != Some(&bytes[..]) {
        std::fs::create_dir_all(dest.parent().expect("has parent"))?;
        std::fs::write(&dest, &bytes).with_context(|| format!("writing {}", dest.display()))?;
        say(&format!(
            "wrote {} ({} KiB)",
            dest.display(),
            bytes.len() / 1024
        ));
    }
    Ok(())
}

fn lint() -> Result<()> {
    say("cargo fmt --check");
    cargo(&["fmt", "--all", "--check"])?;
    say("cargo clippy -D warnings");
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}

fn test(root: &Path) -> Result<()> {
    ensure_chromium()?;
    ensure_go()?;
    ensure_protoc()?;
    ensure_prometheus()?;
    ensure_numpy_venv(root)?;
    ensure_node_client(root)?;
    say("checking cupti-sys's bindings against the pinned CUPTI headers");
    if let Err(e) = cupti::generate(root, true) {
        if e.downcast_ref::<cupti::Offline>().is_none() {
            return Err(e);
        }
        say(&format!(
            "warning: CUPTI binding drift check not run: {e:#}"
        ));
    }
    say("building the agent and fixtures");
    cargo(&["build", "--workspace", "--bins"])?;
    say("running all tests (BPF and browser tests required: MODELPROBE_REQUIRE_BPF=1, MODELPROBE_REQUIRE_BROWSER=1)");
    run(Command::new(cargo_bin())
        .args(["test", "--workspace"])
        .env("MODELPROBE_REQUIRE_BPF", "1")
        .env("MODELPROBE_REQUIRE_BROWSER", "1"))
}

/// Headless Chromium, which the viewer test opens `view.html` in (Debian's `chromium`).
fn ensure_chromium() -> Result<()> {
    ensure_package(
        &["chromium", "--version"],
        "chromium",
        "the HTML viewer is tested in headless Chromium",
    )
}

/// `go tool pprof` reads the pprof export in the tests, as users read it.
fn ensure_go() -> Result<()> {
    ensure_package(
        &["go", "version"],
        "golang-go",
        "the pprof export is read back with `go tool pprof`",
    )
}

/// `protoc --decode` reads the Perfetto export in the tests.
fn ensure_protoc() -> Result<()> {
    ensure_package(
        &["protoc", "--version"],
        "protobuf-compiler",
        "the Perfetto export is read back with `protoc --decode`",
    )
}

/// A real Prometheus server scrapes the agent's `/metrics` in the tests.
fn ensure_prometheus() -> Result<()> {
    ensure_package(
        &["prometheus", "--version"],
        "prometheus",
        "a real Prometheus server scrapes `--metrics-addr` in the tests",
    )
}

/// Installs Debian package `package` with apt unless `probe` (a command line) runs (`why`
/// says what for).
fn ensure_package(probe: &[&str], package: &str, why: &str) -> Result<()> {
    if succeeds(Command::new(probe[0]).args(&probe[1..])) {
        return Ok(());
    }
    if !is_root() {
        bail!("{why}: run `sudo apt-get install -y {package}` and try again");
    }
    say(&format!("installing {package} with apt ({why})"));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Where the Python tests find numpy (its OpenBLAS is built without frame pointers and has
/// hand-written kernels), py-spy (the yardstick for Python stacks) and the `openai` and
/// `anthropic` clients (the LLM-call tests) and `opentelemetry-proto` (the OTLP receiver of the
/// export tests): a venv under `target/`, made once.
pub(crate) const NUMPY_VENV: &str = "target/py-numpy";

/// The Python packages the tests use, from PyPI.
const VENV_PACKAGES: &[&str] = &[
    "numpy",
    "py-spy",
    "openai",
    "anthropic",
    "opentelemetry-proto",
];

/// The numpy venv: pyenv's newest CPython (else `python3`), [`VENV_PACKAGES`] from PyPI.
pub(crate) fn ensure_numpy_venv(root: &Path) -> Result<()> {
    let venv = root.join(NUMPY_VENV);
    let python = venv.join("bin/python");
    if succeeds(
        Command::new(&python).args(["-c", "import numpy, openai, anthropic, opentelemetry.proto"]),
    ) && venv.join("bin/py-spy").exists()
    {
        return Ok(());
    }
    let install = |python: &Path| {
        run(Command::new(python)
            .args(["-m", "pip", "install", "-q"])
            .args(VENV_PACKAGES))
    };
    if python.exists() {
        say(&format!(
            "installing {} into {NUMPY_VENV}",
            VENV_PACKAGES.join(", ")
        ));
        return install(&python);
    }
    let base = std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            // "3.12.1" -> (3, 12): numpy wheels exist for 3.10 and later.
            let name = e.file_name().to_string_lossy().into_owned();
            let mut v = name.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            let version = (v.next()?, v.next()?);
            let python = e.path().join("bin/python3");
            (version >= (3, 10) && python.exists()).then_some((version, python))
        })
        .max()
        .map_or_else(|| "python3".into(), |(_, p)| p);
    say(&format!(
        "creating {NUMPY_VENV} with {} (from {}) for the unwinding, Python and LLM-call tests",
        VENV_PACKAGES.join(", "),
        base.display()
    ));
    run(Command::new(&base).arg("-m").arg("venv").arg(&venv))?;
    install(&python)
}

/// Where the LLM-call tests find the Node `openai` client (npm), under `target/`.
pub(crate) const NODE_CLIENT_DIR: &str = "target/node-llm";

/// `npm install openai` into [`NODE_CLIENT_DIR`], once; nothing when the machine has no Node
/// (the test then says it is skipped, or fails under CI's `MODELPROBE_REQUIRE_BPF`).
fn ensure_node_client(root: &Path) -> Result<()> {
    let dir = root.join(NODE_CLIENT_DIR);
    if dir.join("node_modules/openai/package.json").exists() {
        return Ok(());
    }
    if !succeeds(Command::new("npm").arg("--version")) {
        say("no npm here: the Node LLM-client test will be skipped");
        return Ok(());
    }
    say(&format!(
        "installing the Node openai client into {NODE_CLIENT_DIR}"
    ));
    std::fs::create_dir_all(&dir)?;
    run(Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg("openai@7"))
}

/// Everything the demo and the measurements run: set-up, the BPF object, and release builds of
/// the agent and the fixture workloads.
pub(crate) fn build_release_with_fixtures(root: &Path) -> Result<()> {
    setup()?;
    build_ebpf(root)?;
    build_inject(root)?;
    cargo(&[
        "build",
        "--release",
        "-p",
        "modelprobe",
        "-p",
        "modelprobe-tests",
        "--bins",
        // The stand-in CUPTI (an example cdylib) for the GPU-timings cost.
        "--examples",
    ])
}

/// Stripped release binaries for a GPU host, in target/gpu-kit/ (small enough to carry).
fn gpu_kit(root: &Path) -> Result<()> {
    build_release_with_fixtures(root)?;
    cargo(&[
        "build",
        "--release",
        "-p",
        "modelprobe-gpu-fixture",
        "-p",
        "xtask",
    ])?;
    let kit = root.join("target/gpu-kit");
    std::fs::create_dir_all(&kit)?;
    for bin in ["modelprobe", "mp-gpu-fixture", "xtask"] {
        let to = kit.join(bin);
        std::fs::copy(root.join("target/release").join(bin), &to)
            .with_context(|| format!("copying {bin}"))?;
        run(Command::new("strip").arg(&to))?;
    }
    std::fs::copy(
        root.join("gpu-fixture/torch_loop.py"),
        kit.join("torch_loop.py"),
    )?;
    say(&format!(
        "GPU kit in {}: carry it and run `target/gpu-kit/xtask gpu-check --kit target/gpu-kit` as root there",
        kit.display()
    ));
    Ok(())
}

fn demo(root: &Path) -> Result<()> {
    if !is_root() {
        bail!("the demo attaches BPF programs and needs root: run `sudo -E cargo xtask demo`");
    }
    build_release_with_fixtures(root)?;
    let out = root.join("out/demo");
    say("profiling the example workload for 5 s (CPU hot spots 3:1, a sleeping thread, a child process)");
    run(Command::new(root.join("target/release/modelprobe"))
        .args([
            "run",
            "--off-cpu",
            "--probe",
            "mp-workload:mp_sleep@1",
            "-o",
        ])
        .arg(&out)
        .arg("--")
        .arg(root.join("target/release/mp-workload"))
        .args(["--seconds", "5", "--child"]))?;
    say(&format!(
        "flame graph: {}",
        out.join("flamegraph.svg").display()
    ));
    say(&format!(
        "off-CPU flame graph: {}",
        out.join("offcpu-flamegraph.svg").display()
    ));
    say(&format!(
        "timeline (open it in Perfetto UI): {}",
        out.join("trace.json").display()
    ));
    run(Command::new(root.join("target/release/modelprobe"))
        .arg("view")
        .arg(&out))?;
    say(&format!(
        "everything in one page (open it in a browser): {}",
        out.join("view.html").display()
    ));
    say(&format!(
        "report: target/release/modelprobe report {}",
        out.display()
    ));
    Ok(())
}
