//! Writers of the three record types: [`fill`] a `StackEvent` (ids, time, stacks), [`emit`] a
//! fixed-size `Record` into `RECORDS` or `LIFECYCLE`, and [`emit_data`] a `DataRecord` with a
//! user-memory payload. Each counts what it cannot send.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_RB_FORCE_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes, generated::bpf_get_stack,
    },
    maps::RingBuf,
    EbpfContext,
};
use aya_log_ebpf::debug;
use modelprobe_common::{
    flags, kind, DataHeader, Record, StackEvent, DATA_CAPTURE, DATA_HEADER, MAX_STACK_DEPTH,
};

use crate::maps::{count_lost, wakeup_flags, DATA_SCRATCH, LIFECYCLE, RECORDS};

const STACK_BYTES: u32 = (MAX_STACK_DEPTH * size_of::<u64>()) as u32;

/// Fills everything but `weight`, `probe` and the user registers: ids, time, name, the user
/// stack, the Python frames of a known interpreter and, `with_kernel`, the kernel stack (a uprobe's is only the probe machinery: not worth
/// a walk).
///
/// # Safety
/// `ev` must point to writable memory of at least `size_of::<StackEvent>()` bytes.
#[inline(always)]
pub(crate) unsafe fn fill<C: EbpfContext>(
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
    ev.probe = 0;
    ev.mem_source = 0;
    ev.mem_addr = 0;
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
        debug!(ctx, "kernel stack read failed ({})", k);
    } else {
        ev.kstack_len = (k as u32) / 8;
    }
    if !crate::unwind::unwind_user(ev, ev.pid) {
        // No tables for this process (or not x86-64): the kernel's frame-pointer walk.
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
            debug!(ctx, "user stack read failed ({})", u);
        } else {
            ev.ustack_len = (u as u32) / 8;
        }
    }
    crate::python::python_stack(ev, ev.pid, ev.tid);
}

/// Reserves and fills a record for the current task, in `RECORDS` for spans and in
/// `LIFECYCLE` for the rest; `None` (counted as lost) when full.
#[inline(always)]
pub(crate) fn emit<C: EbpfContext>(
    ctx: &C,
    record_kind: u32,
    id: u64,
    args: [u64; 8],
    lost_index: u32,
) -> Option<()> {
    let span = record_kind == kind::SPAN_ENTER || record_kind == kind::SPAN_EXIT;
    let ring = if span { &RECORDS } else { &LIFECYCLE };
    let flags = lifecycle_or_batch(ring, !span);
    emit_to(ctx, ring, flags, record_kind, id, args, lost_index)
}

/// [`emit`] into `ring`, submitted with `submit_flags`.
#[inline(always)]
pub(crate) fn emit_to<C: EbpfContext>(
    ctx: &C,
    ring: &RingBuf,
    submit_flags: u64,
    record_kind: u32,
    id: u64,
    args: [u64; 8],
    lost_index: u32,
) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(mut entry) = ring.reserve::<Record>(0) else {
        count_lost(ctx, lost_index);
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
    entry.submit(submit_flags);
    Some(())
}

/// Submit flags: lifecycle records wake the agent at once when it has probes to attach to new
/// processes (`Config::lifecycle_wakeup`); everything else waits for the batch.
#[inline(always)]
pub(crate) fn lifecycle_or_batch(ring: &RingBuf, lifecycle: bool) -> u64 {
    if lifecycle && crate::maps::config().lifecycle_wakeup != 0 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        wakeup_flags(ring)
    }
}

/// Where a [`emit_data`] payload comes from.
#[derive(Clone, Copy)]
pub(crate) enum Payload {
    /// `count` bytes at this user address (at most `DATA_CAPTURE` are kept).
    Bytes(u64),
    /// A NUL-terminated string at this user address.
    Str(u64),
}

/// Copies up to DATA_CAPTURE bytes of user memory into a record and sends the header plus
/// those bytes. `count` and `fd` go into the header as they are (see `DataHeader`).
#[inline(always)]
pub(crate) fn emit_data<C: EbpfContext>(
    ctx: &C,
    record_kind: u32,
    fd: u32,
    probe: u32,
    src: Payload,
    count: u64,
    lost_index: u32,
) {
    let Some(scratch) = DATA_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `scratch` is this CPU's slot, a whole DataRecord; programs on one CPU do not
    // interleave.
    let r = unsafe { &mut *scratch };
    let pid_tgid = bpf_get_current_pid_tgid();
    r.header = DataHeader {
        kind: record_kind,
        // SAFETY: no preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        count,
        fd,
        len: 0,
        probe,
        _pad: 0,
    };
    let mut len = if count > DATA_CAPTURE as u64 {
        DATA_CAPTURE
    } else {
        count as usize
    };
    match src {
        Payload::Str(src) => {
            // SAFETY: bpf_probe_read_user_str faults safely on bad user pointers.
            len = match unsafe { bpf_probe_read_user_str_bytes(src as *const u8, &mut r.data) } {
                Ok(s) => s.len(),
                Err(e) => {
                    debug!(ctx, "reading a user string failed ({})", e);
                    0
                }
            };
        }
        Payload::Bytes(src) if len > 0 => {
            let Some(dst) = r.data.get_mut(..len) else {
                return;
            };
            // SAFETY: bpf_probe_read_user faults safely on bad user pointers.
            if let Err(e) = unsafe { bpf_probe_read_user_buf(src as *const u8, dst) } {
                debug!(ctx, "reading user bytes failed ({})", e);
                len = 0;
            }
        }
        Payload::Bytes(_) => {}
    }
    if len > DATA_CAPTURE {
        len = DATA_CAPTURE;
    }
    r.header.len = len as u32;
    // SAFETY: the slice covers the header and the first `len` payload bytes of the scratch
    // record, all within its DATA_HEADER + DATA_CAPTURE bytes.
    let bytes = unsafe { core::slice::from_raw_parts(scratch as *const u8, DATA_HEADER + len) };
    if RECORDS
        .output::<[u8]>(bytes, wakeup_flags(&RECORDS))
        .is_err()
    {
        count_lost(ctx, lost_index);
    }
}
