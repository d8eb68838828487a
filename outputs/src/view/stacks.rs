//! Samples and the frames their stacks name, as the viewer's data writes them: a thread's
//! samples per set (CPU, off-CPU) as columns, and the frame table.
use std::io::{self, Write};

use super::encode::{column, deltas, rel, Strings};
use crate::recording::{FrameKind, Recording};

pub(super) fn write_samples(rec: &Recording, idx: &[usize], w: &mut dyn Write) -> io::Result<()> {
    let samples = || idx.iter().map(|&i| &rec.samples[i]);
    let mut first = true;
    w.write_all(b"{")?;
    column(
        w,
        &mut first,
        "t",
        &deltas(samples().map(|s| rel(rec, s.time_ns))),
    )?;
    column(
        w,
        &mut first,
        "s",
        &samples().map(|s| s.stack).collect::<Vec<_>>(),
    )?;
    if samples().any(|s| s.weight != 1) {
        column(
            w,
            &mut first,
            "w",
            &samples().map(|s| s.weight).collect::<Vec<_>>(),
        )?;
    }
    w.write_all(b"}")
}

pub(super) fn write_frames(
    rec: &Recording,
    strings: &mut Strings,
    w: &mut dyn Write,
) -> io::Result<()> {
    let frames = &rec.frames;
    let opt = |strings: &mut Strings, s: &Option<String>| {
        s.as_deref().map_or(-1, |s| i64::from(strings.id(s)))
    };
    let names: Vec<u32> = frames.iter().map(|f| strings.id(&f.name)).collect();
    let modules: Vec<i64> = frames.iter().map(|f| opt(strings, &f.module)).collect();
    let files: Vec<i64> = frames.iter().map(|f| opt(strings, &f.file)).collect();
    let kinds: Vec<u8> = frames
        .iter()
        .map(|f| match f.kind {
            FrameKind::User => 0,
            FrameKind::Kernel => 1,
            FrameKind::Jit => 2,
            FrameKind::Unknown => 3,
            FrameKind::Python => 4,
        })
        .collect();
    let mut first = true;
    w.write_all(b"{")?;
    column(w, &mut first, "n", &names)?;
    column(w, &mut first, "m", &modules)?;
    column(w, &mut first, "k", &kinds)?;
    column(
        w,
        &mut first,
        "i",
        &frames
            .iter()
            .map(|f| u8::from(f.inlined))
            .collect::<Vec<_>>(),
    )?;
    column(w, &mut first, "f", &files)?;
    column(
        w,
        &mut first,
        "ln",
        &frames
            .iter()
            .map(|f| f.line.unwrap_or(0))
            .collect::<Vec<_>>(),
    )?;
    w.write_all(b"}")
}
