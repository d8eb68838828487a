//! PyTorch's CUDA caching allocator at tensor level (`--memory`): its `pytorch:malloc` and
//! `pytorch:free` static tracepoints in `libc10_cuda.so`, attached in each process that maps
//! it. Their semaphores gate the sites (PyTorch reaches them only while a tracer holds one):
//! each is incremented in the process when attached and decremented when the session ends,
//! so a detached process is as it was.
use std::{collections::HashSet, os::unix::fs::FileExt};

use modelprobe_common::memory::usdt::{self, UsdtArgSpec, UsdtSpec, MAX_USDT_ARGS};

use super::usdt::{probes, UsdtArg};
use crate::{sampler::Sampler, Result};

/// The library PyTorch's CUDA caching allocator is in.
const LIBRARY: &str = "libc10_cuda.so";

/// What the session holds of PyTorch's allocator tracepoints.
#[derive(Debug, Default)]
pub struct TorchMemory {
    /// (pid, file) pairs attached.
    attached: HashSet<(u32, String)>,
    /// Semaphores incremented: (pid, address in the process).
    semaphores: Vec<(u32, u64)>,
}

/// The spec `mp_usdt` reads a site's arguments with.
fn spec(event: u32, args: &[UsdtArg]) -> UsdtSpec {
    let mut out = UsdtSpec {
        event,
        nargs: args.len().min(MAX_USDT_ARGS) as u32,
        args: [UsdtArgSpec::default(); MAX_USDT_ARGS],
    };
    for (slot, a) in out.args.iter_mut().zip(args) {
        *slot = match *a {
            UsdtArg::Const(v) => UsdtArgSpec {
                kind: usdt::arg::CONST,
                size: 8,
                value: v,
                ..Default::default()
            },
            UsdtArg::Reg { regs_off, size } => UsdtArgSpec {
                kind: usdt::arg::REG,
                size,
                regs_off,
                ..Default::default()
            },
            UsdtArg::Mem {
                regs_off,
                disp,
                size,
            } => UsdtArgSpec {
                kind: usdt::arg::MEM,
                size,
                regs_off,
                _pad: 0,
                value: disp,
            },
        };
    }
    out
}

/// The address in process `pid` of file offset `offset` of `path` (as its maps say).
fn address_of(pid: u32, path: &str, offset: u64) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .filter_map(crate::procmaps::parse_line)
        .find(|m| m.path == path && offset >= m.offset && offset < m.offset + (m.end - m.start))
        .map(|m| m.start + (offset - m.offset))
}

/// Adds `delta` to the 16-bit semaphore at `addr` in process `pid`.
fn bump(pid: u32, addr: u64, delta: i16) -> std::io::Result<()> {
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))?;
    let mut v = [0u8; 2];
    mem.read_exact_at(&mut v, addr)?;
    let n = u16::from_ne_bytes(v).saturating_add_signed(delta);
    mem.write_all_at(&n.to_ne_bytes(), addr)
}

impl TorchMemory {
    /// Attaches to PyTorch's allocator tracepoints in the files `pid` newly mapped.
    pub fn on_new_files(
        &mut self,
        sampler: &mut Sampler,
        pid: u32,
        files: &[String],
    ) -> Result<usize> {
        let mut n = 0;
        for f in files {
            let name = f.rsplit('/').next().unwrap_or(f);
            if !name.starts_with(LIBRARY) || !self.attached.insert((pid, f.clone())) {
                continue;
            }
            let host = std::path::PathBuf::from(format!("/proc/{pid}/root{f}"));
            for p in probes(&host)?
                .into_iter()
                .filter(|p| p.provider == "pytorch")
            {
                let event = match p.name.as_str() {
                    "malloc" if p.args.len() >= 3 => usdt::event::TORCH_MALLOC,
                    "free" if !p.args.is_empty() => usdt::event::TORCH_FREE,
                    _ => continue,
                };
                sampler.attach_usdt(&host, p.file_offset, spec(event, &p.args), pid)?;
                n += 1;
                if p.semaphore_offset != 0 {
                    match address_of(pid, f, p.semaphore_offset) {
                        Some(addr) => match bump(pid, addr, 1) {
                            Ok(()) => self.semaphores.push((pid, addr)),
                            Err(e) => log::warn!(
                                "pid {pid}: pytorch:{} not enabled ({e}): no tensor-level GPU memory",
                                p.name
                            ),
                        },
                        None => log::warn!(
                            "pid {pid}: pytorch:{}'s semaphore is not mapped: no tensor-level GPU memory",
                            p.name
                        ),
                    }
                }
            }
            if n > 0 {
                log::info!("pid {pid}: PyTorch's CUDA caching allocator traced ({f})");
            }
        }
        Ok(n)
    }

    /// Gives the semaphores back (processes still alive): PyTorch stops reaching the sites.
    pub fn release(&mut self) {
        for (pid, addr) in self.semaphores.drain(..) {
            if crate::target::is_alive(pid) {
                if let Err(e) = bump(pid, addr, -1) {
                    log::debug!("pid {pid}: semaphore at {addr:#x} not released: {e}");
                }
            }
        }
    }
}
