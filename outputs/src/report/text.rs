//! A report as aligned text tables, for the terminal.
use std::fmt::Write;

use serde_json::Value;

use super::Report;

/// Longest cell printed; longer text is cut with an ellipsis.
const MAX_CELL: usize = 100;

fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() <= MAX_CELL {
        s
    } else {
        format!("{}…", s.chars().take(MAX_CELL - 1).collect::<String>())
    }
}

pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    let key_width = report
        .headline
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (k, v) in &report.headline {
        let _ = writeln!(out, "{k:<key_width$}  {v}");
    }
    for s in &report.sections {
        if let Some(reason) = &s.absent {
            let _ = writeln!(out, "\n{}: none; {reason}", s.title);
            continue;
        }
        let _ = writeln!(out, "\n{}", s.title);
        let cells: Vec<Vec<String>> = s
            .rows
            .iter()
            .map(|r| r.iter().map(cell).collect())
            .collect();
        let numeric: Vec<bool> = (0..s.columns.len())
            .map(|c| {
                s.rows
                    .iter()
                    .all(|r| matches!(r.get(c), Some(Value::Number(_) | Value::Null)))
            })
            .collect();
        let widths: Vec<usize> = (0..s.columns.len())
            .map(|c| {
                cells
                    .iter()
                    .map(|r| r.get(c).map_or(0, |x| x.chars().count()))
                    .chain([s.columns[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |out: &mut String, row: &[String]| {
            let mut text = String::from(" ");
            for (c, v) in row.iter().enumerate() {
                let w = widths[c];
                let last = c + 1 == row.len();
                let pad = w.saturating_sub(v.chars().count());
                text.push(' ');
                if numeric[c] {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(v);
                } else {
                    text.push_str(v);
                    if !last {
                        text.push_str(&" ".repeat(pad));
                    }
                }
                if !last {
                    text.push(' ');
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(&mut out, &s.columns);
        for r in &cells {
            line(&mut out, r);
        }
    }
    out
}
