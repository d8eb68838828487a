//! modelprobe's BPF programs.
//!
//! - `mp_cpu_sample` (perf event, `cpu-clock` on every CPU): a thread of a target process was
//!   running; copy its kernel and user stacks into the ring buffer.
//! - `mp_sched_switch` (tracepoint `sched/sched_switch`): a target thread blocked; stash its
//!   stacks, and when it is switched back in emit one off-CPU event weighted by the time blocked.
//! - `mp_task_newtask` / `mp_sched_exit` (tracepoints): follow the target's process tree in the
//!   kernel, so children are sampled from their first instruction; with `mp_sched_exec`,
//!   `mp_task_rename` and `mp_signal_deliver`, report lifecycle events as `Record`s.
//! - `mp_span_enter` / `mp_span_exit` (uprobe / uretprobe): a probed function was entered or
//!   returned; the attach cookie says which probe.
//!
//! Filtering happens here, before anything is copied: only processes in `TARGETS` cost more
//! than a hash lookup. Every dropped event increments a per-CPU `LOST` counter the agent reports.
#![no_std]
#![no_main]

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC, BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP,
        BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_user, bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes,
        generated::{bpf_get_attach_cookie, bpf_get_stack},
    },
    macros::{map, perf_event, tracepoint, uprobe, uretprobe},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{PerfEventContext, ProbeContext, RetProbeContext, TracePointContext},
    EbpfContext,
};
use modelprobe_common::{
    flags, kind, lost, Config, DataRecord, Record, StackEvent, COOKIE_ID_MASK, DATA_CAPTURE,
    DATA_HEADER, DEREF_ARG0_COOKIE, LAUNCH_STACK_COOKIE, MAX_STACK_DEPTH, STACK_ARGS_COOKIE,
    STATUS_COOKIE, STRING_ARG2_COOKIE,
};

/// `CLONE_THREAD` from `linux/sched.h`: the new task is a thread of the same process.
const CLONE_THREAD: u64 = 0x0001_0000;

/// Written by the agent before load (`EbpfLoader::set_global`).
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
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Stack events to the agent.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Span, lifecycle and signal records to the agent (apart from stacks, so neither starves the
/// other).
#[map]
static RECORDS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Out-parameter pointers of calls in progress, by thread (see `DEREF_ARG0_COOKIE`).
#[map]
static PENDING_OUT: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Per-CPU scratch for records with a payload (larger than the BPF stack).
#[map]
static DATA_SCRATCH: PerCpuArray<DataRecord> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU drop counters, indexed by `modelprobe_common::lost`.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNT, 0);

/// Per-CPU scratch space: a `StackEvent` is far larger than the 512-byte BPF stack.
#[map]
static SCRATCH: PerCpuArray<StackEvent> = PerCpuArray::with_max_entries(1, 0);

/// Threads of a target that are blocked right now, with the stacks they blocked in.
#[map]
static BLOCKED: HashMap<u32, StackEvent> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

const STACK_BYTES: u32 = (MAX_STACK_DEPTH * size_of::<u64>()) as u32;

/// Submit flags for `ring`: wake the agent only once an eighth of the buffer is unread. Below
/// that, records wait for the agent's own poll (every 100 ms): a wakeup per record would cost
/// the target a context switch per call.
#[inline(always)]
fn wakeup_flags(ring: &RingBuf) -> u64 {
    if ring.query(BPF_RB_AVAIL_DATA as u64) >= ring.query(BPF_RB_RING_SIZE as u64) / 8 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn config() -> Config {
    // SAFETY: CONFIG is a plain-data static; the volatile read stops the compiler from folding
    // the placeholder value, since the loader rewrites it before the program runs.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

#[inline(always)]
fn count_lost(index: u32) {
    if let Some(counter) = LOST.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a per-CPU array slot owned by this CPU, and BPF
        // programs on one CPU do not preempt each other for the same program type.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn is_target(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence, never held across helper calls.
    unsafe { TARGETS.get(&tgid) }.is_some()
}

/// Fills everything but `weight` and the user registers: ids, time, name, the user stack and,
/// `with_kernel`, the kernel stack (a uprobe's is only the probe machinery: not worth a walk).
///
/// # Safety
/// `ev` must point to writable memory of at least `size_of::<StackEvent>()` bytes.
#[inline(always)]
unsafe fn fill<C: EbpfContext>(
    ctx: &C,
    ev: *mut StackEvent,
    event_kind: u32,
    pid_tgid: u64,
    with_kernel: bool,
) {
    // SAFETY (whole body): the caller guarantees `ev` is valid for writes.
    let ev = unsafe { &mut *ev };
    ev.kind = event_kind;
    // SAFETY: no preconditions.
    ev.cpu = unsafe { bpf_get_smp_processor_id() };
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    // SAFETY: no preconditions.
    ev.time_ns = unsafe { bpf_ktime_get_ns() };
    ev.weight = 0;
    ev.user_ip = 0;
    ev.user_sp = 0;
    ev.user_bp = 0;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    ev.flags = 0;
    ev._pad = 0;
    let k = if with_kernel {
        // SAFETY: the destination is the `kstack` array of `ev`, STACK_BYTES long.
        unsafe {
            bpf_get_stack(
                ctx.as_ptr(),
                ev.kstack.as_mut_ptr() as *mut c_void,
                STACK_BYTES,
                0,
            )
        }
    } else {
        0
    };
    if k < 0 {
        ev.kstack_len = 0;
        ev.flags |= flags::KSTACK_ERROR;
    } else {
        ev.kstack_len = (k as u32) / 8;
    }
    // SAFETY: the destination is the `ustack` array of `ev`, STACK_BYTES long.
    let u = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            ev.ustack.as_mut_ptr() as *mut c_void,
            STACK_BYTES,
            BPF_F_USER_STACK as u64,
        )
    };
    if u < 0 {
        ev.ustack_len = 0;
        ev.flags |= flags::USTACK_ERROR;
    } else {
        ev.ustack_len = (u as u32) / 8;
    }
}

#[perf_event]
pub fn mp_cpu_sample(ctx: PerfEventContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid as u32 == 0 || !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<StackEvent>(0) else {
        count_lost(lost::CPU_SAMPLE);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points into a ring-buffer reservation of size_of::<StackEvent>() bytes.
    unsafe {
        fill(&ctx, ev, kind::CPU_SAMPLE, pid_tgid, true);
        (*ev).weight = 1;
        save_user_regs(&ctx, ev);
    }
    entry.submit(wakeup_flags(&EVENTS));
    0
}

/// Records the interrupted registers when the sample hit user mode (x86-64 only for now).
///
/// # Safety
/// `ev` must point to a valid, writable `StackEvent`.
#[inline(always)]
unsafe fn save_user_regs(ctx: &PerfEventContext, ev: *mut StackEvent) {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: a perf_event program's context is a `bpf_perf_event_data` the kernel owns for
        // the duration of the call; `ev` is valid per the caller.
        unsafe {
            let regs = &(*ctx.ctx).regs;
            if regs.cs & 3 == 3 {
                (*ev).user_ip = regs.rip;
                (*ev).user_sp = regs.rsp;
                (*ev).user_bp = regs.rbp;
                (*ev).flags |= flags::USER_REGS;
            }
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    let _ = (ctx, ev);
}

#[tracepoint]
pub fn mp_sched_switch(ctx: TracePointContext) -> u32 {
    let _ = try_sched_switch(&ctx);
    0
}

fn try_sched_switch(ctx: &TracePointContext) -> Result<(), i64> {
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
                        count_lost(lost::OFF_CPU_TABLE_FULL);
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
                if EVENTS
                    .output::<StackEvent>(&*ev, wakeup_flags(&EVENTS))
                    .is_err()
                {
                    count_lost(lost::OFF_CPU);
                }
            }
        }
        let _ = BLOCKED.remove(&next);
    }
    Ok(())
}

/// Reserves and fills a record for the current task; `None` (counted as lost) when full.
#[inline(always)]
fn emit(record_kind: u32, id: u64, args: [u64; 8], lost_index: u32) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(mut entry) = RECORDS.reserve::<Record>(0) else {
        count_lost(lost_index);
        return None;
    };
    entry.write(Record {
        kind: record_kind,
        // SAFETY: no preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        id,
        args,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    // Lifecycle records are rare and the agent acts on them (snapshotting a new process's
    // mappings while it lives): wake it at once. Spans wait for the batch.
    let wake = if record_kind == kind::SPAN_ENTER || record_kind == kind::SPAN_EXIT {
        wakeup_flags(&RECORDS)
    } else {
        BPF_RB_FORCE_WAKEUP as u64
    };
    entry.submit(wake);
    Some(())
}

#[inline(always)]
fn current_is_target() -> bool {
    is_target((bpf_get_current_pid_tgid() >> 32) as u32)
}

#[tracepoint]
pub fn mp_task_newtask(ctx: TracePointContext) -> u32 {
    let _ = try_task_newtask(&ctx);
    0
}

fn try_task_newtask(ctx: &TracePointContext) -> Result<(), i64> {
    // Runs in the parent, before the new task first runs: a new process is a target from its
    // first instruction.
    if !current_is_target() {
        return Ok(());
    }
    let cfg = config();
    // SAFETY: offsets from this kernel's tracepoint format, read with bpf_probe_read.
    let (child, clone_flags) = unsafe {
        (
            ctx.read_at::<i32>(cfg.newtask_pid_off as usize)? as u32,
            ctx.read_at::<u64>(cfg.newtask_flags_off as usize)?,
        )
    };
    if clone_flags & CLONE_THREAD == 0 && TARGETS.insert(&child, &1, 0).is_err() {
        count_lost(lost::TARGETS_FULL);
    }
    emit(
        kind::TASK_NEW,
        child as u64,
        [clone_flags, 0, 0, 0, 0, 0, 0, 0],
        lost::TASK,
    );
    Ok(())
}

#[tracepoint]
pub fn mp_sched_exec(_ctx: TracePointContext) -> u32 {
    if current_is_target() {
        emit(kind::EXEC, 0, [0; 8], lost::TASK);
    }
    0
}

#[tracepoint]
pub fn mp_task_rename(ctx: TracePointContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    // SAFETY: offset from this kernel's tracepoint format, read with bpf_probe_read.
    let Ok(new) = (unsafe { ctx.read_at::<[u8; 16]>(config().rename_newcomm_off as usize) }) else {
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(mut entry) = RECORDS.reserve::<Record>(0) {
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
        entry.submit(wakeup_flags(&RECORDS));
    } else {
        count_lost(lost::TASK);
    }
    0
}

#[tracepoint]
pub fn mp_signal_deliver(ctx: TracePointContext) -> u32 {
    let _ = try_signal_deliver(&ctx);
    0
}

fn try_signal_deliver(ctx: &TracePointContext) -> Result<(), i64> {
    // Runs in the receiving task.
    if !current_is_target() {
        return Ok(());
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
        kind::SIGNAL,
        sig as u64,
        [code as u64, handler, 0, 0, 0, 0, 0, 0],
        lost::TASK,
    );
    Ok(())
}

#[uprobe]
pub fn mp_span_enter(ctx: ProbeContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    // SAFETY: called from a uprobe program, whose context the helper accepts.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let a = |i| ctx.arg::<u64>(i).unwrap_or(0);
    let (s0, s1) = if cookie & STACK_ARGS_COOKIE != 0 {
        stack_args(&ctx)
    } else {
        (0, 0)
    };
    emit(
        kind::SPAN_ENTER,
        cookie,
        [a(0), a(1), a(2), a(3), a(4), a(5), s0, s1],
        lost::SPAN,
    );
    if cookie & DEREF_ARG0_COOKIE != 0 {
        let _ = PENDING_OUT.insert(&(bpf_get_current_pid_tgid() as u32), &a(0), 0);
    }
    if cookie & STRING_ARG2_COOKIE != 0 {
        emit_data(
            kind::ARG_STRING,
            0,
            a(2),
            cookie & COOKIE_ID_MASK,
            true,
            lost::SPAN,
        );
    }
    if cookie & LAUNCH_STACK_COOKIE != 0 {
        // The stack that queued GPU work: its GPU time is charged to it.
        match EVENTS.reserve::<StackEvent>(0) {
            Some(mut entry) => {
                let ev = entry.as_mut_ptr();
                // SAFETY: `ev` points into a reservation of size_of::<StackEvent>() bytes.
                unsafe {
                    fill(
                        &ctx,
                        ev,
                        kind::SPAN_STACK,
                        bpf_get_current_pid_tgid(),
                        false,
                    );
                    (*ev).weight = cookie & COOKIE_ID_MASK;
                    #[cfg(bpf_target_arch = "x86_64")]
                    {
                        // At the first instruction the return address is at the stack pointer.
                        let sp = (*ctx.regs).rsp;
                        (*ev).user_bp = bpf_probe_read_user(sp as *const u64).unwrap_or(0);
                        (*ev).flags |= flags::ENTRY_RET;
                    }
                }
                entry.submit(0);
            }
            None => count_lost(lost::SPAN),
        }
    }
    0
}

/// The first two 8-byte words of a function's stack arguments, read at its entry (x86-64:
/// just above the return address). Zeros where unreadable or on other architectures.
#[inline(always)]
fn stack_args(ctx: &ProbeContext) -> (u64, u64) {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: a uprobe's context is the task's pt_regs, valid for the call; user memory is
        // read with a faulting-safe helper.
        unsafe {
            let sp = (*ctx.regs).rsp;
            let w0 = bpf_probe_read_user((sp + 8) as *const u64).unwrap_or(0);
            let w1 = bpf_probe_read_user((sp + 16) as *const u64).unwrap_or(0);
            (w0, w1)
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = ctx;
        (0, 0)
    }
}

#[uretprobe]
pub fn mp_span_exit(ctx: RetProbeContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    // SAFETY: called from a uretprobe program, whose context the helper accepts.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let ret: u64 = ctx.ret();
    let mut out = 0;
    if cookie & DEREF_ARG0_COOKIE != 0 {
        let tid = bpf_get_current_pid_tgid() as u32;
        // SAFETY: the value is copied out before the entry is removed.
        if let Some(&ptr) = unsafe { PENDING_OUT.get(&tid) } {
            // SAFETY: faulting-safe read of the caller's out-parameter.
            out = unsafe { bpf_probe_read_user(ptr as *const u64) }.unwrap_or(0);
        }
        let _ = PENDING_OUT.remove(&tid);
    }
    emit(
        kind::SPAN_EXIT,
        cookie,
        [ret, out, 0, 0, 0, 0, 0, 0],
        lost::SPAN,
    );
    if cookie & STATUS_COOKIE != 0 && ret as u32 != 0 {
        // A failed API call: keep where it was called from (the caller's stack, as the return
        // probe runs on the way back to it).
        match EVENTS.reserve::<StackEvent>(0) {
            Some(mut entry) => {
                let ev = entry.as_mut_ptr();
                // SAFETY: `ev` points into a reservation of size_of::<StackEvent>() bytes.
                unsafe {
                    fill(
                        &ctx,
                        ev,
                        kind::API_ERROR_STACK,
                        bpf_get_current_pid_tgid(),
                        true,
                    );
                    (*ev).weight = cookie;
                }
                entry.submit(BPF_RB_FORCE_WAKEUP as u64);
            }
            None => count_lost(lost::SPAN),
        }
    }
    0
}

#[tracepoint]
pub fn mp_sched_exit(ctx: TracePointContext) -> u32 {
    let _ = try_sched_exit(&ctx);
    0
}

fn try_sched_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if !is_target(tgid) {
        return Ok(());
    }
    let _ = BLOCKED.remove(&tid);
    let off = config().exit_group_dead_off;
    let group_dead = if off != u32::MAX {
        // SAFETY: offset from this kernel's tracepoint format, read with bpf_probe_read.
        unsafe { ctx.read_at::<u8>(off as usize)? }
    } else {
        0
    };
    emit(
        kind::TASK_EXIT,
        0,
        [group_dead as u64, 0, 0, 0, 0, 0, 0, 0],
        lost::TASK,
    );
    if group_dead != 0 {
        // The last thread of the process is gone: stop matching its (reusable) pid.
        let _ = TARGETS.remove(&tgid);
    }
    Ok(())
}

/// Offsets of a syscall tracepoint's arguments: `struct syscall_trace_enter` is the common
/// header, `int nr` at 8, then `unsigned long args[6]` from 16, on every kernel.
const SYSCALL_ARG0: usize = 16;

/// Copies up to DATA_CAPTURE bytes from user memory at `src` into a record and sends the header
/// plus those bytes. `as_str` reads a NUL-terminated string instead of `count` bytes.
#[inline(always)]
fn emit_data(record_kind: u32, fd: u32, src: u64, count: u64, as_str: bool, lost_index: u32) {
    let Some(scratch) = DATA_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `scratch` is this CPU's slot, a whole DataRecord; programs on one CPU do not
    // interleave.
    let r = unsafe { &mut *scratch };
    let pid_tgid = bpf_get_current_pid_tgid();
    r.kind = record_kind;
    // SAFETY: no preconditions.
    r.cpu = unsafe { bpf_get_smp_processor_id() };
    r.pid = (pid_tgid >> 32) as u32;
    r.tid = pid_tgid as u32;
    // SAFETY: no preconditions.
    r.time_ns = unsafe { bpf_ktime_get_ns() };
    r.count = count;
    r.fd = fd;
    let mut len = if count > DATA_CAPTURE as u64 {
        DATA_CAPTURE
    } else {
        count as usize
    };
    if as_str {
        // SAFETY: bpf_probe_read_user_str faults safely on bad user pointers.
        len = match unsafe { bpf_probe_read_user_str_bytes(src as *const u8, &mut r.data) } {
            Ok(s) => s.len(),
            Err(_) => 0,
        };
    } else if len > 0 {
        let Some(dst) = r.data.get_mut(..len) else {
            return;
        };
        // SAFETY: bpf_probe_read_user faults safely on bad user pointers.
        if unsafe { bpf_probe_read_user_buf(src as *const u8, dst) }.is_err() {
            len = 0;
        }
    }
    if len > DATA_CAPTURE {
        len = DATA_CAPTURE;
    }
    r.len = len as u32;
    // SAFETY: the slice covers the header and the first `len` payload bytes of the scratch
    // record, all within its DATA_HEADER + DATA_CAPTURE bytes.
    let bytes = unsafe { core::slice::from_raw_parts(scratch as *const u8, DATA_HEADER + len) };
    if RECORDS
        .output::<[u8]>(bytes, wakeup_flags(&RECORDS))
        .is_err()
    {
        count_lost(lost_index);
    }
}

#[tracepoint]
pub fn mp_sys_write(ctx: TracePointContext) -> u32 {
    let _ = try_sys_write(&ctx);
    0
}

fn try_sys_write(ctx: &TracePointContext) -> Result<(), i64> {
    if !current_is_target() {
        return Ok(());
    }
    // SAFETY: syscall tracepoint arguments at fixed offsets, read with bpf_probe_read.
    let (fd, buf, count) = unsafe {
        (
            ctx.read_at::<u64>(SYSCALL_ARG0)?,
            ctx.read_at::<u64>(SYSCALL_ARG0 + 8)?,
            ctx.read_at::<u64>(SYSCALL_ARG0 + 16)?,
        )
    };
    if fd == 1 || fd == 2 {
        emit_data(kind::LOG, fd as u32, buf, count, false, lost::LOG);
    }
    Ok(())
}

/// `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}

/// iovecs of one writev captured; the rest are counted as cut.
const MAX_IOVECS: u64 = 8;

#[tracepoint]
pub fn mp_sys_writev(ctx: TracePointContext) -> u32 {
    let _ = try_sys_writev(&ctx);
    0
}

fn try_sys_writev(ctx: &TracePointContext) -> Result<(), i64> {
    if !current_is_target() {
        return Ok(());
    }
    // SAFETY: syscall tracepoint arguments at fixed offsets, read with bpf_probe_read.
    let (fd, vec, vlen) = unsafe {
        (
            ctx.read_at::<u64>(SYSCALL_ARG0)?,
            ctx.read_at::<u64>(SYSCALL_ARG0 + 8)?,
            ctx.read_at::<u64>(SYSCALL_ARG0 + 16)?,
        )
    };
    if fd != 1 && fd != 2 {
        return Ok(());
    }
    for i in 0..MAX_IOVECS {
        if i >= vlen {
            break;
        }
        // SAFETY: reads the user's iovec array with a faulting-safe helper.
        let iov: IoVec = unsafe { bpf_probe_read_user((vec + i * 16) as *const IoVec)? };
        emit_data(kind::LOG, fd as u32, iov.base, iov.len, false, lost::LOG);
    }
    Ok(())
}

#[tracepoint]
pub fn mp_sys_openat(ctx: TracePointContext) -> u32 {
    let _ = try_sys_openat(&ctx);
    0
}

fn try_sys_openat(ctx: &TracePointContext) -> Result<(), i64> {
    if !current_is_target() {
        return Ok(());
    }
    // SAFETY: syscall tracepoint arguments at fixed offsets, read with bpf_probe_read.
    let (path, open_flags) = unsafe {
        (
            ctx.read_at::<u64>(SYSCALL_ARG0 + 8)?,
            ctx.read_at::<u64>(SYSCALL_ARG0 + 16)?,
        )
    };
    emit_data(kind::OPEN, 0, path, open_flags, true, lost::OPEN);
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
