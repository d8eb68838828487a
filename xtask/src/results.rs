//! Tables of measured results (the benchmarks' and the fuzzing summary's), written as Markdown
//! and JSON alike.
use serde_json::{json, Value};

/// Tables of results, for the terminal, Markdown and JSON alike.
#[derive(Default)]
pub(crate) struct Report {
    sections: Vec<Section>,
}

/// One table.
struct Section {
    id: String,
    title: String,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Report {
    /// Starts a table (once per id).
    pub(crate) fn table(&mut self, id: &str, title: &str, columns: &[&str]) {
        if self.sections.last().is_some_and(|s| s.id == id) {
            return;
        }
        self.sections.push(Section {
            id: id.into(),
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        });
    }

    /// Adds a row to the last table.
    pub(crate) fn row(&mut self, row: Vec<Value>) {
        self.sections
            .last_mut()
            .expect("a table first")
            .rows
            .push(row);
    }

    /// The tables as Markdown, for `bench/results/<date>.md`.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        for Section {
            title,
            columns: cols,
            rows,
            ..
        } in &self.sections
        {
            out.push_str(&format!(
                "\n### {title}\n\n| {} |\n|{}\n",
                cols.join(" | "),
                "---|".repeat(cols.len())
            ));
            for r in rows {
                let cells: Vec<String> = r
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect();
                out.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
        }
        out
    }

    /// The tables as JSON, for `bench/results/<date>.json`.
    pub(crate) fn json(&self) -> Value {
        Value::Array(
            self.sections
                .iter()
                .map(
                    |t| json!({"id": t.id, "title": t.title, "columns": t.columns, "rows": t.rows}),
                )
                .collect(),
        )
    }
}
