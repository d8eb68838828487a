//! The agent's end of a process's Python-probe ring: found among the process's descriptors
//! (`/proc/PID/fd/N` → `/memfd:modelprobe-py`), mapped shared, read from `tail` to `head`.
//!
//! The mapping is the agent's own: once taken, the ring outlives the process, so the records a
//! process wrote before it exited are all read.
use std::{fs::OpenOptions, path::Path, sync::atomic::Ordering};

use memmap2::MmapMut;
use modelprobe_common::pyprobe::{
    decode, kind, state, Record, RecordHeader, RingHeader, DATA_BYTES, HEADER_BYTES, MAGIC,
    MEMFD_NAME, VERSION,
};

/// A mapped ring.
pub struct RingReader {
    map: MmapMut,
    /// The process it belongs to.
    pub pid: u32,
    /// Records that could not be decoded (a ring written by another version).
    pub malformed: u64,
}

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingStatus {
    /// One of [`state`].
    pub state: u32,
    /// The library's message.
    pub message: String,
    /// Records the library could not write (ring full).
    pub dropped: u64,
    /// Values cut short.
    pub truncated: u64,
    /// Events skipped inside a callback.
    pub reentered: u64,
    /// Code objects probed.
    pub probed: u32,
    /// `PY_VERSION_HEX`-like version (0: unknown).
    pub python_hex: u32,
}

impl RingReader {
    /// Finds and maps the ring of `pid` made for session `token`, if the process has one.
    pub fn find(pid: u32, token: u64) -> Option<RingReader> {
        let dir = format!("/proc/{pid}/fd");
        let entries = std::fs::read_dir(&dir).ok()?;
        let want = format!("/memfd:{MEMFD_NAME}");
        for e in entries.flatten() {
            let Ok(link) = std::fs::read_link(e.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            if link != want && !link.starts_with(&format!("{want} ")) {
                continue;
            }
            if let Some(r) = Self::open(&e.path(), pid, token) {
                return Some(r);
            }
        }
        None
    }

    fn open(path: &Path, pid: u32, token: u64) -> Option<RingReader> {
        let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        if file.metadata().ok()?.len() < (HEADER_BYTES + DATA_BYTES) as u64 {
            return None;
        }
        // SAFETY: a shared mapping of the ring; the library writes it concurrently, which the
        // header's atomics order (see `modelprobe_common::pyprobe`); nothing here assumes more.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(HEADER_BYTES + DATA_BYTES)
                .map_mut(&file)
                .ok()?
        };
        let mut r = RingReader {
            map,
            pid,
            malformed: 0,
        };
        let h = r.header();
        // SAFETY: fields of the mapped header.
        let magic = unsafe { RingHeader::atomic_u64(std::ptr::addr_of_mut!((*h).magic)) }
            .load(Ordering::Acquire);
        // SAFETY: as above, plain fields written before the magic.
        let (version, tok, size) = unsafe { ((*h).version, (*h).token, (*h).data_bytes) };
        if magic != MAGIC || version != VERSION || tok != token || size != DATA_BYTES as u64 {
            return None;
        }
        // SAFETY: a field of the mapped header.
        unsafe { RingHeader::atomic_u32(std::ptr::addr_of_mut!((*h).agent_mapped)) }
            .store(1, Ordering::Release);
        Some(r)
    }

    fn header(&mut self) -> *mut RingHeader {
        self.map.as_mut_ptr().cast()
    }

    /// The header's state and counters.
    pub fn status(&mut self) -> RingStatus {
        let h = self.header();
        // SAFETY: fields of the mapped header; the message is published by the state's release
        // store, read first.
        unsafe {
            let state =
                RingHeader::atomic_u32(std::ptr::addr_of_mut!((*h).state)).load(Ordering::Acquire);
            let len = ((*h).message_len as usize).min((*h).message.len());
            RingStatus {
                state,
                message: String::from_utf8_lossy(&(&(*h).message)[..len]).into_owned(),
                dropped: RingHeader::atomic_u64(std::ptr::addr_of_mut!((*h).dropped))
                    .load(Ordering::Relaxed),
                truncated: RingHeader::atomic_u64(std::ptr::addr_of_mut!((*h).truncated))
                    .load(Ordering::Relaxed),
                reentered: RingHeader::atomic_u64(std::ptr::addr_of_mut!((*h).reentered))
                    .load(Ordering::Relaxed),
                probed: (*h).probed_codes,
                python_hex: (*h).python_hex,
            }
        }
    }

    /// Asks the library to remove its probes.
    pub fn request_stop(&mut self) {
        let h = self.header();
        // SAFETY: a field of the mapped header.
        unsafe { RingHeader::atomic_u32(std::ptr::addr_of_mut!((*h).stop)) }
            .store(1, Ordering::Release);
    }

    /// True once the state is past setup ([`state::FAILED`] or [`state::STOPPED`]).
    pub fn ended(&mut self) -> bool {
        matches!(self.status().state, state::FAILED | state::STOPPED)
    }

    /// Hands every record written so far to `f`, then frees their space.
    pub fn drain(&mut self, mut f: impl FnMut(Record<'_>)) {
        let h = self.header();
        // SAFETY: fields of the mapped header.
        let (head_a, tail_a) = unsafe {
            (
                RingHeader::atomic_u64(std::ptr::addr_of_mut!((*h).head)),
                RingHeader::atomic_u64(std::ptr::addr_of_mut!((*h).tail)),
            )
        };
        let head = head_a.load(Ordering::Acquire);
        let mut tail = tail_a.load(Ordering::Relaxed);
        let size = DATA_BYTES as u64;
        let mut malformed = 0;
        let data = &self.map[HEADER_BYTES..];
        while tail < head {
            let pos = (tail % size) as usize;
            let Some(hb) = data.get(pos..pos + 8) else {
                break;
            };
            let header = RecordHeader {
                kind: u16::from_le_bytes([hb[0], hb[1]]),
                len: u16::from_le_bytes([hb[2], hb[3]]),
                tid: 0,
            };
            if header.kind == kind::PAD {
                tail += size - pos as u64;
                continue;
            }
            let len = header.len as usize;
            if len < 8 || !len.is_multiple_of(8) || pos + len > data.len() {
                // Unreadable from here on: skip what was written.
                malformed += 1;
                tail = head;
                break;
            }
            match decode(&data[pos..pos + len]) {
                Some(rec) => f(rec),
                None => malformed += 1,
            }
            tail += len as u64;
        }
        tail_a.store(tail, Ordering::Release);
        self.malformed += malformed;
    }
}
