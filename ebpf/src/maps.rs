//! The maps the agent talks through (loaded by name: names must not change), the load-time
//! `CONFIG`, and the small helpers every program uses on them: the target check, the drop
//! counters and the ring-buffer wakeup policy.

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        BPF_RB_RING_SIZE,
    },
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
    EbpfContext,
};
use aya_log_ebpf::warn;
use modelprobe_common::{lost, Config, DataRecord, StackEvent};

/// Written by the agent before load (`EbpfLoader::override_global`).
#[no_mangle]
static CONFIG: Config = Config {
    switch_prev_state_off: 0,
    switch_prev_state_size: 0,
    switch_next_pid_off: 0,
    exit_group_dead_off: 0,
    offcpu_min_ns: 0,
    newtask_flags_off: 0,
    newtask_pid_off: 0,
    rename_newcomm_off: 0,
    deliver_sig_off: 0,
    deliver_code_off: 0,
    deliver_handler_off: 0,
    _pad: 0,
};

/// Processes (tgids) being profiled.
#[map]
pub(crate) static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Stack events to the agent: CPU samples, launch and error stacks.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Off-CPU events, apart from `EVENTS`: a thread pool switching tens of thousands of times a
/// second fills this one, and a CPU sample is never lost to it.
#[map]
pub(crate) static OFFCPU_EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Span, lifecycle and signal records to the agent (apart from stacks, so neither starves the
/// other).
#[map]
pub(crate) static RECORDS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Out-parameter pointers of calls in progress, by thread (see `DEREF_ARG0_COOKIE`).
#[map]
pub(crate) static PENDING_OUT: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Per-CPU scratch for records with a payload (larger than the BPF stack).
#[map]
pub(crate) static DATA_SCRATCH: PerCpuArray<DataRecord> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU drop counters, indexed by `modelprobe_common::lost`.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNT, 0);

/// Per-CPU scratch space: a `StackEvent` is far larger than the 512-byte BPF stack.
#[map]
pub(crate) static SCRATCH: PerCpuArray<StackEvent> = PerCpuArray::with_max_entries(1, 0);

/// Threads of a target that are blocked right now, with the stacks they blocked in.
#[map]
pub(crate) static BLOCKED: HashMap<u32, StackEvent> =
    HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// The agent's settings for this kernel.
#[inline(always)]
pub(crate) fn config() -> Config {
    // SAFETY: CONFIG is a plain-data static; the volatile read stops the compiler from folding
    // the placeholder value, since the loader rewrites it before the program runs.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// Submit flags for `ring`: wake the agent only once an eighth of the buffer is unread. Below
/// that, records wait for the agent's own poll (every 100 ms): a wakeup per record would cost
/// the target a context switch per call.
#[inline(always)]
pub(crate) fn wakeup_flags(ring: &RingBuf) -> u64 {
    if ring.query(BPF_RB_AVAIL_DATA as u64) >= ring.query(BPF_RB_RING_SIZE as u64) / 8 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Counts one dropped event under `index` (a `modelprobe_common::lost` constant).
#[inline(always)]
pub(crate) fn count_lost<C: EbpfContext>(ctx: &C, index: u32) {
    if let Some(counter) = LOST.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a per-CPU array slot owned by this CPU, and BPF
        // programs on one CPU do not preempt each other for the same program type.
        unsafe { *counter += 1 };
    }
    warn!(
        ctx,
        "event dropped (full ring buffer or table): lost counter {}", index
    );
}

/// True if `tgid` is a process being profiled.
#[inline(always)]
pub(crate) fn is_target(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence, never held across helper calls.
    unsafe { TARGETS.get(&tgid) }.is_some()
}

/// True if the current task belongs to a process being profiled.
#[inline(always)]
pub(crate) fn current_is_target() -> bool {
    is_target((bpf_get_current_pid_tgid() >> 32) as u32)
}
