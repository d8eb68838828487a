//! On-demand deep captures (`modelprobe ctl capture`): a full recording of one process for a
//! while, beside the agent's light windows: CPU and off-CPU stacks at 99 Hz, every pack's spans,
//! the process's output, and GPU kernel and copy timings (the GPU library is loaded into a
//! process that uses CUDA, and unloaded after). A capture is its own session, so the windows
//! go on as they were; SIGINT/SIGTERM to the agent ends a capture in progress, written as usual.
use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    session::{self, InjectMode, RecordOptions, Target},
    Error, Result,
};

/// Captures that may run at once (each is a session with its own BPF programs).
pub const MAX_RUNNING: usize = 2;

/// Longest capture taken.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// What to capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// The process (and its children).
    pub pid: u32,
    /// For how long, ms.
    pub duration_ms: u64,
    /// Where the recording goes (absolute; default: a new folder under the agent's
    /// `captures/`).
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// CPU samples per second (default 99).
    #[serde(default)]
    pub frequency_hz: Option<u64>,
}

/// What a capture recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureDone {
    /// The recording's folder.
    pub dir: PathBuf,
    /// CPU samples.
    pub cpu_samples: u64,
    /// Spans.
    pub spans: usize,
    /// GPU kernels, copies, memsets and syncs timed.
    pub gpu_ops: usize,
    /// Processes recorded.
    pub processes: usize,
}

/// Takes captures, a bounded number at a time.
#[derive(Debug)]
pub struct Captures {
    dir: PathBuf,
    stop: Arc<AtomicUsize>,
    running: AtomicUsize,
}

/// Counts a running capture while it lives.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Captures {
    /// Captures go under `dir` unless a request says where; `stop` (the agent's) ends them.
    pub fn new(dir: PathBuf, stop: Arc<AtomicUsize>) -> Self {
        Captures {
            dir,
            stop,
            running: AtomicUsize::new(0),
        }
    }

    /// Records as `req` asks; returns when the recording is written.
    pub fn capture(&self, req: &CaptureRequest) -> Result<CaptureDone> {
        let duration = Duration::from_millis(req.duration_ms);
        if duration < Duration::from_millis(100) || duration > MAX_DURATION {
            return Err(Error::InvalidArgument(format!(
                "capture: a duration of {} ms is out of range: use 100 ms to 1 h",
                req.duration_ms
            )));
        }
        if let Some(out) = &req.out {
            if !out.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "capture: {} is not an absolute path",
                    out.display()
                )));
            }
        }
        if self.running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::InvalidArgument(format!(
                "capture: {MAX_RUNNING} captures are already running; try again when one ends"
            )));
        }
        let _running = Running(&self.running);
        let out = req.out.clone().unwrap_or_else(|| {
            self.dir
                .join(format!("capture-{}-{}", req.pid, crate::clock::unix_ms()))
        });
        let mut ro = RecordOptions::new(Target::Pid(req.pid), out.clone());
        ro.duration = Some(duration);
        ro.frequency_hz = req.frequency_hz.unwrap_or(99);
        ro.off_cpu = true;
        ro.stop = self.stop.clone();
        // GPU timings where the process uses CUDA; the process is left as it was.
        ro.gpu_trace = true;
        ro.inject = InjectMode::IfCuda;
        ro.retract = true;
        log::info!(
            "agent: capturing pid {} for {:?} into {}",
            req.pid,
            duration,
            out.display()
        );
        let outcome = session::record(&ro)?;
        let rec = &outcome.recording;
        Ok(CaptureDone {
            dir: out,
            cpu_samples: rec
                .samples
                .iter()
                .filter(|s| s.kind == crate::recording::SampleKind::Cpu)
                .map(|s| s.weight)
                .sum(),
            spans: rec.spans.len(),
            gpu_ops: rec.gpu.ops.len(),
            processes: rec.processes.len(),
        })
    }
}
