//! The Python section: which interpreters were read, and how many of each process's CPU
//! samples name its Python functions.
use std::collections::HashMap;

use serde_json::json;

use super::{round, Section};
use crate::recording::{FrameKind, Recording, SampleKind};

/// One row per Python process: its interpreter and the share of its CPU samples whose stack
/// has Python frames; processes whose frames were off say why.
pub(super) fn python(rec: &Recording) -> Section {
    let Some(py) = &rec.meta.python else {
        return Section::absent("python", "Python", "no target ran CPython");
    };
    let mut s = Section::table(
        "python",
        "Python",
        &[
            "process",
            "interpreter",
            "CPU samples",
            "with Python frames",
        ],
    );
    // Per process: (CPU samples, those with a Python frame).
    let mut counts: HashMap<u32, (u64, u64)> = HashMap::new();
    let has_python: Vec<bool> = rec
        .stacks
        .iter()
        .map(|st| {
            st.iter().any(|&f| {
                rec.frames
                    .get(f as usize)
                    .is_some_and(|f| f.kind == FrameKind::Python)
            })
        })
        .collect();
    for sample in rec.samples.iter().filter(|s| s.kind == SampleKind::Cpu) {
        let c = counts.entry(sample.pid).or_default();
        c.0 += 1;
        c.1 += u64::from(has_python.get(sample.stack as usize) == Some(&true));
    }
    for i in &py.interpreters {
        let (n, with) = counts.get(&i.pid).copied().unwrap_or_default();
        let share = if n == 0 {
            json!("-")
        } else {
            json!(format!("{}%", round(100.0 * with as f64 / n as f64, 1)))
        };
        s.rows.push(vec![
            json!(format!("{} ({})", rec.process_name(i.pid), i.pid)),
            json!(format!("CPython {} ({})", i.version, i.object)),
            json!(n),
            share,
        ]);
    }
    for line in &py.off {
        s.rows
            .push(vec![json!(""), json!(line), json!(""), json!("")]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{
        fixtures::sample_recording, Frame, PythonInterpreter, PythonSummary, Sample,
    };

    #[test]
    fn shares_of_samples_with_python_frames() {
        let mut rec = sample_recording();
        assert!(python(&rec).absent.is_some());
        rec.frames.push(Frame {
            name: "serve (app.py:3)".into(),
            module: None,
            file: Some("/srv/app.py".into()),
            line: Some(3),
            kind: FrameKind::Python,
            inlined: false,
        });
        let py = rec.frames.len() as u32 - 1;
        rec.stacks.push(vec![0, py]);
        let stack = rec.stacks.len() as u32 - 1;
        for _ in 0..3 {
            rec.samples.push(Sample {
                kind: SampleKind::Cpu,
                time_ns: 0,
                pid: 7,
                tid: 7,
                stack,
                weight: 1,
                blocks: None,
            });
        }
        rec.meta.python = Some(PythonSummary {
            interpreters: vec![PythonInterpreter {
                pid: 7,
                version: "3.12".into(),
                object: "libpython3.12.so.1.0".into(),
            }],
            off: vec!["pid 9: Python frames are off (CPython 3.8)".into()],
            ..PythonSummary::default()
        });
        let s = python(&rec);
        assert_eq!(s.rows.len(), 2);
        let cpu = rec
            .samples
            .iter()
            .filter(|s| s.kind == SampleKind::Cpu && s.pid == 7)
            .count();
        assert_eq!(s.rows[0][2], json!(cpu));
        let want = format!("{}%", round(300.0 / cpu as f64, 1));
        assert_eq!(s.rows[0][3], json!(want));
        assert_eq!(
            s.rows[1][1],
            json!("pid 9: Python frames are off (CPython 3.8)")
        );
    }
}
