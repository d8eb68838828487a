//! A BPF array map the agent writes through `mmap` (`BPF_F_MMAPABLE`): a table of a million
//! rows costs one copy, not a million `bpf(2)` calls.
//!
//! Each write maps only the pages it touches, and unmaps them after: a BPF array's mapping is
//! resident in full from the `mmap` on, so a mapping of the whole table (32 MiB by default)
//! held for the session would count in the agent's resident memory for nothing.
use std::{
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd},
};

use aya::maps::MapData;

use crate::{Error, Result};

/// A writable view of an mmapable BPF array of `T`.
pub struct SharedArray<T> {
    map: MapData,
    /// Entries of the array.
    len: u32,
    /// Bytes between entries: the kernel rounds each value up to 8 bytes.
    stride: usize,
    /// The page size.
    page: usize,
    /// The map's name, for errors.
    what: String,
    _marker: PhantomData<T>,
}

impl<T: Copy> SharedArray<T> {
    /// Writes to `map`, an array of `len` entries of `T`. Mapping one page is tried now, so a
    /// map that cannot be written this way is an error at the start.
    pub fn new(map: MapData, len: u32, what: &str) -> Result<Self> {
        let stride = std::mem::size_of::<T>().next_multiple_of(8);
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let a = SharedArray {
            map,
            len,
            stride,
            page,
            what: what.to_string(),
            _marker: PhantomData,
        };
        let probe = a.map_pages(0, page.min(len as usize * stride).max(1))?;
        // SAFETY: unmaps exactly the mapping just made.
        unsafe { libc::munmap(probe.0, probe.1) };
        Ok(a)
    }

    /// Entries of the array.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Maps the pages holding bytes `[start, end)` of the array: (address, length), the
    /// address being that of the first whole page.
    fn map_pages(&self, start: usize, end: usize) -> Result<(*mut libc::c_void, usize)> {
        let first = start / self.page * self.page;
        let bytes = end.next_multiple_of(self.page) - first;
        // SAFETY: a fresh shared mapping of pages of the map's fd within the array (the
        // callers keep `end` within it); nothing else refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.map.fd().as_fd().as_raw_fd(),
                first as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::io(
                format!("mapping the {} map ({bytes} bytes at {first})", self.what),
                std::io::Error::last_os_error(),
            ));
        }
        Ok((ptr, bytes))
    }

    /// Writes `values` from entry `at` on; false (nothing written) if they do not fit or the
    /// pages cannot be mapped.
    pub fn write(&mut self, at: u32, values: &[T]) -> bool {
        if at as usize + values.len() > self.len as usize {
            return false;
        }
        if values.is_empty() {
            return true;
        }
        let start = at as usize * self.stride;
        let end = start + values.len() * self.stride;
        let (base, bytes) = match self.map_pages(start, end) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("{e}");
                return false;
            }
        };
        let skip = start % self.page;
        for (i, v) in values.iter().enumerate() {
            let offset = skip + i * self.stride;
            // SAFETY: `offset + size_of::<T>()` is within the mapping (it covers `[start,
            // end)` from `start`'s page on), and `T` is plain data; BPF readers see each entry
            // old or new, and the agent only points them at entries once written.
            unsafe {
                base.cast::<u8>()
                    .add(offset)
                    .cast::<T>()
                    .write_unaligned(*v)
            };
        }
        // SAFETY: unmaps exactly the mapping made above, which nothing else refers to.
        unsafe { libc::munmap(base, bytes) };
        true
    }
}
