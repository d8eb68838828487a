//! Metrics, each over the whole recording (cumulative, from its start to its end) but GPU
//! counters, which keep every sampled point as a gauge:
//! - per process: `process.cpu.time` and per thread `modelprobe.thread.cpu.time` (the
//!   scheduler's accounting), `modelprobe.cpu.samples`, `modelprobe.off_cpu.time`,
//!   `modelprobe.span.duration` (a histogram per probed function), the GenAI client metrics
//!   `gen_ai.client.token.usage` and `gen_ai.client.operation.duration`, `modelprobe.llm.cost`,
//!   and the per-process GPU counters;
//! - on the host's resource: device GPU counters (`modelprobe.gpu.utilization`...) and
//!   `modelprobe.lost`, one point per kind of dropped data.
use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
};

use super::{kv_int, kv_str, resource, scope, unix_ns};
use crate::{
    export::timeline_llm,
    recording::{Counter, Recording, SampleKind},
};

/// Bucket bounds of the duration histograms, in seconds: 10 µs to 100 s.
const DURATION_BOUNDS: [f64; 16] = [
    1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 10.0,
    100.0,
];

/// Bucket bounds of the token histogram (the GenAI convention's advice).
const TOKEN_BOUNDS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// The recording's span of time, as every cumulative point's start and time.
#[derive(Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
}

fn number(
    w: Window,
    attributes: Vec<KeyValue>,
    value: number_data_point::Value,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: w.start,
        time_unix_nano: w.end,
        value: Some(value),
        ..Default::default()
    }
}

fn sum(name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: description.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn histogram(name: &str, unit: &str, description: &str, points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: description.into(),
        data: Some(Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

/// A histogram point of `values` over `bounds`.
fn histogram_point(
    w: Window,
    attributes: Vec<KeyValue>,
    values: &[f64],
    bounds: &[f64],
) -> HistogramDataPoint {
    let mut counts = vec![0u64; bounds.len() + 1];
    for &v in values {
        counts[bounds.partition_point(|&b| b < v)] += 1;
    }
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: w.start,
        time_unix_nano: w.end,
        count: values.len() as u64,
        sum: Some(values.iter().sum()),
        bucket_counts: counts,
        explicit_bounds: bounds.to_vec(),
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
        ..Default::default()
    }
}

/// A GPU counter's metric name and unit: "GPU 0 utilization" -> `modelprobe.gpu.utilization`,
/// "GPU 0 memory of pid 7" -> `modelprobe.gpu.memory`.
fn counter_metric(c: &Counter) -> (String, &'static str) {
    let mut what = c.name.as_str();
    if let Some(rest) = what.strip_prefix("GPU ") {
        what = rest.split_once(' ').map_or(rest, |(_, w)| w);
    }
    if let Some((w, _)) = what.split_once(" of pid ") {
        what = w;
    }
    let slug: String = what
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let unit = match c.unit.as_str() {
        "%" => "%",
        "MiB" => "MiBy",
        "W" => "W",
        "MHz" => "MHz",
        "C" | "°C" => "Cel",
        _ => "1",
    };
    (format!("modelprobe.gpu.{slug}"), unit)
}

fn gauge(rec: &Recording, c: &Counter) -> Metric {
    let (name, unit) = counter_metric(c);
    let mut attributes = Vec::new();
    if let Some(d) = c.device {
        attributes.push(kv_int("gpu.index", d as i64));
    }
    let data_points = c
        .points
        .iter()
        .map(|&(t, v)| NumberDataPoint {
            attributes: attributes.clone(),
            time_unix_nano: unix_ns(rec, t),
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        })
        .collect();
    Metric {
        name,
        unit: unit.into(),
        description: c.name.clone(),
        data: Some(Data::Gauge(Gauge { data_points })),
        ..Default::default()
    }
}

/// The metrics of one process.
fn process_metrics(rec: &Recording, w: Window, pid: u32) -> Vec<Metric> {
    use number_data_point::Value::{AsDouble, AsInt};
    let mut out = Vec::new();
    let threads: Vec<_> = rec
        .threads
        .iter()
        .filter(|t| t.pid == pid && t.cpu_ns.is_some())
        .collect();
    if !threads.is_empty() {
        let total = threads
            .iter()
            .filter_map(|t| t.cpu_ns)
            .fold(0u64, u64::saturating_add);
        out.push(sum(
            "process.cpu.time",
            "s",
            "CPU time of the process while recorded (the scheduler's accounting)",
            vec![number(w, vec![], AsDouble(total as f64 / 1e9))],
        ));
        let points = threads
            .iter()
            .map(|t| {
                let attrs = vec![
                    kv_int("thread.id", t.tid as i64),
                    kv_str("thread.name", t.name.clone()),
                ];
                number(w, attrs, AsDouble(t.cpu_ns.unwrap_or(0) as f64 / 1e9))
            })
            .collect();
        out.push(sum(
            "modelprobe.thread.cpu.time",
            "s",
            "CPU time of each thread while recorded",
            points,
        ));
    }
    let (mut cpu_samples, mut off_cpu_ns) = (0u64, 0u64);
    for s in rec.samples.iter().filter(|s| s.pid == pid) {
        match s.kind {
            SampleKind::Cpu => cpu_samples = cpu_samples.saturating_add(s.weight.max(1)),
            SampleKind::OffCpu => off_cpu_ns = off_cpu_ns.saturating_add(s.weight),
        }
    }
    if cpu_samples > 0 {
        out.push(sum(
            "modelprobe.cpu.samples",
            "{sample}",
            "CPU samples taken",
            vec![number(w, vec![], AsInt(cpu_samples as i64))],
        ));
    }
    if off_cpu_ns > 0 {
        out.push(sum(
            "modelprobe.off_cpu.time",
            "s",
            "Time threads spent blocked, summed over threads",
            vec![number(w, vec![], AsDouble(off_cpu_ns as f64 / 1e9))],
        ));
    }
    // Span latency per probed function.
    let mut by_function: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in rec.spans.iter().filter(|s| s.pid == pid && s.ret.is_some()) {
        let f = rec.probes[s.probe as usize].function.as_str();
        by_function
            .entry(f)
            .or_default()
            .push(s.end_ns.saturating_sub(s.start_ns) as f64 / 1e9);
    }
    if !by_function.is_empty() {
        let points = by_function
            .iter()
            .map(|(f, v)| {
                histogram_point(
                    w,
                    vec![kv_str("code.function.name", *f)],
                    v,
                    &DURATION_BOUNDS,
                )
            })
            .collect();
        out.push(histogram(
            "modelprobe.span.duration",
            "s",
            "Duration of each call of a probed function",
            points,
        ));
    }
    out.extend(llm_metrics(rec, w, pid));
    for c in rec.counters.iter().filter(|c| c.pid == Some(pid)) {
        out.push(gauge(rec, c));
    }
    out
}

/// The GenAI client metrics and the cost of one process's calls.
fn llm_metrics(rec: &Recording, w: Window, pid: u32) -> Vec<Metric> {
    type Key = (String, String, String); // provider, model, operation
    let mut tokens: BTreeMap<(Key, &str), Vec<f64>> = BTreeMap::new();
    let mut durations: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    let mut cost: BTreeMap<Key, f64> = BTreeMap::new();
    for c in rec.llm.calls.iter().filter(|c| c.pid == pid) {
        let op = timeline_llm::operation(&c.endpoint).to_string();
        let key = (c.provider.clone(), c.model.clone(), op);
        durations
            .entry(key.clone())
            .or_default()
            .push(c.end_ns.saturating_sub(c.start_ns) as f64 / 1e9);
        if let Some(u) = c.usage {
            let input = u
                .input_tokens
                .saturating_add(u.cache_read_tokens)
                .saturating_add(u.cache_creation_tokens);
            tokens
                .entry((key.clone(), "input"))
                .or_default()
                .push(input as f64);
            tokens
                .entry((key.clone(), "output"))
                .or_default()
                .push(u.output_tokens as f64);
        }
        if let Some(usd) = c.cost_usd {
            *cost.entry(key).or_default() += usd;
        }
    }
    let attrs = |(provider, model, op): &Key| {
        vec![
            kv_str("gen_ai.provider.name", provider.clone()),
            kv_str("gen_ai.request.model", model.clone()),
            kv_str("gen_ai.operation.name", op.clone()),
        ]
    };
    let mut out = Vec::new();
    if !tokens.is_empty() {
        let points = tokens
            .iter()
            .map(|((k, kind), v)| {
                let mut a = attrs(k);
                a.push(kv_str("gen_ai.token.type", *kind));
                histogram_point(w, a, v, &TOKEN_BOUNDS)
            })
            .collect();
        out.push(histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens per LLM call, by input and output",
            points,
        ));
    }
    if !durations.is_empty() {
        let points = durations
            .iter()
            .map(|(k, v)| histogram_point(w, attrs(k), v, &DURATION_BOUNDS))
            .collect();
        out.push(histogram(
            "gen_ai.client.operation.duration",
            "s",
            "Duration of each LLM call, request to last byte",
            points,
        ));
    }
    if !cost.is_empty() {
        let points = cost
            .iter()
            .map(|(k, usd)| number(w, attrs(k), number_data_point::Value::AsDouble(*usd)))
            .collect();
        out.push(sum(
            "modelprobe.llm.cost",
            "USD",
            "Cost of the LLM calls, from the price table or the provider",
            points,
        ));
    }
    out
}

/// Device-wide metrics: GPU counters of no process, and drop counters.
fn host_metrics(rec: &Recording, w: Window) -> Vec<Metric> {
    let mut out: Vec<Metric> = rec
        .counters
        .iter()
        .filter(|c| c.pid.is_none())
        .map(|c| gauge(rec, c))
        .collect();
    // Every kind of dropped data, by its name in the recording (zeros too: they say "nothing lost").
    let points = rec
        .meta
        .lost
        .by_kind()
        .into_iter()
        .map(|(k, n)| {
            number(
                w,
                vec![kv_str("modelprobe.lost.kind", k)],
                number_data_point::Value::AsInt(n.min(i64::MAX as u64) as i64),
            )
        })
        .collect();
    out.push(sum(
        "modelprobe.lost",
        "{record}",
        "Data dropped or cut while recording, by kind",
        points,
    ));
    out
}

/// The metrics of a recording, batched into requests.
pub(super) fn requests(rec: &Recording) -> Vec<(ExportMetricsServiceRequest, usize)> {
    let w = Window {
        start: unix_ns(rec, rec.meta.start_ns),
        end: unix_ns(rec, rec.meta.end_ns.max(rec.meta.start_ns)),
    };
    let mut pids: Vec<u32> = rec.processes.iter().map(|p| p.pid).collect();
    pids.extend(rec.counters.iter().filter_map(|c| c.pid));
    pids.sort_unstable();
    pids.dedup();
    let mut by_key: BTreeMap<Option<u32>, Vec<Metric>> = BTreeMap::new();
    by_key.insert(None, host_metrics(rec, w));
    for pid in pids {
        let m = process_metrics(rec, w, pid);
        if !m.is_empty() {
            by_key.insert(Some(pid), m);
        }
    }
    let resources = resource::processes(rec);
    super::batched(by_key, |key, metrics| ResourceMetrics {
        resource: Some(match key {
            Some(pid) => resource::of(rec, &resources, pid),
            None => resource::host(rec),
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    })
    .into_iter()
    .map(|(resource_metrics, n)| (ExportMetricsServiceRequest { resource_metrics }, n))
    .collect()
}
