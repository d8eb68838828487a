//! Writing and reading recordings (`recording.json`), with a format name and version check.
use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    path::Path,
};

use super::Recording;
use crate::{Error, Result};

/// The `format` field of every recording.
pub const FORMAT_NAME: &str = "modelprobe-recording";
/// Current format version; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the recording inside an output directory.
pub const FILE_NAME: &str = "recording.json";

impl Recording {
    /// Writes `dir/recording.json` (via a temporary file, so a crash never leaves half a file).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
        let err = |e| Error::io(format!("writing {}", path.display()), e);
        let mut w = BufWriter::new(File::create(&tmp).map_err(err)?);
        serde_json::to_writer(&mut w, self).map_err(|e| err(e.into()))?;
        w.write_all(b"\n").map_err(err)?;
        w.into_inner()
            .map_err(|e| err(e.into_error()))?
            .sync_all()
            .map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// Reads a recording from a directory (its `recording.json`) or from the file itself.
    pub fn read(path: &Path) -> Result<Recording> {
        let file_path = if path.is_dir() {
            path.join(FILE_NAME)
        } else {
            path.to_path_buf()
        };
        let bad = |reason: String| Error::BadRecording {
            path: file_path.clone(),
            reason,
        };
        let file = File::open(&file_path).map_err(|e| bad(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_reader(BufReader::new(file))
            .map_err(|e| bad(format!("not valid JSON ({e})")))?;
        Self::from_value(value).map_err(bad)
    }

    /// Parses a recording from the bytes of a `recording.json`; the error says why it is not one.
    pub fn from_slice(bytes: &[u8]) -> std::result::Result<Recording, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
        Self::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> std::result::Result<Recording, String> {
        let bad = |reason: String| reason;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT_NAME) => {}
            _ => return Err(bad("not a modelprobe recording (no format field)".into())),
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != FORMAT_VERSION as u64 {
            return Err(bad(format!(
                "format version {version}, this modelprobe reads version {FORMAT_VERSION}"
            )));
        }
        let rec: Recording = serde_json::from_value(value).map_err(|e| e.to_string())?;
        rec.validate()?;
        Ok(rec)
    }

    /// Checks every cross-reference (stack, frame and probe indices) and every interval, so
    /// that code reading a recording may index it without further checks.
    fn validate(&self) -> std::result::Result<(), String> {
        let (frames, stacks, probes) = (self.frames.len(), self.stacks.len(), self.probes.len());
        if let Some((i, _)) = self
            .stacks
            .iter()
            .enumerate()
            .find(|(_, s)| s.iter().any(|&f| f as usize >= frames))
        {
            return Err(format!(
                "stack {i} names a frame beyond the {frames} recorded"
            ));
        }
        if let Some((i, s)) = self
            .samples
            .iter()
            .enumerate()
            .find(|(_, s)| s.stack as usize >= stacks)
        {
            return Err(format!("sample {i} names stack {} of {stacks}", s.stack));
        }
        if let Some((i, e)) = self
            .events
            .iter()
            .enumerate()
            .find(|(_, e)| e.stack.is_some_and(|s| s as usize >= stacks))
        {
            return Err(format!("event {i} names stack {:?} of {stacks}", e.stack));
        }
        for (i, s) in self.spans.iter().enumerate() {
            if s.probe as usize >= probes {
                return Err(format!("span {i} names probe {} of {probes}", s.probe));
            }
            if s.end_ns < s.start_ns {
                return Err(format!("span {i} ends before it starts"));
            }
        }
        for (i, s) in self.spans.iter().enumerate() {
            if s.stack.is_some_and(|st| st as usize >= stacks) {
                return Err(format!("span {i} names stack {:?} of {stacks}", s.stack));
            }
        }
        self.validate_gpu()?;
        // Totals must fit in 64 bits: flame graph rendering sums weights without saturating.
        for kind in [super::SampleKind::Cpu, super::SampleKind::OffCpu] {
            let mut total: u64 = 0;
            for s in self.samples.iter().filter(|s| s.kind == kind) {
                total = total
                    .checked_add(s.weight)
                    .ok_or_else(|| format!("the {kind:?} sample weights overflow 64 bits"))?;
            }
        }
        if self.meta.end_ns < self.meta.start_ns {
            return Err("the recording ends before it starts".into());
        }
        Ok(())
    }

    fn validate_gpu(&self) -> std::result::Result<(), String> {
        let gpu = &self.gpu;
        let (names, launches, spans) = (gpu.names.len(), gpu.launches.len(), self.spans.len());
        for (i, op) in gpu.ops.iter().enumerate() {
            if op.name as usize >= names {
                return Err(format!("GPU op {i} names string {} of {names}", op.name));
            }
            if op.end_ns < op.start_ns {
                return Err(format!("GPU op {i} ends before it starts"));
            }
            if op.launch_span.is_some_and(|s| s as usize >= spans) {
                return Err(format!(
                    "GPU op {i} names span {:?} of {spans}",
                    op.launch_span
                ));
            }
            if op.launch.is_some_and(|l| l as usize >= launches) {
                return Err(format!(
                    "GPU op {i} names launch {:?} of {launches}",
                    op.launch
                ));
            }
        }
        if let Some(i) = gpu
            .launches
            .iter()
            .position(|l| l.span.is_some_and(|s| s as usize >= spans))
        {
            return Err(format!(
                "GPU launch {i} names a span beyond the {spans} recorded"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, FrameKind, Meta, Sample, SampleKind};

    #[test]
    fn round_trips_and_checks_the_version() {
        let dir = std::env::temp_dir().join(format!("mp-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rec = Recording::new(Meta {
            mode: "run".into(),
            ..Meta::default()
        });
        rec.frames.push(Frame {
            name: "main".into(),
            module: Some("app".into()),
            file: None,
            line: None,
            kind: FrameKind::User,
            inlined: false,
        });
        rec.stacks.push(vec![0]);
        rec.samples.push(Sample {
            kind: SampleKind::Cpu,
            time_ns: 5,
            pid: 1,
            tid: 1,
            stack: 0,
            weight: 1,
            blocks: None,
        });
        rec.write(&dir).unwrap();
        let back = Recording::read(&dir).unwrap();
        assert_eq!(back.frames, rec.frames);
        assert_eq!(back.cpu_sample_count(), 1);

        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        std::fs::write(
            dir.join(FILE_NAME),
            text.replace("\"version\":1", "\"version\":99"),
        )
        .unwrap();
        let err = Recording::read(&dir).unwrap_err().to_string();
        assert!(err.contains("format version 99"), "{err}");
        std::fs::write(dir.join(FILE_NAME), "{}").unwrap();
        assert!(Recording::read(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
