//! The writing end of the shared ring ([`modelprobe_common::pyprobe`]): a memfd the library
//! creates and maps, which the agent opens through `/proc/PID/fd`.
//!
//! One writer at a time: records are written with the GIL held (the Python callbacks, the setup
//! code), and the header's counters are atomics the agent reads.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::Ordering,
};

use modelprobe_common::pyprobe::{
    self as wire, encode, record_len, RingHeader, DATA_BYTES, HEADER_BYTES, MAGIC, MESSAGE_MAX,
    VERSION,
};

/// The header's counters.
enum Counter {
    Dropped,
    Truncated,
    Reentered,
}

/// A mapped ring.
pub struct Ring {
    base: *mut u8,
    _fd: OwnedFd,
}

// SAFETY: the mapping is process-wide memory; writes are serialized by the GIL (see the module
// docs) and the shared counters are atomics.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Creates and maps a ring for `token`.
    pub fn create(token: u64) -> io::Result<Ring> {
        let name = std::ffi::CString::new(wire::MEMFD_NAME).expect("no NUL");
        // SAFETY: memfd_create with a valid name.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = HEADER_BYTES + DATA_BYTES;
        // SAFETY: ftruncate on our memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a shared mapping of the whole memfd, which outlives it (kept in `Ring`).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = Ring {
            base: base.cast(),
            _fd: fd,
        };
        // SAFETY: the header lies at the start of the fresh, zeroed mapping.
        unsafe {
            let h = ring.header();
            (*h).version = VERSION;
            // SAFETY: getpid has no preconditions.
            (*h).pid = libc::getpid() as u32;
            (*h).token = token;
            (*h).data_bytes = DATA_BYTES as u64;
            (*h).tool_id = -1;
            // The magic last: the agent takes the ring only once it is there.
            RingHeader::atomic_u64(std::ptr::addr_of_mut!((*h).magic))
                .store(MAGIC, Ordering::Release);
        }
        Ok(ring)
    }

    fn header(&self) -> *mut RingHeader {
        self.base.cast()
    }

    /// The agent asked for the probes to go.
    pub fn stop_requested(&self) -> bool {
        // SAFETY: a field of our live header.
        unsafe { RingHeader::atomic_u32(std::ptr::addr_of_mut!((*self.header()).stop)) }
            .load(Ordering::Acquire)
            != 0
    }

    /// The agent has mapped the ring.
    pub fn agent_mapped(&self) -> bool {
        // SAFETY: a field of our live header.
        unsafe { RingHeader::atomic_u32(std::ptr::addr_of_mut!((*self.header()).agent_mapped)) }
            .load(Ordering::Acquire)
            != 0
    }

    /// Sets the state, with a message (cut to [`MESSAGE_MAX`]).
    pub fn set_state(&self, new: u32, message: &str) {
        let m = message.as_bytes();
        let n = m.len().min(MESSAGE_MAX);
        // SAFETY: fields of our live header; the message before the state, which publishes it.
        unsafe {
            let h = self.header();
            (&mut (*h).message)[..n].copy_from_slice(&m[..n]);
            (*h).message_len = n as u32;
            RingHeader::atomic_u32(std::ptr::addr_of_mut!((*h).state))
                .store(new, Ordering::Release);
        }
    }

    /// The current state.
    pub fn state(&self) -> u32 {
        // SAFETY: a field of our live header.
        unsafe { RingHeader::atomic_u32(std::ptr::addr_of_mut!((*self.header()).state)) }
            .load(Ordering::Acquire)
    }

    /// Notes facts about the interpreter and the probes in the header.
    pub fn set_facts(&self, python_hex: u32, tool_id: i32, probed_codes: u32) {
        // SAFETY: plain fields of our live header, read by the agent only for display.
        unsafe {
            let h = self.header();
            (*h).python_hex = python_hex;
            (*h).tool_id = tool_id;
            (*h).probed_codes = probed_codes;
        }
    }

    /// Notes how many code objects are probed now.
    pub fn set_probed(&self, probed_codes: u32) {
        // SAFETY: a plain field of our live header, read by the agent only for display.
        unsafe { (*self.header()).probed_codes = probed_codes };
    }

    /// Adds one to a counter of the header.
    fn count(&self, which: Counter) {
        let h = self.header();
        // SAFETY: a field of our live header.
        let field = unsafe {
            match which {
                Counter::Dropped => std::ptr::addr_of_mut!((*h).dropped),
                Counter::Truncated => std::ptr::addr_of_mut!((*h).truncated),
                Counter::Reentered => std::ptr::addr_of_mut!((*h).reentered),
            }
        };
        // SAFETY: as above, 8-aligned.
        unsafe { RingHeader::atomic_u64(field) }.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a value cut to [`wire::TEXT_MAX`].
    pub fn count_truncated(&self) {
        self.count(Counter::Truncated);
    }

    /// Counts an event skipped because a callback was already running on its thread.
    pub fn count_reentered(&self) {
        self.count(Counter::Reentered);
    }

    /// Writes one record (see [`encode`]); counts it as dropped when the ring is full (and
    /// returns false).
    pub fn push<T: Copy>(
        &self,
        kind: u16,
        tid: u32,
        fixed: &T,
        ids: &[u32],
        texts: &[&[u8]],
    ) -> bool {
        let extra: usize = 4 * ids.len() + texts.iter().map(|t| wire::text_len(t)).sum::<usize>();
        let len = record_len(std::mem::size_of::<T>(), extra);
        if len > u16::MAX as usize {
            self.count(Counter::Dropped);
            return false;
        }
        // SAFETY: fields of our live header; `head` only changes here (one writer).
        let (head_a, tail) = unsafe {
            let h = self.header();
            (
                RingHeader::atomic_u64(std::ptr::addr_of_mut!((*h).head)),
                RingHeader::atomic_u64(std::ptr::addr_of_mut!((*h).tail)).load(Ordering::Acquire),
            )
        };
        let mut head = head_a.load(Ordering::Relaxed);
        let size = DATA_BYTES as u64;
        let pos = (head % size) as usize;
        let room_to_end = DATA_BYTES - pos;
        let pad = if room_to_end < len { room_to_end } else { 0 };
        if size - (head - tail) < (pad + len) as u64 {
            self.count(Counter::Dropped);
            return false;
        }
        // SAFETY: [pos, pos + len) (or the pad header) lies in the data area, which the reader
        // does not touch until `head` is published below.
        unsafe {
            let data = self.base.add(HEADER_BYTES);
            if pad != 0 {
                // A pad header (kind 0): the reader skips to the start.
                std::ptr::write_bytes(data.add(pos), 0, 8.min(room_to_end));
                head += pad as u64;
            }
            let at = (head % size) as usize;
            let out = std::slice::from_raw_parts_mut(data.add(at), len);
            encode(out, kind, tid, fixed, ids, texts);
        }
        head_a.store(head + len as u64, Ordering::Release);
        true
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `create`, no longer used.
        unsafe { libc::munmap(self.base.cast(), HEADER_BYTES + DATA_BYTES) };
    }
}
