//! What a recording in progress shows to the outside while it runs: Prometheus metrics
//! (`attach/run --metrics-addr`), counted as records are drained ([`metrics`]) and served on
//! `/metrics` ([`serve`]); and a JSON-lines stream of spans, LLM calls and events
//! (`--export jsonl:-`, [`stream`]). [`Live`] is what the collector hands each record to.
use std::sync::Arc;

use crate::recording::{llm::LlmCall, Event, ProbeInfo, Span};

pub mod metrics;
pub mod serve;
pub mod stream;

pub use metrics::LiveMetrics;
pub use serve::MetricsServer;
pub use stream::JsonLines;

/// The live outputs of one recording; each is optional and costs nothing when off.
#[derive(Debug, Default, Clone)]
pub struct Live {
    /// Prometheus metrics.
    pub metrics: Option<Arc<LiveMetrics>>,
    /// The JSON-lines stream.
    pub stream: Option<Arc<JsonLines>>,
}

impl Live {
    /// True when any live output is on.
    pub fn is_on(&self) -> bool {
        self.metrics.is_some() || self.stream.is_some()
    }

    /// A CPU sample of a process named `process`.
    pub fn cpu_sample(&self, process: &str) {
        if let Some(m) = &self.metrics {
            m.cpu_sample(process);
        }
    }

    /// Blocked time of a process named `process`.
    pub fn blocked(&self, process: &str, ns: u64) {
        if let Some(m) = &self.metrics {
            m.blocked(process, ns);
        }
    }

    /// A call of `probe` that returned (its first `probe.args` arguments are kept).
    pub fn span(&self, probe: &ProbeInfo, s: &Span) {
        if let Some(m) = &self.metrics {
            m.span(&probe.function, s.end_ns.saturating_sub(s.start_ns));
        }
        if let Some(j) = &self.stream {
            let kept = s.args.len().min(probe.args as usize);
            j.span(&probe.function, &s.args[..kept], s);
        }
    }

    /// An LLM call whose answer was read.
    pub fn llm_call(&self, c: &LlmCall) {
        if let Some(m) = &self.metrics {
            m.llm_call(c);
        }
        if let Some(j) = &self.stream {
            j.llm_call(c);
        }
    }

    /// A lifecycle event.
    pub fn event(&self, e: &Event) {
        if let Some(j) = &self.stream {
            j.event(e);
        }
    }

    /// Ends a drain: the stream's buffered lines go out.
    pub fn flush(&self) {
        if let Some(j) = &self.stream {
            j.flush();
        }
    }
}
