//! Spans of probed library calls: `mp_span_enter` (uprobe) and `mp_span_exit` (uretprobe).
//!
//! The attach cookie names the probe (its low 32 bits) and, in its high bits, what else to keep:
//! the first stack-argument words (`STACK_ARGS_COOKIE`), a C-string argument
//! (`STRING_ARG2_COOKIE`, sent as an `ARG_STRING` `DataRecord`), the calling stack of a call that
//! queues GPU work (`LAUNCH_STACK_COOKIE`, a `SPAN_STACK` event), an out-parameter read back at
//! return (`DEREF_ARG0_COOKIE`), and the caller's stack when a status-returning call fails
//! (`STATUS_COOKIE`, an `API_ERROR_STACK` event).

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use aya_log_ebpf::debug;
#[cfg(bpf_target_arch = "x86_64")]
use modelprobe_common::flags;
use modelprobe_common::{
    kind, lost, StackEvent, COOKIE_ID_MASK, DEREF_ARG0_COOKIE, LAUNCH_STACK_COOKIE,
    STACK_ARGS_COOKIE, STATUS_COOKIE, STRING_ARG2_COOKIE,
};

use crate::{
    emit::{emit, emit_data, fill, Payload},
    maps::{count_lost, current_is_target, PENDING_OUT, SPAN_STACKS},
};

/// The entry probe of a function whose calling stack is not kept: cheap for the verifier
/// (no stack walk), so it is loaded at the first probe in a moment.
#[uprobe]
pub fn mp_span_enter(ctx: ProbeContext) -> u32 {
    match try_span_enter::<false>(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_span_enter failed ({})", e);
            0
        }
    }
}

/// The entry probe of a call that queues GPU work ([`LAUNCH_STACK_COOKIE`]): also its calling
/// stack. The stack walk makes this a long verification: loaded only for such probes.
#[uprobe]
pub fn mp_span_enter_stack(ctx: ProbeContext) -> u32 {
    match try_span_enter::<true>(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_span_enter_stack failed ({})", e);
            0
        }
    }
}

fn try_span_enter<const STACKS: bool>(ctx: &ProbeContext) -> Result<u32, i64> {
    if !current_is_target() {
        return Ok(0);
    }
    // SAFETY: called from a uprobe program, whose context the helper accepts.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let probe = (cookie & COOKIE_ID_MASK) as u32;
    let a = |i| ctx.arg::<u64>(i).unwrap_or(0);
    let (s0, s1) = if cookie & STACK_ARGS_COOKIE != 0 {
        stack_args(ctx)
    } else {
        (0, 0)
    };
    emit(
        ctx,
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
            ctx,
            kind::ARG_STRING,
            0,
            probe,
            Payload::Str(a(2)),
            0,
            lost::SPAN,
        );
    }
    if STACKS && cookie & LAUNCH_STACK_COOKIE != 0 {
        // The stack that queued GPU work: its GPU time is charged to it.
        launch_stack(ctx, probe);
    }
    crate::stop::check_break(ctx, probe, [a(0), a(1), a(2), a(3), a(4), a(5)]);
    Ok(0)
}

/// Sends the calling stack at a probed function's entry as a `SPAN_STACK` event.
#[inline(always)]
fn launch_stack(ctx: &ProbeContext, probe: u32) {
    let Some(mut entry) = SPAN_STACKS.reserve::<StackEvent>(0) else {
        count_lost(ctx, lost::SPAN);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points into a reservation of size_of::<StackEvent>() bytes.
    unsafe {
        fill(ctx, ev, kind::SPAN_STACK, bpf_get_current_pid_tgid(), false);
        (*ev).probe = probe;
        #[cfg(bpf_target_arch = "x86_64")]
        {
            // At the first instruction the return address is at the stack pointer; a
            // frame-pointer walk misses it (a CFI walk does not).
            if (*ev).flags & flags::USTACK_CFI == 0 {
                let sp = (*ctx.regs).rsp;
                (*ev).user_bp = bpf_probe_read_user(sp as *const u64).unwrap_or(0);
                (*ev).flags |= flags::ENTRY_RET;
            }
        }
    }
    entry.submit(0);
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

/// The return probe of a function whose failures keep no stack.
#[uretprobe]
pub fn mp_span_exit(ctx: RetProbeContext) -> u32 {
    match try_span_exit::<false>(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_span_exit failed ({})", e);
            0
        }
    }
}

/// The return probe of a function returning a status ([`STATUS_COOKIE`]): a failure also
/// sends the caller's stack. Loaded only for such probes (the stack walk's verification).
#[uretprobe]
pub fn mp_span_exit_stack(ctx: RetProbeContext) -> u32 {
    match try_span_exit::<true>(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_span_exit_stack failed ({})", e);
            0
        }
    }
}

fn try_span_exit<const STACKS: bool>(ctx: &RetProbeContext) -> Result<u32, i64> {
    if !current_is_target() {
        return Ok(0);
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
        ctx,
        kind::SPAN_EXIT,
        cookie,
        [ret, out, 0, 0, 0, 0, 0, 0],
        lost::SPAN,
    );
    if STACKS && cookie & STATUS_COOKIE != 0 && ret as u32 != 0 {
        // A failed API call: keep where it was called from (the caller's stack, as the return
        // probe runs on the way back to it).
        let probe = (cookie & COOKIE_ID_MASK) as u32;
        error_stack(ctx, probe);
        if crate::maps::config().stop_on_api_error != 0 {
            crate::stop::stop(
                ctx,
                modelprobe_common::stop::reason::API_ERROR,
                probe,
                [ret, 0, 0, 0, 0, 0],
                crate::stop::user_ip(ctx),
            );
        }
    }
    Ok(0)
}

/// Sends the stack a failed call returns to as an `API_ERROR_STACK` event.
#[inline(always)]
fn error_stack(ctx: &RetProbeContext, probe: u32) {
    let Some(mut entry) = SPAN_STACKS.reserve::<StackEvent>(0) else {
        count_lost(ctx, lost::SPAN);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points into a reservation of size_of::<StackEvent>() bytes.
    unsafe {
        fill(
            ctx,
            ev,
            kind::API_ERROR_STACK,
            bpf_get_current_pid_tgid(),
            true,
        );
        (*ev).probe = probe;
    }
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}
