//! What `/proc` says about a target before it is touched: its state and tracer, its seccomp
//! mode, its threads, its mappings, and Yama's ptrace policy.
use std::{fs, io};

use super::LiveLoadError;

/// The fields of `/proc/PID/status` (or `/proc/PID/task/TID/status`) the injector reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Status {
    /// `Name:` (the command name, at most 15 bytes).
    pub name: String,
    /// First letter of `State:` (`R`, `S`, `D`, `T`, `t`, `Z`, `X`, `I`).
    pub state: char,
    /// `Tgid:` (the process of this thread).
    pub tgid: u32,
    /// `TracerPid:` (0 when not traced; the tracer's thread id).
    pub tracer_pid: u32,
    /// `Seccomp:` (0 off, 1 strict, 2 filter).
    pub seccomp: u8,
}

/// Parses the text of a status file.
pub(super) fn parse_status(text: &str) -> Status {
    let mut st = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => st.name = value.to_string(),
            "State" => st.state = value.chars().next().unwrap_or('?'),
            "Tgid" => st.tgid = value.parse().unwrap_or(0),
            "TracerPid" => st.tracer_pid = value.parse().unwrap_or(0),
            "Seccomp" => st.seccomp = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    st
}

/// The status of process `pid`, or [`LiveLoadError::NoSuchProcess`].
pub(super) fn status(pid: u32) -> Result<Status, LiveLoadError> {
    let path = format!("/proc/{pid}/status");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(parse_status(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LiveLoadError::NoSuchProcess { pid }),
        Err(source) => Err(LiveLoadError::Proc { pid, path, source }),
    }
}

/// The status of one thread, if it still exists.
pub(super) fn thread_status(pid: u32, tid: u32) -> Option<Status> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()
        .map(|t| parse_status(&t))
}

/// The thread to hold: the main thread, unless it has exited while others run on.
pub(super) fn pick_thread(pid: u32) -> u32 {
    let live = |tid: u32| thread_status(pid, tid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'));
    if live(pid) {
        return pid;
    }
    crate::target::thread_ids(pid)
        .into_iter()
        .find(|&t| live(t))
        .unwrap_or(pid)
}

/// `/proc/sys/kernel/yama/ptrace_scope`, when Yama is built in.
pub(super) fn yama_scope() -> Option<u8> {
    fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r-xp` and the like.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// The file's inode (0 for anonymous memory).
    pub inode: u64,
    /// The file, a pseudo name (`[vdso]`), or empty.
    pub path: String,
}

impl MapEntry {
    /// True for an executable mapping.
    pub fn is_exec(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
}

/// Parses the text of a maps file (lines that do not parse are skipped).
pub(super) fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<MapEntry> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.to_string();
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _dev = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().unwrap_or("").trim_start().to_string();
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms,
        offset,
        inode,
        path,
    })
}

/// The mappings of process `pid`.
pub(super) fn maps(pid: u32) -> Result<Vec<MapEntry>, LiveLoadError> {
    let path = format!("/proc/{pid}/maps");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(parse_maps(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LiveLoadError::NoSuchProcess { pid }),
        Err(source) => Err(LiveLoadError::Proc { pid, path, source }),
    }
}

/// Checks that `/proc/PID/exe` is an x86-64 ELF executable.
pub(super) fn check_exe_arch(pid: u32) -> Result<(), LiveLoadError> {
    use std::io::Read;
    let path = format!("/proc/{pid}/exe");
    let mut header = [0u8; 20];
    let read = fs::File::open(&path).and_then(|mut f| f.read_exact(&mut header));
    match read {
        Ok(()) => {}
        // Kernel threads have no executable.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if fs::metadata(format!("/proc/{pid}")).is_ok() {
                LiveLoadError::KernelThread { pid }
            } else {
                LiveLoadError::NoSuchProcess { pid }
            })
        }
        Err(source) => return Err(LiveLoadError::Proc { pid, path, source }),
    }
    elf_arch_problem(&header).map_or(Ok(()), |what| Err(LiveLoadError::WrongArch { pid, what }))
}

/// What is wrong with an ELF header for injection into x86-64, or None when it is x86-64.
fn elf_arch_problem(header: &[u8; 20]) -> Option<String> {
    const EM_X86_64: u16 = 62;
    if &header[..4] != b"\x7fELF" {
        return Some("non-ELF".into());
    }
    if header[4] != 2 {
        return Some("32-bit".into());
    }
    let machine = if header[5] == 1 {
        u16::from_le_bytes([header[18], header[19]])
    } else {
        u16::from_be_bytes([header[18], header[19]])
    };
    let name = match machine {
        EM_X86_64 => return None,
        183 => "aarch64",
        243 => "riscv64",
        21 => "ppc64",
        _ => "non-x86-64",
    };
    Some(format!("{name} (ELF machine {machine})"))
}

/// The inode of what descriptor `fd` of `pid` refers to, and the link's text.
pub(super) fn fd_target(pid: u32, fd: i32) -> Option<(u64, String)> {
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/{pid}/fd/{fd}");
    let link = fs::read_link(&path).ok()?;
    let ino = fs::metadata(&path).ok()?.ino();
    Some((ino, link.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let st = parse_status(
            "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nTracerPid:\t77\n\
             Seccomp:\t2\nSeccomp_filters:\t1\n",
        );
        assert_eq!(st.name, "python3");
        assert_eq!(st.state, 'S');
        assert_eq!(st.tracer_pid, 77);
        assert_eq!(st.tgid, 42);
        assert_eq!(st.seccomp, 2);
    }

    #[test]
    fn maps_lines() {
        let m = parse_maps(
            "7f1c2a000000-7f1c2a028000 r--p 00000000 fd:01 1835 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
             7f1c2a028000-7f1c2a1bd000 r-xp 00028000 fd:01 1835 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
             7ffd5e1f0000-7ffd5e1f2000 r-xp 00000000 00:00 0                          [vdso]\n\
             7f00000000-7f00001000 rw-p 00000000 00:00 0\n\
             7f1c2b000000-7f1c2b001000 r-xp 00000000 00:01 99 /memfd:my lib (deleted)\n",
        );
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].start, 0x7f1c2a028000);
        assert_eq!(m[1].offset, 0x28000);
        assert!(m[1].is_exec() && !m[0].is_exec());
        assert_eq!(m[1].inode, 1835);
        assert_eq!(m[2].path, "[vdso]");
        assert_eq!(m[3].path, "");
        assert_eq!(m[4].path, "/memfd:my lib (deleted)");
    }

    #[test]
    fn elf_headers() {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 62;
        assert_eq!(elf_arch_problem(&h), None);
        h[18] = 183;
        assert_eq!(elf_arch_problem(&h).unwrap(), "aarch64 (ELF machine 183)");
        h[4] = 1;
        assert_eq!(elf_arch_problem(&h).unwrap(), "32-bit");
    }
}
