//! What each target has mapped, captured while it lives.
//!
//! Symbolization happens after recording, when a target may be long gone. So for every process
//! seen, the executable mappings of `/proc/PID/maps` are kept, and every mapped file is opened
//! once (through `/proc/PID/map_files`, which works for deleted files and other mount
//! namespaces). The open handle keeps the file readable after the process exits.
use std::{
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
};

/// Index of a [`Module`] in a [`MapsRegistry`].
pub type ModuleId = u32;

/// A mapped file, opened while its process lived.
#[derive(Debug)]
pub struct Module {
    /// The path as the target saw it (from `/proc/PID/maps`).
    pub path: String,
    /// An open handle (None if the file could not be opened).
    file: Option<File>,
    /// A path this process can open the same file by.
    pub open_path: Option<PathBuf>,
}

impl Module {
    /// The file name, for display (`libc.so.6`).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// True when the file was opened and can be read for symbols.
    pub fn is_readable(&self) -> bool {
        self.file.is_some()
    }
}

/// One executable mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The file mapped, or a pseudo name (`[vdso]`) / empty for anonymous memory.
    pub path: String,
    /// The opened file, for file-backed mappings.
    pub module: Option<ModuleId>,
}

/// Every module and every process's mappings seen during a recording.
#[derive(Debug, Default)]
pub struct MapsRegistry {
    modules: Vec<Module>,
    by_inode: HashMap<(u64, u64), ModuleId>,
    procs: HashMap<u32, Vec<Mapping>>,
    /// Files mapped since the last [`MapsRegistry::take_new_files`], by whichever capture saw
    /// them first (a sample in unknown code, the periodic rescan, an exec).
    fresh: Vec<(u32, String)>,
}

/// A parsed line of `/proc/PID/maps`.
pub(crate) struct MapsLine<'a> {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Mapped executable.
    pub exec: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device of the mapped file, as `stat`'s `st_dev` encodes it (from `MAJOR:MINOR`).
    pub dev: u64,
    /// Inode of the mapped file (0 for anonymous memory).
    pub inode: u64,
    /// The path, or a pseudo-name such as `[heap]`; empty for anonymous memory.
    pub path: &'a str,
}

/// One line of `/proc/PID/maps`, `None` if malformed.
pub(crate) fn parse_line(line: &str) -> Option<MapsLine<'_>> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let (major, minor) = it.next()?.split_once(':')?;
    let dev = libc::makedev(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    let inode = it.next()?.parse().ok()?;
    let path = it.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-')?;
    Some(MapsLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        exec: perms.as_bytes().get(2) == Some(&b'x'),
        offset,
        dev,
        inode,
        path,
    })
}

impl MapsRegistry {
    /// Reads `/proc/PID/maps` and merges its executable mappings into what is known of `pid`.
    /// Returns the paths of file-backed mappings new since the last capture, or `None` if the
    /// process is gone. Mappings already known cost no file open. The new paths are also kept
    /// for [`MapsRegistry::take_new_files`], whoever asked for the capture.
    pub fn capture(&mut self, pid: u32) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let mut added = Vec::new();
        for line in text.lines().filter_map(parse_line).filter(|l| l.exec) {
            let known = self.procs.entry(pid).or_default();
            let same = |k: &Mapping| {
                (k.start, k.end, k.offset) == (line.start, line.end, line.offset)
                    && k.path == line.path
            };
            if known.iter().any(same) {
                continue;
            }
            let module = (line.inode != 0 && line.path.starts_with('/'))
                .then(|| self.open_module(pid, &line))
                .flatten();
            if module.is_some() {
                added.push(line.path.to_string());
            }
            let m = Mapping {
                start: line.start,
                end: line.end,
                offset: line.offset,
                path: line.path.to_string(),
                module,
            };
            let known = self.procs.entry(pid).or_default();
            // A new mapping replaces whatever it overlaps (an unmap and remap at runtime).
            known.retain(|k| k.end <= m.start || k.start >= m.end);
            let at = known.partition_point(|k| k.start < m.start);
            known.insert(at, m);
        }
        self.fresh.extend(added.iter().map(|p| (pid, p.clone())));
        Some(added)
    }

    /// `child` was forked by `parent`: it starts with the parent's mappings (the same files,
    /// at the same addresses). False when the parent's are not known.
    pub fn inherit(&mut self, child: u32, parent: u32) -> bool {
        let Some(known) = self.procs.get(&parent).cloned() else {
            return false;
        };
        self.procs.insert(child, known);
        true
    }

    /// Every (pid, file) newly mapped since the last call, grouped by pid in first-seen
    /// order: what the probe set must look at, whichever capture found it.
    pub fn take_new_files(&mut self) -> Vec<(u32, Vec<String>)> {
        let mut out: Vec<(u32, Vec<String>)> = Vec::new();
        for (pid, path) in std::mem::take(&mut self.fresh) {
            match out.iter_mut().find(|(p, _)| *p == pid) {
                Some((_, files)) => files.push(path),
                None => out.push((pid, vec![path])),
            }
        }
        out
    }

    fn open_module(&mut self, pid: u32, line: &MapsLine<'_>) -> Option<ModuleId> {
        // A file already open (another process of the same executable, a library every
        // process maps): known by the device and inode the maps line names, no open.
        if let Some(id) = self.by_inode.get(&(line.dev, line.inode)) {
            return Some(*id);
        }
        let by_map_files = format!("/proc/{pid}/map_files/{:x}-{:x}", line.start, line.end);
        let by_root = format!("/proc/{pid}/root{}", line.path);
        let file = File::open(&by_map_files)
            .or_else(|_| File::open(&by_root))
            .ok();
        let key = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|md| (md.dev(), md.ino()));
        if let Some(id) = key.and_then(|k| self.by_inode.get(&k)) {
            return Some(*id);
        }
        // Prefer the plain path when it names the same file here (debug links resolve next
        // to it); otherwise read through our own open descriptor.
        let same_file_here = std::fs::metadata(line.path)
            .ok()
            .map(|md| (md.dev(), md.ino()))
            .is_some_and(|k| Some(k) == key);
        let open_path = match &file {
            Some(_) if same_file_here => Some(PathBuf::from(line.path)),
            Some(f) => Some(PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))),
            None => None,
        };
        let id = self.modules.len() as ModuleId;
        self.modules.push(Module {
            path: line.path.to_string(),
            file,
            open_path,
        });
        if let Some(k) = key {
            self.by_inode.insert(k, id);
        }
        Some(id)
    }

    /// True if `pid` has been captured at least once.
    pub fn knows(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// The mapping of `pid` that contains `addr`.
    pub fn lookup(&self, pid: u32, addr: u64) -> Option<&Mapping> {
        let maps = self.procs.get(&pid)?;
        let i = maps.partition_point(|m| m.start <= addr);
        let m = maps.get(i.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }

    /// The module with this id.
    pub fn module(&self, id: ModuleId) -> &Module {
        &self.modules[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let l = parse_line(
            "7f1c2a000000-7f1c2a1d5000 r-xp 00028000 fe:01 1234   /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(
            (l.start, l.end, l.offset, l.inode),
            (0x7f1c2a000000, 0x7f1c2a1d5000, 0x28000, 1234)
        );
        assert!(l.exec);
        assert_eq!(l.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let anon = parse_line("7ffd1000-7ffd3000 rw-p 00000000 00:00 0").unwrap();
        assert!(!anon.exec);
        assert_eq!(anon.path, "");
        let deleted = parse_line("1000-2000 r-xp 0 00:01 9 /tmp/x (deleted)").unwrap();
        assert_eq!(deleted.path, "/tmp/x (deleted)");
    }

    #[test]
    fn captures_own_process_and_finds_own_code() {
        let mut reg = MapsRegistry::default();
        let added = reg.capture(std::process::id()).expect("own process");
        assert!(added.iter().any(|p| p.contains("libc")), "{added:?}");
        assert_eq!(
            reg.capture(std::process::id()),
            Some(vec![]),
            "nothing new the second time"
        );
        let here = captures_own_process_and_finds_own_code as *const () as u64;
        let m = reg
            .lookup(std::process::id(), here)
            .expect("own code is mapped");
        let module = reg.module(m.module.expect("file backed"));
        assert!(module.is_readable());
        assert!(module.path.contains("modelprobe"), "{}", module.path);
        assert!(reg.lookup(std::process::id(), 8).is_none());
    }

    #[test]
    fn new_files_wait_for_the_taker_whoever_captured_them() {
        let me = std::process::id();
        let mut reg = MapsRegistry::default();
        // A capture made for another reason (a sample in unknown code) ...
        let first = reg.capture(me).expect("own process");
        assert!(!first.is_empty());
        // ... and one that finds nothing new: the files are still handed over once.
        assert_eq!(reg.capture(me), Some(vec![]));
        let taken = reg.take_new_files();
        assert_eq!(taken, vec![(me, first)]);
        assert!(reg.take_new_files().is_empty());
    }

    #[test]
    fn the_maps_device_is_stats_device() {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = text
            .lines()
            .filter_map(parse_line)
            .find(|l| l.exec && l.path.starts_with('/'))
            .expect("an executable file mapping");
        let md = std::fs::metadata(line.path).unwrap();
        assert_eq!(
            (line.dev, line.inode),
            (md.dev(), md.ino()),
            "{}",
            line.path
        );
    }

    #[test]
    fn another_process_of_the_same_files_opens_nothing_new() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let mut reg = MapsRegistry::default();
        // Wait for the exec to have mapped libc.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read_to_string(format!("/proc/{}/maps", child.id()))
            .unwrap_or_default()
            .contains("libc")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "sleep never mapped libc"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        reg.capture(child.id()).expect("the child");
        let modules = reg.modules.len();
        let libc_id = |reg: &MapsRegistry, pid: u32| {
            reg.procs[&pid]
                .iter()
                .find(|m| m.path.contains("libc.so"))
                .and_then(|m| m.module)
        };
        let childs_libc = libc_id(&reg, child.id()).expect("libc in sleep");
        // This process maps libc too: the same module, found by device and inode.
        let added = reg.capture(std::process::id()).expect("own process");
        assert!(added.iter().any(|p| p.contains("libc")), "{added:?}");
        assert_eq!(libc_id(&reg, std::process::id()), Some(childs_libc));
        assert!(reg.modules.len() > modules, "the test binary itself is new");
        // A fork inherits: the same mappings, nothing read.
        assert!(reg.inherit(4_000_000, child.id()));
        assert_eq!(reg.procs[&4_000_000], reg.procs[&child.id()]);
        assert!(!reg.inherit(4_000_001, 4_000_002), "an unknown parent");
        let _ = child.kill();
        let _ = child.wait();
    }
}
