//! What a recording in progress shows to the outside while it runs: Prometheus metrics
//! (`attach/run --metrics-addr`), counted as records are drained ([`metrics`]) and served on
//! `/metrics` ([`serve`]).
pub mod metrics;
pub mod serve;

pub use metrics::LiveMetrics;
pub use serve::MetricsServer;
