//! pprof profiles (`profile.proto`, gzipped), the format `go tool pprof`, Pyroscope, Parca and
//! Grafana read: `cpu.pb.gz` (samples and CPU nanoseconds), `offcpu.pb.gz` (blocked
//! nanoseconds, with `--off-cpu`) and `gpu.pb.gz` (GPU nanoseconds by launch stack, with GPU
//! timings), each written when the recording has such samples.
//!
//! Every sample carries `pid`, `tid` and `thread` labels. A location is one physical frame with
//! the functions inlined into it (innermost first), so `pprof -lines` and inlining views work;
//! a mapping is a module (`libc.so.6`, `[kernel]`, `python`). Functions keep their source file
//! and line where the recording has them (Python frames always do).
use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use prost::Message;

use super::{
    gpu_ops::{is_gpu_work, launch_of, launch_stack, GpuNames},
    Exporter,
};
use crate::{
    recording::{FrameKind, Recording, SampleKind},
    Error, Result,
};

pub mod proto;

/// File name of the CPU profile.
pub const CPU_FILE: &str = "cpu.pb.gz";
/// File name of the off-CPU profile.
pub const OFF_CPU_FILE: &str = "offcpu.pb.gz";
/// File name of the GPU profile.
pub const GPU_FILE: &str = "gpu.pb.gz";
/// File name of the memory profile.
pub const MEMORY_FILE: &str = "memory.pb.gz";

/// The pprof exporter (`modelprobe export DIR --format pprof`).
pub struct Pprof;

/// What one profile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// CPU samples: `samples/count` and `cpu/nanoseconds`.
    Cpu,
    /// Blocked time: `off_cpu/nanoseconds`.
    OffCpu,
    /// GPU time of kernels, copies and memsets, by the stack that launched them:
    /// `gpu/nanoseconds`.
    Gpu,
    /// Memory by allocating stack (`--memory`, and GPU memory from the CUDA packs), as Go's
    /// heap profiles hold it: `alloc_objects/count`, `alloc_space/bytes`,
    /// `inuse_objects/count`, `inuse_space/bytes` (live at the end; the default).
    Memory,
}

impl Kind {
    /// Its file name.
    pub fn file(self) -> &'static str {
        match self {
            Kind::Cpu => CPU_FILE,
            Kind::OffCpu => OFF_CPU_FILE,
            Kind::Gpu => GPU_FILE,
            Kind::Memory => MEMORY_FILE,
        }
    }
}

/// A leaf below a launch stack: the GPU work itself.
const NO_FRAME: u32 = u32::MAX;

/// Builds the tables of one profile.
struct Builder<'a> {
    rec: &'a Recording,
    profile: proto::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, Option<String>), u64>,
    mappings: HashMap<String, u64>,
    /// Location ids by (physical frame, the frames inlined into it), innermost first.
    locations: HashMap<Vec<u32>, u64>,
    /// Location ids of a stack, leaf first, by stack index.
    stacks: HashMap<u32, Vec<u64>>,
    /// Summed values by (leaf-first locations, pid, tid).
    samples: HashMap<(Vec<u64>, u32, u32), Vec<i64>>,
}

impl<'a> Builder<'a> {
    fn new(rec: &'a Recording, types: &[(&str, &str)]) -> Self {
        let mut b = Builder {
            rec,
            profile: proto::Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
            stacks: HashMap::new(),
            samples: HashMap::new(),
        };
        b.string(""); // index 0 is always the empty string
        for (ty, unit) in types {
            let vt = proto::ValueType {
                r#type: b.string(ty),
                unit: b.string(unit),
            };
            b.profile.sample_type.push(vt);
        }
        b.profile.time_nanos = (rec.meta.start_unix_ms as i64).saturating_mul(1_000_000);
        b.profile.duration_nanos = rec.duration_ns() as i64;
        let comment = format!("modelprobe {}: {}", rec.meta.mode, rec.meta.command);
        let comment = b.string(&comment);
        b.profile.comment.push(comment);
        // pprof names a profile after its first mapping: the target's executable, the module
        // named like the command it ran (`python` runs `python3.12`).
        let program = rec
            .processes
            .iter()
            .find(|p| p.pid == rec.meta.target_pid)
            .and_then(|p| p.cmdline.as_deref())
            .and_then(|c| c.split_whitespace().next())
            .map(|argv0| argv0.rsplit('/').next().unwrap_or(argv0).to_string());
        let main = program.and_then(|program| {
            rec.frames
                .iter()
                .filter(|f| f.kind == FrameKind::User)
                .filter_map(|f| f.module.as_deref())
                .find(|m| m.starts_with(&program))
                .map(str::to_string)
        });
        if let Some(module) = main {
            b.mapping(&module);
        }
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn mapping(&mut self, module: &str) -> u64 {
        if let Some(&id) = self.mappings.get(module) {
            return id;
        }
        let id = self.profile.mapping.len() as u64 + 1;
        let filename = self.string(module);
        self.profile.mapping.push(proto::Mapping {
            id,
            filename,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
        self.mappings.insert(module.to_string(), id);
        id
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let key = (name.to_string(), file.map(str::to_string));
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let name_id = self.string(name);
        let filename = file.map_or(0, |f| self.string(f));
        self.profile.function.push(proto::Function {
            id,
            name: name_id,
            system_name: name_id,
            filename,
        });
        self.functions.insert(key, id);
        id
    }

    /// The location of a physical frame with the frames inlined into it (innermost first);
    /// `NO_FRAME` alone stands for a synthetic leaf named `leaf`.
    fn location(&mut self, frames: Vec<u32>, leaf: &str) -> u64 {
        if let Some(&id) = self.locations.get(&frames) {
            if frames != [NO_FRAME] {
                return id;
            }
        }
        let rec = self.rec;
        let mut lines = Vec::with_capacity(frames.len());
        let mut module = "[gpu]".to_string();
        for &f in &frames {
            if f == NO_FRAME {
                let function_id = self.function(leaf, None);
                lines.push(proto::Line {
                    function_id,
                    line: 0,
                });
                continue;
            }
            let frame = &rec.frames[f as usize];
            let name = match frame.kind {
                FrameKind::Kernel => format!("{} [k]", frame.name),
                // `qualname (file.py:LINE)`: the line goes in the Line, so a function is one
                // function whatever line it was on.
                FrameKind::Python => frame
                    .name
                    .split(" (")
                    .next()
                    .unwrap_or(&frame.name)
                    .to_string(),
                _ => frame.name.clone(),
            };
            let function_id = self.function(&name, frame.file.as_deref());
            lines.push(proto::Line {
                function_id,
                line: i64::from(frame.line.unwrap_or(0)),
            });
            module = frame.module.clone().unwrap_or_else(|| match frame.kind {
                FrameKind::Kernel => "[kernel]".into(),
                FrameKind::Python => "[python]".into(),
                FrameKind::Jit => "[jit]".into(),
                _ => "[unknown]".into(),
            });
        }
        let mapping_id = self.mapping(&module);
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(proto::Location {
            id,
            mapping_id,
            line: lines,
        });
        if frames != [NO_FRAME] {
            self.locations.insert(frames, id);
        }
        id
    }

    /// A stack's locations, leaf first: each physical frame with the inlined frames under it.
    fn stack(&mut self, stack: u32) -> Vec<u64> {
        if let Some(ids) = self.stacks.get(&stack) {
            return ids.clone();
        }
        let rec = self.rec;
        let mut ids = Vec::new();
        let mut inlined: Vec<u32> = Vec::new();
        // Root first in the recording: walk it leaf first.
        for &f in rec.stacks.get(stack as usize).into_iter().flatten().rev() {
            inlined.push(f);
            if !rec.frames[f as usize].inlined {
                ids.push(self.location(std::mem::take(&mut inlined), ""));
            }
        }
        if !inlined.is_empty() {
            ids.push(self.location(inlined, ""));
        }
        self.stacks.insert(stack, ids.clone());
        ids
    }

    fn add(&mut self, locations: Vec<u64>, pid: u32, tid: u32, values: &[i64]) {
        let sums = self
            .samples
            .entry((locations, pid, tid))
            .or_insert_with(|| vec![0; values.len()]);
        for (s, v) in sums.iter_mut().zip(values) {
            *s = s.saturating_add(*v);
        }
    }

    fn finish(mut self) -> proto::Profile {
        let (pid_key, tid_key, thread_key) = (
            self.string("pid"),
            self.string("tid"),
            self.string("thread"),
        );
        let mut samples: Vec<_> = std::mem::take(&mut self.samples).into_iter().collect();
        samples.sort();
        for ((locations, pid, tid), value) in samples {
            let thread = self.rec.thread_name(pid, tid);
            let thread = self.string(&thread);
            self.profile.sample.push(proto::Sample {
                location_id: locations,
                value,
                label: vec![
                    proto::Label {
                        key: pid_key,
                        str: 0,
                        num: i64::from(pid),
                    },
                    proto::Label {
                        key: tid_key,
                        str: 0,
                        num: i64::from(tid),
                    },
                    proto::Label {
                        key: thread_key,
                        str: thread,
                        num: 0,
                    },
                ],
            });
        }
        self.profile
    }
}

/// The profile of `kind`, or `None` when the recording has no such samples.
pub fn profile(rec: &Recording, kind: Kind) -> Option<proto::Profile> {
    match kind {
        Kind::Cpu => {
            let hz = rec.meta.frequency_hz.max(1);
            let period = (1_000_000_000 / hz) as i64;
            let mut b = Builder::new(rec, &[("samples", "count"), ("cpu", "nanoseconds")]);
            b.profile.period_type = Some(b.profile.sample_type[1]);
            b.profile.period = period;
            b.profile.default_sample_type = b.profile.sample_type[1].r#type;
            for s in rec.samples.iter().filter(|s| s.kind == SampleKind::Cpu) {
                let locations = b.stack(s.stack);
                let n = s.weight as i64;
                b.add(locations, s.pid, s.tid, &[n, n.saturating_mul(period)]);
            }
            (!b.samples.is_empty()).then(|| b.finish())
        }
        Kind::OffCpu => {
            let mut b = Builder::new(rec, &[("off_cpu", "nanoseconds")]);
            b.profile.period_type = Some(b.profile.sample_type[0]);
            for s in rec.samples.iter().filter(|s| s.kind == SampleKind::OffCpu) {
                let locations = b.stack(s.stack);
                b.add(locations, s.pid, s.tid, &[s.weight as i64]);
            }
            (!b.samples.is_empty()).then(|| b.finish())
        }
        Kind::Gpu => {
            let mut b = Builder::new(rec, &[("gpu", "nanoseconds")]);
            b.profile.period_type = Some(b.profile.sample_type[0]);
            let names = GpuNames::new(&rec.gpu);
            for op in rec.gpu.ops.iter().filter(|op| is_gpu_work(op)) {
                let leaf = b.location(vec![NO_FRAME], &names.op_name(op));
                let mut locations = vec![leaf];
                let tid = match launch_stack(rec, op) {
                    Some(stack) => {
                        locations.extend(b.stack(stack));
                        launch_of(rec, op).map_or(0, |l| l.tid)
                    }
                    None => launch_of(rec, op).map_or(0, |l| l.tid),
                };
                b.add(locations, op.pid, tid, &[op.duration_ns() as i64]);
            }
            (!b.samples.is_empty()).then(|| b.finish())
        }
        Kind::Memory => memory_profile(rec),
    }
}

/// See [`Kind::Memory`]. GPU memory sits under a leaf naming its kind (`[GPU device]`).
fn memory_profile(rec: &Recording) -> Option<proto::Profile> {
    use crate::recording::memory::{self, MemEventKind, MemSource};
    let mut b = Builder::new(
        rec,
        &[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ],
    );
    b.profile.default_sample_type = b.profile.sample_type[3].r#type;
    b.profile.period_type = Some(b.profile.sample_type[1]);
    let locations = |b: &mut Builder, stack: Option<u32>, source: MemSource| {
        let mut out = Vec::new();
        if source.class() == memory::MemClass::Gpu {
            out.push(b.location(vec![NO_FRAME], &format!("[{}]", source.name())));
        }
        if let Some(stack) = stack {
            out.extend(b.stack(stack));
        }
        out
    };
    // Memory held (mapped, GPU): the sampled heap and tensors are inside it, not added.
    let events: Vec<_> = memory::all_events(rec)
        .into_iter()
        .filter(|e| e.source.class().is_held())
        .collect();
    for e in events.iter().filter(|e| e.kind == MemEventKind::Alloc) {
        let locs = locations(&mut b, e.stack, e.source);
        b.add(locs, e.pid, e.tid, &[1, e.bytes as i64, 0, 0]);
    }
    let live = memory::live_at(&events, u64::MAX);
    for r in live.live() {
        let locs = locations(&mut b, r.stack, r.source);
        b.add(locs, r.pid, r.tid, &[0, 0, 1, r.bytes as i64]);
    }
    (!b.samples.is_empty()).then(|| b.finish())
}

/// `profile` encoded and gzipped, as a file or an upload holds it.
pub fn gzipped(profile: &proto::Profile) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(&profile.encode_to_vec());
    gz.finish().unwrap_or_default()
}

/// Writes `profile` gzipped to `path`.
fn write(profile: &proto::Profile, path: &Path) -> Result<()> {
    let err = |e| Error::io(format!("writing {}", path.display()), e);
    let file = File::create(path).map_err(err)?;
    let mut gz =
        flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .and_then(|()| gz.finish()?.flush())
        .map_err(err)
}

impl Exporter for Pprof {
    fn name(&self) -> &'static str {
        "pprof"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for kind in [Kind::Cpu, Kind::OffCpu, Kind::Gpu, Kind::Memory] {
            if let Some(p) = profile(rec, kind) {
                let path = dir.join(kind.file());
                write(&p, &path)?;
                files.push(path);
            }
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests;
