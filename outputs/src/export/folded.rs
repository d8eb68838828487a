//! Folded stacks (`stacks.folded`, `offcpu.folded`): one line per distinct stack,
//! `process;outer;...;inner COUNT`, the format FlameGraph, inferno and speedscope read.
//!
//! Kernel frames carry the `_[k]` suffix and inlined functions `_[i]`, the annotations
//! FlameGraph's `stackcollapse-perf` uses, so flame graphs color them apart. Off-CPU weights
//! are microseconds.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::Exporter;
use crate::{
    recording::{FrameKind, Recording, SampleKind},
    Error, Result,
};

/// File name of the CPU folded stacks.
pub const CPU_FILE: &str = "stacks.folded";
/// File name of the off-CPU folded stacks.
pub const OFF_CPU_FILE: &str = "offcpu.folded";

/// The folded-stacks exporter.
pub struct Folded;

/// Folded lines for one kind of sample, keyed by stack, with summed weights (samples for CPU,
/// microseconds for off-CPU). Sorted, so output is deterministic.
pub fn folded_stacks(rec: &Recording, kind: SampleKind) -> BTreeMap<String, u64> {
    let mut by_stack: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for s in rec.samples.iter().filter(|s| s.kind == kind) {
        let w = by_stack.entry((s.pid, s.stack)).or_default();
        *w = w.saturating_add(s.weight);
    }
    let mut out = BTreeMap::new();
    for ((pid, stack), weight) in by_stack {
        let weight = match kind {
            SampleKind::Cpu => weight,
            SampleKind::OffCpu => weight / 1000,
        };
        if weight == 0 {
            continue;
        }
        let w: &mut u64 = out.entry(stack_line(rec, pid, Some(stack))).or_default();
        *w = w.saturating_add(weight);
    }
    out
}

/// One folded line's stack: `process;outer;...;inner` (the process alone for no stack).
pub(crate) fn stack_line(rec: &Recording, pid: u32, stack: Option<u32>) -> String {
    let mut line = sanitize(&rec.process_name(pid));
    for &f in stack
        .and_then(|s| rec.stacks.get(s as usize))
        .into_iter()
        .flatten()
    {
        let frame = &rec.frames[f as usize];
        line.push(';');
        line.push_str(&sanitize(&frame.name));
        if frame.kind == FrameKind::Kernel {
            line.push_str("_[k]");
        } else if frame.inlined {
            line.push_str("_[i]");
        } else if frame.kind == FrameKind::Jit {
            line.push_str("_[j]");
        }
    }
    line
}

/// Frame names must not contain the separators of the format.
fn sanitize(name: &str) -> String {
    name.replace([';', '\n', '\r'], ":")
}

pub(crate) fn write_folded(path: &Path, lines: &BTreeMap<String, u64>) -> Result<()> {
    let mut text = String::new();
    for (stack, n) in lines {
        text.push_str(stack);
        text.push(' ');
        text.push_str(&n.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

impl Exporter for Folded {
    fn name(&self) -> &'static str {
        "folded stacks"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut written = vec![dir.join(CPU_FILE)];
        write_folded(&written[0], &folded_stacks(rec, SampleKind::Cpu))?;
        if rec.meta.off_cpu {
            let path = dir.join(OFF_CPU_FILE);
            write_folded(&path, &folded_stacks(rec, SampleKind::OffCpu))?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::fixtures::sample_recording;

    #[test]
    fn folds_with_annotations_and_units() {
        let rec = sample_recording();
        let cpu = folded_stacks(&rec, SampleKind::Cpu);
        assert_eq!(cpu.get("app;main;hot:a"), Some(&2));
        assert_eq!(cpu.get("app;main;do_syscall_64_[k]"), Some(&1));
        let off = folded_stacks(&rec, SampleKind::OffCpu);
        assert_eq!(off.get("app;main;do_syscall_64_[k]"), Some(&2500));
        assert_eq!(off.len(), 1);
    }
}
