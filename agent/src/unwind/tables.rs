//! The agent's side of the unwind tables: which objects have rows where in `UNWIND_ROWS`
//! (built once per build id, shared by every process), and which process slot in
//! `UNWIND_MAPPINGS` holds each process's mappings.
//!
//! [`UnwindTables::register`] reads a process's executable mappings and publishes them: it
//! writes the process's sorted mappings into a fresh slot, and only then points
//! `UNWIND_PROCS` at it (the BPF side never sees a half-written slot; the old slot is reused
//! last). Objects not seen before are compiled on a worker thread, so the session loop keeps
//! draining while a large library is read; [`UnwindTables::poll`] stores what the worker
//! finished and publishes again the processes that were waiting for it, and
//! [`UnwindTables::wait`] blocks until nothing is pending (at the start of a session, so the
//! first samples are already whole).
use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::File,
    os::unix::fs::MetadataExt,
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread::JoinHandle,
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
    /// On the worker now.
    Pending,
    None,
}

/// An object for the worker to compile.
struct Job {
    key: ObjectKey,
    path: String,
    data: memmap2::Mmap,
}

/// What the worker made of a [`Job`].
struct Done {
    key: ObjectKey,
    path: String,
    result: Result<compile::ObjectTable, compile::CompileError>,
    took: Duration,
}

/// The thread that compiles tables, and its two channels.
struct Worker {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start() -> Result<Worker> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mp-unwind".into())
            .spawn(move || {
                // Background work: the session loop (draining the ring buffers, attaching
                // probes) and the target come first.
                // SAFETY: gettid and setpriority have no memory-safety preconditions; this
                // lowers only the calling thread's priority.
                unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, 10);
                }
                for job in inbox {
                    let began = Instant::now();
                    let result = compile::compile(&job.data);
                    let done = Done {
                        key: job.key,
                        path: job.path,
                        result,
                        took: began.elapsed(),
                    };
                    if outbox.send(done).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io("starting the unwind-table thread", e))?;
        Ok(Worker {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the job channel ends the thread after the object in hand.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Objects up to this size are compiled on the session's thread (a few ms), larger ones on
/// the worker.
const INLINE_COMPILE_BYTES: usize = 4 << 20;

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
    /// What each process has in `UNWIND_PROCS`. A forked child shares its parent's slot until
    /// it is registered on its own (an exec, a library mapped since).
    published: HashMap<u32, UnwindProc>,
    /// Processes using each slot taken from `free_slots`.
    slot_users: HashMap<u32, u32>,
    free_slots: VecDeque<u32>,
    /// Processes published without some of their objects (still compiling).
    waiting: HashSet<u32>,
    pending: usize,
    worker: Worker,
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
            published: HashMap::new(),
            slot_users: HashMap::new(),
            free_slots: (0..MAX_UNWIND_PROCS).collect(),
            waiting: HashSet::new(),
            pending: 0,
            worker: Worker::start()?,
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
            let Some(entry) = self.object(pid, &line) else {
                continue;
            };
            let (start, len, segments) = match entry {
                Entry::Rows {
                    start,
                    len,
                    segments,
                } => (start, len, segments),
                Entry::Pending => {
                    self.waiting.insert(pid);
                    continue;
                }
                Entry::None => continue,
            };
            let Some(bias) = compile::bias(&segments, line.start, line.offset) else {
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
        log::debug!(
            "pid {pid}: unwind tables for {} mappings ({} rows so far)",
            list.len(),
            self.next_row
        );
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
        self.slot_users.insert(slot, 1);
        if let Some(old) = self.published.insert(pid, entry) {
            self.release(old.slot);
        } else {
            self.summary.processes += 1;
        }
        Ok(())
    }

    /// `child` was forked by `parent`: it has the same mappings, so it shares the parent's
    /// tables (no read of its maps, no slot of its own). The kernel copied the parent's entry
    /// at the fork; it is written again from what the agent holds, in case the parent has
    /// been registered anew since. False when the parent has no tables.
    pub fn inherit(&mut self, child: u32, parent: u32) -> bool {
        let Some(&entry) = self.published.get(&parent) else {
            return false;
        };
        if let Err(e) = self.procs.insert(child, entry, 0) {
            log::debug!("pid {child}: parent's unwind tables not shared ({e})");
            return false;
        }
        *self.slot_users.entry(entry.slot).or_insert(0) += 1;
        match self.published.insert(child, entry) {
            Some(old) => self.release(old.slot),
            None => self.summary.processes += 1,
        }
        true
    }

    /// One process less uses `slot`: back to the pool once none does.
    fn release(&mut self, slot: u32) {
        let users = self.slot_users.entry(slot).or_insert(1);
        *users -= 1;
        if *users == 0 {
            self.slot_users.remove(&slot);
            self.free_slots.push_back(slot);
        }
    }

    /// `pid` exited: its slot goes back to the pool once no other process shares it (its
    /// objects' rows stay, shared).
    pub fn forget(&mut self, pid: u32) {
        if let Some(entry) = self.published.remove(&pid) {
            let _ = self.procs.remove(&pid);
            self.release(entry.slot);
        }
    }

    /// Releases the slots of registered processes that no longer exist.
    pub fn forget_exited(&mut self) {
        let gone: Vec<u32> = self
            .published
            .keys()
            .copied()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        for pid in gone {
            self.forget(pid);
        }
    }

    /// Stores the tables the worker finished and publishes again the processes that waited
    /// for them; true if there were any.
    pub fn poll(&mut self) -> bool {
        let mut any = false;
        while let Ok(done) = self.worker.done.try_recv() {
            self.finished(done);
            any = true;
        }
        if any {
            self.republish_waiting();
        }
        any
    }

    /// Blocks until no object is compiling (at most `limit`), publishing as tables come.
    pub fn wait(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.worker.done.recv_timeout(left) {
                Ok(done) => self.finished(done),
                Err(RecvTimeoutError::Timeout) => {
                    log::warn!(
                        "{} unwind table(s) still building after {}s; their code is unwound by \
                         frame pointers until they are ready",
                        self.pending,
                        limit.as_secs()
                    );
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.republish_waiting();
    }

    fn republish_waiting(&mut self) {
        for pid in std::mem::take(&mut self.waiting) {
            if let Err(e) = self.register(pid) {
                log::warn!("pid {pid}: unwind tables not published ({e})");
            }
        }
    }

    /// One object back from the worker: its rows stored, or why it has none.
    fn finished(&mut self, done: Done) {
        self.pending = self.pending.saturating_sub(1);
        self.build_time += done.took;
        let entry = match done.result {
            Ok(table) => self.store(&done.path, table),
            Err(e) => {
                log::debug!("no unwind table for {}: {e}", done.path);
                self.summary.objects_without_info += 1;
                Entry::None
            }
        };
        if done.took > Duration::from_secs(1) {
            log::info!(
                "unwind table for {} built in {:.1}s",
                done.path,
                done.took.as_secs_f64()
            );
        }
        self.by_key.insert(done.key, entry);
    }

    /// What the tables hold and cost so far.
    pub fn summary(&self) -> UnwindSummary {
        UnwindSummary {
            rows: self.next_row as u64,
            build_ms: self.build_time.as_millis() as u64,
            ..self.summary.clone()
        }
    }

    /// Builds the tables of the object at `path` ahead of any process mapping it (a command
    /// about to be exec'ed, the C library it will load), so that its first samples are whole
    /// even when its threads leave the agent little CPU. Nothing is published.
    pub fn prebuild(&mut self, path: &std::path::Path) {
        if let Ok(file) = File::open(path) {
            let _ = self.object_in(file, &path.to_string_lossy());
        }
    }

    /// The entry of the file a mapping line names; on first sight, queued for the worker
    /// (`Pending`).
    fn object(&mut self, pid: u32, line: &procmaps::MapsLine<'_>) -> Option<Entry> {
        let by_map_files = format!("/proc/{pid}/map_files/{:x}-{:x}", line.start, line.end);
        let file = File::open(&by_map_files)
            .or_else(|_| File::open(format!("/proc/{pid}/root{}", line.path)))
            .ok()?;
        self.object_in(file, line.path)
    }

    /// The entry of an open object file; on first sight, compiled here when small, else queued
    /// for the worker (`Pending`).
    fn object_in(&mut self, file: File, path: &str) -> Option<Entry> {
        let md = file.metadata().ok()?;
        let inode = (md.dev(), md.ino());
        if let Some(key) = self.by_inode.get(&inode) {
            return self.by_key.get(key).cloned();
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
            return Some(entry.clone());
        }
        if data.len() <= INLINE_COMPILE_BYTES {
            // Small: compiled here in a millisecond or two, published with this very call
            // (no round trip through the worker for a library just dlopen'ed).
            let began = Instant::now();
            let result = compile::compile(&data);
            self.pending += 1;
            self.finished(Done {
                key: key.clone(),
                path: path.to_string(),
                result,
                took: began.elapsed(),
            });
            return self.by_key.get(&key).cloned();
        }
        let job = Job {
            key: key.clone(),
            path: path.to_string(),
            data,
        };
        let sent = self
            .worker
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        let entry = if sent {
            self.pending += 1;
            Entry::Pending
        } else {
            Entry::None
        };
        self.by_key.insert(key, entry.clone());
        Some(entry)
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
