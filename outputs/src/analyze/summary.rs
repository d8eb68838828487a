//! The summary of matching items over all inputs, built as they pass, in bounded memory.
//!
//! Errors are grouped by their first line with the parts that vary between occurrences
//! masked ([`normalize`]).
use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap},
};

use super::{normalize::normalize, AnalyzeOptions, Item, ItemKind};
use crate::logs::Level;

/// Distinct error groups kept; errors beyond are counted as ungrouped.
const MAX_GROUPS: usize = 10_000;

/// Longest sample message kept per error group.
const MAX_SAMPLE: usize = 500;

/// What an input turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A `recording.json`.
    Recording,
    /// A plain text log.
    Log,
}

impl InputKind {
    /// `recording` or `log`.
    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Recording => "recording",
            InputKind::Log => "log",
        }
    }
}

/// One input's share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSummary {
    /// The input, as given.
    pub input: String,
    /// Recording or log.
    pub kind: InputKind,
    /// Lines read (logs).
    pub lines: Option<u64>,
    /// Items read, before filtering.
    pub read: u64,
    /// Items that matched.
    pub items: u64,
    /// Matching errors ([`Item::is_error`]).
    pub errors: u64,
    /// Matching warnings.
    pub warnings: u64,
    /// Earliest time of a matching item (Unix ns).
    pub first: Option<u64>,
    /// Latest time of a matching item (Unix ns).
    pub last: Option<u64>,
}

/// Matching items per kind and level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelCounts {
    counts: [[u64; 6]; 3],
}

/// Levels from most to least severe, then "no level": the rows of the tables.
pub(crate) const LEVEL_ROWS: [Option<Level>; 6] = [
    Some(Level::Fatal),
    Some(Level::Error),
    Some(Level::Warn),
    Some(Level::Info),
    Some(Level::Debug),
    None,
];

/// Kinds in table order.
pub(crate) const KINDS: [ItemKind; 3] = [ItemKind::Span, ItemKind::Event, ItemKind::Log];

fn level_index(l: Option<Level>) -> usize {
    LEVEL_ROWS.iter().position(|r| *r == l).unwrap_or(5)
}

fn kind_index(k: ItemKind) -> usize {
    KINDS.iter().position(|r| *r == k).unwrap_or(2)
}

impl LevelCounts {
    /// Items of `kind` at `level` (`None`: without a level).
    pub fn get(&self, kind: ItemKind, level: Option<Level>) -> u64 {
        self.counts[kind_index(kind)][level_index(level)]
    }

    /// Items at `level`, of any kind.
    pub fn level(&self, level: Option<Level>) -> u64 {
        KINDS.iter().map(|&k| self.get(k, level)).sum()
    }

    /// Items of `kind`, at any level.
    pub fn kind(&self, kind: ItemKind) -> u64 {
        self.counts[kind_index(kind)].iter().sum()
    }
}

/// Durations of the matching spans of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanStats {
    /// The probed function.
    pub name: String,
    /// Calls.
    pub count: u64,
    /// Sum of durations, ns.
    pub total_ns: u64,
    /// Mean duration, ns.
    pub mean_ns: u64,
    /// Median (nearest rank), ns.
    pub p50_ns: u64,
    /// 95th percentile (nearest rank), ns.
    pub p95_ns: u64,
    /// Longest, ns.
    pub max_ns: u64,
}

/// Errors with the same normalized message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorGroup {
    /// The normalized first line ([`super::normalize`]).
    pub message: String,
    /// How many.
    pub count: u64,
    /// The first one's first line, as written.
    pub sample: String,
    /// The input the first one came from (index into [`Summary::inputs`]).
    pub input: usize,
    /// Earliest time (Unix ns).
    pub first: Option<u64>,
    /// Latest time (Unix ns).
    pub last: Option<u64>,
}

/// All matching errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorSummary {
    /// Errors ([`Item::is_error`]).
    pub total: u64,
    /// Groups, most frequent first (then first seen first).
    pub groups: Vec<ErrorGroup>,
    /// Errors not grouped because there were already too many groups.
    pub ungrouped: u64,
}

/// The result of an analysis.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Matching items.
    pub items: u64,
    /// Items read, before filtering.
    pub read: u64,
    /// The filters in force, in words (`level >= WARN`).
    pub filters: Vec<String>,
    /// Matching items per kind and level.
    pub counts: LevelCounts,
    /// Span statistics per function, by total time, longest first.
    pub spans: Vec<SpanStats>,
    /// The slowest matching items, slowest first (at most `top`).
    pub slowest: Vec<Item>,
    /// Matching errors, grouped.
    pub errors: ErrorSummary,
    /// One row per input, in the order given.
    pub inputs: Vec<InputSummary>,
    /// Rows the text tables show.
    pub top: usize,
}

/// A kept slow item; ordered so that the heap's top is the one to drop first.
struct Slow {
    duration: u64,
    seq: u64,
    item: Item,
}

impl Ord for Slow {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .duration
            .cmp(&self.duration)
            .then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for Slow {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Slow {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Slow {}

/// Builds an [`Summary`] item by item.
pub(crate) struct Aggregator {
    summary: Summary,
    durations: HashMap<String, Vec<u64>>,
    slowest: BinaryHeap<Slow>,
    groups: HashMap<String, usize>,
    seq: u64,
}

fn describe_filters(opts: &AnalyzeOptions) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(l) = opts.level {
        out.push(format!("level >= {}", level_name(Some(l))));
    }
    if let Some(d) = opts.min_duration {
        out.push(format!("duration >= {}", humantime::format_duration(d)));
    }
    if let Some(re) = &opts.pattern {
        out.push(format!("pattern /{}/", re.as_str()));
    }
    if let Some(b) = &opts.since {
        out.push(format!("since {b}"));
    }
    if let Some(b) = &opts.until {
        out.push(format!("until {b}"));
    }
    out
}

/// `FATAL`, `ERROR`, `WARN`, `INFO`, `DEBUG`, or `none`.
pub(crate) fn level_name(l: Option<Level>) -> &'static str {
    l.map_or("none", Level::name)
}

/// The first line of a text, cut to `max` characters.
pub(crate) fn first_line(s: &str, max: usize) -> &str {
    let line = s.split('\n').next().unwrap_or("");
    match line.char_indices().nth(max) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], pct: usize) -> u64 {
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank - 1]
}

impl Aggregator {
    pub fn new(opts: &AnalyzeOptions, labels: &[String]) -> Self {
        Aggregator {
            summary: Summary {
                items: 0,
                read: 0,
                filters: describe_filters(opts),
                counts: LevelCounts::default(),
                spans: Vec::new(),
                slowest: Vec::new(),
                errors: ErrorSummary::default(),
                inputs: labels
                    .iter()
                    .map(|l| InputSummary {
                        input: l.clone(),
                        kind: InputKind::Log,
                        lines: None,
                        read: 0,
                        items: 0,
                        errors: 0,
                        warnings: 0,
                        first: None,
                        last: None,
                    })
                    .collect(),
                top: opts.top,
            },
            durations: HashMap::new(),
            slowest: BinaryHeap::new(),
            groups: HashMap::new(),
            seq: 0,
        }
    }

    /// Notes what input `i` was.
    pub fn set_kind(&mut self, i: usize, kind: InputKind, lines: Option<u64>) {
        self.summary.inputs[i].kind = kind;
        self.summary.inputs[i].lines = lines;
    }

    /// Counts an item read from input `i`, before filtering.
    pub fn read(&mut self, i: usize) {
        self.summary.read += 1;
        self.summary.inputs[i].read += 1;
    }

    /// Counts a matching item.
    pub fn add(&mut self, item: Item) {
        let a = &mut self.summary;
        a.items += 1;
        a.counts.counts[kind_index(item.kind)][level_index(item.level)] += 1;
        let input = &mut a.inputs[item.input];
        input.items += 1;
        if item.level == Some(Level::Warn) {
            input.warnings += 1;
        }
        if let Some(t) = item.t {
            input.first = Some(input.first.map_or(t, |f| f.min(t)));
            input.last = Some(input.last.map_or(t, |l| l.max(t)));
        }
        if item.is_error() {
            input.errors += 1;
            self.add_error(&item);
        }
        if let Some(d) = item.duration_ns {
            if item.kind == ItemKind::Span {
                if let Some(name) = item.name.as_deref() {
                    match self.durations.get_mut(name) {
                        Some(v) => v.push(d),
                        None => {
                            self.durations.insert(name.to_string(), vec![d]);
                        }
                    }
                }
            }
            self.add_slow(d, item);
        }
    }

    fn add_slow(&mut self, duration: u64, item: Item) {
        let top = self.summary.top;
        if top == 0 {
            return;
        }
        self.seq += 1;
        if self.slowest.len() >= top {
            match self.slowest.peek() {
                Some(least) if duration > least.duration => {
                    self.slowest.pop();
                }
                _ => return,
            }
        }
        self.slowest.push(Slow {
            duration,
            seq: self.seq,
            item,
        });
    }

    fn add_error(&mut self, item: &Item) {
        let errors = &mut self.summary.errors;
        errors.total += 1;
        let line = first_line(&item.message, MAX_SAMPLE);
        let key = normalize(line);
        let index = match self.groups.get(&key) {
            Some(&i) => i,
            None if errors.groups.len() >= MAX_GROUPS => {
                errors.ungrouped += 1;
                return;
            }
            None => {
                errors.groups.push(ErrorGroup {
                    message: key.clone(),
                    count: 0,
                    sample: line.to_string(),
                    input: item.input,
                    first: item.t,
                    last: item.t,
                });
                self.groups.insert(key, errors.groups.len() - 1);
                errors.groups.len() - 1
            }
        };
        let g = &mut errors.groups[index];
        g.count += 1;
        if let Some(t) = item.t {
            g.first = Some(g.first.map_or(t, |f| f.min(t)));
            g.last = Some(g.last.map_or(t, |l| l.max(t)));
        }
    }

    /// The finished analysis.
    pub fn finish(mut self) -> Summary {
        let mut spans: Vec<SpanStats> = self
            .durations
            .into_iter()
            .map(|(name, mut d)| {
                d.sort_unstable();
                let total: u64 = d.iter().sum();
                SpanStats {
                    name,
                    count: d.len() as u64,
                    total_ns: total,
                    mean_ns: total / d.len() as u64,
                    p50_ns: percentile(&d, 50),
                    p95_ns: percentile(&d, 95),
                    max_ns: *d.last().unwrap_or(&0),
                }
            })
            .collect();
        spans.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.name.cmp(&b.name)));
        self.summary.spans = spans;
        self.summary.slowest = self
            .slowest
            .into_sorted_vec()
            .into_iter()
            .map(|s| s.item)
            .collect();
        // Stable: equal counts stay in first-seen order.
        self.summary
            .errors
            .groups
            .sort_by_key(|g| std::cmp::Reverse(g.count));
        self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: ItemKind, level: Option<Level>, msg: &str, dur: Option<u64>, t: u64) -> Item {
        Item {
            input: 0,
            t: Some(t),
            level,
            kind,
            name: Some("f".into()),
            message: msg.into(),
            duration_ns: dur,
            counts_as_error: true,
        }
    }

    #[test]
    fn aggregates_levels_spans_slowest_and_error_groups() {
        let opts = AnalyzeOptions {
            top: 3,
            ..Default::default()
        };
        let mut agg = Aggregator::new(&opts, &["a".to_string()]);
        for (i, d) in [5u64, 1, 9, 3, 9, 7, 2, 8, 4, 6].into_iter().enumerate() {
            agg.read(0);
            agg.add(item(
                ItemKind::Span,
                Some(Level::Info),
                &format!("call {i}"),
                Some(d),
                i as u64,
            ));
        }
        for (t, msg) in [
            (20, "timeout after 31ms\ntraceback"),
            (21, "disk full"),
            (22, "timeout after 45ms"),
        ] {
            agg.add(item(ItemKind::Log, Some(Level::Error), msg, None, t));
        }
        let mut twice = item(ItemKind::Span, Some(Level::Error), "failed call", None, 30);
        twice.counts_as_error = false;
        agg.add(twice);
        agg.add(item(ItemKind::Log, Some(Level::Fatal), "killed", None, 31));
        agg.add(item(ItemKind::Log, Some(Level::Warn), "slow", None, 32));
        agg.add(item(ItemKind::Log, None, "plain", None, 33));
        let a = agg.finish();
        assert_eq!(a.items, 17);
        assert_eq!(a.read, 10);
        assert_eq!(a.counts.get(ItemKind::Span, Some(Level::Info)), 10);
        assert_eq!(a.counts.get(ItemKind::Span, Some(Level::Error)), 1);
        assert_eq!(a.counts.level(Some(Level::Error)), 4);
        assert_eq!(a.counts.kind(ItemKind::Log), 6);
        assert_eq!(a.counts.level(None), 1);

        assert_eq!(a.spans.len(), 1);
        let s = &a.spans[0];
        assert_eq!((s.count, s.total_ns, s.mean_ns), (10, 54, 5));
        assert_eq!((s.p50_ns, s.p95_ns, s.max_ns), (5, 9, 9));

        let slow: Vec<&str> = a.slowest.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(
            slow,
            ["call 2", "call 4", "call 7"],
            "ties: the first seen first"
        );

        assert_eq!(
            a.errors.total, 4,
            "the span reported elsewhere is not counted"
        );
        let groups: Vec<(&str, u64, &str)> = a
            .errors
            .groups
            .iter()
            .map(|g| (g.message.as_str(), g.count, g.sample.as_str()))
            .collect();
        assert_eq!(
            groups,
            [
                ("timeout after <N>ms", 2, "timeout after 31ms"),
                ("disk full", 1, "disk full"),
                ("killed", 1, "killed"),
            ]
        );
        assert_eq!(
            (a.errors.groups[0].first, a.errors.groups[0].last),
            (Some(20), Some(22))
        );
        let input = &a.inputs[0];
        assert_eq!((input.items, input.errors, input.warnings), (17, 4, 1));
        assert_eq!((input.first, input.last), (Some(0), Some(33)));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 50), percentile(&v, 95)), (50, 95));
        assert_eq!((percentile(&[7], 50), percentile(&[7], 95)), (7, 7));
        assert_eq!(percentile(&[1, 2], 50), 1);
    }
}
