//! Whole user stacks without frame pointers: a walk through the CFI tables the agent built
//! (see `modelprobe_common::unwind`), from the current task's user registers.
//!
//! Each step finds the mapping that holds the address (binary search in the process's sorted
//! mappings), the row that covers it (binary search in that object's sorted rows), computes
//! the CFA from the row's rule, reads the return address at CFA - 8 and, where the row says
//! so, the caller's `%rbp`. Addresses with no row are stepped by frame pointer (JIT code, a
//! gap between functions); a signal trampoline continues in the interrupted code. Only
//! addresses leave the kernel. x86-64 only; elsewhere, and for a process without tables, the
//! caller falls back to the kernel's frame-pointer walk.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use modelprobe_common::{
    flags,
    unwind::{
        cfa, rbp, UnwindMapping, UnwindProc, UnwindRow, DEFAULT_UNWIND_ROWS, MAPPING_SEARCH_STEPS,
        MAX_UNWIND_MAPPINGS, MAX_UNWIND_PROCS, ROW_SEARCH_STEPS,
    },
    StackEvent, MAX_STACK_DEPTH,
};

use crate::maps::config;

/// Every object's rows (the agent sizes it at load and writes it through mmap).
#[map]
pub(crate) static UNWIND_ROWS: Array<UnwindRow> =
    Array::with_max_entries(DEFAULT_UNWIND_ROWS, BPF_F_MMAPABLE);

/// [`MAX_UNWIND_MAPPINGS`] mappings per process slot.
#[map]
pub(crate) static UNWIND_MAPPINGS: Array<UnwindMapping> =
    Array::with_max_entries(MAX_UNWIND_PROCS * MAX_UNWIND_MAPPINGS, BPF_F_MMAPABLE);

/// Process id to its slot in `UNWIND_MAPPINGS`.
#[map]
pub(crate) static UNWIND_PROCS: HashMap<u32, UnwindProc> =
    HashMap::with_max_entries(MAX_UNWIND_PROCS, 0);

/// Offsets in the `ucontext_t` a signal trampoline's stack pointer points at:
/// `uc_mcontext.gregs[REG_RBP]`, `[REG_RSP]` and `[REG_RIP]` (40 bytes of flags, link and
/// `stack_t` come first).
const UC_RBP: u64 = 40 + 10 * 8;
const UC_RSP: u64 = 40 + 15 * 8;
const UC_RIP: u64 = 40 + 16 * 8;

/// Pending uretprobes of the task read before the walk, innermost first (a stack seldom holds
/// more than two: a probed allocator inside a probed call).
const PENDING_RETURNS: usize = 4;

/// The walk's state from one frame to the next, on the BPF stack of the program taking the
/// stack; [`unwind_frame`] gets a pointer to it.
#[repr(C)]
struct Walk {
    ip: u64,
    sp: u64,
    bp: u64,
    /// 0 for an exact address (the interrupted instruction), 1 for a return address: the call
    /// itself is the instruction before.
    adjust: u64,
    /// The process's slot in `UNWIND_MAPPINGS` and its mapping count.
    base: u32,
    len: u32,
    /// [`flags`] bits so far.
    bits: u32,
    /// Frames written.
    n: u32,
    /// 1 once the walk reached the outermost frame (or stopped on purpose).
    whole: u32,
    _pad: u32,
}

/// The task's pending uretprobes, per CPU, read before the walk (innermost first): the stack
/// slots whose return address each replaced with the uprobe trampoline (0: none), then the
/// real return addresses. Matched by slot, so a stale one (left by a longjmp) matches nothing
/// and of a tail-call chain sharing a slot the innermost, which holds the real address too,
/// comes first. In a map, not the walk's state: the verifier need not follow their values.
#[map]
static PENDING_RETURN_SLOTS: PerCpuArray<[u64; 2 * PENDING_RETURNS]> =
    PerCpuArray::with_max_entries(1, 0);

/// The frames of the walk in progress, per CPU: [`unwind_frame`] writes here (a callback
/// cannot be handed the event), [`unwind_user`] copies them into the event.
#[map]
static UNWIND_FRAMES: PerCpuArray<[u64; MAX_STACK_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// Unwinds the current task's user stack into `ev.ustack` with the tables of process `pid`;
/// false (nothing written) when the process has none or its registers cannot be read.
///
/// Each frame is one call of [`unwind_frame`] from `bpf_loop`: the verifier checks the frame
/// once, not once per frame of the deepest stack, so programs load in milliseconds.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn unwind_user(ev: &mut StackEvent, pid: u32) -> bool {
    // SAFETY: the value is copied out at once.
    let Some(proc_) = (unsafe { UNWIND_PROCS.get(&pid) }).copied() else {
        return false;
    };
    let Some((ip, sp, bp)) = user_regs() else {
        return false;
    };
    if proc_.len > MAX_UNWIND_MAPPINGS {
        return false;
    }
    let mut walk = Walk {
        ip,
        sp,
        bp,
        adjust: 0,
        base: proc_.slot.wrapping_mul(MAX_UNWIND_MAPPINGS),
        len: proc_.len,
        bits: flags::USTACK_CFI,
        n: 0,
        whole: 0,
        _pad: 0,
    };
    pending_uretprobes();
    // SAFETY: bpf_loop calls `unwind_frame` (a static function of this program) at most
    // MAX_STACK_DEPTH times with a pointer to `walk`, which outlives the call.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_STACK_DEPTH as u32,
            unwind_frame as *const () as *mut core::ffi::c_void,
            (&mut walk as *mut Walk).cast(),
            0,
        );
    }
    let Some(frames) = UNWIND_FRAMES.get_ptr(0) else {
        return false;
    };
    // SAFETY: both are MAX_STACK_DEPTH words: this CPU's frames and the event's stack.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            ev.ustack.as_mut_ptr().cast(),
            (MAX_STACK_DEPTH * 8) as u32,
            frames.cast(),
        );
    }
    let n = if walk.n as usize > MAX_STACK_DEPTH {
        MAX_STACK_DEPTH as u32
    } else {
        walk.n
    };
    if walk.whole == 0 && n as usize == MAX_STACK_DEPTH {
        walk.bits |= flags::USTACK_TRUNCATED;
    }
    ev.ustack_len = n;
    ev.flags |= walk.bits;
    true
}

/// One frame of the walk (a `bpf_loop` callback): records `walk.ip` and steps to the caller.
/// Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn unwind_frame(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` unwind_user handed to bpf_loop, alive for the loop.
    let w = unsafe { &mut *(ctx as *mut Walk) };
    match step(w, i) {
        Some(()) => 0,
        None => 1,
    }
}

/// Records `w.ip` as frame `i` and moves `w` to the caller; `None` when the walk is over.
#[inline(always)]
fn step(w: &mut Walk, i: u64) -> Option<()> {
    let frames = UNWIND_FRAMES.get_ptr_mut(0)?;
    let (mut ip, mut sp, mut bp) = (w.ip, w.sp, w.bp);
    if ip == 0 {
        w.whole = 1;
        return None;
    }
    let (base, len) = (w.base, w.len);
    // SAFETY: the index is masked below MAX_STACK_DEPTH (127 < 128) and `frames` is this
    // CPU's array of MAX_STACK_DEPTH words.
    unsafe {
        let at = (i & 127) as usize;
        if at < MAX_STACK_DEPTH {
            (*frames)[at] = ip;
        }
    }
    w.n = (i + 1) as u32;
    let pc = ip - w.adjust;
    let row = find_row(base, len, pc);
    let rule = row.map_or(cfa::NONE, |r| r.cfa);
    let cfa_addr = match rule {
        cfa::END => {
            w.whole = 1;
            return None;
        }
        cfa::SIGNAL => {
            w.ip = read(sp + UC_RIP)?;
            w.sp = read(sp + UC_RSP)?;
            w.bp = read(sp + UC_RBP)?;
            w.adjust = 0;
            return Some(());
        }
        cfa::NONE => {
            // The innermost frame in code with tables but not covered by them: its caller by
            // a validated scan.
            let scanned = if i == 0 && find_mapping(base, len, pc).is_some() {
                scan(base, len, sp)
            } else {
                None
            };
            if let Some(slot) = scanned {
                w.bits |= flags::USTACK_SCANNED;
                slot + 8
            } else {
                w.bits |= flags::USTACK_NO_UNWIND_INFO;
                if bp == 0 {
                    w.whole = 1;
                    return None;
                }
                // The frame-pointer step: CFA = %rbp + 16, the caller's %rbp at %rbp.
                let saved = read(bp)?;
                let next = bp + 16;
                bp = saved;
                next
            }
        }
        cfa::RSP | cfa::RBP | cfa::PLT => {
            let r = row?;
            let reg = if rule == cfa::RBP { bp } else { sp };
            let mut at = reg.wrapping_add(r.cfa_offset as i64 as u64);
            if rule == cfa::PLT {
                at = sp + 8;
                if (ip & 15) >= r.plt_threshold as u64 {
                    at += 8;
                }
            }
            if r.rbp == rbp::AT_CFA {
                bp = read(at.wrapping_add(r.rbp_offset as i64 as u64))?;
            }
            at
        }
        _ => {
            w.bits |= flags::USTACK_UNSUPPORTED;
            w.whole = 1;
            return None;
        }
    };
    // The stack grows down: a caller's frame is above. Anything else is a bad rule or a
    // corrupt frame; stop rather than invent frames.
    if cfa_addr <= sp {
        w.bits |= flags::USTACK_UNSUPPORTED;
        w.whole = 1;
        return None;
    }
    let slot = cfa_addr - 8;
    let mut ra = read(slot)?;
    if let Some(pending) = PENDING_RETURN_SLOTS.get_ptr(0) {
        // SAFETY: this CPU's slot, written by `pending_uretprobes` before the walk.
        let pending = unsafe { &*pending };
        for k in 0..PENDING_RETURNS {
            if pending[k] == slot {
                ra = pending[PENDING_RETURNS + k];
                break;
            }
        }
    }
    sp = cfa_addr;
    ip = ra;
    w.ip = ip;
    w.sp = sp;
    w.bp = bp;
    w.adjust = 1;
    Some(())
}

#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn unwind_user(_ev: &mut StackEvent, _pid: u32) -> bool {
    false
}

/// The current task's user `%rip`, `%rsp` and `%rbp` (from its saved registers, whatever the
/// program interrupted).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn user_regs() -> Option<(u64, u64, u64)> {
    use aya_ebpf::{
        bindings::pt_regs,
        helpers::{
            bpf_probe_read_kernel,
            generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
        },
    };
    // SAFETY: both helpers take and return kernel pointers the verifier tracks; the registers
    // are copied with a faulting-safe read.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        if regs.is_null() {
            return None;
        }
        let r: pt_regs = bpf_probe_read_kernel(regs).ok()?;
        Some((r.rip, r.rsp, r.rbp))
    }
}

/// One user word; `None` where it cannot be read.
#[inline(always)]
fn read_kernel(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_kernel fails cleanly on a bad address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const u64) }.ok()
}

/// Reads the current task's pending uretprobes (`utask->return_instances`, innermost first)
/// into this CPU's `PENDING_RETURN_SLOTS`; zeros where there are fewer (or none, or the kernel
/// did not say where they are). Straight-line, so the walk after it is verified once.
#[inline(always)]
fn pending_uretprobes() {
    let Some(out) = PENDING_RETURN_SLOTS.get_ptr_mut(0) else {
        return;
    };
    let cfg = config();
    let known = cfg.task_utask_off != u32::MAX;
    // SAFETY: no preconditions; the pointer is only read through bpf_probe_read_kernel.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let utask = if known {
        read_kernel(task + cfg.task_utask_off as u64).unwrap_or(0)
    } else {
        0
    };
    // A read at a small address fails: each step after the list's end gives zeros.
    let mut ri = read_kernel(utask.wrapping_add(cfg.utask_instances_off as u64)).unwrap_or(0);
    for k in 0..PENDING_RETURNS {
        let slot = read_kernel(ri.wrapping_add(cfg.ri_stack_off as u64)).unwrap_or(0);
        let addr = read_kernel(ri.wrapping_add(cfg.ri_orig_ret_off as u64)).unwrap_or(0);
        // SAFETY: this CPU's slot of the map; programs on one CPU do not interleave.
        unsafe {
            (*out)[k] = if ri == 0 { 0 } else { slot };
            (*out)[PENDING_RETURNS + k] = addr;
        }
        ri = read_kernel(ri.wrapping_add(cfg.ri_next_off as u64)).unwrap_or(0);
    }
}

fn read(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user fails cleanly on a bad address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const u64) }.ok()
}

/// 1 if `a <= b`, else 0, for values below 2^32, computed without a branch: a branch per
/// search step would double the verifier's paths at every step of every frame.
#[inline(always)]
fn le(a: u64, b: u64) -> u64 {
    (b.wrapping_sub(a) >> 63) ^ 1
}

/// Index of the last of `n` entries at or below `key` from `first`, by a binary search of
/// `STEPS` halvings (`first` itself when none is: the caller checks it); `None` only where the
/// map refuses an index. Branchless but for the lookups: the comparison is arithmetic.
#[inline(always)]
fn search<T: Keyed, const STEPS: u32>(map: &Array<T>, first: u32, n: u32, key: u64) -> Option<u32> {
    let mut base = first as u64;
    let mut n = n as u64;
    for _ in 0..STEPS {
        let half = n >> 1;
        let v = map.get((base + half) as u32)?.key();
        // base += half when the probe is at or below the key.
        base += half & le(v, key).wrapping_neg();
        n -= half;
    }
    Some(base as u32)
}

/// What [`search`] orders entries by.
trait Keyed {
    fn key(&self) -> u64;
}

impl Keyed for UnwindRow {
    fn key(&self) -> u64 {
        self.pc as u64
    }
}

impl Keyed for UnwindMapping {
    fn key(&self) -> u64 {
        self.start
    }
}

/// The mapping with tables that holds `pc`, in the process whose mappings start at slot
/// index `base`.
#[inline(always)]
fn find_mapping(base: u32, len: u32, pc: u64) -> Option<UnwindMapping> {
    if len == 0 {
        return None;
    }
    let i = search::<_, MAPPING_SEARCH_STEPS>(&UNWIND_MAPPINGS, base, len, pc)?;
    let m = *UNWIND_MAPPINGS.get(i)?;
    if pc < m.start || pc >= m.end || m.rows_len == 0 {
        return None;
    }
    Some(m)
}

/// Words above the stack pointer [`scan`] looks at (a power of two: the index is masked).
const SCAN_WORDS: u64 = 32;

/// The address of the innermost frame's return address, for code its object has no CFI for
/// (hand-written assembly such as BLAS kernels, which also use `%rbp` as a plain register):
/// the first of [`SCAN_WORDS`] words above `sp` that points into code with tables right after
/// a call instruction, and whose own caller, one CFI step further, is again right after a
/// call. A word that merely looks like code is not taken, nor a stale return address left in
/// the leaf's scratch space by an earlier call (its "caller" is whatever lies above it).
///
/// Each word is one call of [`scan_word`] from `bpf_loop`: with the CFI step of the check,
/// unrolling the words would quadruple the sampling program's verification.
#[inline(always)]
fn scan(base: u32, len: u32, sp: u64) -> Option<u64> {
    let mut s = Scan {
        base,
        len,
        sp,
        found: 0,
    };
    // SAFETY: bpf_loop calls `scan_word` (a static function of this program) at most
    // SCAN_WORDS times with a pointer to `s`, which outlives the call.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            SCAN_WORDS as u32,
            scan_word as *const () as *mut core::ffi::c_void,
            (&mut s as *mut Scan).cast(),
            0,
        );
    }
    // SAFETY: `s` is a live local; read through the pointer the callback wrote by, so the
    // compiler cannot assume it unchanged.
    let found = unsafe { core::ptr::read_volatile(&s.found) };
    (found != 0).then_some(found)
}

/// What [`scan_word`] reads and answers.
#[repr(C)]
struct Scan {
    base: u32,
    len: u32,
    sp: u64,
    /// The address of the return address found; 0 while none is.
    found: u64,
}

/// Word `k` above the stack pointer (a `bpf_loop` callback): 1, to stop, once it holds a
/// plausible return address.
#[inline(never)]
extern "C" fn scan_word(k: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let s = ctx as *mut Scan;
    // SAFETY: `ctx` is the `Scan` scan handed to bpf_loop, alive for the loop.
    let (base, len, sp) = unsafe { ((*s).base, (*s).len, (*s).sp) };
    let at = sp + 8 * (k & (SCAN_WORDS - 1));
    let word = read(at).unwrap_or(0);
    if word <= 8 || !after_call(word) {
        return 0;
    }
    let Some(m) = find_mapping(base, len, word) else {
        return 0;
    };
    if caller_plausible(&m, word, at + 8) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&mut (*s).found, at) };
        return 1;
    }
    0
}

/// One CFI step from a candidate return address `ra` whose frame's stack pointer would be
/// `sp`: true when that frame's own return address follows a call, or when the step cannot
/// be checked (no row, a rule relative to `%rbp`, which the leaf may have reused, or a frame
/// whose caller is the end of the stack).
#[inline(always)]
fn caller_plausible(m: &UnwindMapping, ra: u64, sp: u64) -> bool {
    // The call is in the mapping of its return address.
    let Some(r) = row_in(m, ra - 1) else {
        return true;
    };
    if r.cfa != cfa::RSP {
        return true;
    }
    let cfa_addr = sp.wrapping_add(r.cfa_offset as i64 as u64);
    if cfa_addr <= sp {
        return false;
    }
    match read(cfa_addr - 8) {
        Some(next) => next > 8 && after_call(next),
        None => false,
    }
}

/// True if the instruction before `ra` is a call: `call rel32` (e8, 5 bytes) or `call` through
/// a register or memory (ff /2: 2, 3, 6 or 7 bytes).
#[inline(always)]
fn after_call(ra: u64) -> bool {
    let Some(code) = read(ra - 8) else {
        return false;
    };
    // The byte `back` bytes before `ra`.
    let at = |back: u64| (code >> (8 * (8 - back))) as u8;
    let indirect = |len: u64| at(len) == 0xff && (at(len - 1) >> 3) & 7 == 2;
    at(5) == 0xe8 || indirect(2) || indirect(3) || indirect(6) || indirect(7)
}

/// The row covering `pc` in the process whose mappings start at slot index `base`.
#[inline(always)]
fn find_row(base: u32, len: u32, pc: u64) -> Option<UnwindRow> {
    row_in(&find_mapping(base, len, pc)?, pc)
}

/// The row covering `pc` in mapping `m`.
#[inline(always)]
fn row_in(m: &UnwindMapping, pc: u64) -> Option<UnwindRow> {
    let rel = pc.wrapping_sub(m.bias);
    if rel > u32::MAX as u64 {
        return None;
    }
    let j = search::<_, ROW_SEARCH_STEPS>(&UNWIND_ROWS, m.rows_start, m.rows_len, rel)?;
    let r = *UNWIND_ROWS.get(j)?;
    if r.pc as u64 > rel {
        return None;
    }
    Some(r)
}
