//! What a target writes to stdout/stderr (`mp_sys_write`, `mp_sys_writev`) and the files it
//! opens (`mp_sys_openat`), from syscall-entry tracepoints, as `LOG` and `OPEN` `DataRecord`s.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::debug;
use modelprobe_common::{kind, lost};

use crate::{
    emit::{emit_data, Payload},
    maps::current_is_target,
};

/// Offsets of a syscall tracepoint's arguments: `struct syscall_trace_enter` is the common
/// header, `int nr` at 8, then `unsigned long args[6]` from 16, on every kernel.
const SYSCALL_ARG0: usize = 16;

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
pub fn mp_sys_write(ctx: TracePointContext) -> u32 {
    match try_sys_write(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_sys_write: reading the arguments failed ({})", e);
            0
        }
    }
}

fn try_sys_write(ctx: &TracePointContext) -> Result<u32, i64> {
    if !current_is_target() {
        return Ok(0);
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
        emit_data(
            ctx,
            kind::LOG,
            fd as u32,
            0,
            Payload::Bytes(buf),
            count,
            lost::LOG,
        );
    }
    Ok(0)
}

#[tracepoint]
pub fn mp_sys_writev(ctx: TracePointContext) -> u32 {
    match try_sys_writev(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_sys_writev: reading the arguments failed ({})", e);
            0
        }
    }
}

fn try_sys_writev(ctx: &TracePointContext) -> Result<u32, i64> {
    if !current_is_target() {
        return Ok(0);
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
        return Ok(0);
    }
    for i in 0..MAX_IOVECS {
        if i >= vlen {
            break;
        }
        // SAFETY: reads the user's iovec array with a faulting-safe helper.
        let iov: IoVec = unsafe { bpf_probe_read_user((vec + i * 16) as *const IoVec)? };
        emit_data(
            ctx,
            kind::LOG,
            fd as u32,
            0,
            Payload::Bytes(iov.base),
            iov.len,
            lost::LOG,
        );
    }
    Ok(0)
}

#[tracepoint]
pub fn mp_sys_openat(ctx: TracePointContext) -> u32 {
    match try_sys_openat(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_sys_openat: reading the arguments failed ({})", e);
            0
        }
    }
}

fn try_sys_openat(ctx: &TracePointContext) -> Result<u32, i64> {
    if !current_is_target() {
        return Ok(0);
    }
    // SAFETY: syscall tracepoint arguments at fixed offsets, read with bpf_probe_read.
    let (path, open_flags) = unsafe {
        (
            ctx.read_at::<u64>(SYSCALL_ARG0 + 8)?,
            ctx.read_at::<u64>(SYSCALL_ARG0 + 16)?,
        )
    };
    emit_data(
        ctx,
        kind::OPEN,
        0,
        0,
        Payload::Str(path),
        open_flags,
        lost::OPEN,
    );
    Ok(0)
}
