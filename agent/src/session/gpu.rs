//! Everything GPU-side of a session behind one type: the library's environment for a launched
//! command, loading it live into running CUDA processes (`attach`), the clients that collect
//! each process's CUPTI records, NVML device metrics, and at the end the merge of all of it into
//! the recording (and `--retract`).
use std::time::Duration;

use super::{InjectMode, RecordOptions};
use crate::{
    gpu::{client, library, merge, nvml},
    live_load,
    progress::Progress,
    recording::Recording,
    target, Result,
};

/// How long the end of a recording waits for the injection libraries' final flush.
const GPU_FLUSH_WAIT: Duration = Duration::from_secs(3);

/// The GPU side of one session.
pub(super) struct GpuSide {
    /// Per-process clients of the GPU library (GPU timings on).
    client: Option<client::GpuClient>,
    /// Libraries this session loaded live, to report and to retract.
    injected: Vec<live_load::Loaded>,
    /// Device metrics (NVML present).
    nvml: Option<nvml::NvmlSampler>,
    /// What [`GpuSide::collect_last`] took before the processes were let go.
    last: Option<Last>,
    /// Unload what was loaded live at the end.
    retract: bool,
}

/// GPU records and metrics taken at the end of recording, before detaching.
struct Last {
    collected: Option<(Vec<client::Collected>, Vec<u32>, Vec<String>)>,
    counters: Vec<crate::recording::Counter>,
}

impl GpuSide {
    /// The environment that makes a launched command load the GPU library at `cuInit`
    /// (`CUDA_INJECTION64_PATH`) and route its NVTX ranges to CUPTI
    /// (`NVTX_INJECTION64_PATH`); empty when GPU timings are off. A variable the user already
    /// set is left as it is (and logged).
    pub fn launch_env(opts: &RecordOptions) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        if !opts.gpu_trace {
            return Vec::new();
        }
        let unset: Vec<&str> = [library::ENV, library::NVTX_ENV]
            .into_iter()
            .filter(|var| match std::env::var_os(var) {
                Some(set) => {
                    log::info!(
                        "{var} is already set ({}): leaving it; {} come only if that is \
                         modelprobe's library",
                        set.to_string_lossy(),
                        if *var == library::ENV {
                            "GPU timings"
                        } else {
                            "NVTX ranges"
                        }
                    );
                    false
                }
                None => true,
            })
            .collect();
        if unset.is_empty() {
            return Vec::new();
        }
        match library::write_to(&library::default_dir()) {
            Ok(path) => unset
                .into_iter()
                .map(|var| (var.into(), path.clone().into_os_string()))
                .collect(),
            Err(e) => {
                log::warn!("GPU timings off: {e}");
                Vec::new()
            }
        }
    }

    /// Starts NVML sampling and the GPU clients; for `attach` (`running` is the target),
    /// loads the library into the processes that need it.
    pub fn start(
        opts: &RecordOptions,
        running: Option<u32>,
        live: Option<std::sync::Arc<crate::live::LiveMetrics>>,
    ) -> Result<GpuSide> {
        let nvml = opts
            .gpu_metrics
            .and_then(|every| match nvml::NvmlSampler::start(every, live) {
                Ok(s) => {
                    log::info!("GPU metrics: {} GPU(s) every {every:?} (NVML)", s.devices());
                    Some(s)
                }
                Err(why) => {
                    log::info!("GPU metrics off: {why}");
                    None
                }
            });
        let client = opts
            .gpu_trace
            .then(|| client::GpuClient::new(Default::default()));
        let injected = match (running, opts.gpu_trace) {
            (Some(pid), true) => inject_live(pid, opts.inject)?,
            _ => Vec::new(),
        };
        Ok(GpuSide {
            client,
            injected,
            nvml,
            last: None,
            retract: opts.retract,
        })
    }

    /// Connects to libraries that appeared and reads what the connected ones sent.
    pub fn poll(&mut self, live_pids: &[u32]) {
        if let Some(client) = self.client.as_mut() {
            for line in client.poll(live_pids) {
                log::info!("{line}");
            }
        }
    }

    /// Asks the libraries for their last records while the processes still run, and stops
    /// NVML sampling.
    pub fn collect_last(&mut self, progress: &Progress) {
        let collected = self.client.take().map(|c| {
            progress.set("collecting the last GPU records");
            c.finish(GPU_FLUSH_WAIT)
        });
        let counters = self
            .nvml
            .take()
            .map(nvml::NvmlSampler::finish)
            .unwrap_or_default();
        self.last = Some(Last {
            collected,
            counters,
        });
    }

    /// Puts what was collected into `rec` (device counters of its processes, GPU operations
    /// joined to their launches, how each library was loaded), then retracts live-loaded
    /// libraries if asked.
    pub fn finish(self, rec: &mut Recording) {
        let last = self.last.unwrap_or(Last {
            collected: None,
            counters: Vec::new(),
        });
        let pids = rec.processes.iter().map(|p| p.pid).collect();
        rec.counters
            .extend(nvml::only_processes(last.counters, &pids));
        if let Some((collected, not_injected, lines)) = last.collected {
            for line in lines {
                log::info!("{line}");
            }
            merge::merge(rec, collected, &not_injected);
            for s in &mut rec.gpu.sources {
                if let Some(i) = self.injected.iter().find(|i| i.pid == s.pid) {
                    s.message.push_str(&format!(
                        " (library loaded live: thread {} held {:.2} ms)",
                        i.tid,
                        i.pause.as_secs_f64() * 1e3
                    ));
                }
            }
        }
        if self.retract {
            retract_all(&self.injected);
        }
    }
}

/// Loads the GPU library into `root` and its descendants that use CUDA (or into `root` alone,
/// whatever it uses, for [`InjectMode::Always`]), unless it is already there.
fn inject_live(root: u32, mode: InjectMode) -> Result<Vec<live_load::Loaded>> {
    if mode == InjectMode::Never {
        return Ok(Vec::new());
    }
    let mut candidates = vec![root];
    candidates.extend(target::descendants(root));
    let mut done = Vec::new();
    for pid in candidates {
        if client::library_listening(pid) {
            log::info!("pid {pid} already has the GPU library");
            continue;
        }
        let forced = mode == InjectMode::Always && pid == root;
        if !forced && !client::uses_cuda(pid) {
            continue;
        }
        let bytes = match library::bytes() {
            Ok(b) => b,
            Err(e) if forced => return Err(e),
            Err(e) => {
                log::warn!("GPU timings off for pid {pid}: {e}");
                continue;
            }
        };
        let opts = live_load::LoadOptions::default();
        match live_load::load(pid, bytes, "modelprobe-gpu", &opts) {
            Ok(inj) => {
                log::info!(
                    "loaded the GPU library into pid {pid} (thread {} held {:.2} ms)",
                    inj.tid,
                    inj.pause.as_secs_f64() * 1e3
                );
                done.push(inj);
            }
            Err(e) if forced => return Err(e.into()),
            Err(e) => log::warn!(
                "GPU timings off for pid {pid}: could not load the GPU library: {e} \
                 (--no-inject skips this)"
            ),
        }
    }
    Ok(done)
}

/// `--retract`: unloads what [`inject_live`] loaded.
fn retract_all(injected: &[live_load::Loaded]) {
    let opts = live_load::LoadOptions::default();
    for inj in injected {
        match live_load::retract(inj, &opts) {
            Ok(pause) => log::info!(
                "unloaded the GPU library from pid {} (held {:.2} ms)",
                inj.pid,
                pause.as_secs_f64() * 1e3
            ),
            Err(live_load::LiveLoadError::StopFailed { code: 1, .. }) => log::info!(
                "the GPU library stays in pid {}, idle: CUPTI keeps callbacks into it (one \
                 sleeping thread; CUPTI is off)",
                inj.pid
            ),
            Err(e) => log::warn!("could not unload the GPU library from pid {}: {e}", inj.pid),
        }
    }
}
