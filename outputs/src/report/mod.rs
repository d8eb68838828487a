//! Reports: what a recording says, as tables.
//!
//! [`build`] turns a [`Recording`] into a [`Report`]: a headline (wall time, CPU time and
//! utilization, samples, what the agent cost) and [`Section`]s, each a table or a one-line
//! reason why its data is absent. The same `Report` is printed as text at the end of a
//! recording and by `modelprobe report`, written as JSON by `report --json`, and shown by the
//! HTML viewer, so the three never disagree.
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::recording::Recording;

mod functions;
mod gpu;
mod layers;
mod llm;
mod memory;
mod python;
mod sections;
mod text;

pub use functions::{function_shares, llama_phases, FunctionShare, Phase};

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Key figures, in display order.
    pub headline: Vec<(String, String)>,
    /// Tables, in display order.
    pub sections: Vec<Section>,
}

/// One table of a report, or why it is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// Stable identifier (`spans`, `top_self`, ...), for scripts reading the JSON.
    pub id: String,
    /// Title shown above the table.
    pub title: String,
    /// Why there is no table: the data was not recorded (`None` when there is one).
    pub absent: Option<String>,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows: numbers stay numbers in the JSON.
    pub rows: Vec<Vec<Value>>,
}

impl Section {
    fn table(id: &str, title: &str, columns: &[&str]) -> Section {
        Section {
            id: id.into(),
            title: title.into(),
            absent: None,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn absent(id: &str, title: &str, reason: impl Into<String>) -> Section {
        Section {
            id: id.into(),
            title: title.into(),
            absent: Some(reason.into()),
            columns: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// An empty table becomes absent with `reason`.
    fn or_absent(mut self, reason: impl Into<String>) -> Section {
        if self.rows.is_empty() && self.absent.is_none() {
            self.absent = Some(reason.into());
            self.columns.clear();
        }
        self
    }
}

/// Builds the report; `top` bounds the rows of the ranked tables.
pub fn build(rec: &Recording, top: usize) -> Report {
    let mut sections = vec![
        sections::top_functions(rec, top, false),
        sections::top_functions(rec, top, true),
        sections::off_cpu(rec, top),
        python::python(rec),
        sections::spans(rec),
    ];
    sections.extend(layers::pytorch_layers(rec, top));
    let gpu_sections = vec![
        sections::kernel_launches(rec, top),
        gpu::kernels(rec, top),
        sections::memcpy(rec),
        gpu::copies(rec),
        gpu::utilization(rec, top),
        gpu::queue_delay(rec),
        gpu::sources(rec),
        sections::gpu_metrics(rec),
    ];
    sections.extend(gpu::fold_unused(rec, gpu_sections));
    if !rec.llm.is_empty() {
        sections.push(llm::calls(rec));
        sections.extend(llm::errors(rec));
        sections.extend(llm::capture(rec));
    }
    sections.extend([sections::tokens(rec)]);
    if memory::recorded(rec) {
        sections.push(memory::top_holders(rec, top));
        sections.push(memory::leaks(rec, top));
    }
    sections.extend([
        sections::events(rec, top),
        sections::logs(rec),
        sections::lost(rec),
    ]);
    let mut headline = sections::headline(rec);
    headline.extend(memory::headline(rec));
    Report { headline, sections }
}

impl Report {
    /// The report as JSON (the shape `report --json` prints and the viewer reads).
    pub fn to_json(&self) -> Value {
        json!({ "headline": self.headline, "sections": self.sections })
    }

    /// The report as aligned text tables.
    pub fn to_text(&self) -> String {
        text::render(self)
    }

    /// The section with this id.
    pub fn section(&self, id: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.id == id)
    }
}

/// The text report printed at the end of a recording and by `modelprobe report`.
pub fn summary(rec: &Recording, top: usize) -> String {
    build(rec, top).to_text()
}

/// The `q` quantile (0..=1) of sorted values, nearest rank (the default value of none).
fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Rounds for display while keeping the JSON numeric.
/// Nanoseconds as milliseconds, three decimals.
fn ms(ns: u64) -> Value {
    round(ns as f64 / 1e6, 3)
}

fn round(x: f64, digits: i32) -> Value {
    let m = 10f64.powi(digits);
    json!((x * m).round() / m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.95), 95);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile::<u64>(&[], 0.5), 0);
        assert_eq!(quantile(&[-5i64, 3], 0.5), -5);
    }

    #[test]
    fn gpu_metrics_average_and_peak_per_counter() {
        let mut rec = crate::recording::fixtures::sample_recording();
        assert!(build(&rec, 5).section("gpu_metrics").is_none());
        rec.counters.push(crate::recording::Counter {
            name: "GPU 0 memory used".into(),
            unit: "MiB".into(),
            device: Some(0),
            pid: None,
            points: vec![(1, 1000.0), (2, 3000.0), (3, 2000.0)],
        });
        let report = build(&rec, 5);
        let s = report.section("gpu_metrics").unwrap();
        assert_eq!(
            s.rows,
            [vec![
                json!("GPU 0 memory used"),
                json!("MiB"),
                json!(2000.0),
                json!(3000.0),
                json!(3)
            ]]
        );
    }

    #[test]
    fn sections_of_the_sample_recording() {
        let rec = crate::recording::fixtures::sample_recording();
        let report = build(&rec, 5);
        let top = report.section("top_self").unwrap();
        assert_eq!(top.rows[0][3], json!("hot;a"));
        assert_eq!(top.rows[0][0], json!(66.7));
        // A CPU-only process: one line about the GPU, not one per GPU section.
        assert!(report.section("gpu_kernels").is_none());
        assert!(report.section("gpu").unwrap().absent.is_some());
        let text = report.to_text();
        assert!(text.contains("3 CPU samples"), "{text}");
        assert!(text.contains("66.7"), "{text}");
        assert!(
            text.contains("GPU: none; the process used no CUDA"),
            "{text}"
        );
        let gpu_lines = text
            .lines()
            .filter(|l| l.contains("GPU") && !l.starts_with("Spans:"))
            .count();
        assert_eq!(gpu_lines, 1, "{text}");
        let back: Report = serde_json::from_value(report.to_json()).unwrap();
        assert_eq!(back, report);
    }
}
