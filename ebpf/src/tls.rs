//! TLS plaintext of a target's `SSL_read`/`SSL_write` calls (OpenSSL and its ABI twins), as
//! `TlsRecord`s in the `TLS` ring: `mp_tls_enter` (uprobe) keeps the call's buffer by thread and
//! direction (Node writes from inside a read, in the handshake's callback),
//! `mp_tls_exit` (uretprobe) sends the bytes the call actually moved, and `mp_tls_free`
//! (uprobe on `SSL_free`) says a connection ended.
//!
//! The attach cookie is a `tls_fn` constant. Bytes are read at return, not entry: a
//! non-blocking `SSL_write` that fails with `WANT_WRITE` is retried with the same buffer, and a
//! read's buffer only holds data once it returns. One call is sent as up to `MAX_TLS_CHUNKS`
//! records (its head, and its tail when longer): what lies between is not sent, and the agent
//! counts it from `call_len`.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_buf, generated::bpf_get_attach_cookie,
    },
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use aya_log_ebpf::debug;
use modelprobe_common::{
    kind, lost, plain_source, tls_dir, tls_fn, TlsPending, TlsSkipKey, DATA_CAPTURE,
    MAX_TLS_CHUNKS, TLS_HEADER,
};

use crate::maps::{
    count_lost, current_is_target, wakeup_flags, TLS, TLS_PENDING, TLS_SCRATCH, TLS_SKIP,
};

#[uprobe]
pub fn mp_tls_enter(ctx: ProbeContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    // SAFETY: called from a uprobe program, whose context the helper accepts.
    let which = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let direction = direction_of(which);
    let key = pending_key(direction);
    if let Some(p) = TLS_PENDING.get_ptr_mut(&key) {
        // A read made by a read (an `SSL_read` built on `SSL_read_ex`): the outer one sends
        // the bytes. (A write made inside a read, as Node does from the handshake's callback,
        // has a key of its own.)
        // SAFETY: the entry is only read and written by this thread's own probes.
        unsafe { (*p).nested += 1 };
        return 0;
    }
    let a = |i| ctx.arg::<u64>(i).unwrap_or(0);
    let ex = which == tls_fn::WRITE_EX || which == tls_fn::READ_EX;
    let pending = TlsPending {
        conn: a(0),
        buf: a(1),
        count_out: if ex { a(3) } else { 0 },
        fd: 0,
        direction,
        nested: 0,
    };
    if TLS_PENDING.insert(&key, &pending, 0).is_err() {
        count_lost(&ctx, lost::TLS_TABLE_FULL);
    }
    0
}

/// The `tls_dir` of a `tls_fn`.
#[inline(always)]
fn direction_of(which: u64) -> u32 {
    if which == tls_fn::WRITE || which == tls_fn::WRITE_EX {
        tls_dir::WRITE
    } else {
        tls_dir::READ
    }
}

/// The `TLS_PENDING` key of the current thread's call in `direction`.
#[inline(always)]
fn pending_key(direction: u32) -> u64 {
    (bpf_get_current_pid_tgid() & 0xffff_ffff) | (u64::from(direction) << 32)
}

#[uretprobe]
pub fn mp_tls_exit(ctx: RetProbeContext) -> u32 {
    match try_tls_exit(&ctx) {
        Ok(ret) => ret,
        Err(e) => {
            debug!(&ctx, "mp_tls_exit failed ({})", e);
            0
        }
    }
}

fn try_tls_exit(ctx: &RetProbeContext) -> Result<u32, i64> {
    if !current_is_target() {
        return Ok(0);
    }
    // SAFETY: called from a uretprobe program, whose context the helper accepts.
    let which = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let direction = direction_of(which);
    let key = pending_key(direction);
    let Some(p) = TLS_PENDING.get_ptr_mut(&key) else {
        return Ok(0);
    };
    // SAFETY: the entry is only read and written by this thread's own probes; it is copied
    // out before it is removed.
    let pending = unsafe {
        if (*p).nested > 0 {
            (*p).nested -= 1;
            return Ok(0);
        }
        *p
    };
    let _ = TLS_PENDING.remove(&key);
    let ret: i64 = ctx.ret::<i64>() as i32 as i64;
    let moved = if pending.count_out != 0 {
        if ret != 1 {
            return Ok(0);
        }
        // SAFETY: faulting-safe read of the caller's `size_t *` out-parameter.
        unsafe { bpf_probe_read_user(pending.count_out as *const u64)? }
    } else if ret > 0 {
        ret as u64
    } else {
        return Ok(0);
    };
    send(ctx, &pending, moved, plain_source::TLS);
    Ok(0)
}

/// Sends the `moved` bytes at `pending.buf`: the first `MAX_TLS_CHUNKS - 1` pieces and, when
/// they do not reach the end, the last piece; or only their count, when the agent asked for
/// them to be skipped (`TLS_SKIP`) and the whole call lies within what it asked.
#[inline(always)]
pub(crate) fn send<C: EbpfContext>(ctx: &C, pending: &TlsPending, moved: u64, source: u32) {
    let Some(scratch) = TLS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let skip = TlsSkipKey {
        pid: (pid_tgid >> 32) as u32,
        direction: pending.direction as u16,
        source: source as u16,
        conn: pending.conn,
    };
    if let Some(left) = TLS_SKIP.get_ptr_mut(&skip) {
        // SAFETY: the entry is only written by this connection's calls (one at a time per
        // direction) and by the agent, which only inserts.
        let left_now = unsafe { *left };
        if left_now >= moved {
            if left_now == moved {
                let _ = TLS_SKIP.remove(&skip);
            } else {
                // SAFETY: as above.
                unsafe { *left = left_now - moved };
            }
            header_only(
                ctx,
                kind::TLS_SKIPPED,
                pending.conn,
                moved,
                pending.direction,
                source,
            );
            return;
        }
        // The call runs past what was asked: send it whole, and skip no more.
        let _ = TLS_SKIP.remove(&skip);
    }
    let piece = DATA_CAPTURE as u64;
    let pieces = moved.div_ceil(piece);
    for i in 0..MAX_TLS_CHUNKS as u64 {
        if i >= pieces {
            break;
        }
        let offset = if i == MAX_TLS_CHUNKS as u64 - 1 && pieces > MAX_TLS_CHUNKS as u64 {
            moved - piece
        } else {
            i * piece
        };
        let left = moved - offset;
        let len = if left > piece {
            DATA_CAPTURE
        } else {
            left as usize
        };
        // SAFETY: `scratch` is this CPU's slot, a whole TlsRecord; programs on one CPU do not
        // interleave.
        let r = unsafe { &mut *scratch };
        r.kind = kind::TLS_DATA;
        // SAFETY: no preconditions.
        r.cpu = unsafe { bpf_get_smp_processor_id() };
        r.pid = (pid_tgid >> 32) as u32;
        r.tid = pid_tgid as u32;
        // SAFETY: no preconditions.
        r.time_ns = unsafe { bpf_ktime_get_ns() };
        r.conn = pending.conn;
        r.call_len = moved;
        r.offset = offset as u32;
        r.direction = pending.direction;
        r.source = source;
        let Some(dst) = r.data.get_mut(..len) else {
            return;
        };
        // SAFETY: bpf_probe_read_user faults safely on bad user pointers.
        let len = match unsafe { bpf_probe_read_user_buf((pending.buf + offset) as *const u8, dst) }
        {
            Ok(()) => len,
            Err(e) => {
                debug!(ctx, "reading TLS plaintext failed ({})", e);
                0
            }
        };
        r.len = len as u32;
        let len = if len > DATA_CAPTURE {
            DATA_CAPTURE
        } else {
            len
        };
        // SAFETY: the slice covers the header and the first `len` payload bytes of the scratch
        // record, all within its TLS_HEADER + DATA_CAPTURE bytes.
        let bytes = unsafe { core::slice::from_raw_parts(scratch as *const u8, TLS_HEADER + len) };
        if TLS.output::<[u8]>(bytes, wakeup_flags(&TLS)).is_err() {
            count_lost(ctx, lost::TLS);
        }
    }
}

#[uprobe]
pub fn mp_tls_free(ctx: ProbeContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    close(&ctx, ctx.arg::<u64>(0).unwrap_or(0), plain_source::TLS);
    0
}

/// Sends the end of connection `conn`, and forgets any skip asked for it.
#[inline(always)]
pub(crate) fn close<C: EbpfContext>(ctx: &C, conn: u64, source: u32) {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    for direction in [tls_dir::WRITE, tls_dir::READ] {
        let _ = TLS_SKIP.remove(&TlsSkipKey {
            pid,
            direction: direction as u16,
            source: source as u16,
            conn,
        });
    }
    header_only(ctx, kind::TLS_CLOSE, conn, 0, 0, source);
}

/// Sends a record without bytes: a close, or the count of a skipped call.
#[inline(always)]
fn header_only<C: EbpfContext>(
    ctx: &C,
    record_kind: u32,
    conn: u64,
    call_len: u64,
    direction: u32,
    source: u32,
) {
    let Some(scratch) = TLS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: this CPU's scratch slot, a whole TlsRecord.
    let r = unsafe { &mut *scratch };
    r.kind = record_kind;
    // SAFETY: no preconditions.
    r.cpu = unsafe { bpf_get_smp_processor_id() };
    r.pid = (pid_tgid >> 32) as u32;
    r.tid = pid_tgid as u32;
    // SAFETY: no preconditions.
    r.time_ns = unsafe { bpf_ktime_get_ns() };
    r.conn = conn;
    r.call_len = call_len;
    r.offset = 0;
    r.len = 0;
    r.direction = direction;
    r.source = source;
    // SAFETY: the header part of the scratch record.
    let bytes = unsafe { core::slice::from_raw_parts(scratch as *const u8, TLS_HEADER) };
    if TLS.output::<[u8]>(bytes, wakeup_flags(&TLS)).is_err() {
        count_lost(ctx, lost::TLS);
    }
}
