//! Flame graph SVGs rendered by inferno: `flamegraph.svg` (CPU) and `offcpu-flamegraph.svg`.
use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
};

use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};

use super::{folded::folded_stacks, Exporter};
use crate::{
    recording::{Recording, SampleKind},
    Error, Result,
};

/// File name of the CPU flame graph.
pub const CPU_FILE: &str = "flamegraph.svg";
/// File name of the off-CPU flame graph.
pub const OFF_CPU_FILE: &str = "offcpu-flamegraph.svg";

/// The flame graph exporter.
pub struct FlameGraph;

pub(crate) fn describe(rec: &Recording) -> String {
    let secs = rec.duration_ns() as f64 / 1e9;
    let command = if rec.meta.command.chars().count() > 80 {
        format!(
            "{}...",
            rec.meta.command.chars().take(77).collect::<String>()
        )
    } else {
        rec.meta.command.clone()
    };
    format!("{command} (pid {}), {secs:.1}s", rec.meta.target_pid)
}

fn render(rec: &Recording, kind: SampleKind, path: &Path) -> Result<()> {
    let lines = folded_stacks(rec, kind);
    let (title, count_name, palette) = match kind {
        SampleKind::Cpu => (
            format!(
                "CPU: {}, {} samples at {} Hz",
                describe(rec),
                rec.cpu_sample_count(),
                rec.meta.frequency_hz
            ),
            "samples".to_string(),
            Palette::Basic(BasicPalette::Hot),
        ),
        SampleKind::OffCpu => (
            format!(
                "Off-CPU: {}, {:.3}s blocked",
                describe(rec),
                rec.off_cpu_ns() as f64 / 1e9
            ),
            "us".to_string(),
            Palette::Basic(BasicPalette::Io),
        ),
    };
    render_lines(&lines, title, count_name, palette, path)
}

/// Renders folded `lines` (stack, weight) as a flame graph SVG at `path`.
pub(crate) fn render_lines(
    lines: &std::collections::BTreeMap<String, u64>,
    title: String,
    count_name: String,
    palette: Palette,
    path: &Path,
) -> Result<()> {
    let mut opts = Options::default();
    opts.title = title;
    opts.count_name = count_name;
    opts.colors = palette;
    opts.deterministic = true;
    let err = |e: std::io::Error| Error::io(format!("writing {}", path.display()), e);
    let file = File::create(path).map_err(err)?;
    let text: Vec<String> = lines.iter().map(|(s, n)| format!("{s} {n}")).collect();
    if text.is_empty() {
        // inferno refuses empty input; an empty graph still says what was recorded.
        let svg = format!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"1200\" height=\"60\" xmlns=\"http://www.w3.org/2000/svg\"><text x=\"10\" y=\"30\">{}: no samples recorded</text></svg>\n",
            escape(&opts.title)
        );
        return std::fs::write(path, svg).map_err(err);
    }
    flamegraph::from_lines(
        &mut opts,
        text.iter().map(String::as_str),
        BufWriter::new(file),
    )
    .map_err(err)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Exporter for FlameGraph {
    fn name(&self) -> &'static str {
        "flame graph"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut written = vec![dir.join(CPU_FILE)];
        render(rec, SampleKind::Cpu, &written[0])?;
        if rec.meta.off_cpu {
            let path = dir.join(OFF_CPU_FILE);
            render(rec, SampleKind::OffCpu, &path)?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_graphs() {
        let rec = crate::recording::fixtures::sample_recording();
        let dir = std::env::temp_dir().join(format!("mp-fg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = FlameGraph.export(&rec, &dir).unwrap();
        assert_eq!(files.len(), 2);
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
        assert!(svg.contains("hot:a"));
        let off = std::fs::read_to_string(&files[1]).unwrap();
        assert!(off.contains("do_syscall_64"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
