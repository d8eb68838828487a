//! Off-CPU time and CPU time, from `sched/sched_switch` (see `modelprobe_common::offcpu`).
//!
//! When a target thread blocks, `mp_sched_switch` walks its stacks once, files them in
//! `OFFCPU_STACKS` under a stack id and remembers the block in `BLOCKED`. When the scheduler
//! switches the thread back in, the interval (if at least `Config::offcpu_min_ns`) becomes a
//! timeline event in `OFFCPU_EVENTS` when it is long, the per-CPU rate allows and the ring has
//! room, and is otherwise added to its (process, thread, stack) sum in the active sum table. A
//! flood of switches therefore costs a map update each, never a lost record; only a full sum
//! table drops intervals, and those are counted.
//!
//! Every switch also closes the outgoing target thread's time on CPU into `THREAD_CPU`: the
//! report's CPU time is the kernel's, not an estimate from samples.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use modelprobe_common::{
    kind, lost,
    offcpu::{
        stat, Blocked, OffCpuEvent, OffCpuKey, OffCpuSum, ThreadCpu, EVENTS_PER_SECOND_PER_CPU,
    },
    python::MAX_PY_DEPTH,
    StackEvent, MAX_STACK_DEPTH,
};

use crate::{
    emit::fill,
    maps::{
        config, count_lost, count_stat, is_target, wakeup_flags, BLOCKED, OFFCPU_ACTIVE,
        OFFCPU_EVENTS, OFFCPU_EVENT_BUDGET, OFFCPU_STACKS, OFFCPU_SUMS_0, OFFCPU_SUMS_1, SCRATCH,
        SWITCHED_IN_AT, THREAD_CPU,
    },
};

/// `prev_state` bits of a task that has exited (`EXIT_DEAD`, `EXIT_ZOMBIE`): its last switch
/// out is not a block, and its entries are already gone.
const EXITED: u64 = 0x10 | 0x20;

#[tracepoint]
pub fn mp_sched_switch(ctx: TracePointContext) -> u32 {
    match try_sched_switch(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(
                &ctx,
                "mp_sched_switch: reading the tracepoint failed ({})", e
            );
            0
        }
    }
}

fn try_sched_switch(ctx: &TracePointContext) -> Result<u32, i64> {
    let cfg = config();
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let switched_in = SWITCHED_IN_AT.get_ptr_mut(0);
    // The tracepoint runs in the context of `prev`, the task being switched out.
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid != 0 && is_target(pid) {
        let off = cfg.switch_prev_state_off as usize;
        // SAFETY: the offset comes from this kernel's tracepoint format; read_at uses
        // bpf_probe_read, which fails cleanly on a bad address.
        let state: u64 = unsafe {
            if cfg.switch_prev_state_size == 8 {
                ctx.read_at::<u64>(off)?
            } else {
                ctx.read_at::<u32>(off)? as u64
            }
        };
        if state & EXITED == 0 {
            if let Some(since) = switched_in {
                // SAFETY: this CPU's slot of a per-CPU array.
                let since = unsafe { *since };
                if since != 0 {
                    add_cpu_time(pid, tid, now.saturating_sub(since));
                }
            }
            // Low bits set: the task blocked (sleeping, disk, stopped...). 0 is runnable and
            // TASK_REPORT_MAX (0x100 and up) marks preemption; neither is off-CPU time.
            if cfg.off_cpu != 0 && state & 0xff != 0 {
                blocked(ctx, pid_tgid);
            }
        }
    }
    if let Some(since) = switched_in {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *since = now };
    }

    // Without --off-cpu no thread is ever in BLOCKED: no lookup on every switch of the machine.
    if cfg.off_cpu == 0 {
        return Ok(0);
    }
    // SAFETY: as above, an offset from this kernel's tracepoint format.
    let next = unsafe { ctx.read_at::<i32>(cfg.switch_next_pid_off as usize)? } as u32;
    // SAFETY: the value is copied out at once.
    if let Some(b) = unsafe { BLOCKED.get(&next) }.copied() {
        let _ = BLOCKED.remove(&next);
        let blocked_ns = now.saturating_sub(b.start_ns);
        if blocked_ns >= cfg.offcpu_min_ns as u64 {
            woke(
                ctx,
                next,
                &b,
                blocked_ns,
                now,
                cfg.offcpu_event_min_ns as u64,
            );
        }
    }
    Ok(0)
}

/// Adds `ns` to thread `tid`'s time on CPU.
#[inline(always)]
fn add_cpu_time(pid: u32, tid: u32, ns: u64) {
    if let Some(t) = THREAD_CPU.get_ptr_mut(&tid) {
        // SAFETY: a map value of this thread, only written by its own switches (one CPU at a
        // time) and its exit.
        unsafe { (*t).cpu_ns += ns };
    } else {
        let t = ThreadCpu {
            cpu_ns: ns,
            pid,
            _pad: 0,
        };
        // A full table loses this thread's CPU time only; the report then falls back to
        // samples for it (the agent sees no entry).
        let _ = THREAD_CPU.insert(&tid, &t, BPF_NOEXIST as u64);
    }
}

/// The current thread blocks: walk its stacks, file them, remember when.
#[inline(always)]
fn blocked(ctx: &TracePointContext, pid_tgid: u64) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `scratch` is this CPU's scratch slot, a whole StackEvent; programs on one CPU do
    // not interleave with a scheduler tracepoint (it runs with interrupts off).
    let ev = unsafe {
        fill(ctx, scratch, kind::OFF_CPU, pid_tgid, true);
        &*scratch
    };
    let id = stack_id(ev);
    // Looked up first: an LRU insert takes a free node (perhaps evicting another stack) even
    // when the key is already there.
    // SAFETY: only tested for presence.
    if unsafe { OFFCPU_STACKS.get(&id) }.is_none() {
        let _ = OFFCPU_STACKS.insert(&id, ev, 0);
    }
    let b = Blocked {
        start_ns: ev.time_ns,
        stack_id: id,
        pid: ev.pid,
        _pad: 0,
    };
    if BLOCKED.insert(&ev.tid, &b, 0).is_err() {
        count_lost(ctx, lost::OFF_CPU_TABLE_FULL);
    }
}

/// Thread `tid`, blocked as `b` said, is switched back in after `blocked_ns`.
#[inline(always)]
fn woke(ctx: &TracePointContext, tid: u32, b: &Blocked, blocked_ns: u64, now: u64, event_min: u64) {
    if blocked_ns >= event_min {
        if event_allowed(now) {
            let ev = OffCpuEvent {
                pid: b.pid,
                tid,
                start_ns: b.start_ns,
                blocked_ns,
                stack_id: b.stack_id,
            };
            if OFFCPU_EVENTS
                .output::<OffCpuEvent>(&ev, wakeup_flags(&OFFCPU_EVENTS))
                .is_ok()
            {
                count_stat(stat::EVENTS);
                return;
            }
        }
        count_stat(stat::EVENTS_SUMMED);
    }
    let key = OffCpuKey {
        pid: b.pid,
        tid,
        stack_id: b.stack_id,
    };
    let active = OFFCPU_ACTIVE.get(0).copied().unwrap_or(0);
    let sums = if active == 0 {
        &OFFCPU_SUMS_0
    } else {
        &OFFCPU_SUMS_1
    };
    if let Some(sum) = sums.get_ptr_mut(&key) {
        // SAFETY: a map value pointer, valid until this program returns; a thread's sums are
        // only added to at its own switch in (one CPU at a time).
        unsafe {
            (*sum).blocked_ns += blocked_ns;
            (*sum).blocks += 1;
        }
    } else {
        let sum = OffCpuSum {
            blocked_ns,
            blocks: 1,
        };
        if sums.insert(&key, &sum, BPF_NOEXIST as u64).is_err() {
            count_lost(ctx, lost::OFF_CPU);
            return;
        }
    }
    count_stat(stat::SUMMED);
}

/// Whether one more timeline event fits this CPU's budget for the current second and the
/// ring is at most half full (the other half is left for bursts).
#[inline(always)]
fn event_allowed(now: u64) -> bool {
    let Some(budget) = OFFCPU_EVENT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array.
    let budget = unsafe { &mut *budget };
    let second = now / 1_000_000_000;
    if budget[0] != second {
        budget[0] = second;
        budget[1] = 0;
    }
    if budget[1] >= EVENTS_PER_SECOND_PER_CPU {
        return false;
    }
    if OFFCPU_EVENTS.query(BPF_RB_AVAIL_DATA as u64)
        > OFFCPU_EVENTS.query(BPF_RB_RING_SIZE as u64) / 2
    {
        return false;
    }
    budget[1] += 1;
    true
}

/// State of a stack-id hash over the frames of this CPU's `SCRATCH` event.
#[repr(C)]
struct StackHash {
    hash: u64,
    /// Kernel frames; then user frames up to `native_len`; then Python frames.
    kernel_len: u64,
    native_len: u64,
    total_len: u64,
}

/// The id of `ev`'s stacks: a 64-bit hash of its process, its lengths and every frame.
/// Process ids are part of it because user addresses mean something only in one process.
#[inline(always)]
fn stack_id(ev: &StackEvent) -> u64 {
    let klen = (ev.kstack_len as u64).min(MAX_STACK_DEPTH as u64);
    let ulen = (ev.ustack_len as u64).min(MAX_STACK_DEPTH as u64);
    let plen = (ev.py_len as u64).min(MAX_PY_DEPTH as u64);
    let mut h = StackHash {
        hash: mix(mix(mix(0, ev.pid as u64), klen << 32 | ulen), plen),
        kernel_len: klen,
        native_len: klen + ulen,
        total_len: klen + ulen + plen,
    };
    // SAFETY: bpf_loop calls `hash_frame` (a static function of this program) at most
    // 2 * MAX_STACK_DEPTH + MAX_PY_DEPTH times with a pointer to `h`, which outlives the call.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            (2 * MAX_STACK_DEPTH + MAX_PY_DEPTH) as u32,
            hash_frame as *const () as *mut core::ffi::c_void,
            (&mut h as *mut StackHash).cast(),
            0,
        );
    }
    // Final avalanche (the murmur3 finalizer), so that nearby stacks spread over the table.
    let mut x = h.hash;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Folds one word into a hash (FxHash's step).
#[inline(always)]
fn mix(hash: u64, word: u64) -> u64 {
    (hash.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// Folds frame `i` (kernel frames, user frames, then Python frames) into the hash; 1 stops the loop.
#[inline(never)]
extern "C" fn hash_frame(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `StackHash` stack_id handed to bpf_loop, alive for the loop.
    let h = unsafe { &mut *(ctx as *mut StackHash) };
    if i >= h.total_len {
        return 1;
    }
    let Some(ev) = SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: `ev` is this CPU's SCRATCH slot, filled by `blocked` just before the loop and
    // only read here.
    let ev = unsafe { &*ev };
    let word = if i < h.kernel_len {
        ev.kstack.get(i as usize).copied()
    } else if i < h.native_len {
        ev.ustack.get((i - h.kernel_len) as usize).copied()
    } else {
        // A Python frame: where it is in which code (its flags follow from those).
        ev.pystack
            .get((i - h.native_len) as usize)
            .map(|f| f.code ^ (f.offset as u64) << 48)
    };
    let Some(word) = word else {
        return 1;
    };
    h.hash = mix(h.hash, word);
    0
}
