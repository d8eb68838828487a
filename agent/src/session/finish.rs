//! Phase three, whatever ended the session: take the last GPU records while the processes still
//! run, drain the ring buffers, read the drop counters, detach (so the target runs unobserved
//! again before the heavy lifting), build the recording in one step, write it and its outputs.
use modelprobe_common::lost;

use super::{run::Stopped, start::Session, Outcome, Target};
use crate::{
    clock, export, preflight,
    recording::{AgentUsage, Lost, Meta, Recording},
    sampler::LostCounts,
    Result,
};

/// Finalizes the recording and writes everything.
pub(super) fn finish(s: Session<'_>, stopped: Stopped) -> Result<Outcome> {
    let Session {
        opts,
        mut sampler,
        mut probes,
        mut collector,
        mut gpu,
        mut python,
        target_pid,
        command,
        start_ns,
        start_unix_ms,
        started_at,
        created_output_dir,
        progress,
        live,
        child: _,
        adopted,
        held: _,
        flight: _,
        stops_left: _,
    } = s;
    gpu.collect_last(&progress);
    python.collect_last();
    sampler.drain(&mut collector);
    sampler.drain_off_cpu_sums(&mut collector, true);
    collector.thread_cpu(&sampler.thread_cpu());
    let off_cpu_stats = opts.off_cpu.then(|| sampler.off_cpu_stats());
    let (recording_cpu_ns, recording_peak_rss_kib) = clock::agent_usage();
    let counts = sampler.lost()?;
    // The last figures for a scrape while the recording is written (the server stops after).
    collector.publish();
    if let Some(metrics) = live.metrics() {
        metrics.lost(&lost_in_kernel(&counts));
    }
    if let Some(stream) = &live.stream {
        log::info!(
            "streamed {} JSON lines to {}",
            stream.lines(),
            stream.target
        );
    }
    // PyTorch's allocator tracepoints gated on our semaphores: handed back first.
    probes.release();
    let cpus = sampler.cpus();
    let unwind = sampler.unwind_summary();
    let bpf_programs = sampler.program_costs();
    // Detach before the heavy lifting, so the target runs unobserved again. Each tracepoint and
    // uprobe perf event waits out an RCU grace period as it closes (tens of ms each, one at a
    // time under the kernel's event_mutex): on its own thread, that wait overlaps the work below.
    let detaching = std::thread::Builder::new()
        .name("mp-detach".into())
        .spawn(move || drop(sampler))
        .map_err(|e| log::debug!("detaching on this thread: {e}"))
        .ok();
    progress.set(&format!(
        "stopped; symbolizing {} samples",
        collector.sample_count()
    ));
    log::info!(
        "stopped ({}) after {:.1}s; symbolizing {} samples",
        stopped.end_reason,
        started_at.elapsed().as_secs_f64(),
        collector.sample_count()
    );
    let meta = Meta {
        modelprobe_version: env!("CARGO_PKG_VERSION").to_string(),
        mode: match opts.target {
            Target::Pid(_) => "attach".into(),
            Target::Command(_) => "run".into(),
        },
        command,
        target_pid,
        start_ns,
        end_ns: stopped.end_ns,
        start_unix_ms,
        frequency_hz: if opts.cpu { opts.frequency_hz } else { 0 },
        off_cpu: opts.off_cpu,
        kernel: kernel_release(),
        hostname: hostname(),
        cpus,
        end_reason: stopped.end_reason.into(),
        exit_status: stopped.exit_status,
        lost: lost_in_kernel(&counts),
        span_sample_rate: None,
        agent: None,
        unwind,
        off_cpu_stats,
        // Filled in by the collector, which found the interpreters.
        python: None,
        bpf_programs,
    };
    // Probes attached while recording (packs found by a rescan) are in the table now.
    collector.set_probes(probes.table());
    let mut recording: Recording = collector.finish(meta);
    // Before anything refers to spans by index (the GPU merge): Python spans sort in.
    python.finish(&mut recording);
    recording.keep_logs_from(opts.min_log_level);
    recording.sample_spans(opts.span_sample_rate);
    gpu.finish(&mut recording);
    let (total_cpu_ns, peak_rss_kib) = clock::agent_usage();
    recording.meta.agent = Some(AgentUsage {
        recording_cpu_ns,
        recording_peak_rss_kib,
        total_cpu_ns,
        peak_rss_kib,
    });
    progress.set("writing the recording and flame graphs");
    recording.write(&opts.output_dir)?;
    let mut files = vec![opts.output_dir.join(crate::recording::FILE_NAME)];
    files.extend(export::export_all(&recording, &opts.output_dir)?);
    if let Some(t) = detaching {
        progress.set("detaching from the kernel");
        let _ = t.join();
    }
    progress.done();
    preflight::hand_over(
        created_output_dir.then_some(opts.output_dir.as_path()),
        &files,
    );
    Ok(Outcome {
        recording,
        files,
        adopted: adopted.len(),
    })
}

/// What the BPF side counted as dropped, by cause.
pub(super) fn lost_in_kernel(counts: &LostCounts) -> Lost {
    Lost {
        cpu_samples: counts[lost::CPU_SAMPLE as usize],
        off_cpu_events: counts[lost::OFF_CPU as usize],
        off_cpu_untracked: counts[lost::OFF_CPU_TABLE_FULL as usize],
        children_untracked: counts[lost::TARGETS_FULL as usize],
        span_records: counts[lost::SPAN as usize],
        task_records: counts[lost::TASK as usize],
        log_writes: counts[lost::LOG as usize],
        file_opens: counts[lost::OPEN as usize],
        tls_records: counts[lost::TLS as usize],
        tls_calls_untracked: counts[lost::TLS_TABLE_FULL as usize],
        memory_events: counts[lost::MEMORY as usize],
        ..Lost::default()
    }
}

pub(super) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
