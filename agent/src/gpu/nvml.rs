//! NVML device metrics, sampled at an interval on a thread of their own: per GPU its
//! utilization (SM and memory controller), memory used, power, SM and memory clocks,
//! temperature and PCIe throughput, and each process's GPU memory.
//!
//! A metric the device does not support is left out; the first failure of each is logged at
//! debug level, never repeated.
use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use nvml_wrapper::{
    enum_wrappers::device::{Clock, PcieUtilCounter, TemperatureSensor},
    enums::device::UsedGpuMemory,
    Device, Nvml,
};

use crate::{clock::monotonic_ns, recording::Counter};

/// Default time between two readings.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);

/// A running NVML sampler.
#[derive(Debug)]
pub struct NvmlSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Series>,
    devices: u32,
}

/// Counters being filled, by (name, unit, device, pid).
type Series = BTreeMap<(String, &'static str, Option<u32>, Option<u32>), Vec<(u64, f64)>>;

impl NvmlSampler {
    /// Loads NVML and starts sampling every `interval`; the error says in one line why GPU
    /// metrics are unavailable (no driver, no GPU).
    /// Each reading of a device also goes to `live` (`--metrics-addr`).
    pub fn start(
        interval: Duration,
        live: Option<Arc<crate::live::LiveMetrics>>,
    ) -> Result<NvmlSampler, String> {
        let nvml = Nvml::init().map_err(|e| match e {
            nvml_wrapper::error::NvmlError::LibloadingError(_) => {
                "no NVIDIA driver (libnvidia-ml.so.1 cannot be loaded)".to_string()
            }
            e => format!("NVML cannot start ({e})"),
        })?;
        let devices = nvml
            .device_count()
            .map_err(|e| format!("NVML cannot count GPUs ({e})"))?;
        if devices == 0 {
            return Err("no NVIDIA GPU".into());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("mp-nvml".into())
            .spawn(move || sample_until(&nvml, devices, interval, &flag, live.as_deref()))
            .map_err(|e| format!("cannot start the NVML thread ({e})"))?;
        Ok(NvmlSampler {
            stop,
            handle,
            devices,
        })
    }

    /// How many GPUs are sampled.
    pub fn devices(&self) -> u32 {
        self.devices
    }

    /// Stops sampling; returns every counter (per-process ones for all processes on the GPU:
    /// see [`only_processes`]).
    pub fn finish(self) -> Vec<Counter> {
        self.stop.store(true, Ordering::Relaxed);
        to_counters(self.handle.join().unwrap_or_default())
    }
}

/// Keeps the device counters and the per-process counters of `pids` (the recorded processes).
pub fn only_processes(counters: Vec<Counter>, pids: &HashSet<u32>) -> Vec<Counter> {
    counters
        .into_iter()
        .filter(|c| c.pid.is_none_or(|p| pids.contains(&p)))
        .collect()
}

fn to_counters(series: Series) -> Vec<Counter> {
    series
        .into_iter()
        .map(|((name, unit, device, pid), points)| Counter {
            name,
            unit: unit.into(),
            device,
            pid,
            points,
        })
        .collect()
}

fn sample_until(
    nvml: &Nvml,
    devices: u32,
    interval: Duration,
    stop: &AtomicBool,
    live: Option<&crate::live::LiveMetrics>,
) -> Series {
    let mut series = Series::new();
    let mut failed: HashSet<(u32, &'static str)> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        for index in 0..devices {
            match nvml.device_by_index(index) {
                Ok(device) => {
                    read_device(&device, index, &mut series, &mut failed);
                    if let Some(live) = live {
                        publish(live, &series, index);
                    }
                }
                Err(e) => {
                    if failed.insert((index, "device")) {
                        log::debug!("NVML: GPU {index}: {e}");
                    }
                }
            }
        }
        std::thread::sleep(interval);
    }
    series
}

/// The latest reading of each of device `index`'s own counters, to the live metrics.
fn publish(live: &crate::live::LiveMetrics, series: &Series, index: u32) {
    let prefix = format!("GPU {index} ");
    for ((name, unit, device, pid), points) in series {
        if *device != Some(index) || pid.is_some() {
            continue;
        }
        if let Some(&(_, v)) = points.last() {
            live.gpu(index, name.strip_prefix(&prefix).unwrap_or(name), unit, v);
        }
    }
}

fn read_device(
    device: &Device<'_>,
    index: u32,
    series: &mut Series,
    failed: &mut HashSet<(u32, &'static str)>,
) {
    let t = monotonic_ns();
    let mut put = |what: &'static str, unit: &'static str, value: Result<f64, String>| match value {
        Ok(v) if v.is_finite() => series
            .entry((format!("GPU {index} {what}"), unit, Some(index), None))
            .or_default()
            .push((t, v)),
        Ok(_) => {}
        Err(e) => {
            if failed.insert((index, what)) {
                log::debug!("NVML: GPU {index} {what}: {e}");
            }
        }
    };
    let e = |e: nvml_wrapper::error::NvmlError| e.to_string();
    let util = device.utilization_rates().map_err(e);
    put(
        "utilization",
        "%",
        util.as_ref().map(|u| u.gpu as f64).map_err(Clone::clone),
    );
    put("memory controller", "%", util.map(|u| u.memory as f64));
    put(
        "memory used",
        "MiB",
        device
            .memory_info()
            .map(|m| m.used as f64 / 1048576.0)
            .map_err(e),
    );
    put(
        "power",
        "W",
        device.power_usage().map(|mw| mw as f64 / 1000.0).map_err(e),
    );
    put(
        "SM clock",
        "MHz",
        device.clock_info(Clock::SM).map(f64::from).map_err(e),
    );
    put(
        "memory clock",
        "MHz",
        device.clock_info(Clock::Memory).map(f64::from).map_err(e),
    );
    put(
        "temperature",
        "C",
        device
            .temperature(TemperatureSensor::Gpu)
            .map(f64::from)
            .map_err(e),
    );
    put(
        "PCIe TX",
        "MB/s",
        device
            .pcie_throughput(PcieUtilCounter::Send)
            .map(|kb| kb as f64 / 1000.0)
            .map_err(e),
    );
    put(
        "PCIe RX",
        "MB/s",
        device
            .pcie_throughput(PcieUtilCounter::Receive)
            .map(|kb| kb as f64 / 1000.0)
            .map_err(e),
    );
    match device.running_compute_processes() {
        Ok(procs) => {
            for p in procs {
                if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
                    series
                        .entry((
                            format!("GPU {index} memory of pid {}", p.pid),
                            "MiB",
                            Some(index),
                            Some(p.pid),
                        ))
                        .or_default()
                        .push((t, bytes as f64 / 1048576.0));
                }
            }
        }
        Err(err) => {
            if failed.insert((index, "processes")) {
                log::debug!("NVML: GPU {index} processes: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_start_says_why_in_one_line() {
        // Machines with an NVIDIA driver sample instead; both outcomes are checked.
        match NvmlSampler::start(Duration::from_millis(10), None) {
            Err(why) => {
                assert!(!why.contains('\n'), "{why}");
                assert!(
                    why.contains("NVML") || why.contains("NVIDIA") || why.contains("GPU"),
                    "{why}"
                );
            }
            Ok(sampler) => {
                assert!(sampler.devices() > 0);
                std::thread::sleep(Duration::from_millis(50));
                let counters = only_processes(sampler.finish(), &HashSet::new());
                assert!(counters.iter().all(|c| c.pid.is_none()));
            }
        }
    }

    #[test]
    fn per_process_counters_keep_only_the_recorded_processes() {
        let mut series = Series::new();
        series.insert(
            ("GPU 0 utilization".into(), "%", Some(0), None),
            vec![(1, 50.0)],
        );
        series.insert(
            ("GPU 0 memory of pid 7".into(), "MiB", Some(0), Some(7)),
            vec![(1, 512.0)],
        );
        series.insert(
            ("GPU 0 memory of pid 8".into(), "MiB", Some(0), Some(8)),
            vec![(1, 256.0)],
        );
        let counters = only_processes(to_counters(series), &HashSet::from([7]));
        let names: Vec<&str> = counters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["GPU 0 memory of pid 7", "GPU 0 utilization"]);
        assert_eq!(counters[0].unit, "MiB");
    }
}
