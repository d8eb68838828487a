//! How the viewer's data is written: interned strings, times relative to the recording's start
//! and delta-encoded, integers a JavaScript number cannot hold as hexadecimal strings, and
//! columns as JSON members. Shared by the process tracks (`data.rs`) and the GPU tracks
//! (`gpu.rs`).
use std::{
    collections::HashMap,
    io::{self, Write},
};

use serde::Serialize;

use crate::recording::Recording;

/// Largest magnitude a JavaScript number holds exactly.
const JS_SAFE: u64 = (1 << 53) - 1;

/// Interns strings; items refer to them by index.
#[derive(Default)]
pub(super) struct Strings {
    index: HashMap<String, u32>,
    list: Vec<String>,
}

impl Strings {
    /// The index of `s`, added if new.
    pub(super) fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u32;
        self.index.insert(s.to_string(), i);
        self.list.push(s.to_string());
        i
    }

    /// The table, in index order.
    pub(super) fn list(&self) -> &[String] {
        &self.list
    }
}

/// A time relative to the recording's start, in ns.
pub(super) fn rel(rec: &Recording, t: u64) -> i64 {
    t as i64 - rec.meta.start_ns as i64
}

/// Delta-encodes sorted relative times.
pub(super) fn deltas(times: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut prev = 0;
    times
        .map(|t| {
            let d = t - prev;
            prev = t;
            d
        })
        .collect()
}

/// Writes an integer as a JSON number, or as a hexadecimal string when a JavaScript number
/// cannot hold it exactly. `u64` values are read as two's complement (`-1`, not 2^64-1).
pub(super) fn write_int(w: &mut dyn Write, v: u64) -> io::Result<()> {
    let signed = v as i64;
    if signed.unsigned_abs() <= JS_SAFE {
        write!(w, "{signed}")
    } else {
        write!(w, "\"0x{v:x}\"")
    }
}

pub(super) fn key(w: &mut dyn Write, first: &mut bool, name: &str) -> io::Result<()> {
    if !std::mem::take(first) {
        w.write_all(b",")?;
    }
    write!(w, "\"{name}\":")
}

pub(super) fn json(w: &mut dyn Write, v: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(w, v).map_err(io::Error::from)
}

pub(super) fn column(
    w: &mut dyn Write,
    first: &mut bool,
    name: &str,
    v: &impl Serialize,
) -> io::Result<()> {
    key(w, first, name)?;
    json(w, v)
}
