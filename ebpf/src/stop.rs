//! Stopping the target at the call that asked for it (see `modelprobe_common::stop`):
//! breakpoints checked at a probed function's entry (`STOP_RULES`, by probe id), failed API
//! calls at their return. `SIGSTOP` goes from the thread that hit the probe, so it stops at
//! that call; `STOP_BUDGET` bounds how many stops a session makes.

use aya_ebpf::{
    helpers::generated::bpf_send_signal,
    macros::map,
    maps::{Array, HashMap},
    EbpfContext,
};
use modelprobe_common::{
    kind, lost,
    stop::{holds, op, StopRule, MAX_STOP_RULES},
};

use crate::emit::emit;

/// `SIGSTOP` on Linux.
const SIGSTOP: u32 = 19;

/// Breakpoints by probe id (written by the agent).
#[map]
pub(crate) static STOP_RULES: HashMap<u32, StopRule> = HashMap::with_max_entries(MAX_STOP_RULES, 0);

/// Stops the session may still make (written by the agent; 0: none).
#[map]
pub(crate) static STOP_BUDGET: Array<u64> = Array::with_max_entries(1, 0);

/// At a probed function's entry: stops the process if a breakpoint on it holds.
#[inline(always)]
pub(crate) fn check_break<C: EbpfContext>(ctx: &C, probe: u32, args: [u64; 6]) {
    let Some(rule) = STOP_RULES.get_ptr_mut(&probe) else {
        return;
    };
    // SAFETY: the map value lives while this program runs; concurrent hits may race on
    // `seen`, which at worst stops one call later or earlier than asked.
    let rule = unsafe { &mut *rule };
    if rule.op != op::ANY {
        let arg = args[(rule.arg as usize).min(5)] as i64;
        if !holds(arg, rule.op, rule.value) {
            return;
        }
    }
    rule.seen += 1;
    if rule.seen < rule.hit {
        return;
    }
    // At the entry the return address is still the caller's: the return probe's trampoline
    // replaces it only after the entry handlers ran. A snapshot of the stopped thread needs it
    // to name the caller.
    let ret_addr = return_address(ctx);
    stop(
        ctx,
        modelprobe_common::stop::reason::BREAK,
        probe,
        [args[0], args[1], args[2], args[3], args[4], args[5]],
        ret_addr,
    );
}

/// The word at the user stack pointer: a function's return address at its first instruction.
#[inline(always)]
fn return_address<C: EbpfContext>(ctx: &C) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: a uprobe's context is the task's pt_regs; the read faults safely.
        unsafe {
            let regs = ctx.as_ptr() as *const aya_ebpf::bindings::pt_regs;
            let sp = aya_ebpf::helpers::bpf_probe_read_kernel(&(*regs).rsp).unwrap_or(0);
            aya_ebpf::helpers::bpf_probe_read_user(sp as *const u64).unwrap_or(0)
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = ctx;
        0
    }
}

/// The user instruction pointer: at a return probe, the address the call returns to.
#[inline(always)]
pub(crate) fn user_ip<C: EbpfContext>(ctx: &C) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: a uretprobe's context is the task's pt_regs.
        unsafe {
            let regs = ctx.as_ptr() as *const aya_ebpf::bindings::pt_regs;
            aya_ebpf::helpers::bpf_probe_read_kernel(&(*regs).rip).unwrap_or(0)
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = ctx;
        0
    }
}

/// Sends the current process `SIGSTOP` (from this thread) and a `STOP` record, within the
/// budget; `ret_addr` is where the stopped call returns to.
#[inline(always)]
pub(crate) fn stop<C: EbpfContext>(
    ctx: &C,
    reason: u64,
    probe: u32,
    detail: [u64; 6],
    ret_addr: u64,
) {
    let Some(budget) = STOP_BUDGET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this map's one slot, alive while the program runs.
    unsafe {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        bpf_send_signal(SIGSTOP);
    }
    emit(
        ctx,
        kind::STOP,
        probe as u64,
        [
            reason, detail[0], detail[1], detail[2], detail[3], detail[4], detail[5], ret_addr,
        ],
        lost::TASK,
    );
}
