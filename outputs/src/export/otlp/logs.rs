//! Log records: every line the target wrote (stdout and stderr, with the level modelprobe
//! read from it) and every lifecycle event (process start and exit, exec, signals, API errors,
//! model loads) as an event record named `modelprobe.<kind>`.
use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
};

use super::{any, kv_int, kv_str, resource, scope, unix_ns};
use crate::recording::{
    logs::{Level, Stream},
    EventKind, Recording,
};

fn severity(level: Option<Level>, stream: Stream) -> (SeverityNumber, &'static str) {
    match level {
        Some(Level::Debug) => (SeverityNumber::Debug, "DEBUG"),
        Some(Level::Info) => (SeverityNumber::Info, "INFO"),
        Some(Level::Warn) => (SeverityNumber::Warn, "WARN"),
        Some(Level::Error) => (SeverityNumber::Error, "ERROR"),
        Some(Level::Fatal) => (SeverityNumber::Fatal, "FATAL"),
        // A line without a level: its stream says no more than that.
        None => (SeverityNumber::Unspecified, stream.name()),
    }
}

fn event_severity(kind: EventKind) -> (SeverityNumber, &'static str) {
    match kind {
        EventKind::FatalSignal | EventKind::OomKill => (SeverityNumber::Fatal, "FATAL"),
        EventKind::ApiError => (SeverityNumber::Error, "ERROR"),
        EventKind::Stopped => (SeverityNumber::Warn, "WARN"),
        _ => (SeverityNumber::Info, "INFO"),
    }
}

/// The log records of a recording, batched into requests.
pub(super) fn requests(rec: &Recording) -> Vec<(ExportLogsServiceRequest, usize)> {
    let mut by_pid: BTreeMap<u32, Vec<LogRecord>> = BTreeMap::new();
    for l in &rec.logs {
        let (number, text) = severity(l.level, l.stream);
        let t = unix_ns(rec, l.time_ns);
        by_pid.entry(l.pid).or_default().push(LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: t,
            severity_number: number as i32,
            severity_text: text.into(),
            body: any(super::any_value::Value::StringValue(l.message.clone())),
            attributes: vec![
                kv_str("log.iostream", l.stream.name()),
                kv_int("thread.id", l.tid as i64),
            ],
            ..Default::default()
        });
    }
    for e in &rec.events {
        let (number, text) = event_severity(e.kind);
        let t = unix_ns(rec, e.time_ns);
        let mut attributes = vec![kv_int("thread.id", e.tid as i64)];
        if let Some(v) = e.value {
            attributes.push(kv_int("modelprobe.event.value", v));
        }
        by_pid.entry(e.pid).or_default().push(LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: t,
            severity_number: number as i32,
            severity_text: text.into(),
            event_name: format!("modelprobe.{}", e.kind.name()),
            body: any(super::any_value::Value::StringValue(e.message.clone())),
            attributes,
            ..Default::default()
        });
    }
    for records in by_pid.values_mut() {
        records.sort_by_key(|r| r.time_unix_nano);
    }
    let resources = resource::processes(rec);
    super::batched(by_pid, |pid, log_records| ResourceLogs {
        resource: Some(resource::of(rec, &resources, pid)),
        scope_logs: vec![ScopeLogs {
            scope: Some(scope()),
            log_records,
            ..Default::default()
        }],
        ..Default::default()
    })
    .into_iter()
    .map(|(resource_logs, n)| (ExportLogsServiceRequest { resource_logs }, n))
    .collect()
}
