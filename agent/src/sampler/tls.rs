//! The TLS capture's side of the sampler: attaching `mp_tls_*` to a process's OpenSSL
//! functions, and reading `TlsRecord`s out of the `TLS` ring.
use std::path::Path;

use aya::{programs::TracePoint, Ebpf};
use modelprobe_common::{kind, plain_source, tls_dir, tls_fn, TlsRecord, TlsSkipKey, TLS_HEADER};

use super::{log_verified, program, read_pod, Sampler};
use crate::{Error, Result};

/// What a [`TlsView`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKind {
    /// Bytes of a call.
    Data,
    /// A call of `call_len` bytes skipped at the agent's request (no bytes).
    Skipped,
    /// The connection ended (`SSL_free`, `close`).
    Close,
}

/// A piece of one TLS call's plaintext, a skipped call, or a connection's end, borrowed from
/// the ring.
#[derive(Debug, Clone, Copy)]
pub struct TlsView<'a> {
    /// What it says.
    pub kind: TlsKind,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CLOCK_MONOTONIC ns when the call returned.
    pub time_ns: u64,
    /// The connection's `SSL *`.
    pub conn: u64,
    /// Bytes the whole call moved.
    pub call_len: u64,
    /// Where these bytes start within the call.
    pub offset: u64,
    /// True when the target read them (a response, for a client).
    pub read: bool,
    /// True for a plain TCP socket (`--plain-http`): `conn` is the socket's id, not an `SSL *`.
    pub socket: bool,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// Reads a `TlsRecord`: its header, then `len` payload bytes.
pub(super) fn tls_view(item: &[u8]) -> Option<TlsView<'_>> {
    if item.len() < TLS_HEADER {
        log::warn!("short TLS record of {} bytes ignored", item.len());
        return None;
    }
    // The header is a prefix of TlsRecord: read it into a whole record's worth of zeros.
    let mut padded = [0u8; std::mem::size_of::<TlsRecord>()];
    let n = item.len().min(padded.len());
    padded[..n].copy_from_slice(&item[..n]);
    let r = read_pod::<TlsRecord>(&padded)?;
    let payload = &item[TLS_HEADER..];
    let len = (r.len as usize).min(payload.len());
    Some(TlsView {
        kind: match r.kind {
            kind::TLS_CLOSE => TlsKind::Close,
            kind::TLS_SKIPPED => TlsKind::Skipped,
            _ => TlsKind::Data,
        },
        pid: r.pid,
        tid: r.tid,
        time_ns: r.time_ns,
        conn: r.conn,
        call_len: r.call_len,
        offset: u64::from(r.offset),
        read: r.direction == modelprobe_common::tls_dir::READ,
        socket: r.source == plain_source::SOCKET,
        bytes: &payload[..len],
    })
}

/// The plain-HTTP programs and the syscalls each is attached to.
const SOCKET_PROGRAMS: &[(&str, &[&str])] = &[
    ("mp_sock_connect", &["sys_enter_connect"]),
    ("mp_sock_close", &["sys_enter_close"]),
    (
        "mp_sock_send_enter",
        &["sys_enter_write", "sys_enter_sendto"],
    ),
    (
        "mp_sock_recv_enter",
        &["sys_enter_read", "sys_enter_recvfrom"],
    ),
    (
        "mp_sock_exit",
        &[
            "sys_exit_write",
            "sys_exit_sendto",
            "sys_exit_read",
            "sys_exit_recvfrom",
        ],
    ),
];

/// Loads and attaches the plain-HTTP socket programs (`--plain-http`).
pub(super) fn attach_plain_http(bpf: &mut Ebpf) -> Result<()> {
    for (name, events) in SOCKET_PROGRAMS {
        let prog: &mut TracePoint = program(bpf, name)?;
        prog.load()
            .map_err(|e| Error::bpf(format!("loading {name}"), e))?;
        log_verified(name, prog.info().ok());
        for event in *events {
            prog.attach("syscalls", event)
                .map_err(|e| Error::bpf(format!("attaching {name} to syscalls/{event}"), e))?;
        }
    }
    Ok(())
}

impl Sampler {
    /// Asks the kernel not to send the next `bytes` bytes of one direction of a connection
    /// (`conn` as its records name it; `socket` for a plain TCP socket): whole calls within
    /// them come as [`TlsKind::Skipped`] counts.
    pub fn skip_plaintext(&mut self, pid: u32, conn: u64, read: bool, socket: bool, bytes: u64) {
        let key = TlsSkipKey {
            pid,
            direction: if read { tls_dir::READ } else { tls_dir::WRITE } as u16,
            source: if socket {
                plain_source::SOCKET
            } else {
                plain_source::TLS
            } as u16,
            conn,
        };
        if let Err(e) = self.tls_skip.insert(key, bytes, 0) {
            log::debug!("TLS_SKIP not set for pid {pid}: {e}");
        }
    }

    /// Attaches the TLS programs to an OpenSSL function (`which`, a `tls_fn` constant) at
    /// `file_offset` of `path`, for process `pid` only.
    pub fn attach_tls(
        &mut self,
        path: &Path,
        file_offset: u64,
        which: u64,
        pid: u32,
    ) -> Result<()> {
        let names: &[&'static str] = if which == tls_fn::FREE {
            &["mp_tls_free"]
        } else {
            &["mp_tls_enter", "mp_tls_exit"]
        };
        self.attach_uprobes(names, path, file_offset, which, pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: u32, len: u32, payload: &[u8]) -> Vec<u8> {
        // direction READ, source SOCKET.
        let mut raw = Vec::new();
        for v in [kind, 1, 2, 3] {
            raw.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [10u64, 0xabc, 5000] {
            raw.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [2048u32, len, 1, 1] {
            raw.extend_from_slice(&v.to_ne_bytes());
        }
        raw.extend_from_slice(payload);
        raw
    }

    #[test]
    fn tls_view_reads_the_header_then_len_bytes() {
        let raw = item(kind::TLS_DATA, 3, b"HTTP/1.1");
        let v = tls_view(&raw).unwrap();
        assert!(v.kind == TlsKind::Data && v.read && v.socket);
        assert_eq!((v.pid, v.tid, v.time_ns), (2, 3, 10));
        assert_eq!((v.conn, v.call_len, v.offset), (0xabc, 5000, 2048));
        assert_eq!(v.bytes, b"HTT");
    }

    #[test]
    fn tls_view_clamps_len_and_reads_a_close() {
        let raw = item(kind::TLS_CLOSE, 100, b"xy");
        let v = tls_view(&raw).unwrap();
        assert_eq!(v.kind, TlsKind::Close);
        assert_eq!(v.bytes, b"xy");
        assert!(tls_view(&raw[..TLS_HEADER - 1]).is_none());
    }
}
