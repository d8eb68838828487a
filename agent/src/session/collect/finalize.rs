//! The one step that turns a session's collected records into its [`Recording`]: symbolize
//! every stack (and the kernel host stubs CUDA launches name) in one pass, decode pack
//! arguments, give API errors and launches their stacks, and assemble.
use std::collections::HashMap;

use super::{exceptions, oom, spans, Collector};
use crate::{
    recording::{launch, FrameKind, Meta, Recording},
    symbolize::{symbolize_stacks, RawStack},
};

impl Collector {
    /// Symbolizes everything and builds the recording.
    pub fn finish(self, mut meta: Meta) -> Recording {
        let procs = &self.procs;
        let paired = self.spans.finish(meta.end_ns, |tid| procs.pid_of(tid));
        let known = self.procs.finish();
        let sampled = self.stacks.finish();
        let (logs, cut) = self.logs.finish();
        let (model_loads, _repeated_opens) = self.models.finish();
        meta.lost.user_stack_errors = sampled.user_errors;
        meta.lost.kernel_stack_errors = sampled.kernel_errors;
        meta.lost.user_stacks_truncated = sampled.quality.truncated;
        meta.lost.user_stacks_without_unwind_info = sampled.quality.without_unwind_info;
        meta.lost.user_stacks_stopped = sampled.quality.stopped;
        meta.lost.user_stacks_scanned = sampled.quality.scanned;
        meta.lost.unmatched_span_returns = paired.unmatched_returns;
        meta.lost.log_bytes_cut = cut;
        meta.lost.off_cpu_stacks_evicted = sampled.off_cpu_evicted;
        meta.python = known.python.summary().map(|mut p| {
            let q = &sampled.quality;
            p.stacks = q.python;
            p.no_thread_state = q.python_no_thread;
            p.truncated = q.python_truncated;
            p.read_errors = q.python_errors;
            p
        });

        let mut events = self.tasks.finish();
        events.extend(model_loads);
        events.sort_by_key(|e| e.time_ns);
        let mut spans = paired.spans;

        // Kernel host stubs are named in the same pass as the stacks: one symbolizer, each
        // module parsed once.
        let stubs = spans::host_stubs(&spans, &self.probes);
        let mut raw = sampled.stacks;
        let sample_stacks = raw.len();
        raw.extend(stubs.iter().map(|&(pid, addr)| RawStack {
            pid,
            kernel: vec![],
            user: vec![addr],
            python: vec![],
        }));
        let mut symbolized = symbolize_stacks(&raw, &known.maps, &known.perf_maps);
        let stub_stacks = symbolized.stacks.split_off(sample_stacks);
        let stub_names: HashMap<(u32, u64), String> = stubs
            .into_iter()
            .zip(stub_stacks)
            .filter_map(|(key, stack)| {
                let frame = &symbolized.frames[*stack.first()? as usize];
                (frame.kind != FrameKind::Unknown).then(|| (key, frame.name.clone()))
            })
            .collect();

        let mut rec = Recording::new(meta);
        rec.frames = symbolized.frames;
        rec.stacks = symbolized.stacks;
        rec.samples = sampled.samples;
        // Spans carry every captured word until here: probes attached mid-recording (packs found
        // by a rescan) were not in the table when their spans were paired.
        spans::decode_pack_spans(&mut spans, &mut events, &self.probes, &stub_names);
        spans::attach_error_stacks(&mut events, &paired.error_stacks, &rec);
        let mut launch_stacks = paired.launch_stacks;
        launch::attach_entry_stacks(&mut spans, &mut launch_stacks);
        for s in &mut spans {
            let keep = self
                .probes
                .get(s.probe as usize)
                .map_or(0, |p| p.args.min(8) as usize);
            s.args.truncate(keep);
        }
        rec.spans = spans;
        rec.probes = self.probes;
        rec.events = events;
        rec.logs = logs;
        if let Some(llm) = self.llm {
            let lost = rec.meta.lost.tls_records + rec.meta.lost.tls_calls_untracked;
            rec.llm = llm.finish(rec.meta.end_ns, lost);
        }
        if let Some(m) = self.memory {
            rec.counters = m.finish();
        }
        rec.memory = self.allocations.finish();
        rec.processes = known.processes;
        rec.threads = known.threads;
        // Live memory by class over time, beside the resident-set counters (10 points a second
        // at most).
        let live = crate::recording::memory::live_counters(&rec, 100_000_000);
        rec.counters.extend(live);
        oom::explain(&mut rec);
        exceptions::find(&mut rec);
        rec
    }
}
