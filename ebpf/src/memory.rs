//! Memory by stack (`--memory`), without a probe on `malloc`: the syscalls that give a process
//! memory, and a sample of the page faults that make it resident.
//!
//! - `mp_mem_mmap_enter` / `mp_mem_mremap_enter` / `mp_mem_brk_enter` note the call in
//!   `MEM_PENDING` (an anonymous `mmap` only: file mappings are code and data files, counted
//!   in the resident-memory counters), and `mp_mem_exit` (attached to the three exit
//!   tracepoints) sends what it returned as a `MEM_ALLOC` event with the caller's stacks; the
//!   old range of an `mremap` and a shrinking break as `MEM_FREE` records first.
//! - `mp_mem_munmap` sends a `MEM_FREE` record (the agent drops ranges it never saw given).
//! - `mp_page_fault` (a `page-faults` perf event sampled every N faults on every CPU) sends the
//!   faulting thread's stacks as a `PAGE_FAULT` event weighted by N.
//!
//! - `mp_usdt` (`--memory`, on PyTorch's `pytorch:malloc` / `pytorch:free` static tracepoints):
//!   tensor-level GPU memory, each site's arguments read as the agent's `USDT_SPECS` say.
//! - `mp_heap_enter` / `mp_heap_exit` (`--memory=malloc`, uprobes on the C library's
//!   `malloc`, `calloc`, `realloc` and `free`): a sampled heap profile (see [`mp_heap_enter`]).
//!
//! Everything goes through the one `MEMORY` ring, in order: a free never arrives before the
//! allocation it returns.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::bpf_get_attach_cookie,
    },
    macros::{perf_event, tracepoint, uprobe, uretprobe},
    programs::{PerfEventContext, ProbeContext, RetProbeContext, TracePointContext},
    EbpfContext,
};
use modelprobe_common::{
    kind, lost,
    memory::{
        heap_fn, source,
        usdt::{self, MAX_USDT_ARGS},
        HeapKey, MemPending, EXP_QUANTILES,
    },
    StackEvent,
};

use crate::{
    emit::{emit_to, fill},
    maps::{
        config, count_lost, current_is_target, wakeup_flags, BRK_LAST, HEAP_COUNTDOWN,
        HEAP_PENDING, HEAP_SAMPLED, MEMORY, MEM_PENDING, USDT_SPECS,
    },
};

/// Offsets of a syscall tracepoint's fields: arguments from 16 at entry, `long ret` at 16 at
/// exit (after the common header and `int nr`).
const SYSCALL_ARG0: usize = 16;
const SYSCALL_RET: usize = 16;

/// `mmap`'s `MAP_ANONYMOUS` flag.
const MAP_ANONYMOUS: u64 = 0x20;

/// The syscall's `i`-th argument at its entry tracepoint (0 where unreadable).
#[inline(always)]
fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: syscall tracepoint arguments at fixed offsets, read with bpf_probe_read.
    unsafe { ctx.read_at::<u64>(SYSCALL_ARG0 + 8 * i) }.unwrap_or(0)
}

/// Keeps a call of the current thread until its exit tracepoint.
#[inline(always)]
fn pend(ctx: &TracePointContext, p: MemPending) {
    let tid = bpf_get_current_pid_tgid() as u32;
    if MEM_PENDING.insert(&tid, &p, 0).is_err() {
        count_lost(ctx, lost::MEMORY);
    }
}

#[tracepoint]
pub fn mp_mem_mmap_enter(ctx: TracePointContext) -> u32 {
    // Anonymous memory only; a `PROT_NONE` map is address space reserved (glibc's arenas,
    // CUDA's unified address range), not memory.
    if !current_is_target() || arg(&ctx, 3) & MAP_ANONYMOUS == 0 || arg(&ctx, 2) == 0 {
        return 0;
    }
    pend(
        &ctx,
        MemPending {
            source: source::MMAP,
            _pad: 0,
            len: arg(&ctx, 1),
            old_addr: 0,
            old_len: 0,
        },
    );
    0
}

#[tracepoint]
pub fn mp_mem_mremap_enter(ctx: TracePointContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    pend(
        &ctx,
        MemPending {
            source: source::MREMAP,
            _pad: 0,
            len: arg(&ctx, 2),
            old_addr: arg(&ctx, 0),
            old_len: arg(&ctx, 1),
        },
    );
    0
}

#[tracepoint]
pub fn mp_mem_brk_enter(ctx: TracePointContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    pend(
        &ctx,
        MemPending {
            source: source::BRK,
            _pad: 0,
            len: 0,
            old_addr: 0,
            old_len: 0,
        },
    );
    0
}

#[tracepoint]
pub fn mp_mem_munmap(ctx: TracePointContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    let (addr, len) = (arg(&ctx, 0), arg(&ctx, 1));
    send_free(&ctx, addr, len, source::MMAP);
    0
}

/// Sends a `MEM_FREE` record of `len` bytes at `addr` (0: the size is the allocation's).
#[inline(always)]
fn send_free<C: EbpfContext>(ctx: &C, addr: u64, len: u64, src: u32) {
    emit_to(
        ctx,
        &MEMORY,
        wakeup_flags(&MEMORY),
        kind::MEM_FREE,
        addr,
        [len, src as u64, 0, 0, 0, 0, 0, 0],
        lost::MEMORY,
    );
}

/// Sends a `kind` stack event (`MEM_ALLOC`, `PAGE_FAULT`) with the current task's stacks:
/// `weight` bytes (or faults) at `addr`, from `src`.
#[inline(always)]
fn send_stack<C: EbpfContext>(
    ctx: &C,
    pid_tgid: u64,
    event_kind: u32,
    weight: u64,
    addr: u64,
    src: u32,
) {
    let Some(mut entry) = MEMORY.reserve::<StackEvent>(0) else {
        count_lost(ctx, lost::MEMORY);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points into a ring-buffer reservation of size_of::<StackEvent>() bytes.
    unsafe {
        fill(ctx, ev, event_kind, pid_tgid, false);
        (*ev).weight = weight;
        (*ev).mem_addr = addr;
        (*ev).mem_source = src;
    }
    entry.submit(wakeup_flags(&MEMORY));
}

#[tracepoint]
pub fn mp_mem_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: the value is copied out before it is removed.
    let Some(p) = (unsafe { MEM_PENDING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = MEM_PENDING.remove(&tid);
    // SAFETY: the exit tracepoint's return value at its fixed offset.
    let ret = unsafe { ctx.read_at::<i64>(SYSCALL_RET) }.unwrap_or(-1);
    // An error is a small negative number (for `brk`, the old break: no change).
    if (-4095..0).contains(&ret) {
        return 0;
    }
    let ret = ret as u64;
    let (addr, len) = match p.source {
        source::BRK => {
            let tgid = (pid_tgid >> 32) as u32;
            // SAFETY: the value is copied out at once.
            let last = unsafe { BRK_LAST.get(&tgid) }.copied();
            let _ = BRK_LAST.insert(&tgid, &ret, 0);
            match last {
                Some(last) if ret > last => (last, ret - last),
                Some(last) if ret < last => {
                    send_free(&ctx, ret, last - ret, source::BRK);
                    return 0;
                }
                // Unchanged, or the first break seen (`brk(0)`): a baseline.
                _ => return 0,
            }
        }
        source::MREMAP => {
            send_free(&ctx, p.old_addr, p.old_len, source::MREMAP);
            (ret, p.len)
        }
        _ => (ret, p.len),
    };
    send_stack(&ctx, pid_tgid, kind::MEM_ALLOC, len, addr, p.source);
    0
}

#[perf_event]
pub fn mp_page_fault(ctx: PerfEventContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid as u32 == 0 || !crate::maps::is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: a perf_event program's context is a `bpf_perf_event_data` the kernel owns for
    // the duration of the call.
    let (period, addr) = unsafe { ((*ctx.ctx).sample_period, (*ctx.ctx).addr) };
    send_stack(&ctx, pid_tgid, kind::PAGE_FAULT, period, addr, 0);
    0
}

/// `--memory=malloc`: a sampled heap profile. Every allocation's entry takes its bytes off a
/// per-CPU countdown; the one that crosses zero is sampled (its size kept until it returns,
/// then sent with its stacks, its address noted), and the countdown drawn again from an
/// exponential distribution. `free` of a noted address is sent; of any other, a lookup.
#[uprobe]
pub fn mp_heap_enter(ctx: ProbeContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    // SAFETY: called from a uprobe program, whose context the helper accepts.
    let which = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let a = |i| ctx.arg::<u64>(i).unwrap_or(0);
    let size = match which {
        heap_fn::MALLOC => a(0),
        // An overflowing product fails in calloc itself: nothing returns to sample.
        heap_fn::CALLOC => a(0).wrapping_mul(a(1)),
        // `realloc(NULL, n)` is a malloc, which the `malloc` probe sees (glibc calls it).
        heap_fn::REALLOC if a(0) == 0 => return 0,
        heap_fn::REALLOC => {
            heap_free(&ctx, a(0));
            a(1)
        }
        _ => {
            heap_free(&ctx, a(0));
            return 0;
        }
    };
    let Some(left) = HEAP_COUNTDOWN.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot of a per-CPU array; programs on one CPU do not interleave.
    unsafe {
        let draw = || {
            let q = EXP_QUANTILES[(bpf_get_prandom_u32() & 63) as usize] as i64;
            (config().heap_sample_bytes as i64 * q) >> 10
        };
        // A CPU's first allocation starts a countdown rather than being sampled.
        if *left == 0 {
            *left = draw();
        }
        *left -= size as i64;
        if *left > 0 {
            return 0;
        }
        *left = draw();
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    if HEAP_PENDING.insert(&tid, &size, 0).is_err() {
        count_lost(&ctx, lost::MEMORY);
    }
    0
}

/// The `free` of a sampled block: a `MEM_FREE` record (its size is the agent's to know).
#[inline(always)]
fn heap_free(ctx: &ProbeContext, ptr: u64) {
    if ptr == 0 {
        return;
    }
    let key = HeapKey {
        ptr,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
    };
    // SAFETY: only tested for presence.
    if unsafe { HEAP_SAMPLED.get(&key) }.is_none() {
        return;
    }
    let _ = HEAP_SAMPLED.remove(&key);
    send_free(ctx, ptr, 0, source::MALLOC);
}

#[uretprobe]
pub fn mp_heap_exit(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: the value is copied out before it is removed.
    let Some(size) = (unsafe { HEAP_PENDING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = HEAP_PENDING.remove(&tid);
    let ptr: u64 = ctx.ret();
    if ptr == 0 {
        return 0;
    }
    let key = HeapKey {
        ptr,
        pid: (pid_tgid >> 32) as u32,
        _pad: 0,
    };
    if HEAP_SAMPLED.insert(&key, &size, 0).is_err() {
        count_lost(&ctx, lost::MEMORY);
        return 0;
    }
    send_stack(&ctx, pid_tgid, kind::MEM_ALLOC, size, ptr, source::MALLOC);
    0
}

/// A static tracepoint (`--memory`: PyTorch's caching allocator's `pytorch:malloc` and
/// `pytorch:free`): its arguments read as `USDT_SPECS[cookie]` says.
#[uprobe]
pub fn mp_usdt(ctx: ProbeContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    // SAFETY: called from a uprobe program, whose context the helper accepts.
    let slot = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    let Some(spec) = USDT_SPECS.get(slot).copied() else {
        return 0;
    };
    let regs = ctx.regs as u64;
    let mut args = [0u64; MAX_USDT_ARGS];
    for (i, a) in spec.args.iter().enumerate() {
        if i as u32 >= spec.nargs {
            break;
        }
        args[i] = usdt_arg(regs, a);
    }
    match spec.event {
        usdt::event::TORCH_MALLOC => send_stack(
            &ctx,
            bpf_get_current_pid_tgid(),
            kind::MEM_ALLOC,
            args[2],
            args[0],
            source::TORCH,
        ),
        usdt::event::TORCH_FREE => send_free(&ctx, args[0], 0, source::TORCH),
        _ => {}
    }
    0
}

/// One argument of a static tracepoint, sign- or zero-extended from its size.
#[inline(always)]
fn usdt_arg(regs: u64, a: &usdt::UsdtArgSpec) -> u64 {
    let reg = || -> u64 {
        // SAFETY: a uprobe's `pt_regs`, kernel memory valid for the call, read with the
        // faulting-safe helper at an offset the agent took from the register's name.
        unsafe { bpf_probe_read_kernel((regs + (a.regs_off & 0xff8) as u64) as *const u64) }
            .unwrap_or(0)
    };
    let raw = match a.kind {
        usdt::arg::CONST => return a.value as u64,
        usdt::arg::REG => reg(),
        usdt::arg::MEM => {
            let at = reg().wrapping_add(a.value as u64);
            // SAFETY: user memory, read with the faulting-safe helper.
            unsafe { bpf_probe_read_user(at as *const u64) }.unwrap_or(0)
        }
        _ => return 0,
    };
    match a.size {
        1 => raw & 0xff,
        2 => raw & 0xffff,
        4 => raw & 0xffff_ffff,
        -1 => raw as u8 as i8 as i64 as u64,
        -2 => raw as u16 as i16 as i64 as u64,
        -4 => raw as u32 as i32 as i64 as u64,
        _ => raw,
    }
}
