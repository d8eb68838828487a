//! A BPF array map the agent writes through `mmap` (`BPF_F_MMAPABLE`): a table of a million
//! rows costs one copy, not a million `bpf(2)` calls.
use std::{
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::maps::MapData;

use crate::{Error, Result};

/// A writable view of an mmapable BPF array of `T`.
pub struct SharedArray<T> {
    base: NonNull<u8>,
    bytes: usize,
    /// Entries of the array.
    len: u32,
    /// Bytes between entries: the kernel rounds each value up to 8 bytes.
    stride: usize,
    /// Keeps the map (and so the mapping's backing) alive.
    _map: MapData,
    _marker: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory owned by this value; access goes through
// `&mut self`.
unsafe impl<T: Send> Send for SharedArray<T> {}

impl<T: Copy> SharedArray<T> {
    /// Maps `map`, an array of `len` entries of `T`.
    pub fn new(map: MapData, len: u32, what: &str) -> Result<Self> {
        let stride = std::mem::size_of::<T>().next_multiple_of(8);
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = (len as usize * stride).next_multiple_of(page);
        // SAFETY: a fresh shared mapping of the map's fd, of the size the kernel allocated for
        // it; nothing else in this process maps it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::io(
                format!("mapping the {what} map ({bytes} bytes)"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(SharedArray {
            base: NonNull::new(ptr.cast()).expect("mmap returned a non-null address"),
            bytes,
            len,
            stride,
            _map: map,
            _marker: PhantomData,
        })
    }

    /// Entries of the array.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Writes `values` from entry `at` on; false (nothing written) if they do not fit.
    pub fn write(&mut self, at: u32, values: &[T]) -> bool {
        if at as usize + values.len() > self.len as usize {
            return false;
        }
        for (i, v) in values.iter().enumerate() {
            let offset = (at as usize + i) * self.stride;
            // SAFETY: `offset + size_of::<T>()` is within the mapping (checked above), and
            // `T` is plain data; BPF readers see each entry old or new, and the agent only
            // points them at entries once written.
            unsafe {
                self.base
                    .as_ptr()
                    .add(offset)
                    .cast::<T>()
                    .write_unaligned(*v)
            };
        }
        true
    }
}

impl<T> Drop for SharedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing else refers to.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}
