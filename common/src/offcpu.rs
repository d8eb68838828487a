//! Off-CPU time summed in the kernel, and each thread's CPU time, as the BPF side keeps them.
//!
//! When a target thread blocks, `mp_sched_switch` walks its stacks once, stores them in
//! `OFFCPU_STACKS` under a [`stack id`](OffCpuKey::stack_id) (a hash of the process and the
//! frames) and remembers a [`Blocked`] by thread. When the thread is switched back in, the
//! interval goes either to the `OFFCPU_EVENTS` ring as an [`OffCpuEvent`] (a long block, drawn on
//! the timeline; at most [`EVENTS_PER_SECOND_PER_CPU`] a second a CPU) or into the sum of its
//! (process, thread, stack) in the active `OFFCPU_SUMS_*` table, which the agent swaps and reads
//! every interval. So the rate of context switches never sets the loss: only the number of
//! distinct (thread, stack) pairs in one interval can, and that is counted.
//!
//! The same program sums each target thread's time on CPU into `THREAD_CPU` ([`ThreadCpu`]):
//! the kernel's own scheduling intervals, exact whatever was sampled or dropped.

/// Capacity of each of the two sum tables (distinct (thread, stack) pairs per interval).
pub const MAX_OFFCPU_SUMS: u32 = 16384;
/// Capacity of the stack store (least recently used evicted; the agent copies a stack out the
/// first time it sees its id).
pub const MAX_OFFCPU_STACKS: u32 = 4096;
/// Capacity of the per-thread CPU-time table.
pub const MAX_THREAD_CPU: u32 = 65536;
/// Long blocks sent as timeline events at most this often per CPU; the rest are summed.
pub const EVENTS_PER_SECOND_PER_CPU: u64 = 500;

/// Indices of the per-CPU `OFFCPU_STATS` counters (not losses: what went where).
pub mod stat {
    /// Blocks long enough for a timeline event but summed instead (rate limit or a ring more
    /// than half full).
    pub const EVENTS_SUMMED: u32 = 0;
    /// Blocks summed in the kernel.
    pub const SUMMED: u32 = 1;
    /// Blocks sent as timeline events.
    pub const EVENTS: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}

/// A blocked thread, by thread id in `BLOCKED`: what its switch back in needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blocked {
    /// CLOCK_MONOTONIC ns it was switched out.
    pub start_ns: u64,
    /// Its stacks' id in `OFFCPU_STACKS`.
    pub stack_id: u64,
    /// Its process id (the tracepoint names only the thread switched in).
    pub pid: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

/// Key of an off-CPU sum: one thread blocked in one place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OffCpuKey {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Id of its stacks in `OFFCPU_STACKS`.
    pub stack_id: u64,
}

/// Value of an off-CPU sum.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuSum {
    /// Nanoseconds blocked, summed.
    pub blocked_ns: u64,
    /// Number of blocks summed.
    pub blocks: u64,
}

/// One long block, as sent to `OFFCPU_EVENTS` for the timeline.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuEvent {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CLOCK_MONOTONIC ns it blocked.
    pub start_ns: u64,
    /// Nanoseconds until it was switched back in.
    pub blocked_ns: u64,
    /// Id of its stacks in `OFFCPU_STACKS`.
    pub stack_id: u64,
}

/// A thread's time on CPU since recording began, by thread id in `THREAD_CPU`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Nanoseconds on CPU, summed at each switch out.
    pub cpu_ns: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

// SAFETY: each type is `repr(C)`, `Copy`, holds only integers and has no implicit padding
// (checked below), so any bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Blocked {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for OffCpuKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for OffCpuSum {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for OffCpuEvent {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ThreadCpu {}

mod layout {
    use core::mem::size_of;

    use super::*;

    const _: () = assert!(size_of::<Blocked>() == 24);
    const _: () = assert!(size_of::<OffCpuKey>() == 16);
    const _: () = assert!(size_of::<OffCpuSum>() == 16);
    const _: () = assert!(size_of::<OffCpuEvent>() == 32);
    const _: () = assert!(size_of::<ThreadCpu>() == 16);
}
