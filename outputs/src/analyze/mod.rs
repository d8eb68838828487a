//! Filters and aggregates recordings and plain log files (`modelprobe analyze`).
//!
//! Each input is a recording (a directory holding `recording.json`, or the file itself, told
//! apart by name or by its `"format"` field) or, anything else, a plain text log read line by
//! line (`-` is standard input). Both become [`Item`]s:
//!
//! - from a recording (`recording.rs`): its spans (named after the probed function, with a
//!   duration), its events (named after their kind) and its log lines, on the wall clock;
//! - from a log (`logfile.rs`, `lineparse.rs`): one item per line with its timestamp, level,
//!   source and message, continuation lines (a Python traceback) folded into the item above.
//!
//! Items that pass the [`AnalyzeOptions`] filters (`filter.rs`) are counted into one
//! [`Summary`] over all inputs: counts per kind and level, per-span-name statistics, the
//! slowest items, errors grouped by message with numbers and ids masked, and a per-input
//! breakdown (`summary.rs`).
//!
//! [`analyze`] checks the inputs (a bad one is a one-line usage error before anything is
//! read) and returns an [`Analysis`]; its `write_*` methods read the inputs, streaming, and
//! write the result, so the items of `--json` go out as they are read.
//!
//! ```no_run
//! use modelprobe_outputs::analyze::{self, AnalyzeOptions};
//! let opts = AnalyzeOptions { level: Some(modelprobe_recording::logs::Level::Warn), ..Default::default() };
//! let analysis = analyze::analyze(&["server.log".into(), "out/run1".into()], &opts)?;
//! analysis.write_text(&mut std::io::stdout())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Times
//!
//! Times are Unix nanoseconds (UTC). Recording times are CLOCK_MONOTONIC, converted with the
//! recording's `meta.start_unix_ms` / `meta.start_ns`. Log timestamps without a zone are taken
//! as UTC, as are such times on the command line; shapes without a year (glog, syslog, vLLM)
//! take the file's modification year.
//!
//! # Text output ([`Analysis::write_text`])
//!
//! A headline (inputs, items matched of items read, the filters), then aligned tables: items
//! per level and kind, spans by total time (count, total, mean, p50, p95, max in ms), the
//! `top` slowest items, error groups (count, first seen, input, a sample message; `top` of
//! them), and one row per input (kind, lines, items read and matched, errors, warnings, first
//! and last time). Times are RFC 3339 UTC with milliseconds.
//!
//! # JSON lines ([`Analysis::write_json_lines`])
//!
//! One object per matching item, in input order (a recording's items in time order), written
//! as each passes the filters:
//!
//! ```json
//! {"input":"server.log","t":"2024-01-01T12:00:00.123000000Z","level":"ERROR","kind":"log","name":"app","message":"request failed\nTraceback ...","duration_ns":null}
//! ```
//!
//! `t` is RFC 3339 UTC with nanoseconds, or `null` when the line had no time; `level` is
//! `DEBUG`, `INFO`, `WARN`, `ERROR`, `FATAL` or `null`; `kind` is `span`, `event` or `log`;
//! `name` is the probed function (span), the event kind (event), the logger, tag or source
//! location (log line), the stream for a recording's log line, or `null`; `message` is the
//! whole text (a span's is `function(args) = ret [attrs]`); `duration_ns` is set for spans.
//! Then one last line, `{"summary": {...}}`:
//!
//! ```json
//! {"summary":{
//!   "items": 12, "read": 40, "filters": ["level >= WARN"],
//!   "levels": {"FATAL":0,"ERROR":3,"WARN":9,"INFO":0,"DEBUG":0,"none":0},
//!   "kinds": {"span": {"total":0,"FATAL":0,...,"none":0}, "event": {...}, "log": {...}},
//!   "spans": [{"name":"llama_decode","count":25,"total_ns":1,"mean_ns":1,"p50_ns":1,"p95_ns":1,"max_ns":1}],
//!   "slowest": [ items, shaped as above ],
//!   "errors": {"total":3, "ungrouped":0, "groups": [{"message":"timeout after <N>ms","count":2,
//!              "sample":"timeout after 31ms","input":"server.log","first":"...","last":"..."}]},
//!   "inputs": [{"input":"server.log","kind":"log","lines":45,"read":40,"items":12,"errors":3,
//!               "warnings":9,"first":"...","last":"..."}]
//! }}
//! ```
//!
//! `errors.total` counts items at `ERROR` or `FATAL`, except a failed span whose failure is
//! also an `api_error` event (so one failed call counts once); `ungrouped` counts errors past
//! the group limit. `lines` is `null` for a recording.
//!
//! # Memory
//!
//! Logs are streamed: what is kept is the summary (counters, the `top` slowest items, one
//! sample per error group, and the durations of spans, which come from recordings that are in
//! memory anyway). A recording is read whole, as every reader of the format does.
use std::{
    fs::File,
    io::{self, BufReader, Read, Write},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::Serialize;

use crate::{logs::Level, recording::Recording, Error, Result};

mod filter;
mod lineparse;
mod logfile;
mod normalize;
mod output;
mod recording;
mod structured;
mod summary;
mod timestamp;

pub use normalize::normalize;
pub use summary::{
    ErrorGroup, ErrorSummary, InputKind, InputSummary, LevelCounts, SpanStats, Summary,
};

/// What to keep and how much to show.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Only items with at least this level (`FATAL` ranks as `ERROR`).
    pub level: Option<Level>,
    /// Only items lasting at least this long (spans).
    pub min_duration: Option<Duration>,
    /// Only items whose name or message this matches (see [`parse_pattern`]).
    pub pattern: Option<regex::Regex>,
    /// Only items at or after this time.
    pub since: Option<TimeBound>,
    /// Only items at or before this time.
    pub until: Option<TimeBound>,
    /// How many slowest items, span names and error groups the text shows.
    pub top: usize,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            level: None,
            min_duration: None,
            pattern: None,
            since: None,
            until: None,
            top: 10,
        }
    }
}

/// A `--since` / `--until` bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// A wall-clock time, Unix nanoseconds.
    Absolute(u64),
    /// This long after the start of each input (a recording's start, a log's first timestamp).
    Relative(Duration),
}

impl FromStr for TimeBound {
    type Err = String;

    /// A duration (`30s`, `5m`, `1h30m`: from each input's start), or a time: RFC 3339
    /// (`2024-01-01T12:00:00Z`, `...+02:00`), `2024-01-01 12:00:00[.fff]` (UTC) or a date.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if let Ok(d) = humantime::parse_duration(s) {
            return Ok(TimeBound::Relative(d));
        }
        if let Some((c, used)) = timestamp::iso(s.as_bytes(), true) {
            if used == s.len() {
                if let Some(t) = c.unix_ns(0) {
                    return Ok(TimeBound::Absolute(t));
                }
            }
        }
        Err(format!(
            "invalid time {s:?}: give a duration from each input's start (30s, 5m) or a time \
             (2024-01-01T12:00:00Z, \"2024-01-01 12:00:00\")"
        ))
    }
}

impl std::fmt::Display for TimeBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimeBound::Absolute(t) => f.write_str(&timestamp::format_millis(*t)),
            TimeBound::Relative(d) => {
                write!(f, "{} from start", humantime::format_duration(*d))
            }
        }
    }
}

/// Compiles a `--pattern`; a bad one is a one-line [`Error::InvalidArgument`].
pub fn parse_pattern(s: &str) -> Result<regex::Regex> {
    regex::Regex::new(s).map_err(|e| {
        Error::InvalidArgument(format!("invalid --pattern {s:?}: {}", regex_problem(&e)))
    })
}

/// What is wrong with a regular expression, in one line: the regex crate's syntax errors span
/// several (the pattern, a caret, the error), and the last says what is wrong.
pub fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

/// Where an item comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// A call of a probed function (recordings).
    Span,
    /// A process, thread, signal, model-load or API-error event (recordings).
    Event,
    /// A log line (recordings and plain logs).
    Log,
}

impl ItemKind {
    /// `span`, `event` or `log`.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Span => "span",
            ItemKind::Event => "event",
            ItemKind::Log => "log",
        }
    }
}

/// One span, event or log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Index of its input in the list given to [`analyze`] (and in [`Analysis::inputs`]).
    pub input: usize,
    /// Unix nanoseconds (a span's start), if known.
    pub t: Option<u64>,
    /// Its level, if it has one.
    pub level: Option<Level>,
    /// Span, event or log line.
    pub kind: ItemKind,
    /// Probed function, event kind, logger / source / stream.
    pub name: Option<String>,
    /// The text: a log line with its continuation lines, an event's message, a span described.
    pub message: String,
    /// How long a span lasted.
    pub duration_ns: Option<u64>,
    /// False for a failed span whose failure is also an `api_error` event: the error counts
    /// once, as the event.
    pub counts_as_error: bool,
}

impl Item {
    /// Whether it counts among errors (`ERROR` or `FATAL`, counted once per failure).
    pub fn is_error(&self) -> bool {
        self.counts_as_error && self.level >= Some(Level::Error)
    }
}

/// What an input is, decided when the analysis is prepared.
#[derive(Debug, Clone)]
enum Source {
    Recording(PathBuf),
    Log(PathBuf),
    Stdin,
}

fn bad_input(path: &Path, e: &io::Error) -> Error {
    Error::InvalidArgument(match e.kind() {
        io::ErrorKind::NotFound => format!("{}: no such file or directory", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    })
}

/// Checks that an input can be read, and decides whether it is a recording or a log.
fn classify(path: &Path) -> Result<Source> {
    if path.as_os_str() == "-" {
        return Ok(Source::Stdin);
    }
    let meta = std::fs::metadata(path).map_err(|e| bad_input(path, &e))?;
    if meta.is_dir() {
        if path.join(crate::recording::FILE_NAME).is_file() {
            return Ok(Source::Recording(path.to_path_buf()));
        }
        return Err(Error::InvalidArgument(format!(
            "{} is a directory without {}: give a recording's directory or a log file",
            path.display(),
            crate::recording::FILE_NAME
        )));
    }
    let file = File::open(path).map_err(|e| bad_input(path, &e))?;
    let named = path
        .file_name()
        .is_some_and(|n| n == crate::recording::FILE_NAME);
    if named || looks_like_recording(&file) {
        return Ok(Source::Recording(path.to_path_buf()));
    }
    Ok(Source::Log(path.to_path_buf()))
}

/// Whether a file starts like a recording (its `format` field comes first).
fn looks_like_recording(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 256];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..n]);
    head.trim_start().starts_with('{') && head.contains(crate::recording::FORMAT_NAME)
}

/// An analysis whose inputs have been checked: [`Analysis::write_text`] and
/// [`Analysis::write_json_lines`] read them (each call reads them anew, streaming) and write
/// the result; [`Analysis::summary`] returns it as data.
#[derive(Debug, Clone)]
pub struct Analysis {
    labels: Vec<String>,
    sources: Vec<Source>,
    opts: AnalyzeOptions,
}

/// Prepares the analysis of `inputs`: each must exist and be readable, and a directory must
/// hold a `recording.json`; otherwise a one-line [`Error::InvalidArgument`] names it. Nothing
/// is read yet.
pub fn analyze(inputs: &[PathBuf], opts: &AnalyzeOptions) -> Result<Analysis> {
    Ok(Analysis {
        labels: inputs.iter().map(|p| p.display().to_string()).collect(),
        sources: inputs.iter().map(|p| classify(p)).collect::<Result<_>>()?,
        opts: opts.clone(),
    })
}

/// The items of a plain log given as text, parsed exactly as a log file is (for fuzzing and
/// tests; files go through [`analyze`]).
pub fn parse_log_text(text: &str) -> Vec<Item> {
    let mut assembler = logfile::Assembler::new(lineparse::LineParser::new(None), 0);
    let mut items: Vec<Item> = text.lines().filter_map(|l| assembler.line(l)).collect();
    items.extend(assembler.finish());
    items
}

/// Why a run stopped: reading an input, or the caller's sink.
enum RunError {
    Read(Error),
    Write(io::Error),
}

impl From<Error> for RunError {
    fn from(e: Error) -> Self {
        RunError::Read(e)
    }
}

impl RunError {
    fn into_io(self) -> io::Error {
        match self {
            RunError::Read(e) => io::Error::other(e),
            RunError::Write(e) => e,
        }
    }
}

fn mtime_ns(path: &Path) -> Option<u64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(since.as_nanos() as u64)
}

impl Analysis {
    /// The inputs, as given.
    pub fn inputs(&self) -> &[String] {
        &self.labels
    }

    /// Reads every input and returns the summary.
    pub fn summary(&self) -> Result<Summary> {
        self.run(&mut |_, _| Ok(()))
    }

    /// Reads every input, calling `on_item` with each matching item (and its input, as given)
    /// in order as it passes the filters, and returns the summary. An error from `on_item`
    /// stops the run.
    pub fn run(&self, on_item: &mut dyn FnMut(&str, &Item) -> io::Result<()>) -> Result<Summary> {
        self.run_inner(on_item).map_err(|e| match e {
            RunError::Read(e) => e,
            RunError::Write(e) => Error::io("writing the analysis", e),
        })
    }

    /// Writes the summary as text (see the module docs).
    pub fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let summary = self.summary().map_err(io::Error::other)?;
        summary.write_text(w)
    }

    /// Writes one JSON line per matching item as it is read, then the summary line (shapes
    /// in the module docs). A failure to read an input is an [`io::Error`] wrapping the
    /// [`Error`].
    pub fn write_json_lines(&self, w: &mut dyn Write) -> io::Result<()> {
        let summary = self
            .run_inner(&mut |input, item| output::write_item_json(&mut *w, input, item))
            .map_err(RunError::into_io)?;
        summary.write_json_line(w)
    }

    fn run_inner(
        &self,
        on_item: &mut dyn FnMut(&str, &Item) -> io::Result<()>,
    ) -> std::result::Result<Summary, RunError> {
        let opts = &self.opts;
        let labels = &self.labels;
        let mut agg = summary::Aggregator::new(opts, labels);
        let mut offer = |item: Item, start: Option<u64>, agg: &mut summary::Aggregator| {
            agg.read(item.input);
            if filter::matches(opts, &item, start) {
                on_item(&labels[item.input], &item).map_err(RunError::Write)?;
                agg.add(item);
            }
            Ok::<(), RunError>(())
        };
        for (i, source) in self.sources.iter().enumerate() {
            let (reader, mtime): (Box<dyn Read>, _) = match source {
                Source::Recording(path) => {
                    let rec = Recording::read(path).map_err(Error::from)?;
                    let start = recording::Clock::of(&rec).start();
                    agg.set_kind(i, InputKind::Recording, None);
                    for item in recording::items(&rec, i) {
                        offer(item, Some(start), &mut agg)?;
                    }
                    continue;
                }
                Source::Log(path) => {
                    let file = File::open(path)
                        .map_err(|e| Error::io(format!("reading {}", labels[i]), e))?;
                    (Box::new(file), mtime_ns(path))
                }
                Source::Stdin => (Box::new(io::stdin()), None),
            };
            let mut reader = BufReader::with_capacity(256 * 1024, reader);
            let mut asm = logfile::Assembler::new(lineparse::LineParser::new(mtime), i);
            let lines = logfile::for_each_line(
                &mut reader,
                |e| RunError::Read(Error::io(format!("reading {}", labels[i]), e)),
                |line| match asm.line(line) {
                    Some(item) => offer(item, asm.first_t, &mut agg),
                    None => Ok(()),
                },
            )?;
            if let Some(item) = asm.finish() {
                offer(item, asm.first_t, &mut agg)?;
            }
            agg.set_kind(i, InputKind::Log, Some(lines));
        }
        Ok(agg.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mp-analyze-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn time_bounds_parse_or_say_what_is_expected() {
        assert_eq!(
            "30s".parse::<TimeBound>(),
            Ok(TimeBound::Relative(Duration::from_secs(30)))
        );
        assert_eq!(
            "2024-01-01T12:00:00Z".parse::<TimeBound>(),
            Ok(TimeBound::Absolute(1_704_110_400_000_000_000))
        );
        assert_eq!(
            "2024-01-01 12:00:00".parse::<TimeBound>(),
            Ok(TimeBound::Absolute(1_704_110_400_000_000_000))
        );
        assert_eq!(
            "2024-01-01".parse::<TimeBound>(),
            Ok(TimeBound::Absolute(1_704_067_200_000_000_000))
        );
        let err = "yesterday".parse::<TimeBound>().unwrap_err();
        assert!(err.starts_with("invalid time \"yesterday\""), "{err}");
        assert!(!err.contains('\n'));
        assert!("2024-01-01 12:00:00 junk".parse::<TimeBound>().is_err());
    }

    #[test]
    fn bad_inputs_are_one_line_usage_errors() {
        let dir = scratch("bad");
        let check = |paths: &[PathBuf], want: &str| {
            let err = analyze(paths, &AnalyzeOptions::default()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(want), "{text}");
            assert!(!text.contains('\n'), "{text}");
            // A usage error: the CLI exits with its usage code.
            assert!(matches!(err, Error::InvalidArgument(_)), "{text}");
        };
        check(
            &[dir.join("missing.log")],
            "missing.log: no such file or directory",
        );
        check(
            std::slice::from_ref(&dir),
            "is a directory without recording.json",
        );
        let err = parse_pattern("a(b").unwrap_err().to_string();
        assert_eq!(err, "invalid --pattern \"a(b\": unclosed group");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recordings_and_logs_together() {
        let dir = scratch("mixed");
        let rec_dir = dir.join("rec");
        std::fs::create_dir_all(&rec_dir).unwrap();
        recording::tests::recording().write(&rec_dir).unwrap();
        let log = dir.join("app.log");
        std::fs::write(
            &log,
            b"2024-01-01 12:00:00,000 - app - INFO - start\n\
              2024-01-01 12:00:01,000 - app - ERROR - timeout after 31ms\n\
              2024-01-01 12:00:02,000 - app - ERROR - timeout after 45ms\n\
              junk \xff\x00 line\n\
              2024-01-01 12:00:03,000 - app - WARNING - slow\n",
        )
        .unwrap();
        let inputs = [rec_dir.clone(), log.clone()];
        let a = analyze(&inputs, &AnalyzeOptions::default())
            .unwrap()
            .summary()
            .unwrap();
        assert_eq!(a.items, 6 + 4);
        assert_eq!(a.counts.level(Some(Level::Error)), 1 + 1 + 2);
        assert_eq!(a.errors.total, 1 + 2, "the failed span counts once");
        assert_eq!(a.errors.groups.len(), 2);
        assert_eq!(a.errors.groups[0].message, "timeout after <N>ms");
        assert_eq!(a.errors.groups[0].count, 2);
        assert_eq!(a.inputs[1].lines, Some(5));
        assert_eq!(a.inputs[1].kind, InputKind::Log);
        assert_eq!(a.inputs[0].kind, InputKind::Recording);

        // The recording's file itself works too, and JSON lines stream every item.
        let opts = AnalyzeOptions {
            level: Some(Level::Warn),
            pattern: Some(parse_pattern("timeout|signal|slow").unwrap()),
            ..Default::default()
        };
        let mut out = Vec::new();
        let inputs = [rec_dir.join("recording.json"), log];
        let analysis = analyze(&inputs, &opts).unwrap();
        analysis.write_json_lines(&mut out).unwrap();
        let a = analysis.summary().unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4 + 1);
        assert_eq!(lines[0]["kind"], "event");
        assert_eq!(lines[0]["name"], "signal");
        assert_eq!(lines[0]["t"], "1970-01-01T00:16:43.000000000Z");
        assert_eq!(lines[1]["message"], "timeout after 31ms");
        assert_eq!(lines[1]["name"], "app");
        assert_eq!(lines[1]["input"], inputs[1].display().to_string());
        assert_eq!(lines[1]["duration_ns"], serde_json::Value::Null);
        let summary = &lines[4]["summary"];
        assert_eq!(summary["items"], 4);
        assert_eq!(summary["read"], 10);
        assert_eq!(summary["errors"]["total"], 2);
        assert_eq!(summary["levels"]["WARN"], 2);
        assert_eq!(a.items, 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
