//! Plain HTTP on a target's TCP sockets (a local vLLM, llama.cpp or Ollama server without
//! TLS), with `--plain-http`: `mp_sock_connect` (`sys_enter_connect`) notes the target's
//! IPv4/IPv6 sockets, `mp_sock_send_enter` / `mp_sock_recv_enter` (`write`, `sendto` /
//! `read`, `recvfrom`) keep the buffer of a call on one of them, `mp_sock_exit` sends the bytes
//! it moved as `TlsRecord`s of source `SOCKET`, and `mp_sock_close` ends the connection.
//!
//! A socket whose first bytes are a TLS handshake is muted: its plaintext comes from the TLS
//! probes, and its ciphertext is worth nothing.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use modelprobe_common::{lost, plain_source, tls_dir, TlsPending, SOCKET_MUTED};

use crate::{
    maps::{count_lost, current_is_target, SOCKETS, SOCK_PENDING},
    tls::{close, send},
};

/// Offsets of a syscall tracepoint's fields: arguments from 16 at entry, `long ret` at 16 at
/// exit (after the common header and `int nr`).
const SYSCALL_ARG0: usize = 16;
const SYSCALL_RET: usize = 16;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The `SOCKETS` key of file descriptor `fd` of the current process.
#[inline(always)]
fn socket_key(fd: u64) -> u64 {
    (bpf_get_current_pid_tgid() & 0xffff_ffff_0000_0000) | (fd & 0xffff_ffff)
}

#[tracepoint]
pub fn mp_sock_connect(ctx: TracePointContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    // SAFETY: syscall tracepoint arguments at fixed offsets, read with bpf_probe_read.
    let Ok((fd, addr)) = (unsafe {
        ctx.read_at::<u64>(SYSCALL_ARG0)
            .and_then(|fd| Ok((fd, ctx.read_at::<u64>(SYSCALL_ARG0 + 8)?)))
    }) else {
        return 0;
    };
    // SAFETY: `sa_family` is the first field of every sockaddr; faulting-safe read.
    let family = unsafe { bpf_probe_read_user(addr as *const u16) }.unwrap_or(0);
    if family == AF_INET || family == AF_INET6 {
        // SAFETY: no preconditions.
        let id = unsafe { bpf_ktime_get_ns() } | 1;
        if SOCKETS.insert(&socket_key(fd), &id, 0).is_err() {
            count_lost(&ctx, lost::TLS_TABLE_FULL);
        }
    }
    0
}

#[tracepoint]
pub fn mp_sock_close(ctx: TracePointContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    // SAFETY: syscall tracepoint argument at a fixed offset.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(SYSCALL_ARG0) }) else {
        return 0;
    };
    let key = socket_key(fd);
    // SAFETY: the value is copied out at once.
    let Some(id) = (unsafe { SOCKETS.get(&key) }).copied() else {
        return 0;
    };
    let _ = SOCKETS.remove(&key);
    if id != SOCKET_MUTED {
        close(&ctx, id, plain_source::SOCKET);
    }
    0
}

#[tracepoint]
pub fn mp_sock_send_enter(ctx: TracePointContext) -> u32 {
    sock_enter(&ctx, tls_dir::WRITE);
    0
}

#[tracepoint]
pub fn mp_sock_recv_enter(ctx: TracePointContext) -> u32 {
    sock_enter(&ctx, tls_dir::READ);
    0
}

/// Keeps the buffer of a call on a noted socket, by thread, until it returns.
#[inline(always)]
fn sock_enter(ctx: &TracePointContext, direction: u32) {
    if !current_is_target() {
        return;
    }
    // SAFETY: syscall tracepoint arguments at fixed offsets, read with bpf_probe_read.
    let Ok((fd, buf)) = (unsafe {
        ctx.read_at::<u64>(SYSCALL_ARG0)
            .and_then(|fd| Ok((fd, ctx.read_at::<u64>(SYSCALL_ARG0 + 8)?)))
    }) else {
        return;
    };
    // SAFETY: the value is copied out at once.
    let Some(id) = (unsafe { SOCKETS.get(&socket_key(fd)) }).copied() else {
        return;
    };
    if id == SOCKET_MUTED {
        return;
    }
    let pending = TlsPending {
        conn: id,
        buf,
        count_out: 0,
        fd,
        direction,
        nested: 0,
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    if SOCK_PENDING.insert(&tid, &pending, 0).is_err() {
        count_lost(ctx, lost::TLS_TABLE_FULL);
    }
}

#[tracepoint]
pub fn mp_sock_exit(ctx: TracePointContext) -> u32 {
    if !current_is_target() {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before it is removed.
    let Some(pending) = (unsafe { SOCK_PENDING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = SOCK_PENDING.remove(&tid);
    // SAFETY: the exit tracepoint's return value at its fixed offset.
    let ret = unsafe { ctx.read_at::<i64>(SYSCALL_RET) }.unwrap_or(-1);
    if ret <= 0 {
        return 0;
    }
    if pending.direction == tls_dir::WRITE {
        // A TLS handshake's first record: `0x16 0x03`. The TLS probes have this connection.
        // SAFETY: faulting-safe read of the bytes just written.
        let head = unsafe { bpf_probe_read_user(pending.buf as *const [u8; 2]) }.unwrap_or([0; 2]);
        if head == [0x16, 0x03] {
            let _ = SOCKETS.insert(&socket_key(pending.fd), &SOCKET_MUTED, 0);
            return 0;
        }
    }
    send(&ctx, &pending, ret as u64, plain_source::SOCKET);
    0
}
