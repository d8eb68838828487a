//! The target's process tree and lifecycle, from scheduler, task and signal tracepoints.
//!
//! `mp_task_newtask` adds a target's new child processes to `TARGETS` before they first run and
//! `mp_sched_exit` removes a process when its last thread exits, so the kernel follows the tree
//! on its own; with `mp_sched_exec`, `mp_task_rename` and `mp_signal_deliver` they report each
//! step as a `Record` (`TASK_NEW`, `TASK_EXIT`, `EXEC`, `RENAME`, `SIGNAL`).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use modelprobe_common::{kind, lost, Record};

use crate::{
    emit::{emit, lifecycle_or_batch},
    maps::{
        config, count_lost, current_is_target, is_target, BLOCKED, LIFECYCLE, SWITCHED_IN_AT,
        TARGETS, THREAD_CPU,
    },
};

/// `CLONE_THREAD` from `linux/sched.h`: the new task is a thread of the same process.
const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint]
pub fn mp_task_newtask(ctx: TracePointContext) -> u32 {
    match try_task_newtask(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(
                &ctx,
                "mp_task_newtask: reading the tracepoint failed ({})", e
            );
            0
        }
    }
}

fn try_task_newtask(ctx: &TracePointContext) -> Result<u32, i64> {
    // Runs in the parent, before the new task first runs: a new process is a target from its
    // first instruction.
    if !current_is_target() {
        return Ok(0);
    }
    let cfg = config();
    // SAFETY: offsets from this kernel's tracepoint format, read with bpf_probe_read.
    let (child, clone_flags) = unsafe {
        (
            ctx.read_at::<i32>(cfg.newtask_pid_off as usize)? as u32,
            ctx.read_at::<u64>(cfg.newtask_flags_off as usize)?,
        )
    };
    if clone_flags & CLONE_THREAD == 0 {
        if TARGETS.insert(&child, &1, 0).is_err() {
            count_lost(ctx, lost::TARGETS_FULL);
        }
        // A forked child maps what its parent maps: it walks with the parent's unwind tables
        // until the agent publishes its own (its slot stays the parent's until then).
        let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
        // SAFETY: the value is copied out at once.
        if let Some(tables) = unsafe { crate::unwind::UNWIND_PROCS.get(&parent) }.copied() {
            let _ = crate::unwind::UNWIND_PROCS.insert(&child, &tables, 0);
        }
        // The same interpreter at the same addresses (a `multiprocessing` worker): Python
        // frames from the child's first sample.
        // SAFETY: the value is copied out at once.
        if let Some(py) = unsafe { crate::python::PY_PROCS.get(&parent) }.copied() {
            let _ = crate::python::PY_PROCS.insert(&child, &py, 0);
        }
    }
    emit(
        ctx,
        kind::TASK_NEW,
        child as u64,
        [clone_flags, 0, 0, 0, 0, 0, 0, 0],
        lost::TASK,
    );
    Ok(0)
}

#[tracepoint]
pub fn mp_sched_exec(ctx: TracePointContext) -> u32 {
    match try_sched_exec(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_sched_exec failed ({})", e);
            0
        }
    }
}

fn try_sched_exec(ctx: &TracePointContext) -> Result<u32, i64> {
    if current_is_target() {
        // The old image's unwind tables describe nothing of the new one: frame pointers until
        // the agent, told by this record, publishes the new image's.
        let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let _ = crate::unwind::UNWIND_PROCS.remove(&pid);
        // The new image has a program break of its own: the next `brk` is a new baseline.
        let _ = crate::maps::BRK_LAST.remove(&pid);
        // Nor does the old interpreter's layout: no Python frames until the agent finds the
        // new image's interpreter, if it has one.
        let _ = crate::python::PY_PROCS.remove(&pid);
        emit(ctx, kind::EXEC, 0, [0; 8], lost::TASK);
    }
    Ok(0)
}

#[tracepoint]
pub fn mp_task_rename(ctx: TracePointContext) -> u32 {
    match try_task_rename(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(
                &ctx,
                "mp_task_rename: reading the tracepoint failed ({})", e
            );
            0
        }
    }
}

fn try_task_rename(ctx: &TracePointContext) -> Result<u32, i64> {
    if !current_is_target() {
        return Ok(0);
    }
    // SAFETY: offset from this kernel's tracepoint format, read with bpf_probe_read.
    let new = unsafe { ctx.read_at::<[u8; 16]>(config().rename_newcomm_off as usize)? };
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(mut entry) = LIFECYCLE.reserve::<Record>(0) {
        entry.write(Record {
            kind: kind::RENAME,
            // SAFETY: no preconditions.
            cpu: unsafe { bpf_get_smp_processor_id() },
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            // SAFETY: no preconditions.
            time_ns: unsafe { bpf_ktime_get_ns() },
            id: 0,
            args: [0; 8],
            comm: new,
        });
        entry.submit(lifecycle_or_batch(&LIFECYCLE, true));
    } else {
        count_lost(ctx, lost::TASK);
    }
    Ok(0)
}

#[tracepoint]
pub fn mp_signal_deliver(ctx: TracePointContext) -> u32 {
    match try_signal_deliver(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(
                &ctx,
                "mp_signal_deliver: reading the tracepoint failed ({})", e
            );
            0
        }
    }
}

fn try_signal_deliver(ctx: &TracePointContext) -> Result<u32, i64> {
    // Runs in the receiving task.
    if !current_is_target() {
        return Ok(0);
    }
    let cfg = config();
    // SAFETY: offsets from this kernel's tracepoint format, read with bpf_probe_read.
    let (sig, code, handler) = unsafe {
        (
            ctx.read_at::<i32>(cfg.deliver_sig_off as usize)?,
            ctx.read_at::<i32>(cfg.deliver_code_off as usize)?,
            ctx.read_at::<u64>(cfg.deliver_handler_off as usize)?,
        )
    };
    emit(
        ctx,
        kind::SIGNAL,
        sig as u64,
        [code as u64, handler, 0, 0, 0, 0, 0, 0],
        lost::TASK,
    );
    Ok(0)
}

#[tracepoint]
pub fn mp_sched_exit(ctx: TracePointContext) -> u32 {
    match try_sched_exit(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_sched_exit: reading the tracepoint failed ({})", e);
            0
        }
    }
}

fn try_sched_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if !is_target(tgid) {
        return Ok(0);
    }
    let _ = BLOCKED.remove(&tid);
    // The thread's time on CPU: its closed intervals, and the one it is in now (it is on CPU,
    // exiting). Its last switch out comes after this and adds nothing (see `offcpu::EXITED`).
    // SAFETY: values copied out at once.
    let closed = unsafe { THREAD_CPU.get(&tid) }.map_or(0, |t| t.cpu_ns);
    let _ = THREAD_CPU.remove(&tid);
    // SAFETY: this CPU's slot of a per-CPU array, copied out.
    let since = SWITCHED_IN_AT.get_ptr(0).map_or(0, |p| unsafe { *p });
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let current = if since != 0 {
        now.saturating_sub(since)
    } else {
        0
    };
    let off = config().exit_group_dead_off;
    let group_dead = if off != u32::MAX {
        // SAFETY: offset from this kernel's tracepoint format, read with bpf_probe_read.
        unsafe { ctx.read_at::<u8>(off as usize)? }
    } else {
        0
    };
    emit(
        ctx,
        kind::TASK_EXIT,
        0,
        [group_dead as u64, closed + current, 0, 0, 0, 0, 0, 0],
        lost::TASK,
    );
    if group_dead != 0 {
        // The last thread of the process is gone: stop matching its (reusable) pid.
        let _ = TARGETS.remove(&tgid);
        let _ = crate::maps::BRK_LAST.remove(&tgid);
    }
    Ok(0)
}

#[tracepoint]
pub fn mp_oom_victim(ctx: TracePointContext) -> u32 {
    match try_oom_victim(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_oom_victim: reading the tracepoint failed ({})", e);
            0
        }
    }
}

/// The OOM killer chose a victim: a target's death is explained (it runs in the task that
/// ran out of memory, which may be another process).
fn try_oom_victim(ctx: &TracePointContext) -> Result<u32, i64> {
    let cfg = config();
    if cfg.oom_pid_off == u32::MAX {
        return Ok(0);
    }
    // SAFETY: offsets from this kernel's tracepoint format, read with bpf_probe_read.
    let victim = unsafe { ctx.read_at::<i32>(cfg.oom_pid_off as usize)? } as u32;
    if !crate::maps::is_target(victim) {
        return Ok(0);
    }
    let field = |off: u32| -> u64 {
        if off == u32::MAX {
            return 0;
        }
        // SAFETY: as above; a field that cannot be read is 0.
        unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0)
    };
    emit(
        ctx,
        kind::OOM_KILL,
        victim as u64,
        [
            field(cfg.oom_total_vm_off),
            field(cfg.oom_anon_rss_off),
            field(cfg.oom_file_rss_off),
            field(cfg.oom_shmem_rss_off),
            0,
            0,
            0,
            0,
        ],
        lost::TASK,
    );
    Ok(0)
}
