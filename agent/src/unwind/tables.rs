//! The agent's side of the unwind tables: which objects have rows where in `UNWIND_ROWS`
//! (built once per build id, shared by every process), and which process slot in
//! `UNWIND_MAPPINGS` holds each process's mappings.
//!
//! [`UnwindTables::register`] reads a process's executable mappings and publishes them: it
//! compiles the objects not seen before, writes the process's sorted mappings into a fresh
//! slot, and only then points `UNWIND_PROCS` at it (the BPF side never sees a half-written
//! slot; the old slot is reused last).
use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use modelprobe_common::unwind::{
    UnwindMapping, UnwindProc, UnwindRow, MAX_UNWIND_MAPPINGS, MAX_UNWIND_PROCS, ROW_SEARCH_STEPS,
};
use object::Object;

use super::{compile, shared::SharedArray};
use crate::{procmaps, recording::UnwindSummary, Error, Result};

/// Where an object's rows are, or why it has none.
#[derive(Debug, Clone)]
enum Entry {
    Rows {
        start: u32,
        len: u32,
        segments: Vec<(u64, u64, u64)>,
    },
    None,
}

/// Identity of a mapped file: its build id, else its device and inode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ObjectKey {
    BuildId(Vec<u8>),
    Inode(u64, u64),
}

/// The unwind maps and what the agent put in them.
pub struct UnwindTables {
    rows: SharedArray<UnwindRow>,
    mappings: SharedArray<UnwindMapping>,
    procs: BpfHashMap<MapData, u32, UnwindProc>,
    next_row: u32,
    by_key: HashMap<ObjectKey, Entry>,
    by_inode: HashMap<(u64, u64), ObjectKey>,
    slot_of: HashMap<u32, u32>,
    free_slots: VecDeque<u32>,
    summary: UnwindSummary,
    build_time: Duration,
}

impl UnwindTables {
    /// Takes over the three unwind maps of a loaded BPF object.
    pub fn new(rows: MapData, rows_len: u32, mappings: MapData, procs: MapData) -> Result<Self> {
        let rows = SharedArray::new(rows, rows_len, "UNWIND_ROWS")?;
        let mappings = SharedArray::new(
            mappings,
            MAX_UNWIND_PROCS * MAX_UNWIND_MAPPINGS,
            "UNWIND_MAPPINGS",
        )?;
        let procs = BpfHashMap::try_from(aya::maps::Map::HashMap(procs))
            .map_err(|e| Error::bpf("opening the UNWIND_PROCS map", e))?;
        let summary = UnwindSummary {
            capacity_rows: rows.len() as u64,
            kernel_bytes: rows.len() as u64 * 16
                + (MAX_UNWIND_PROCS * MAX_UNWIND_MAPPINGS) as u64 * 32,
            ..UnwindSummary::default()
        };
        Ok(UnwindTables {
            rows,
            mappings,
            procs,
            next_row: 0,
            by_key: HashMap::new(),
            by_inode: HashMap::new(),
            slot_of: HashMap::new(),
            free_slots: (0..MAX_UNWIND_PROCS).collect(),
            summary,
            build_time: Duration::ZERO,
        })
    }

    /// Reads `pid`'s executable mappings and publishes their tables; a process gone by now is
    /// not an error (nothing is published).
    pub fn register(&mut self, pid: u32) -> Result<()> {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return Ok(());
        };
        let mut list = Vec::new();
        for line in text.lines().filter_map(procmaps::parse_line) {
            if !line.exec || line.inode == 0 || !line.path.starts_with('/') {
                continue;
            }
            let Some((entry, _)) = self.object(pid, &line) else {
                continue;
            };
            let Entry::Rows {
                start,
                len,
                segments,
            } = entry
            else {
                continue;
            };
            let table = compile::ObjectTable {
                rows: Vec::new(),
                segments,
            };
            let Some(bias) = table.bias(line.start, line.offset) else {
                continue;
            };
            list.push(UnwindMapping {
                start: line.start,
                end: line.end,
                bias,
                rows_start: start,
                rows_len: len,
            });
        }
        list.sort_by_key(|m| m.start);
        if list.len() > MAX_UNWIND_MAPPINGS as usize {
            self.summary.mappings_over_limit += (list.len() - MAX_UNWIND_MAPPINGS as usize) as u64;
            list.truncate(MAX_UNWIND_MAPPINGS as usize);
        }
        let Some(slot) = self.free_slots.pop_front() else {
            self.summary.processes_over_limit += 1;
            return Ok(());
        };
        self.mappings.write(slot * MAX_UNWIND_MAPPINGS, &list);
        let entry = UnwindProc {
            slot,
            len: list.len() as u32,
        };
        if let Err(e) = self.procs.insert(pid, entry, 0) {
            self.free_slots.push_back(slot);
            return Err(Error::bpf(
                format!("publishing pid {pid}'s unwind tables"),
                e,
            ));
        }
        if let Some(old) = self.slot_of.insert(pid, slot) {
            self.free_slots.push_back(old);
        } else {
            self.summary.processes += 1;
        }
        Ok(())
    }

    /// `pid` exited: its slot goes back to the pool (its objects' rows stay, shared).
    pub fn forget(&mut self, pid: u32) {
        if let Some(slot) = self.slot_of.remove(&pid) {
            let _ = self.procs.remove(&pid);
            self.free_slots.push_back(slot);
        }
    }

    /// Releases the slots of registered processes that no longer exist.
    pub fn forget_exited(&mut self) {
        let gone: Vec<u32> = self
            .slot_of
            .keys()
            .copied()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        for pid in gone {
            self.forget(pid);
        }
    }

    /// What the tables hold and cost so far.
    pub fn summary(&self) -> UnwindSummary {
        UnwindSummary {
            rows: self.next_row as u64,
            build_ms: self.build_time.as_millis() as u64,
            ..self.summary.clone()
        }
    }

    /// The entry of the file a mapping line names, compiled on first sight.
    fn object(&mut self, pid: u32, line: &procmaps::MapsLine<'_>) -> Option<(Entry, ObjectKey)> {
        let by_map_files = format!("/proc/{pid}/map_files/{:x}-{:x}", line.start, line.end);
        let file = File::open(&by_map_files)
            .or_else(|_| File::open(format!("/proc/{pid}/root{}", line.path)))
            .ok()?;
        let md = file.metadata().ok()?;
        let inode = (md.dev(), md.ino());
        if let Some(key) = self.by_inode.get(&inode) {
            return Some((self.by_key[key].clone(), key.clone()));
        }
        // SAFETY: the file is mapped read-only and private; a library rewritten in place while
        // mapped is a hazard every debugger shares, and at worst yields wrong rows.
        let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let key = object::File::parse(&*data)
            .ok()
            .and_then(|f| f.build_id().ok().flatten().map(<[u8]>::to_vec))
            .map_or(ObjectKey::Inode(inode.0, inode.1), ObjectKey::BuildId);
        self.by_inode.insert(inode, key.clone());
        if let Some(entry) = self.by_key.get(&key) {
            return Some((entry.clone(), key));
        }
        let began = Instant::now();
        let entry = match compile::compile(&data) {
            Ok(table) => self.store(line.path, table),
            Err(e) => {
                log::debug!("no unwind table for {}: {e}", line.path);
                self.summary.objects_without_info += 1;
                Entry::None
            }
        };
        self.build_time += began.elapsed();
        self.by_key.insert(key.clone(), entry.clone());
        Some((entry, key))
    }

    /// Copies an object's rows into `UNWIND_ROWS`.
    fn store(&mut self, path: &str, table: compile::ObjectTable) -> Entry {
        let len = table.rows.len() as u32;
        if table.rows.len() > 1 << ROW_SEARCH_STEPS {
            log::warn!("{path}: {len} unwind rows, over the walk's limit; frame pointers there");
            self.summary.objects_without_info += 1;
            return Entry::None;
        }
        let start = self.next_row;
        if !self.rows.write(start, &table.rows) {
            log::warn!(
                "the unwind table is full ({} rows): {path} is unwound by frame pointers \
                 (raise --unwind-rows)",
                self.rows.len()
            );
            self.summary.objects_over_capacity += 1;
            return Entry::None;
        }
        self.next_row += len;
        self.summary.objects += 1;
        Entry::Rows {
            start,
            len,
            segments: table.segments,
        }
    }
}
