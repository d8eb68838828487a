//! Writing a [`Summary`]: aligned text tables, and JSON lines (shapes in the module docs of
//! [`crate::analyze`]).
use std::io::{self, Write};

use serde::Serialize;
use serde_json::{json, Value};

use super::{
    summary::{first_line, level_name, Summary, KINDS, LEVEL_ROWS},
    timestamp::{format_millis, format_nanos},
    Item, ItemKind,
};
use crate::logs::Level;

/// Longest message shown in a table cell.
const CELL: usize = 100;

#[derive(Serialize)]
struct ItemJson<'a> {
    input: &'a str,
    t: Option<String>,
    level: Option<Level>,
    kind: ItemKind,
    name: Option<&'a str>,
    message: &'a str,
    duration_ns: Option<u64>,
}

fn item_json<'a>(input: &'a str, item: &'a Item) -> ItemJson<'a> {
    ItemJson {
        input,
        t: item.t.map(format_nanos),
        level: item.level,
        kind: item.kind,
        name: item.name.as_deref(),
        message: &item.message,
        duration_ns: item.duration_ns,
    }
}

/// One item as a JSON line.
pub(crate) fn write_item_json(w: &mut dyn Write, input: &str, item: &Item) -> io::Result<()> {
    serde_json::to_writer(&mut *w, &item_json(input, item))?;
    w.write_all(b"\n")
}

fn level_counts(a: &Summary, kind: Option<ItemKind>) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(k) = kind {
        m.insert("total".into(), json!(a.counts.kind(k)));
    }
    for l in LEVEL_ROWS {
        let n = match kind {
            Some(k) => a.counts.get(k, l),
            None => a.counts.level(l),
        };
        m.insert(level_name(l).into(), json!(n));
    }
    Value::Object(m)
}

/// One cell of text: the first line, control characters blanked, cut to `max` characters.
fn cell(s: &str, max: usize) -> String {
    let line = first_line(s, max);
    let mut out: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() < s.len() && !s[line.len()..].starts_with('\n') {
        out.push('…');
    }
    out
}

fn time_cell(t: Option<u64>) -> String {
    t.map_or_else(|| "-".to_string(), format_millis)
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// A table whose columns are as wide as their widest cell.
struct Table {
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns `(header, right-aligned)`.
    fn new(columns: &[(&str, bool)]) -> Self {
        Table {
            right: columns.iter().map(|c| c.1).collect(),
            rows: vec![columns.iter().map(|c| c.0.to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut widths = vec![0; self.right.len()];
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        for row in &self.rows {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                let pad = " ".repeat(widths[i] - c.chars().count());
                line.push_str("  ");
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.push_str(&pad);
                }
            }
            writeln!(w, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

impl Summary {
    /// The summary as one JSON value (the object under `"summary"`).
    pub fn to_json(&self) -> Value {
        let label = |i: usize| self.inputs.get(i).map_or("", |x| x.input.as_str());
        json!({
            "items": self.items,
            "read": self.read,
            "filters": self.filters,
            "levels": level_counts(self, None),
            "kinds": {
                "span": level_counts(self, Some(ItemKind::Span)),
                "event": level_counts(self, Some(ItemKind::Event)),
                "log": level_counts(self, Some(ItemKind::Log)),
            },
            "spans": self.spans.iter().map(|s| json!({
                "name": s.name,
                "count": s.count,
                "total_ns": s.total_ns,
                "mean_ns": s.mean_ns,
                "p50_ns": s.p50_ns,
                "p95_ns": s.p95_ns,
                "max_ns": s.max_ns,
            })).collect::<Vec<_>>(),
            "slowest": self.slowest.iter().map(|i| item_json(label(i.input), i)).collect::<Vec<_>>(),
            "errors": {
                "total": self.errors.total,
                "ungrouped": self.errors.ungrouped,
                "groups": self.errors.groups.iter().map(|g| json!({
                    "message": g.message,
                    "count": g.count,
                    "sample": g.sample,
                    "input": label(g.input),
                    "first": g.first.map(format_nanos),
                    "last": g.last.map(format_nanos),
                })).collect::<Vec<_>>(),
            },
            "inputs": self.inputs.iter().map(|x| json!({
                "input": x.input,
                "kind": x.kind.as_str(),
                "lines": x.lines,
                "read": x.read,
                "items": x.items,
                "errors": x.errors,
                "warnings": x.warnings,
                "first": x.first.map(format_nanos),
                "last": x.last.map(format_nanos),
            })).collect::<Vec<_>>(),
        })
    }

    /// Writes the last line of the JSON-lines output: `{"summary": {...}}` (the item lines
    /// before it are written while reading, by [`super::Analysis::write_json_lines`]).
    pub fn write_json_line(&self, w: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer(&mut *w, &json!({ "summary": self.to_json() }))?;
        w.write_all(b"\n")
    }

    /// Writes the summary as text: a headline, then aligned tables.
    pub fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let n = self.inputs.len();
        let plural = if n == 1 { "" } else { "s" };
        if self.filters.is_empty() {
            writeln!(w, "{n} input{plural}: {} items", self.items)?;
        } else {
            writeln!(
                w,
                "{n} input{plural}: {} of {} items match {}",
                self.items,
                self.read,
                self.filters.join(", ")
            )?;
        }
        if self.items > 0 {
            writeln!(w, "\nitems by level:")?;
            let mut t = Table::new(&[
                ("level", false),
                ("spans", true),
                ("events", true),
                ("logs", true),
                ("total", true),
            ]);
            for l in LEVEL_ROWS {
                let mut row = vec![level_name(l).to_string()];
                row.extend(KINDS.iter().map(|&k| self.counts.get(k, l).to_string()));
                row.push(self.counts.level(l).to_string());
                t.row(row);
            }
            let mut total = vec!["total".to_string()];
            total.extend(KINDS.iter().map(|&k| self.counts.kind(k).to_string()));
            total.push(self.items.to_string());
            t.row(total);
            t.write(w)?;
        }
        self.write_spans(w)?;
        if !self.slowest.is_empty() {
            writeln!(w, "\nslowest:")?;
            let mut t = Table::new(&[
                ("ms", true),
                ("time", false),
                ("input", false),
                ("item", false),
            ]);
            for i in &self.slowest {
                t.row(vec![
                    ms(i.duration_ns.unwrap_or(0)),
                    time_cell(i.t),
                    self.inputs[i.input].input.clone(),
                    cell(&i.message, CELL),
                ]);
            }
            t.write(w)?;
        }
        self.write_errors(w)?;
        writeln!(w, "\ninputs:")?;
        let mut t = Table::new(&[
            ("input", false),
            ("kind", false),
            ("lines", true),
            ("read", true),
            ("items", true),
            ("errors", true),
            ("warnings", true),
            ("first", false),
            ("last", false),
        ]);
        for x in &self.inputs {
            t.row(vec![
                x.input.clone(),
                x.kind.as_str().to_string(),
                x.lines.map_or_else(|| "-".to_string(), |l| l.to_string()),
                x.read.to_string(),
                x.items.to_string(),
                x.errors.to_string(),
                x.warnings.to_string(),
                time_cell(x.first),
                time_cell(x.last),
            ]);
        }
        t.write(w)
    }

    fn write_spans(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.spans.is_empty() {
            return Ok(());
        }
        writeln!(w, "\nspans by total time:")?;
        let mut t = Table::new(&[
            ("calls", true),
            ("total ms", true),
            ("mean ms", true),
            ("p50 ms", true),
            ("p95 ms", true),
            ("max ms", true),
            ("function", false),
        ]);
        for s in self.spans.iter().take(self.top) {
            t.row(vec![
                s.count.to_string(),
                ms(s.total_ns),
                ms(s.mean_ns),
                ms(s.p50_ns),
                ms(s.p95_ns),
                ms(s.max_ns),
                s.name.clone(),
            ]);
        }
        t.write(w)?;
        if self.spans.len() > self.top {
            writeln!(w, "  ... and {} more", self.spans.len() - self.top)?;
        }
        Ok(())
    }

    fn write_errors(&self, w: &mut dyn Write) -> io::Result<()> {
        let e = &self.errors;
        if e.total == 0 {
            return writeln!(w, "\nerrors: none");
        }
        let groups = e.groups.len();
        writeln!(
            w,
            "\nerrors: {} in {groups} group{}",
            e.total,
            if groups == 1 { "" } else { "s" }
        )?;
        let mut t = Table::new(&[
            ("count", true),
            ("first", false),
            ("input", false),
            ("message", false),
        ]);
        for g in e.groups.iter().take(self.top) {
            t.row(vec![
                g.count.to_string(),
                time_cell(g.first),
                self.inputs[g.input].input.clone(),
                cell(&g.sample, CELL),
            ]);
        }
        t.write(w)?;
        if groups > self.top {
            writeln!(w, "  ... and {} more groups", groups - self.top)?;
        }
        if e.ungrouped > 0 {
            writeln!(
                w,
                "  ({} errors past the group limit, not grouped)",
                e.ungrouped
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{summary::Aggregator, AnalyzeOptions};

    #[test]
    fn text_tables_are_aligned() {
        let mut agg = Aggregator::new(&AnalyzeOptions::default(), &["a.log".to_string()]);
        for (d, msg) in [(2_500_000, "decode(1) = 0"), (12_000_000, "decode(2) = 0")] {
            agg.read(0);
            agg.add(Item {
                input: 0,
                t: Some(1_704_110_400_000_000_000),
                level: Some(Level::Info),
                kind: ItemKind::Span,
                name: Some("decode".into()),
                message: msg.into(),
                duration_ns: Some(d),
                counts_as_error: true,
            });
        }
        agg.set_kind(0, super::super::InputKind::Log, Some(2));
        let mut out = Vec::new();
        agg.finish().write_text(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "\
1 input: 2 items

items by level:
  level  spans  events  logs  total
  FATAL      0       0     0      0
  ERROR      0       0     0      0
  WARN       0       0     0      0
  INFO       2       0     0      2
  DEBUG      0       0     0      0
  none       0       0     0      0
  total      2       0     0      2

spans by total time:
  calls  total ms  mean ms  p50 ms  p95 ms  max ms  function
      2    14.500    7.250   2.500  12.000  12.000  decode

slowest:
      ms  time                      input  item
  12.000  2024-01-01T12:00:00.000Z  a.log  decode(2) = 0
   2.500  2024-01-01T12:00:00.000Z  a.log  decode(1) = 0

errors: none

inputs:
  input  kind  lines  read  items  errors  warnings  first                     last
  a.log  log       2     2      2       0         0  2024-01-01T12:00:00.000Z  2024-01-01T12:00:00.000Z
";
        assert_eq!(text, expected);
    }

    #[test]
    fn cells_are_one_line() {
        assert_eq!(cell("a\tb\nsecond", 10), "a b");
        assert_eq!(cell("abcdef", 3), "abc…");
    }
}
