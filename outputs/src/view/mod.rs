//! The self-contained HTML viewer (`modelprobe view`): one file, no network, that a browser
//! opens to explore a recording.
//!
//! The page has three tabs:
//!
//! - **Timeline**: one track per thread, grouped by process, with its spans nested by depth,
//!   events and log lines as markers, CPU samples as a density strip and off-CPU intervals, plus
//!   counter tracks (CPU usage per process); per GPU, NVML counters and a track per stream of
//!   GPU operations (kernels, copies, memsets; syncs and NVTX ranges apart), each linked to the
//!   span of the call that launched it. Wheel zooms around the cursor, drag pans, hover
//!   shows a tooltip, click shows details. Drawn on a canvas from columnar typed arrays with a
//!   binary search for the visible window and items narrower than a pixel merged per pixel
//!   column, so a million spans stay fluid.
//! - **Flame graphs**: CPU and off-CPU (a GPU slot waits for GPU samples), click to zoom, search
//!   with the matched share, per-thread filter.
//! - **Report**: the report's headline and tables, passed through from the report module.
//!
//! The data is embedded as compact, columnar JSON (its layout is described in `view/data.rs`)
//! inside `<script type="application/json" id="mp-data">`, with every `<` written as `\u003c`
//! so no string can close the script element. The page's HTML, CSS and JavaScript are compiled
//! in (`view/*.html`, `*.css`, `*.js`).
//!
//! Once drawn, the page sets on `<body>`: `data-mp-ready="1"`, `data-mp-ready-ms` (when, from
//! navigation start), `data-mp-spans-drawn` (span rectangles on the timeline's first view),
//! `data-mp-items-drawn` (markers, sample columns, counter points), `data-mp-flame-frames`
//! (rectangles of the first flame graph), `data-mp-tables` (report tables), and
//! `data-mp-errors` (script errors, listed in `<pre id="mp-errors">`): what the end-to-end test
//! reads from a headless browser.
//!
//! ```no_run
//! let rec = modelprobe_recording::Recording::read(std::path::Path::new("out"))?;
//! let report = serde_json::json!({"headline": [], "sections": []});
//! let stats = modelprobe_outputs::view::write_html(&rec, &report, "out/view.html".as_ref())?;
//! println!("wrote {} bytes", stats.bytes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
};

use crate::{recording::Recording, Error, Result};

mod data;
mod encode;
mod gpu;
mod llm;
mod stacks;

/// The page, with `{{TITLE}}`, `{{CSS}}`, `{{DATA}}` and `{{JS}}` placeholders, in this order.
const TEMPLATE: &str = include_str!("viewer.html");
/// The page's style sheet.
const CSS: &str = include_str!("viewer.css");
/// The page's scripts, in load order.
const SCRIPTS: [&str; 8] = [
    include_str!("util.js"),
    include_str!("timeline.js"),
    include_str!("timeline_ui.js"),
    include_str!("timeline_gpu.js"),
    include_str!("replay.js"),
    include_str!("flame.js"),
    include_str!("report.js"),
    include_str!("main.js"),
];

/// What [`write_html`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewStats {
    /// Size of the file.
    pub bytes: u64,
    /// Spans embedded.
    pub spans: u64,
    /// Events embedded.
    pub events: u64,
    /// Log lines embedded.
    pub logs: u64,
    /// Samples (CPU and off-CPU) embedded.
    pub samples: u64,
}

/// The viewer page for `rec`, with `report` (the report module's JSON: `headline` and
/// `sections`) embedded verbatim, as one string.
pub fn render_html(rec: &Recording, report: &serde_json::Value) -> String {
    let mut out = Vec::new();
    write_page(rec, report, &mut out).expect("writing into memory cannot fail");
    String::from_utf8(out).expect("the page is built from UTF-8 pieces")
}

/// Writes the viewer page for `rec` and `report` to `path` (streamed, not built in memory).
pub fn write_html(rec: &Recording, report: &serde_json::Value, path: &Path) -> Result<ViewStats> {
    let err = |e: io::Error| Error::io(format!("writing {}", path.display()), e);
    let file = File::create(path).map_err(err)?;
    let mut w = Counting {
        inner: BufWriter::with_capacity(1 << 20, file),
        bytes: 0,
    };
    write_page(rec, report, &mut w).map_err(err)?;
    w.inner.flush().map_err(err)?;
    Ok(ViewStats {
        bytes: w.bytes,
        spans: rec.spans.len() as u64,
        events: rec.events.len() as u64,
        logs: rec.logs.len() as u64,
        samples: rec.samples.len() as u64,
    })
}

/// Fills the template.
fn write_page(rec: &Recording, report: &serde_json::Value, w: &mut dyn Write) -> io::Result<()> {
    let mut rest = TEMPLATE;
    for marker in ["{{TITLE}}", "{{CSS}}", "{{DATA}}", "{{JS}}"] {
        let (before, after) = rest
            .split_once(marker)
            .expect("viewer.html holds every placeholder once, in order");
        w.write_all(before.as_bytes())?;
        rest = after;
        match marker {
            "{{TITLE}}" => w.write_all(escape_html(&title(rec)).as_bytes())?,
            "{{CSS}}" => w.write_all(CSS.as_bytes())?,
            "{{DATA}}" => {
                let mut safe = ScriptSafe::new(&mut *w);
                data::write_data(rec, report, &mut safe)?;
                safe.finish()?;
            }
            _ => {
                for script in SCRIPTS {
                    w.write_all(script.as_bytes())?;
                    w.write_all(b"\n")?;
                }
            }
        }
    }
    w.write_all(rest.as_bytes())
}

fn title(rec: &Recording) -> String {
    let command = rec.meta.command.trim();
    if command.is_empty() {
        "modelprobe".to_string()
    } else {
        let short: String = command.chars().take(80).collect();
        format!("{short} — modelprobe")
    }
}

/// Escapes text for an HTML text node or attribute value.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Passes JSON through with every `<` written as `\u003c`. In JSON text `<` occurs only inside
/// strings, where the escape means the same character, so `</script>` and `<!--` can never
/// appear inside the script element. Buffered: serialization makes many tiny writes.
struct ScriptSafe<'a> {
    inner: &'a mut dyn Write,
    buf: Vec<u8>,
}

impl<'a> ScriptSafe<'a> {
    const CHUNK: usize = 1 << 16;

    fn new(inner: &'a mut dyn Write) -> Self {
        ScriptSafe {
            inner,
            buf: Vec::with_capacity(Self::CHUNK + 1024),
        }
    }

    /// Escapes and passes on what is buffered.
    fn drain(&mut self) -> io::Result<()> {
        let mut rest = &self.buf[..];
        while let Some(i) = rest.iter().position(|&b| b == b'<') {
            self.inner.write_all(&rest[..i])?;
            self.inner.write_all(b"\\u003c")?;
            rest = &rest[i + 1..];
        }
        self.inner.write_all(rest)?;
        self.buf.clear();
        Ok(())
    }

    /// Passes on the rest; must be called, or the tail is lost.
    fn finish(mut self) -> io::Result<()> {
        self.drain()
    }
}

impl Write for ScriptSafe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= Self::CHUNK {
            self.drain()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
