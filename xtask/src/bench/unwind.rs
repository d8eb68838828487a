//! What the unwind tables cost the agent: build time, rows and kernel memory for the largest
//! libraries on the machine (the `unwind_tables` example), once per build id in a session.
use std::{path::Path, process::Command};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::*;

pub(super) fn table_cost(root: &Path, report: &mut Report) -> Result<()> {
    say("unwind tables: compiling the CFI of the largest libraries on the machine");
    let out = Command::new(root.join("target/release/examples/unwind_tables")).output()?;
    if !out.status.success() {
        bail!(
            "unwind_tables failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    report.table(
        "unwind_tables",
        "Unwind-table build (once per build id) for the largest libraries here",
        &[
            "library",
            "file",
            "rows",
            "kernel memory",
            "build time",
            "agent peak RSS",
        ],
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line)?;
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        let name = v["file"].as_str().unwrap_or("?");
        report.row(vec![
            json!(name.rsplit('/').next().unwrap_or(name)),
            json!(format!("{:.0} MiB", f("file_mib"))),
            json!(v["rows"]),
            json!(format!("{:.1} MiB", f("kernel_mib"))),
            json!(format!("{:.0} ms", f("build_ms"))),
            json!(format!("{:.0} MiB", f("peak_rss_mib"))),
        ]);
    }
    Ok(())
}
