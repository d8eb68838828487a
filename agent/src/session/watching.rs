//! The user-space triggers the flight recorder and `--stop-on` share: the collector watches
//! for the union of both (log patterns, slow-call thresholds by probe id, failed calls, fatal
//! signals) and what fired is handed to each once per turn of the event loop.
use std::collections::HashMap;

use super::{
    collect::triggers::{Fired, Watch},
    flight::Trigger,
    start::Session,
};

/// Sets the collector's watch up from the flight recorder's triggers and the stop rules.
pub(super) fn start(s: &mut Session<'_>) {
    let mut watch = Watch::default();
    let mut any = false;
    if let Some(f) = &s.opts.flight {
        for t in &f.triggers {
            any = true;
            match t {
                Trigger::ApiError => watch.api_error = true,
                Trigger::Signal => watch.fatal_signal = true,
                Trigger::Log(re) => watch.logs.push(re.clone()),
                Trigger::Span { .. } => {}
            }
        }
    }
    if let Some(stops) = &s.opts.stops {
        any |= !stops.logs.is_empty() || !stops.slow.is_empty();
        watch.logs.extend(stops.logs.iter().cloned());
    }
    if any {
        s.collector.watch_triggers(watch);
    }
}

/// The slow-call thresholds by function: the smallest of the flight recorder's and the stop
/// rules'.
fn thresholds(s: &Session<'_>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    if let Some(f) = &s.opts.flight {
        for t in &f.triggers {
            if let Trigger::Span { function, min } = t {
                out.push((function.clone(), min.as_nanos() as u64));
            }
        }
    }
    if let Some(stops) = &s.opts.stops {
        out.extend(
            stops
                .slow
                .iter()
                .map(|(f, d)| (f.clone(), d.as_nanos() as u64)),
        );
    }
    out
}

/// What fired since the last turn; the thresholds are set again when the probe table grew.
pub(super) fn take(s: &mut Session<'_>, probes_seen: &mut usize) -> Vec<Fired> {
    if s.opts.flight.is_none() && s.opts.stops.is_none() {
        return Vec::new();
    }
    if s.probes.function_count() != *probes_seen {
        let table = s.probes.table();
        *probes_seen = table.len();
        let mut slow: HashMap<u32, u64> = HashMap::new();
        for (function, min) in thresholds(s) {
            for (id, _) in table
                .iter()
                .enumerate()
                .filter(|(_, p)| p.function == function)
            {
                let e = slow.entry(id as u32).or_insert(min);
                *e = (*e).min(min);
            }
        }
        s.collector.set_slow_spans(slow);
    }
    s.collector.take_fired()
}
