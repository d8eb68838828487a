//! On-CPU sampling: `mp_cpu_sample` runs on every `cpu-clock` tick of every CPU and, when the
//! running thread belongs to a target, copies its kernel and user stacks (and, on x86-64, the
//! interrupted user registers) into `EVENTS`.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::perf_event, programs::PerfEventContext};
use aya_log_ebpf::debug;
use modelprobe_common::{flags, kind, lost, StackEvent};

use crate::{
    emit::fill,
    maps::{count_lost, is_target, wakeup_flags, EVENTS},
};

#[perf_event]
pub fn mp_cpu_sample(ctx: PerfEventContext) -> u32 {
    match try_cpu_sample(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_cpu_sample failed ({})", e);
            0
        }
    }
}

fn try_cpu_sample(ctx: &PerfEventContext) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid as u32 == 0 || !is_target((pid_tgid >> 32) as u32) {
        return Ok(0);
    }
    let Some(mut entry) = EVENTS.reserve::<StackEvent>(0) else {
        count_lost(ctx, lost::CPU_SAMPLE);
        return Ok(0);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points into a ring-buffer reservation of size_of::<StackEvent>() bytes.
    unsafe {
        fill(ctx, ev, kind::CPU_SAMPLE, pid_tgid, true);
        (*ev).weight = 1;
        save_user_regs(ctx, ev);
    }
    entry.submit(wakeup_flags(&EVENTS));
    Ok(0)
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
