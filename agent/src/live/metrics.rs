//! The live metrics of a recording, in a `prometheus-client` registry under the `modelprobe_`
//! prefix. Labels are bounded: a process by its name (not its pid: a fork-heavy target would
//! make a series per child), a span by its probed function, an LLM call by provider and model.
//!
//! - `modelprobe_cpu_samples_total{process}`, `modelprobe_off_cpu_seconds_total{process}`
//! - `modelprobe_process_cpu_seconds_total{process}`: CPU time as the kernel accounts it
//!   (`/proc/PID/stat`, read every second), counted from when a process is first seen
//! - `modelprobe_span_duration_seconds{function}` (histogram: rate, latency quantiles)
//! - `modelprobe_llm_calls_total{provider,model,status}`, `modelprobe_llm_tokens_total{model,type}`,
//!   `modelprobe_llm_cost_usd_total{model}`, `modelprobe_llm_time_to_first_token_seconds{model}`
//! - `modelprobe_lost_total{kind}`: data dropped, by the recording's names for it
//! - `modelprobe_gpu{gpu,what,unit}`: each GPU's latest NVML reading (with a GPU and NVML)
//! - `modelprobe_targets`: processes being recorded; `modelprobe_recording_seconds`
use std::{collections::HashMap, sync::atomic::AtomicU64, sync::Mutex};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::recording::{llm::LlmCall, Lost};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabel {
    process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    model: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    gpu: String,
    what: String,
    unit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// Buckets of the duration histograms, in seconds: 10 µs to about 84 s.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-5, 2.0, 24,
    ))
}

/// The metrics of one recording; shared between the session (which counts) and the server
/// (which encodes).
#[derive(Debug)]
pub struct LiveMetrics {
    registry: Registry,
    cpu_samples: Family<ProcessLabel, Counter>,
    off_cpu_seconds: Family<ProcessLabel, FloatCounter>,
    process_cpu: Family<ProcessLabel, FloatCounter>,
    span_duration: Family<FunctionLabel, Histogram, fn() -> Histogram>,
    llm_calls: Family<CallLabels, Counter>,
    llm_tokens: Family<TokenLabels, Counter>,
    llm_cost: Family<ModelLabel, FloatCounter>,
    llm_ttft: Family<ModelLabel, Histogram, fn() -> Histogram>,
    lost: Family<KindLabel, Counter>,
    gpu: Family<GpuLabels, Gauge<f64, AtomicU64>>,
    targets: Gauge,
    recording_seconds: Gauge<f64, AtomicU64>,
    /// The lost counts already added, per kind (the kernel gives running totals).
    lost_seen: Mutex<HashMap<String, u64>>,
    /// Each process's CPU seconds already added (the kernel gives running totals).
    cpu_seen: Mutex<HashMap<u32, f64>>,
}

impl Default for LiveMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveMetrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelprobe");
        let m = LiveMetrics {
            cpu_samples: Family::default(),
            off_cpu_seconds: Family::default(),
            process_cpu: Family::default(),
            span_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            llm_calls: Family::default(),
            llm_tokens: Family::default(),
            llm_cost: Family::default(),
            llm_ttft: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            lost: Family::default(),
            gpu: Family::default(),
            targets: Gauge::default(),
            recording_seconds: Gauge::default(),
            lost_seen: Mutex::new(HashMap::new()),
            cpu_seen: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "cpu_samples",
            "CPU samples taken, by process name",
            m.cpu_samples.clone(),
        );
        r.register(
            "off_cpu_seconds",
            "Time threads were blocked (off-CPU recording), by process name",
            m.off_cpu_seconds.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "CPU time of the recorded processes as the kernel accounts it, by process name",
            m.process_cpu.clone(),
        );
        r.register(
            "span_duration_seconds",
            "Duration of each call of a probed function",
            m.span_duration.clone(),
        );
        r.register(
            "llm_calls",
            "LLM API calls, by provider, model and HTTP status",
            m.llm_calls.clone(),
        );
        r.register(
            "llm_tokens",
            "LLM tokens, by model and type (input, output, cache_read, cache_creation, reasoning)",
            m.llm_tokens.clone(),
        );
        r.register(
            "llm_cost_usd",
            "Cost of the LLM calls in US dollars, by model",
            m.llm_cost.clone(),
        );
        r.register(
            "llm_time_to_first_token_seconds",
            "Time from an LLM request to its first content",
            m.llm_ttft.clone(),
        );
        r.register(
            "lost",
            "Data dropped or cut while recording, by kind",
            m.lost.clone(),
        );
        r.register(
            "gpu",
            "The latest NVML reading of each GPU: utilization, memory, power, clocks, temperature",
            m.gpu.clone(),
        );
        r.register("targets", "Processes being recorded", m.targets.clone());
        r.register(
            "recording_seconds",
            "Time since the recording began",
            m.recording_seconds.clone(),
        );
        LiveMetrics { registry, ..m }
    }

    /// A CPU sample of a process named `process`.
    pub fn cpu_sample(&self, process: &str) {
        self.cpu_samples
            .get_or_create(&ProcessLabel {
                process: process.to_string(),
            })
            .inc();
    }

    /// `blocked_ns` of blocked time of a process named `process`.
    pub fn blocked(&self, process: &str, blocked_ns: u64) {
        self.off_cpu_seconds
            .get_or_create(&ProcessLabel {
                process: process.to_string(),
            })
            .inc_by(blocked_ns as f64 / 1e9);
    }

    /// A call of probed `function` that lasted `ns`.
    pub fn span(&self, function: &str, ns: u64) {
        self.span_duration
            .get_or_create(&FunctionLabel {
                function: function.to_string(),
            })
            .observe(ns as f64 / 1e9);
    }

    /// A finished LLM call.
    pub fn llm_call(&self, c: &LlmCall) {
        let status = if c.status == 0 {
            "none".to_string()
        } else {
            c.status.to_string()
        };
        self.llm_calls
            .get_or_create(&CallLabels {
                provider: c.provider.clone(),
                model: c.model.clone(),
                status,
            })
            .inc();
        if let Some(u) = c.usage {
            for (kind, n) in [
                ("input", u.input_tokens),
                ("output", u.output_tokens),
                ("cache_read", u.cache_read_tokens),
                ("cache_creation", u.cache_creation_tokens),
                ("reasoning", u.reasoning_tokens),
            ] {
                self.llm_tokens
                    .get_or_create(&TokenLabels {
                        model: c.model.clone(),
                        r#type: kind.to_string(),
                    })
                    .inc_by(n);
            }
        }
        let model = ModelLabel {
            model: c.model.clone(),
        };
        if let Some(usd) = c.cost_usd {
            self.llm_cost.get_or_create(&model).inc_by(usd);
        }
        if c.first_token_ns > c.start_ns {
            self.llm_ttft
                .get_or_create(&model)
                .observe((c.first_token_ns - c.start_ns) as f64 / 1e9);
        }
    }

    /// The drop counters so far (running totals).
    pub fn lost(&self, lost: &Lost) {
        let mut seen = self.lost_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, total) in lost.by_kind() {
            let before = seen.entry(kind.clone()).or_default();
            let counter = self.lost.get_or_create(&KindLabel { kind });
            if total > *before {
                counter.inc_by(total - *before);
                *before = total;
            }
        }
    }

    /// Process `pid` (named `process`) has used `total` CPU seconds in all: what it used since
    /// the last call is counted (nothing at the first, which sets where it started).
    pub fn process_cpu(&self, pid: u32, process: &str, total: f64) {
        let mut seen = self.cpu_seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = seen.entry(pid).or_insert(total);
        if total > *before {
            self.process_cpu
                .get_or_create(&ProcessLabel {
                    process: process.to_string(),
                })
                .inc_by(total - *before);
            *before = total;
        }
    }

    /// Forgets the processes not in `live` (their pids may come back as others).
    pub fn keep_process_cpu(&self, live: &[u32]) {
        self.cpu_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|pid, _| live.contains(pid));
    }

    /// The latest reading `what` (in `unit`) of GPU `gpu`.
    pub fn gpu(&self, gpu: u32, what: &str, unit: &str, value: f64) {
        self.gpu
            .get_or_create(&GpuLabels {
                gpu: gpu.to_string(),
                what: what.to_string(),
                unit: unit.to_string(),
            })
            .set(value);
    }

    /// A new session counts into these metrics: its drop counters start from zero.
    pub fn new_session(&self) {
        self.lost_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// How many processes are recorded and for how long.
    pub fn progress(&self, targets: usize, seconds: f64) {
        self.targets.set(targets as i64);
        self.recording_seconds.set(seconds);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::llm::Usage;

    #[test]
    fn counts_come_out_as_openmetrics_text() {
        let m = LiveMetrics::new();
        m.cpu_sample("python3");
        m.cpu_sample("python3");
        m.blocked("python3", 1_500_000_000);
        m.span("llama_decode", 2_000_000);
        m.llm_call(&LlmCall {
            provider: "openai".into(),
            model: "gpt-4o".into(),
            status: 200,
            start_ns: 10,
            first_token_ns: 1_000_010,
            usage: Some(Usage {
                input_tokens: 5,
                output_tokens: 3,
                ..Usage::default()
            }),
            cost_usd: Some(0.25),
            ..LlmCall::default()
        });
        m.lost(&Lost {
            cpu_samples: 4,
            ..Lost::default()
        });
        m.lost(&Lost {
            cpu_samples: 6,
            ..Lost::default()
        });
        m.progress(2, 1.5);
        m.gpu(0, "utilization", "%", 87.0);
        // Kernel CPU time: counted from the first reading, per pid, summed by name; a pid
        // forgotten and seen again starts over.
        m.process_cpu(10, "python3", 100.0);
        m.process_cpu(10, "python3", 101.5);
        m.process_cpu(11, "python3", 7.0);
        m.process_cpu(11, "python3", 7.25);
        m.keep_process_cpu(&[10]);
        m.process_cpu(11, "python3", 50.0);
        let text = m.encode();
        for line in [
            "modelprobe_cpu_samples_total{process=\"python3\"} 2",
            "modelprobe_off_cpu_seconds_total{process=\"python3\"} 1.5",
            "modelprobe_span_duration_seconds_count{function=\"llama_decode\"} 1",
            "modelprobe_llm_calls_total{provider=\"openai\",model=\"gpt-4o\",status=\"200\"} 1",
            "modelprobe_llm_tokens_total{model=\"gpt-4o\",type=\"output\"} 3",
            "modelprobe_llm_cost_usd_total{model=\"gpt-4o\"} 0.25",
            "modelprobe_llm_time_to_first_token_seconds_count{model=\"gpt-4o\"} 1",
            "modelprobe_lost_total{kind=\"cpu_samples\"} 6",
            "modelprobe_lost_total{kind=\"tls_records\"} 0",
            "modelprobe_targets 2",
            "modelprobe_process_cpu_seconds_total{process=\"python3\"} 1.75",
            "modelprobe_gpu{gpu=\"0\",what=\"utilization\",unit=\"%\"} 87.0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
