//! OTLP, the OpenTelemetry protocol, from a recording: probe spans and LLM calls as traces,
//! GPU counters, CPU time, span latencies, LLM tokens and cost and drop counters as metrics, the
//! target's output and lifecycle events as logs, and CPU, off-CPU and GPU profiles as the
//! development profiles signal ([`profiles`]). Each request is the protobuf body OTLP/HTTP
//! sends (`ExportTraceServiceRequest`, ...; the `opentelemetry-proto` crate's types), so the
//! files this writes can be posted to any collector as they are, and `modelprobe export
//! --endpoint` sends the same bytes.
//!
//! One resource per target process (see [`resource`]); one instrumentation scope, `modelprobe`.
//! Requests hold at most [`BATCH`] items each, as collectors cap a request's size.
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use prost::Message;
use serde_json::Value;

use super::Exporter;
use crate::{recording::Recording, Result};

mod logs;
mod metrics;
mod profiles;
pub mod resource;
mod traces;

/// Most spans, metric data points or log records in one request.
pub const BATCH: usize = 4096;

/// The OTLP signals modelprobe sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
    /// Log records.
    Logs,
    /// Profiles (OTLP's development signal).
    Profiles,
}

impl Signal {
    /// Every signal, in the order requests are made.
    pub const ALL: [Signal; 4] = [
        Signal::Traces,
        Signal::Metrics,
        Signal::Logs,
        Signal::Profiles,
    ];
}

impl Signal {
    /// The signal's name as OTLP/HTTP's paths spell it (`traces`, `metrics`, `logs`,
    /// `profiles`).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Profiles => "profiles",
        }
    }

    /// The path OTLP/HTTP posts this signal to, under the endpoint: `/v1/traces`...
    pub fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
            Signal::Profiles => "/v1development/profiles",
        }
    }
}

/// One request body, ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which signal it carries.
    pub signal: Signal,
    /// Spans, data points or log records in it.
    pub items: usize,
    /// The encoded `Export*ServiceRequest`.
    pub body: Vec<u8>,
}

/// Every request a recording makes, traces first.
pub fn requests(rec: &Recording) -> Vec<Request> {
    requests_with(rec, &[])
}

/// Every request, with `resource` attributes set on every resource (replacing what modelprobe
/// read, `service.name` included): `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`, as every
/// OpenTelemetry SDK takes them.
pub fn requests_with(rec: &Recording, resource: &[(String, String)]) -> Vec<Request> {
    let set = |r: Option<&mut opentelemetry_proto::tonic::resource::v1::Resource>| {
        if let Some(r) = r {
            for (k, v) in resource {
                r.attributes.retain(|a| &a.key != k);
                r.attributes.push(kv_str(k, v.clone()));
            }
        }
    };
    let mut out = Vec::new();
    for (mut req, items) in traces::requests(rec) {
        req.resource_spans
            .iter_mut()
            .for_each(|r| set(r.resource.as_mut()));
        out.push(encode(Signal::Traces, items, &req));
    }
    for (mut req, items) in metrics::requests(rec) {
        req.resource_metrics
            .iter_mut()
            .for_each(|r| set(r.resource.as_mut()));
        out.push(encode(Signal::Metrics, items, &req));
    }
    for (mut req, items) in logs::requests(rec) {
        req.resource_logs
            .iter_mut()
            .for_each(|r| set(r.resource.as_mut()));
        out.push(encode(Signal::Logs, items, &req));
    }
    for (mut req, items) in profiles::requests(rec) {
        req.resource_profiles
            .iter_mut()
            .for_each(|r| set(r.resource.as_mut()));
        out.push(encode(Signal::Profiles, items, &req));
    }
    out
}

/// The resource attributes the OpenTelemetry environment sets: `OTEL_RESOURCE_ATTRIBUTES`
/// (`k=v,k=v`, values percent-decoded) then `OTEL_SERVICE_NAME` (which wins for
/// `service.name`), from the values given.
pub fn resource_from_env(
    attributes: Option<&str>,
    service_name: Option<&str>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = attributes
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), percent_decode(v.trim())))
        })
        .collect();
    if let Some(name) = service_name.filter(|n| !n.is_empty()) {
        out.retain(|(k, _)| k != "service.name");
        out.push(("service.name".into(), name.to_string()));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(signal: Signal, items: usize, msg: &impl Message) -> Request {
    Request {
        signal,
        items,
        body: msg.encode_to_vec(),
    }
}

/// What a collector's reply to a request says it rejected: `(items, message)`, when it says so
/// (OTLP's partial success); `None` when it took everything or the reply is not one.
pub fn rejected(signal: Signal, reply: &[u8]) -> Option<(i64, String)> {
    use opentelemetry_proto::tonic::collector::{logs, metrics, profiles, trace};
    let (n, message) = match signal {
        Signal::Traces => {
            let p = trace::v1::ExportTraceServiceResponse::decode(reply)
                .ok()?
                .partial_success?;
            (p.rejected_spans, p.error_message)
        }
        Signal::Metrics => {
            let p = metrics::v1::ExportMetricsServiceResponse::decode(reply)
                .ok()?
                .partial_success?;
            (p.rejected_data_points, p.error_message)
        }
        Signal::Logs => {
            let p = logs::v1::ExportLogsServiceResponse::decode(reply)
                .ok()?
                .partial_success?;
            (p.rejected_log_records, p.error_message)
        }
        Signal::Profiles => {
            let p = profiles::v1development::ExportProfilesServiceResponse::decode(reply)
                .ok()?
                .partial_success?;
            (p.rejected_profiles, p.error_message)
        }
    };
    (n > 0 || !message.is_empty()).then_some((n, message))
}

/// `export --format otlp`: `otlp/traces-0000.pb`, `otlp/metrics-0000.pb`, `otlp/logs-0000.pb`,
/// `otlp/profiles-0000.pb`
/// (one file per request; post one with `curl --data-binary @FILE -H 'Content-Type:
/// application/x-protobuf' http://collector:4318/v1/traces`).
#[derive(Debug, Default)]
pub struct Otlp {
    /// Resource attributes set on every resource (see [`requests_with`]).
    pub resource: Vec<(String, String)>,
}

impl Exporter for Otlp {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let requests = requests_with(rec, &self.resource);
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let out = dir.join("otlp");
        std::fs::create_dir_all(&out)
            .map_err(|e| crate::Error::io(format!("creating {}", out.display()), e))?;
        let mut written = Vec::new();
        let mut counts = [0usize; Signal::ALL.len()];
        for r in requests {
            let n = &mut counts[r.signal as usize];
            let path = out.join(format!("{}-{:04}.pb", r.signal.name(), n));
            *n += 1;
            std::fs::write(&path, &r.body)
                .map_err(|e| crate::Error::io(format!("writing {}", path.display()), e))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The one instrumentation scope.
fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "modelprobe".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// A recording's time (the agent's monotonic clock) as Unix nanoseconds, through the pair
/// taken at the start.
fn unix_ns(rec: &Recording, t: u64) -> u64 {
    let start = rec.meta.start_unix_ms.saturating_mul(1_000_000);
    if t >= rec.meta.start_ns {
        start.saturating_add(t - rec.meta.start_ns)
    } else {
        start.saturating_sub(rec.meta.start_ns - t)
    }
}

fn any(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

/// A string attribute.
fn kv_str(key: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: any(any_value::Value::StringValue(v.into())),
        ..Default::default()
    }
}

/// An integer attribute.
fn kv_int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: any(any_value::Value::IntValue(v)),
        ..Default::default()
    }
}

/// An attribute from a JSON value (objects become key-value lists; integers past `i64` doubles).
fn kv_json(key: &str, v: &Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(json_value(v)),
        ..Default::default()
    }
}

fn json_value(v: &Value) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => V::IntValue(i),
            (None, Some(f)) => V::DoubleValue(f),
            (None, None) => V::StringValue(n.to_string()),
        }),
        Value::String(s) => Some(V::StringValue(s.clone())),
        Value::Array(a) => Some(V::ArrayValue(ArrayValue {
            values: a.iter().map(json_value).collect(),
        })),
        Value::Object(o) => Some(V::KvlistValue(KeyValueList {
            values: o.iter().map(|(k, v)| kv_json(k, v)).collect(),
        })),
    };
    AnyValue { value }
}

/// 64 well-mixed bits (splitmix64's finalizer): span and trace ids from counters.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What makes one recording's ids its own: its host, start time and target.
fn recording_seed(rec: &Recording) -> u64 {
    let mut h = mix(rec.meta.start_unix_ms ^ ((rec.meta.target_pid as u64) << 40));
    for b in rec
        .meta
        .hostname
        .bytes()
        .chain(rec.meta.start_ns.to_le_bytes())
    {
        h = mix(h ^ b as u64);
    }
    h
}

/// Splits items grouped by resource key into requests of at most [`BATCH`] items: each request
/// gets one group per key it holds, made by `group`. Returns each request's groups and item count.
fn batched<K: Ord + Copy, T, G>(
    by_key: std::collections::BTreeMap<K, Vec<T>>,
    mut group: impl FnMut(K, Vec<T>) -> G,
) -> Vec<(Vec<G>, usize)> {
    let mut out: Vec<(Vec<G>, usize)> = Vec::new();
    let mut current: (Vec<G>, usize) = (Vec::new(), 0);
    for (key, items) in by_key {
        // Moved out a chunk at a time: no copy of what is left, no group holding a buffer
        // sized for all of it.
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<T> = items.by_ref().take(BATCH - current.1).collect();
            current.1 += chunk.len();
            current.0.push(group(key, chunk));
            if current.1 == BATCH {
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if current.1 > 0 {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests;
