//! Puts what the injection libraries sent into the recording: names interned once, times moved
//! onto CLOCK_MONOTONIC ([`ClockMap`]), and every GPU operation joined to the CPU call that
//! launched it.
//!
//! The join is by correlation id, never by guessing from times: CUPTI stamps each operation
//! with the correlation id of its API call, the library reported (thread, time) from inside
//! that call, and the call's eBPF span is the innermost span on that thread that contains that
//! time (preferring one that kept its calling stack).
use std::collections::HashMap;

use modelprobe_common::gpu::{op, op_flag, state};

use super::{client::Collected, clock::ClockMap};
use crate::recording::{GpuDetail, GpuLaunch, GpuOp, GpuSource, GpuTrace, Recording};

/// The `state` word of a [`GpuSource`] for a STATUS state.
fn state_name(st: u32) -> &'static str {
    match st {
        state::ON => "on",
        state::NO_CUDA => "no-cuda",
        state::NO_CUPTI => "no-cupti",
        state::BUSY => "busy",
        state::VERSION => "version",
        state::TAKEN_OVER => "taken-over",
        _ => "error",
    }
}

/// Adds everything collected to `rec.gpu` (after its spans are final) and joins it.
/// `not_injected` lists CUDA processes in which the library never answered.
pub fn merge(rec: &mut Recording, collected: Vec<Collected>, not_injected: &[u32]) {
    let mut gpu = std::mem::take(&mut rec.gpu);
    let mut global: HashMap<String, u32> = gpu
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u32))
        .collect();
    for c in collected {
        add_process(&mut gpu, &mut global, c);
    }
    for &pid in not_injected {
        gpu.sources.push(GpuSource {
            pid,
            state: "not-injected".into(),
            message: format!(
                "GPU timings off for pid {pid}: it uses CUDA but the modelprobe GPU library is \
                 not loaded in it (start it with `modelprobe run`, or set CUDA_INJECTION64_PATH \
                 as the README shows)"
            ),
            cupti_version: None,
            dropped: 0,
            drift_ns_per_min: None,
            clock_residual_ns: None,
        });
    }
    gpu.ops.sort_by_key(|o| (o.start_ns, o.end_ns));
    rec.meta.lost.gpu_records = gpu.sources.iter().map(|s| s.dropped).sum();
    rec.gpu = gpu;
    join(rec);
}

fn add_process(gpu: &mut GpuTrace, global: &mut HashMap<String, u32>, c: Collected) {
    let pid = c.pid;
    let Some((st, version, text)) = c.status else {
        gpu.sources.push(GpuSource {
            pid,
            state: "error".into(),
            message: format!("GPU timings off for pid {pid}: its GPU library did not answer"),
            cupti_version: None,
            dropped: 0,
            drift_ns_per_min: None,
            clock_residual_ns: None,
        });
        return;
    };
    let clock = ClockMap::new(&c.clock);
    let mut intern = |local: u32, names: &mut Vec<String>| -> u32 {
        let name = c.names.get(&local).map_or("?", String::as_str);
        if let Some(&id) = global.get(name) {
            return id;
        }
        let id = names.len() as u32;
        names.push(name.to_string());
        global.insert(name.to_string(), id);
        id
    };
    // Synchronizations carry only a context: take the device from the context's other work.
    let device_of: HashMap<u32, u32> = c
        .ops
        .iter()
        .filter(|o| o.device != u32::MAX)
        .map(|o| (o.context, o.device))
        .collect();
    let launch_base = gpu.launches.len() as u32;
    let mut by_correlation: HashMap<u32, u32> = HashMap::with_capacity(c.launches.len());
    for (i, l) in c.launches.iter().enumerate() {
        by_correlation.insert(l.correlation, launch_base + i as u32);
        let api = intern(l.api, &mut gpu.names);
        gpu.launches.push(GpuLaunch {
            pid,
            // The library saw its own PID namespace's thread ids; spans carry the host's.
            tid: c.host_tids.get(&l.tid).copied().unwrap_or(l.tid),
            time_ns: l.time_ns,
            correlation: l.correlation,
            api: gpu.names[api as usize].clone(),
            span: None,
        });
    }
    let (mut queries, mut untimed, mut unjoined_graph) = (0u64, 0u64, 0u64);
    for w in &c.ops {
        if w.end < w.start || (w.start == 0 && w.end == 0) {
            untimed += 1; // CUPTI could not time it: counted, not drawn
            continue;
        }
        // CUPTI reports `cudaEventQuery`/`cudaStreamQuery` as synchronizations, completed or
        // not, and PyTorch polls events constantly: a synchronization no synchronizing call
        // issued (the library records those) is a query, left out and counted.
        if w.kind == op::SYNC && !by_correlation.contains_key(&w.correlation) {
            queries += 1;
            continue;
        }
        let detail = match w.kind {
            op::KERNEL => GpuDetail::Kernel {
                grid: w.grid,
                block: w.block,
                registers: w.registers.min(u32::from(u16::MAX)) as u16,
                shared_static: w.shared_static,
                shared_dynamic: w.shared_dynamic,
                graph_id: w.graph_id,
                graph_node: w.graph_node,
            },
            op::MEMCPY => GpuDetail::Memcpy {
                bytes: w.bytes,
                direction: c.names.get(&w.name).cloned().unwrap_or_default(),
                peer: (w.aux != u32::MAX).then_some((w.aux, w.aux2)),
                graph_id: w.graph_id,
            },
            op::MEMSET => GpuDetail::Memset {
                bytes: w.bytes,
                value: w.aux,
            },
            op::SYNC => GpuDetail::Sync,
            op::RANGE => GpuDetail::Range,
            _ => continue,
        };
        let device = match w.device {
            u32::MAX => device_of.get(&w.context).copied().unwrap_or(0),
            d => d,
        };
        // Drawn, but not joined to a launch its correlation id may wrongly name.
        let trusted = w.flags & op_flag::CORRELATION_UNRELIABLE == 0;
        if !trusted {
            unjoined_graph += 1;
        }
        gpu.ops.push(GpuOp {
            pid,
            device,
            context: w.context,
            stream: w.stream,
            start_ns: clock.map(w.start),
            end_ns: clock.map(w.end),
            correlation: w.correlation,
            name: intern(w.name, &mut gpu.names),
            launch_span: None,
            launch: (trusted && w.correlation != 0)
                .then(|| by_correlation.get(&w.correlation).copied())
                .flatten(),
            detail,
        });
    }
    let mut message = text;
    if queries > 0 {
        message.push_str(&format!(
            "; {queries} synchronization records of queries (cudaEventQuery, cudaStreamQuery) \
             or of calls made before the library was on left out"
        ));
    }
    if untimed > 0 {
        message.push_str(&format!(
            "; {untimed} records without a usable time (zero or end before start) left out"
        ));
    }
    if unjoined_graph > 0 {
        message.push_str(&format!(
            "; {unjoined_graph} CUDA graph records not joined to their launch (this CUPTI, \
             before 13.1 Update 1, gives graph launches wrong correlation ids after a \
             process's first session)"
        ));
    }
    if st == state::ON && !c.complete {
        message.push_str(" (the library did not confirm its last flush: records may be missing)");
    }
    gpu.sources.push(GpuSource {
        pid,
        state: state_name(st).into(),
        message,
        cupti_version: (version != 0).then_some(version),
        dropped: c.dropped.cupti + c.dropped.queue,
        drift_ns_per_min: clock.drift_ns_per_min(),
        clock_residual_ns: clock.residual_ns(),
    });
}

pub use modelprobe_recording::launch::join;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{Meta, ProbeInfo, Span};
    use modelprobe_common::gpu::{ClockPair, Dropped, WireLaunch, WireOp};

    fn span(tid: u32, start_ns: u64, end_ns: u64, depth: u32, stack: Option<u32>) -> Span {
        Span {
            probe: 0,
            pid: 10,
            tid,
            start_ns,
            end_ns,
            depth,
            args: vec![],
            ret: Some(0),
            attrs: Default::default(),
            stack,
        }
    }

    fn recording() -> Recording {
        let mut rec = Recording::new(Meta::default());
        rec.probes.push(ProbeInfo {
            spec: "cudaLaunchKernel".into(),
            path: "/x/libcudart.so.12".into(),
            function: "cudaLaunchKernel".into(),
            args: 0,
            pack: Some("cuda".into()),
        });
        rec.stacks.push(vec![]);
        rec.spans = vec![
            span(11, 1_000, 90_000, 0, None),   // an outer user span
            span(11, 2_000, 3_000, 1, Some(0)), // cudaLaunchKernel #1
            span(11, 5_000, 6_000, 1, Some(0)), // cudaLaunchKernel #2
            span(12, 5_500, 5_900, 0, None),    // another thread, same time
        ];
        rec
    }

    fn collected() -> Collected {
        // CUPTI's clock = monotonic + 1_000_000 exactly.
        let off = 1_000_000;
        let names = [
            (0, "_Z4gemmv"),
            (1, "cudaLaunchKernel"),
            (2, "HtoD"),
            (3, "stream synchronize"),
        ];
        let kernel = |corr: u32, start: u64, end: u64| WireOp {
            kind: op::KERNEL,
            device: 1,
            context: 5,
            stream: 7,
            correlation: corr,
            name: 0,
            start: start + off,
            end: end + off,
            grid: [4, 1, 1],
            block: [128, 1, 1],
            registers: 40,
            ..Default::default()
        };
        Collected {
            pid: 10,
            status: Some((
                state::ON,
                130000,
                "CUPTI API 130000 from /x/libcupti.so.13".into(),
            )),
            names: names.iter().map(|(i, n)| (*i, n.to_string())).collect(),
            ops: vec![
                kernel(100, 10_000, 14_000),
                kernel(101, 14_000, 15_000),
                kernel(999, 20_000, 21_000), // launched before the agent attached: no launch
                WireOp {
                    kind: op::MEMCPY,
                    device: 1,
                    context: 5,
                    stream: 7,
                    correlation: 102,
                    name: 2,
                    start: 30_000 + off,
                    end: 31_000 + off,
                    bytes: 1 << 20,
                    aux: u32::MAX,
                    aux2: u32::MAX,
                    ..Default::default()
                },
                WireOp {
                    kind: op::SYNC,
                    device: u32::MAX,
                    context: 5,
                    correlation: 103,
                    name: 3,
                    start: 32_000 + off,
                    end: 33_000 + off,
                    ..Default::default()
                },
                // A kernel CUPTI could not time (its end before its start).
                WireOp {
                    kind: op::KERNEL,
                    correlation: 101,
                    name: 0,
                    start: 40_000 + off,
                    end: 39_000 + off,
                    ..Default::default()
                },
                // A cudaStreamQuery: CUPTI's sync record of a call that synchronizes nothing.
                WireOp {
                    kind: op::SYNC,
                    device: u32::MAX,
                    context: 5,
                    correlation: 104,
                    name: 3,
                    start: 34_000 + off,
                    end: 34_100 + off,
                    ..Default::default()
                },
            ],
            launches: vec![
                WireLaunch {
                    tid: 11,
                    correlation: 100,
                    time_ns: 2_500,
                    api: 1,
                    _pad: 0,
                },
                WireLaunch {
                    tid: 11,
                    correlation: 101,
                    time_ns: 5_200,
                    api: 1,
                    _pad: 0,
                },
                // A call no eBPF span covers (its probe was not attached).
                WireLaunch {
                    tid: 13,
                    correlation: 102,
                    time_ns: 29_000,
                    api: 1,
                    _pad: 0,
                },
                WireLaunch {
                    tid: 11,
                    correlation: 103,
                    time_ns: 31_500,
                    api: 1,
                    _pad: 0,
                },
            ],
            clock: vec![
                ClockPair {
                    cupti_ns: off,
                    mono_ns: 0,
                    uncertainty_ns: 10,
                },
                ClockPair {
                    cupti_ns: off + 1_000_000,
                    mono_ns: 1_000_000,
                    uncertainty_ns: 10,
                },
            ],
            dropped: Dropped { cupti: 3, queue: 4 },
            complete: true,
            host_tids: HashMap::new(),
        }
    }

    #[test]
    fn thread_ids_of_a_container_are_joined_as_the_host_numbers_them() {
        // In its own PID namespace the library saw threads 1 and 3; eBPF saw 11 and 13.
        let mut c = collected();
        for l in &mut c.launches {
            l.tid -= 10;
        }
        c.host_tids = [(1, 11), (3, 13)].into_iter().collect();
        let mut rec = recording();
        merge(&mut rec, vec![c], &[]);
        let g = &rec.gpu;
        assert_eq!(g.ops[0].launch_span, Some(1));
        assert_eq!(g.ops[1].launch_span, Some(2));
        assert_eq!(g.launches[g.ops[3].launch.unwrap() as usize].tid, 13);
    }

    #[test]
    fn graph_work_with_an_unreliable_correlation_is_drawn_but_not_joined() {
        let mut c = collected();
        c.ops[0].graph_id = 3;
        c.ops[0].flags = op_flag::CORRELATION_UNRELIABLE;
        let mut rec = recording();
        merge(&mut rec, vec![c], &[]);
        let g = &rec.gpu;
        assert_eq!(g.ops.len(), 5, "still drawn");
        assert_eq!((g.ops[0].launch, g.ops[0].launch_span), (None, None));
        assert!(g.ops[1].launch.is_some(), "the rest joins as before");
        let message = &g.sources[0].message;
        assert!(
            message.contains("; 1 CUDA graph records not joined to their launch"),
            "{message}"
        );
    }

    #[test]
    fn ops_join_to_the_spans_that_launched_them() {
        let mut rec = recording();
        merge(&mut rec, vec![collected()], &[]);
        let g = &rec.gpu;
        assert_eq!(g.ops.len(), 5);
        let k1 = &g.ops[0];
        assert_eq!(
            (k1.start_ns, k1.end_ns),
            (10_000, 14_000),
            "moved onto monotonic"
        );
        assert_eq!(g.name(k1.name), "_Z4gemmv");
        assert_eq!(
            k1.launch_span,
            Some(1),
            "the innermost span with a stack, not the outer one"
        );
        assert_eq!(g.ops[1].launch_span, Some(2));
        assert_eq!(g.ops[2].launch, None, "unknown correlation: no launch");
        let copy = &g.ops[3];
        assert!(
            copy.launch.is_some() && copy.launch_span.is_none(),
            "launch known, no span"
        );
        assert_eq!(g.launches[copy.launch.unwrap() as usize].tid, 13);
        assert!(matches!(
            &copy.detail,
            GpuDetail::Memcpy { bytes, direction, peer: None, .. } if *bytes == 1 << 20 && direction == "HtoD"
        ));
        assert_eq!(g.ops[4].device, 1, "a sync takes its context's device");
        assert!(
            g.sources[0]
                .message
                .contains("; 1 synchronization records of queries"),
            "the query's sync record is left out, and counted: {}",
            g.sources[0].message
        );
        assert!(
            g.sources[0]
                .message
                .contains("; 1 records without a usable time"),
            "{}",
            g.sources[0].message
        );
        assert_eq!(g.sources.len(), 1);
        assert_eq!(g.sources[0].state, "on");
        assert_eq!(g.sources[0].dropped, 7);
        assert_eq!(rec.meta.lost.gpu_records, 7);
        assert_eq!(g.sources[0].drift_ns_per_min, Some(0.0));
        assert_eq!(g.launches[0].api, "cudaLaunchKernel");
    }

    #[test]
    fn refusals_and_silent_processes_become_sources() {
        let mut rec = recording();
        let busy = Collected {
            pid: 20,
            status: Some((
                state::BUSY,
                0,
                "GPU timings off for process 20: another tool".into(),
            )),
            complete: false,
            ..Collected::default()
        };
        let silent = Collected {
            pid: 21,
            ..Collected::default()
        };
        merge(&mut rec, vec![busy, silent], &[22]);
        let states: Vec<(u32, &str)> = rec
            .gpu
            .sources
            .iter()
            .map(|s| (s.pid, s.state.as_str()))
            .collect();
        assert_eq!(states, [(20, "busy"), (21, "error"), (22, "not-injected")]);
        assert!(rec.gpu.ops.is_empty());
    }

    #[test]
    fn names_are_shared_between_processes() {
        let mut rec = recording();
        let mut other = collected();
        other.pid = 30;
        // In process 30 the same kernel has another local id.
        other.names = [
            (5, "_Z4gemmv".to_string()),
            (1, "cudaLaunchKernel".into()),
            (2, "HtoD".into()),
            (3, "stream synchronize".into()),
        ]
        .into();
        for o in &mut other.ops {
            if o.kind == op::KERNEL {
                o.name = 5;
            }
        }
        merge(&mut rec, vec![collected(), other], &[]);
        let gemm: Vec<u32> = rec
            .gpu
            .ops
            .iter()
            .filter(|o| matches!(o.detail, GpuDetail::Kernel { .. }))
            .map(|o| o.name)
            .collect();
        assert_eq!(gemm.len(), 6);
        assert!(gemm.iter().all(|&n| n == gemm[0]));
        assert_eq!(rec.gpu.names.iter().filter(|n| *n == "_Z4gemmv").count(), 1);
    }
}
