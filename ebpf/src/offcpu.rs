//! Off-CPU time: `mp_sched_switch` stashes a target thread's stacks in `BLOCKED` when it blocks
//! and, when the scheduler switches it back in, sends one `OFF_CPU` event weighted by the
//! nanoseconds it was blocked (intervals under `Config::offcpu_min_ns` are dropped), into
//! `OFFCPU_EVENTS`: a ring of its own, so a flood of switches never costs a CPU sample.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use modelprobe_common::{kind, lost, StackEvent};

use crate::{
    emit::fill,
    maps::{config, count_lost, is_target, wakeup_flags, BLOCKED, OFFCPU_EVENTS, SCRATCH},
};

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
    // The tracepoint runs in the context of `prev`, the task being switched out.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if tid != 0 && is_target((pid_tgid >> 32) as u32) {
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
        // Low bits set: the task blocked (sleeping, disk, stopped...). 0 is runnable and
        // TASK_REPORT_MAX (0x100 and up) marks preemption; neither is off-CPU time.
        if state & 0xff != 0 {
            if let Some(scratch) = SCRATCH.get_ptr_mut(0) {
                // SAFETY: `scratch` is this CPU's scratch slot, a whole StackEvent.
                unsafe {
                    fill(ctx, scratch, kind::OFF_CPU, pid_tgid, true);
                    if BLOCKED.insert(&tid, &*scratch, 0).is_err() {
                        count_lost(ctx, lost::OFF_CPU_TABLE_FULL);
                    }
                }
            }
        }
    }

    // SAFETY: as above, an offset from this kernel's tracepoint format.
    let next = unsafe { ctx.read_at::<i32>(cfg.switch_next_pid_off as usize)? } as u32;
    if let Some(ev) = BLOCKED.get_ptr_mut(&next) {
        // SAFETY: a map value pointer stays valid until this program returns; it is only
        // removed below, after the last use.
        unsafe {
            // SAFETY: no preconditions.
            let now = bpf_ktime_get_ns();
            let blocked = now.saturating_sub((*ev).time_ns);
            if blocked >= cfg.offcpu_min_ns as u64 {
                (*ev).weight = blocked;
                if OFFCPU_EVENTS
                    .output::<StackEvent>(&*ev, wakeup_flags(&OFFCPU_EVENTS))
                    .is_err()
                {
                    count_lost(ctx, lost::OFF_CPU);
                }
            }
        }
        let _ = BLOCKED.remove(&next);
    }
    Ok(0)
}
