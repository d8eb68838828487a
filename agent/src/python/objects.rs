//! Code objects read out of a live interpreter: qualified name, file, first line and line
//! table, each code object once (its address is what the BPF side reports).
//!
//! Reads go through `process_vm_readv`: no stop of the target, and a freed or unmapped object
//! is an error, not a crash. An object is taken as a code object only if its type pointer is
//! the interpreter's `PyCode_Type`; strings are read only in CPython's compact forms, the only
//! ones code objects hold.
use super::layout::{Layout, BYTES_SVAL, OB_SIZE, OB_TYPE, UNICODE_LENGTH, UNICODE_STATE};

/// Longest name or file name read; longer ones are cut.
const MAX_STRING: u64 = 4096;
/// Longest line table read; a longer one leaves its code without lines.
const MAX_LINE_TABLE: u64 = 1 << 16;

/// What the agent keeps of one code object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// `co_qualname` (3.11+), else `co_name`.
    pub name: String,
    /// `co_filename`.
    pub file: String,
    /// `co_firstlineno`.
    pub first_line: i32,
    /// The line table's bytes (empty when unreadable).
    pub line_table: Vec<u8>,
}

/// Why a code object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The memory is not mapped (any more) or the process is gone.
    #[error("cannot read {len} bytes at {addr:#x} in pid {pid}")]
    Memory {
        /// The process.
        pid: u32,
        /// Where.
        addr: u64,
        /// How many bytes.
        len: u64,
    },
    /// Its type is not the interpreter's `PyCode_Type` (freed and reused, or a stale address).
    #[error("the object at {0:#x} is not a code object")]
    NotCode(u64),
    /// A string in the legacy (non-compact) form, which code objects never hold.
    #[error("the string at {0:#x} is not in a compact form")]
    NotCompact(u64),
}

/// A live process's memory.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// The process read.
    pub pid: u32,
}

impl Memory {
    /// Reads `buf.len()` bytes at `addr`, all or nothing.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let err = ReadError::Memory {
            pid: self.pid,
            addr,
            len: buf.len() as u64,
        };
        if buf.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, which is writable for its length; the remote range
        // is only read by the kernel, which checks it.
        let n = unsafe { libc::process_vm_readv(self.pid as i32, &local, 1, &remote, 1, 0) };
        if n == buf.len() as isize {
            Ok(())
        } else {
            Err(err)
        }
    }

    /// A little-endian word.
    pub fn u64(&self, addr: u64) -> Result<u64, ReadError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn i32(&self, addr: u64) -> Result<i32, ReadError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(i32::from_le_bytes(b))
    }

    /// A `str` object's text, from its compact representation.
    pub fn string(&self, obj: u64, layout: &Layout) -> Result<String, ReadError> {
        let len = self.u64(obj + UNICODE_LENGTH)?.min(MAX_STRING);
        let state = self.i32(obj + UNICODE_STATE)? as u32;
        let kind = (state >> 2) & 7;
        let compact = (state >> 5) & 1 == 1;
        let ascii = (state >> 6) & 1 == 1;
        if !compact {
            return Err(ReadError::NotCompact(obj));
        }
        if ascii {
            let mut b = vec![0u8; len as usize];
            self.read(obj + layout.unicode_ascii_size, &mut b)?;
            return Ok(String::from_utf8_lossy(&b).into_owned());
        }
        let data = obj + layout.unicode_compact_size;
        let width = match kind {
            1 | 2 | 4 => kind as u64,
            _ => return Err(ReadError::NotCompact(obj)),
        };
        let mut b = vec![0u8; (len * width) as usize];
        self.read(data, &mut b)?;
        Ok(b.chunks_exact(width as usize)
            .map(|c| {
                let mut v = [0u8; 4];
                v[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_le_bytes(v)).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect())
    }

    /// A `bytes` object's contents.
    fn bytes(&self, obj: u64, limit: u64) -> Result<Vec<u8>, ReadError> {
        let len = self.u64(obj + OB_SIZE)?;
        if len > limit {
            return Ok(Vec::new());
        }
        let mut b = vec![0u8; len as usize];
        self.read(obj + BYTES_SVAL, &mut b)?;
        Ok(b)
    }

    /// The code object at `addr`; `code_type` is the address of the interpreter's
    /// `PyCode_Type`.
    pub fn code(&self, addr: u64, layout: &Layout, code_type: u64) -> Result<Code, ReadError> {
        if self.u64(addr + OB_TYPE)? != code_type {
            return Err(ReadError::NotCode(addr));
        }
        let name_field = layout.code_qualname.unwrap_or(layout.code_name);
        let name = self.string(self.u64(addr + name_field)?, layout)?;
        let file = self.string(self.u64(addr + layout.code_filename)?, layout)?;
        let first_line = self.i32(addr + layout.code_firstlineno)?;
        let line_table = self
            .u64(addr + layout.code_linetable)
            .and_then(|t| self.bytes(t, MAX_LINE_TABLE))
            .unwrap_or_default();
        Ok(Code {
            name,
            file,
            first_line,
            line_table,
        })
    }
}
