//! Golden-file tests: the exact bytes of every output modelprobe derives from a recording
//! (folded stacks, flame graph SVGs, `trace.json`, `modelprobe report` as text and as JSON),
//! built from one fixed recording, compared with the files in `tests/golden/`.
//!
//! After an intended change of an output, re-bless (rewrite) the golden files and review their
//! diff like code:
//!
//! ```sh
//! MODELPROBE_BLESS=1 cargo test -p modelprobe --test golden
//! ```
//!
//! The fixture is fully deterministic: no BPF, no machine state, no clock, no host name or pid
//! of this machine. A golden file that is missing, or that no output produces any more, is a
//! failure unless blessing.
//!
//! The fixture is in `golden_support/fixture.rs`, the comparison in `golden_support/compare.rs`:
//! `tests/golden/` must hold nothing but expected outputs (any other file there counts as
//! stale).
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context};
use modelprobe::{export, recording::Recording};

#[path = "golden_support/compare.rs"]
mod compare;
#[path = "golden_support/fixture.rs"]
mod fixture;

use compare::{blessing, check, golden_dir, BLESS_VAR};
use fixture::golden_recording;

/// A fresh scratch directory for this test run (its path appears in no output).
fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("golden-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// stdout of `modelprobe ARGS`, which must succeed.
fn modelprobe(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_modelprobe"))
        .args(args)
        .env_remove("MODELPROBE_LOG")
        .output()
        .with_context(|| format!("running modelprobe {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "modelprobe {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).context("modelprobe printed invalid UTF-8")
}

/// Every output, by golden file name: what `export_all` writes for the recording (read back
/// from disk, as `modelprobe report` reads it), and `modelprobe report` in both forms.
fn outputs(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    golden_recording()
        .write(dir)
        .context("writing the recording")?;
    let rec = Recording::read(dir).context("reading the recording back")?;
    let mut out = BTreeMap::new();
    for path in export::export_all(&rec, dir).context("exporting")? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("an output without a file name")?
            .to_string();
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        out.insert(name, text);
    }
    let dir_arg = dir.to_str().context("a scratch path that is not UTF-8")?;
    out.insert("report.txt".into(), modelprobe(&["report", dir_arg])?);
    out.insert(
        "report.json".into(),
        modelprobe(&["report", dir_arg, "--json"])?,
    );
    Ok(out)
}

#[test]
fn outputs_match_golden_files() -> anyhow::Result<()> {
    let dir = scratch_dir()?;
    let outputs = outputs(&dir)?;
    let mut failures = Vec::new();
    for (name, text) in &outputs {
        if let Some(diff) = check(name, text)? {
            failures.push(diff);
        }
    }
    // A golden file no output produces any more is stale: blessing removes it.
    let listing = match fs::read_dir(golden_dir()) {
        Ok(listing) => listing.collect::<Result<Vec<_>, _>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    };
    for entry in listing.context("listing tests/golden")? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !outputs.contains_key(&name) {
            if blessing() {
                fs::remove_file(entry.path())?;
            } else {
                failures.push(format!(
                    "tests/golden/{name}: no output produces it any more\n"
                ));
            }
        }
    }
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    if !failures.is_empty() {
        panic!(
            "{} golden file(s) differ:\n\n{}\nrun {BLESS_VAR}=1 cargo test -p modelprobe --test golden to accept",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
