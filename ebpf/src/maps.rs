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
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    EbpfContext,
};
use aya_log_ebpf::warn;
use modelprobe_common::{
    lost,
    memory::{
        usdt::{UsdtSpec, MAX_USDT_SITES},
        HeapKey, MemPending,
    },
    offcpu::{
        stat, Blocked, OffCpuKey, OffCpuSum, ThreadCpu, MAX_OFFCPU_STACKS, MAX_OFFCPU_SUMS,
        MAX_THREAD_CPU,
    },
    Config, DataRecord, StackEvent, TlsPending, TlsRecord, TlsSkipKey,
};

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
    off_cpu: 0,
    offcpu_event_min_ns: 0,
    lifecycle_wakeup: 0,
    task_fsbase_off: u32::MAX,
    stop_on_api_error: 0,
    oom_pid_off: u32::MAX,
    oom_total_vm_off: u32::MAX,
    oom_anon_rss_off: u32::MAX,
    oom_file_rss_off: u32::MAX,
    oom_shmem_rss_off: u32::MAX,
    heap_sample_bytes: 512 << 10,
    task_utask_off: u32::MAX,
    utask_instances_off: u32::MAX,
    ri_stack_off: u32::MAX,
    ri_orig_ret_off: u32::MAX,
    ri_next_off: u32::MAX,
};

/// Processes (tgids) being profiled.
#[map]
pub(crate) static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

// One ring per kind of record, so that a flood of one never costs another: CPU samples,
// off-CPU timeline events, span stacks, spans and data, and lifecycle records each have their
// own.

/// CPU samples to the agent, and nothing else.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Long blocks for the timeline (`OffCpuEvent`s); what does not fit is summed instead.
#[map]
pub(crate) static OFFCPU_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Launch and API-error stacks of probed calls.
#[map]
pub(crate) static SPAN_STACKS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Span records, log writes, file opens and string arguments.
#[map]
pub(crate) static RECORDS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Process, thread, exec, rename and signal records: a lost exit would break pairing, so no
/// other kind shares their ring.
#[map]
pub(crate) static LIFECYCLE: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// TLS plaintext (`TlsRecord`s): its own ring, so a busy connection costs no span or log.
#[map]
pub(crate) static TLS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// TLS calls in progress, by thread and direction (tid | direction << 32): from `SSL_read`'s
/// entry to its return.
#[map]
pub(crate) static TLS_PENDING: HashMap<u64, TlsPending> = HashMap::with_max_entries(16384, 0);

/// The target's TCP sockets (`--plain-http`), by (pid << 32 | fd): their connection id, or
/// `SOCKET_MUTED` for one that carries TLS.
#[map]
pub(crate) static SOCKETS: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);

/// Socket reads and writes in progress, by thread.
#[map]
pub(crate) static SOCK_PENDING: HashMap<u32, TlsPending> = HashMap::with_max_entries(16384, 0);

/// Bytes of one direction of a connection the agent asked not to be sent (the rest of a large
/// body that is no LLM call): whole calls within it are sent as `TLS_SKIPPED` counts.
#[map]
pub(crate) static TLS_SKIP: HashMap<TlsSkipKey, u64> = HashMap::with_max_entries(4096, 0);

/// Per-CPU scratch for a `TlsRecord` (larger than the BPF stack).
#[map]
pub(crate) static TLS_SCRATCH: PerCpuArray<TlsRecord> = PerCpuArray::with_max_entries(1, 0);

/// Memory by stack (`--memory`): allocations and page faults (`StackEvent`s) and frees
/// (`Record`s), in the order they happened, so a free never overtakes its allocation.
#[map]
pub(crate) static MEMORY: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Memory syscalls in progress, by thread: from their entry tracepoint to their exit.
#[map]
pub(crate) static MEM_PENDING: HashMap<u32, MemPending> = HashMap::with_max_entries(16384, 0);

/// Each target process's program break as last seen (`brk`'s return), by tgid: a new one
/// says how far the heap grew or shrank.
#[map]
pub(crate) static BRK_LAST: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Bytes left before the next sampled heap allocation, per CPU (`--memory=malloc`).
#[map]
pub(crate) static HEAP_COUNTDOWN: PerCpuArray<i64> = PerCpuArray::with_max_entries(1, 0);

/// A sampled allocation in progress, by thread: its size, until `malloc` returns.
#[map]
pub(crate) static HEAP_PENDING: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Sampled heap blocks not freed yet: their `free` is sent, every other one costs a lookup.
/// Least recently used ones make room (a block whose process exited is never freed); sized
/// by the agent (one entry unless `--memory=malloc`).
#[map]
pub(crate) static HEAP_SAMPLED: LruHashMap<HeapKey, u64> = LruHashMap::with_max_entries(65536, 0);

/// How each attached static tracepoint's arguments are read, by attach cookie.
#[map]
pub(crate) static USDT_SPECS: Array<UsdtSpec> = Array::with_max_entries(MAX_USDT_SITES, 0);

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

/// Threads of a target that are blocked right now: when, where (a stack id) and in which
/// process.
#[map]
pub(crate) static BLOCKED: HashMap<u32, Blocked> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Stacks blocked threads were in, by stack id (see `offcpu::stack_id`).
#[map]
pub(crate) static OFFCPU_STACKS: LruHashMap<u64, StackEvent> =
    LruHashMap::with_max_entries(MAX_OFFCPU_STACKS, 0);

/// Off-CPU time summed by (process, thread, stack): two tables, the one `OFFCPU_ACTIVE` names
/// is written while the agent reads and empties the other.
#[map]
pub(crate) static OFFCPU_SUMS_0: HashMap<OffCpuKey, OffCpuSum> =
    HashMap::with_max_entries(MAX_OFFCPU_SUMS, BPF_F_NO_PREALLOC);

/// The second table of sums (see `OFFCPU_SUMS_0`).
#[map]
pub(crate) static OFFCPU_SUMS_1: HashMap<OffCpuKey, OffCpuSum> =
    HashMap::with_max_entries(MAX_OFFCPU_SUMS, BPF_F_NO_PREALLOC);

/// Which sum table is written (0 or 1), set by the agent.
#[map]
pub(crate) static OFFCPU_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// Per-CPU `offcpu::stat` counters.
#[map]
pub(crate) static OFFCPU_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Per-CPU rate limit of timeline events: [second it counts, events sent in it].
#[map]
pub(crate) static OFFCPU_EVENT_BUDGET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// When the task on each CPU was switched in (0 until the first switch seen).
#[map]
pub(crate) static SWITCHED_IN_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Each target thread's time on CPU since recording began.
#[map]
pub(crate) static THREAD_CPU: HashMap<u32, ThreadCpu> =
    HashMap::with_max_entries(MAX_THREAD_CPU, BPF_F_NO_PREALLOC);

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

/// Adds one to `OFFCPU_STATS[index]` (an `offcpu::stat` constant).
#[inline(always)]
pub(crate) fn count_stat(index: u32) {
    if let Some(counter) = OFFCPU_STATS.get_ptr_mut(index) {
        // SAFETY: as in `count_lost`: this CPU's slot.
        unsafe { *counter += 1 };
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
