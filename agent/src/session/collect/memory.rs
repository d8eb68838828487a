//! Each target process's memory over time (`--memory`, `profiling.memory`): resident set, its
//! anonymous and file-backed parts, and swap, read from `/proc/PID/status` once a second; the
//! recording's counters (`memory rss` ... in MiB, per process).
use std::collections::BTreeMap;

use crate::recording::Counter;

/// What is read, in the order of [`MemoryCounters`]'s series: the field of `/proc/PID/status`
/// and the counter's name.
const FIELDS: [(&str, &str); 5] = [
    ("VmRSS:", "memory rss"),
    ("RssAnon:", "memory anon"),
    ("RssFile:", "memory file"),
    ("RssShmem:", "memory shmem"),
    ("VmSwap:", "memory swap"),
];

/// The series of every process.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    by_pid: BTreeMap<u32, [Vec<(u64, f64)>; 5]>,
}

/// The fields of a `/proc/PID/status` text, in MiB.
pub fn parse_status(text: &str) -> [Option<f64>; 5] {
    let mut out = [None; 5];
    for line in text.lines() {
        for (i, (key, _)) in FIELDS.iter().enumerate() {
            if let Some(rest) = line.strip_prefix(key) {
                out[i] = rest
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .map(|kib| kib / 1024.0);
            }
        }
    }
    out
}

impl MemoryCounters {
    /// Reads process `pid` now (`t`: CLOCK_MONOTONIC ns); a process gone is skipped.
    pub fn sample(&mut self, pid: u32, t: u64) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        let values = parse_status(&text);
        if values[0].is_none() {
            return; // a zombie: no memory left to show
        }
        let series = self.by_pid.entry(pid).or_default();
        for (s, v) in series.iter_mut().zip(values) {
            if let Some(v) = v {
                s.push((t, v));
            }
        }
    }

    /// Drops the points before `t` (a flight recorder's window).
    pub fn evict_before(&mut self, t: u64) {
        for series in self.by_pid.values_mut() {
            for s in series.iter_mut() {
                s.retain(|&(at, _)| at >= t);
            }
        }
    }

    /// The counters, one per process and series that has points.
    pub fn finish(self) -> Vec<Counter> {
        let mut out = Vec::new();
        for (pid, series) in self.by_pid {
            for ((_, name), points) in FIELDS.iter().zip(series) {
                if points.is_empty() {
                    continue;
                }
                out.push(Counter {
                    name: name.to_string(),
                    unit: "MiB".into(),
                    device: None,
                    pid: Some(pid),
                    points,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_mib_and_a_live_process_is_sampled() {
        let v = parse_status("Name:\tx\nVmRSS:\t  2048 kB\nRssAnon:\t1024 kB\nRssFile:\t 512 kB\nRssShmem:\t0 kB\nVmSwap:\t256 kB\n");
        assert_eq!(v, [Some(2.0), Some(1.0), Some(0.5), Some(0.0), Some(0.25)]);
        assert_eq!(parse_status("Name:\tkthread\n"), [None; 5]);
        let mut m = MemoryCounters::default();
        m.sample(std::process::id(), 10);
        m.sample(std::process::id(), 20);
        m.sample(u32::MAX - 1, 20);
        m.evict_before(15);
        let counters = m.finish();
        let rss = counters.iter().find(|c| c.name == "memory rss").unwrap();
        assert_eq!(rss.pid, Some(std::process::id()));
        assert_eq!(rss.points.len(), 1);
        assert!(
            rss.points[0].1 > 1.0,
            "this test's own RSS: {:?}",
            rss.points
        );
    }
}
