//! CUPTI activity records into what the agent gets: each decoded record (kernel, copy, memset,
//! synchronization, NVTX range) becomes a [`WireOp`] in the [`outbox`](crate::outbox), its
//! strings interned there; kinds the agent does not use are skipped.
#[cfg(test)]
use std::ffi::CStr;

use std::{collections::HashMap, sync::Mutex};

use cupti_sys::{Activity, MemcpyKind, SyncType};
use modelprobe_common::gpu::{op, op_flag, WireOp};

use crate::outbox;

/// Open NVTX ranges: marker id → (name id, start).
static OPEN_RANGES: Mutex<Option<HashMap<u32, (u32, u64)>>> = Mutex::new(None);

/// Forgets open NVTX ranges (a new agent session starts).
pub fn reset_ranges() {
    *OPEN_RANGES.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashMap::new());
}

fn copy_name(kind: MemcpyKind) -> String {
    match kind {
        MemcpyKind::Other(n) => format!("memcpy kind {n}"),
        k => format!("{k:?}"),
    }
}

fn sync_name(kind: SyncType) -> &'static str {
    match kind {
        SyncType::EventSynchronize => "event synchronize",
        SyncType::StreamWaitEvent => "stream wait event",
        SyncType::StreamSynchronize => "stream synchronize",
        SyncType::ContextSynchronize => "context synchronize",
        SyncType::Unknown | SyncType::Other(_) => "synchronize",
    }
}

/// Turns one decoded record into what the agent gets (kinds it does not use are skipped).
/// With `unreliable_graphs` (see [`crate::cupti::graph_correlation_unreliable`]), the work of
/// CUDA graph launches is flagged [`op_flag::CORRELATION_UNRELIABLE`].
pub fn convert(activity: &Activity, unreliable_graphs: bool, out: &mut outbox::Outbox) {
    let no_peer = u32::MAX;
    let mut op = match activity {
        Activity::Kernel(k) => {
            // SAFETY: called while the buffer holding the record is alive; the name is
            // CUPTI's, kept for the life of the kernel's module.
            let name = unsafe { k.name.to_string_lossy() }.unwrap_or_else(|| "?".into());
            WireOp {
                kind: op::KERNEL,
                device: k.device_id,
                context: k.context_id,
                stream: k.stream_id,
                correlation: k.correlation_id,
                name: out.intern(&name),
                start: k.start,
                end: k.end,
                grid: k.grid,
                block: k.block,
                registers: u32::from(k.registers_per_thread),
                shared_static: k.static_shared_memory,
                shared_dynamic: k.dynamic_shared_memory,
                graph_id: k.graph_id,
                graph_node: k.graph_node_id,
                ..Default::default()
            }
        }
        Activity::Memcpy(m) => WireOp {
            kind: op::MEMCPY,
            device: m.device_id,
            context: m.context_id,
            stream: m.stream_id,
            correlation: m.correlation_id,
            name: out.intern(&copy_name(m.copy_kind)),
            start: m.start,
            end: m.end,
            graph_id: m.graph_id,
            graph_node: m.graph_node_id,
            bytes: m.bytes,
            aux: no_peer,
            aux2: no_peer,
            ..Default::default()
        },
        Activity::MemcpyPeer(m) => WireOp {
            kind: op::MEMCPY,
            device: m.device_id,
            context: m.context_id,
            stream: m.stream_id,
            correlation: m.correlation_id,
            name: out.intern(&copy_name(m.copy_kind)),
            start: m.start,
            end: m.end,
            graph_id: m.graph_id,
            graph_node: m.graph_node_id,
            bytes: m.bytes,
            aux: m.src_device_id,
            aux2: m.dst_device_id,
            ..Default::default()
        },
        Activity::Memset(m) => WireOp {
            kind: op::MEMSET,
            device: m.device_id,
            context: m.context_id,
            stream: m.stream_id,
            correlation: m.correlation_id,
            name: out.intern("memset"),
            start: m.start,
            end: m.end,
            graph_id: m.graph_id,
            graph_node: m.graph_node_id,
            bytes: m.bytes,
            aux: m.value,
            ..Default::default()
        },
        Activity::Synchronization(s) => WireOp {
            kind: op::SYNC,
            device: u32::MAX,
            context: s.context_id,
            stream: s.stream_id.unwrap_or(0),
            correlation: s.correlation_id,
            name: out.intern(sync_name(s.sync_type)),
            start: s.start,
            end: s.end,
            ..Default::default()
        },
        Activity::Marker(m) => {
            let mut ranges = OPEN_RANGES.lock().unwrap_or_else(|p| p.into_inner());
            let ranges = ranges.get_or_insert_with(HashMap::new);
            if m.flags.is_start() {
                // SAFETY: as for kernel names; NVTX strings are copied by CUPTI.
                let name = unsafe { m.name.to_string_lossy() }.unwrap_or_default();
                ranges.insert(m.id, (out.intern(&name), m.timestamp));
                return;
            }
            if !m.flags.is_end() {
                return;
            }
            let Some((name, start)) = ranges.remove(&m.id) else {
                return;
            };
            WireOp {
                kind: op::RANGE,
                device: u32::MAX,
                name,
                start,
                end: m.timestamp,
                ..Default::default()
            }
        }
        _ => return,
    };
    if unreliable_graphs && op.graph_id != 0 {
        op.flags |= op_flag::CORRELATION_UNRELIABLE;
    }
    out.push_op(op);
}

/// For tests: a CUPTI string pointer's text.
#[cfg(test)]
fn text(p: *const std::ffi::c_char) -> String {
    // SAFETY: tests pass NUL-terminated literals.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cupti_sys::{Kernel, Marker, MarkerFlags, Memcpy, MemoryKind, RawCStr};

    /// A kernel record on device 1, context 2, stream 7, 150 ns long, 8×256 threads.
    fn kernel(name: &'static CStr, correlation_id: u32, graph_id: u32) -> Activity {
        Activity::Kernel(Kernel {
            concurrent: true,
            name: RawCStr::new(name.as_ptr()),
            start: 100,
            end: 250,
            device_id: 1,
            context_id: 2,
            stream_id: 7,
            correlation_id,
            grid: [8, 1, 1],
            block: [256, 1, 1],
            registers_per_thread: 32,
            static_shared_memory: 1024,
            dynamic_shared_memory: 0,
            local_memory_per_thread: 0,
            graph_id,
            graph_node_id: u64::from(graph_id),
        })
    }

    #[test]
    fn records_convert_to_wire_ops() {
        let mut out = outbox::Outbox::new();
        let name = c"_Z6matmulPfS_S_i";
        assert_eq!(text(name.as_ptr()), "_Z6matmulPfS_S_i");
        let kernel = kernel(name, 42, 0);
        convert(&kernel, true, &mut out);
        let copy = Activity::Memcpy(Memcpy {
            copy_kind: MemcpyKind::HtoD,
            src_kind: MemoryKind::Pinned,
            dst_kind: MemoryKind::Device,
            bytes: 1 << 20,
            is_async: true,
            start: 300,
            end: 400,
            device_id: 1,
            context_id: 2,
            stream_id: 7,
            correlation_id: 43,
            runtime_correlation_id: 0,
            graph_id: 0,
            graph_node_id: 0,
        });
        convert(&copy, true, &mut out);
        let range = c"forward";
        for (flags, ts) in [(2, 10), (4, 500)] {
            convert(
                &Activity::Marker(Marker {
                    flags: MarkerFlags(flags),
                    timestamp: ts,
                    id: 9,
                    name: RawCStr::new(if flags == 2 {
                        range.as_ptr()
                    } else {
                        std::ptr::null()
                    }),
                    domain: RawCStr::new(std::ptr::null()),
                }),
                false,
                &mut out,
            );
        }
        let batch = out.take();
        assert_eq!(batch.ops.len(), 3);
        let k = &batch.ops[0];
        assert_eq!((k.kind, k.correlation, k.stream), (op::KERNEL, 42, 7));
        assert_eq!((k.grid, k.block, k.registers), ([8, 1, 1], [256, 1, 1], 32));
        let c = &batch.ops[1];
        assert_eq!((c.kind, c.bytes, c.aux), (op::MEMCPY, 1 << 20, u32::MAX));
        let r = &batch.ops[2];
        assert_eq!((r.kind, r.start, r.end), (op::RANGE, 10, 500));
        let names: Vec<&str> = batch.names.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["_Z6matmulPfS_S_i", "HtoD", "forward"]);
        assert_eq!(batch.names[c.name as usize].1, "HtoD");
        // Outside CUDA graphs, nothing is flagged even when graph joins are unreliable.
        assert!(batch.ops.iter().all(|o| o.flags == 0));
    }

    #[test]
    fn graph_work_is_flagged_only_when_its_correlation_is_unreliable() {
        let graph_kernel = |graph_id| kernel(c"_Z4stepv", 77, graph_id);
        let mut out = outbox::Outbox::new();
        convert(&graph_kernel(4), true, &mut out);
        convert(&graph_kernel(4), false, &mut out);
        convert(&graph_kernel(0), true, &mut out);
        let flags: Vec<u32> = out.take().ops.iter().map(|o| o.flags).collect();
        assert_eq!(flags, [op_flag::CORRELATION_UNRELIABLE, 0, 0]);
        // CUPTI's fix came in 13.1 Update 1, for sessions after a process's first.
        use crate::cupti::graph_correlation_unreliable as unreliable;
        assert!(!unreliable(130_000, 1), "a first session is right");
        assert!(unreliable(130_000, 2));
        assert!(unreliable(28, 3), "CUDA 12's CUPTI");
        assert!(
            unreliable(130_100, 2),
            "13.1 (Update 1 cannot be told apart)"
        );
        assert!(!unreliable(130_200, 2));
    }
}
