//! Stack events into samples: each distinct (process, kernel, user and Python stacks) interned once,
//! CPU and off-CPU samples naming it.
use std::collections::HashMap;

use modelprobe_common::{flags, python::PyFrame, StackEvent};

use super::processes::Processes;
use crate::{
    recording::{Sample, SampleKind},
    sampler::OffCpu,
    symbolize::RawStack,
};

/// Interned stacks and the samples that name them.
#[derive(Debug, Default)]
pub struct Stacks {
    ids: HashMap<StackKey, u32>,
    stacks: Vec<RawStack>,
    samples: Vec<Sample>,
    user_errors: u64,
    kernel_errors: u64,
    quality: StackQuality,
    /// Interned stacks of the kernel's off-CPU stack ids.
    off_cpu_ids: HashMap<u64, u32>,
    /// Off-CPU stack ids whose stacks the kernel evicted before they were read.
    off_cpu_evicted: u64,
}

/// A stack as the kernel gave it: what makes two events' stacks the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StackKey {
    pid: u32,
    kernel: Vec<u64>,
    user: Vec<u64>,
    python: Vec<PyFrame>,
}

/// How whole the user stacks were, counted over every stack event (samples, launch and error
/// stacks), from the unwinder's flags.
#[derive(Debug, Default, Clone, Copy)]
pub struct StackQuality {
    /// Cut at the depth limit.
    pub truncated: u64,
    /// With a frame that had no unwind table.
    pub without_unwind_info: u64,
    /// Stopped at a rule the unwinder does not evaluate, or a corrupt frame.
    pub stopped: u64,
    /// Innermost frame without CFI, its caller found by a validated stack scan.
    pub scanned: u64,
    /// Stacks of a process whose Python frames are read.
    pub python: u64,
    /// Of those, of a thread without a Python thread state.
    pub python_no_thread: u64,
    /// Python frames cut at the depth limit.
    pub python_truncated: u64,
    /// Python walk stopped at an unreadable frame.
    pub python_errors: u64,
}

/// What [`Stacks::finish`] hands to symbolization.
pub struct Sampled {
    /// Distinct stacks, by id.
    pub stacks: Vec<RawStack>,
    /// Samples in time order.
    pub samples: Vec<Sample>,
    /// Samples whose user stack could not be read.
    pub user_errors: u64,
    /// How whole the user stacks were.
    pub quality: StackQuality,
    /// Samples whose kernel stack could not be read.
    pub kernel_errors: u64,
    /// Off-CPU stacks evicted before they were read (their time is under an empty stack).
    pub off_cpu_evicted: u64,
}

impl Stacks {
    /// Number of samples so far.
    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// The id of an event's stacks; a stack not seen before makes sure its code is known.
    pub fn intern(&mut self, ev: &StackEvent, procs: &mut Processes) -> u32 {
        let q = &mut self.quality;
        for (bit, count) in [
            (flags::USTACK_TRUNCATED, &mut q.truncated),
            (flags::USTACK_NO_UNWIND_INFO, &mut q.without_unwind_info),
            (flags::USTACK_UNSUPPORTED, &mut q.stopped),
            (flags::USTACK_SCANNED, &mut q.scanned),
            (flags::PYSTACK | flags::PYSTACK_NO_THREAD, &mut q.python),
            (flags::PYSTACK_NO_THREAD, &mut q.python_no_thread),
            (flags::PYSTACK_TRUNCATED, &mut q.python_truncated),
            (flags::PYSTACK_ERROR, &mut q.python_errors),
        ] {
            *count += u64::from(ev.flags & bit != 0);
        }
        let klen = (ev.kstack_len as usize).min(ev.kstack.len());
        let ulen = (ev.ustack_len as usize).min(ev.ustack.len());
        let plen = (ev.py_len as usize).min(ev.pystack.len());
        let key = StackKey {
            pid: ev.pid,
            kernel: ev.kstack[..klen].to_vec(),
            // A frame-pointer walk through code built without frame pointers can end in
            // zeros; they are not frames.
            user: ev.ustack[..ulen]
                .iter()
                .copied()
                .filter(|&a| a != 0)
                .collect(),
            python: ev.pystack[..plen].to_vec(),
        };
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        procs.learn_code(ev.pid, &key.user);
        let raw = RawStack {
            pid: key.pid,
            kernel: key.kernel.clone(),
            user: key.user.clone(),
            python: procs.python.name_frames(ev.pid, &key.python),
        };
        self.add(key, raw)
    }

    /// Keeps a stack not interned yet; returns its id.
    fn add(&mut self, key: StackKey, raw: RawStack) -> u32 {
        let id = self.stacks.len() as u32;
        self.ids.insert(key, id);
        self.stacks.push(raw);
        id
    }

    /// The stacks behind an off-CPU stack id (`None`: evicted before they were read; their
    /// intervals are kept under an empty stack).
    pub fn off_cpu_stack(&mut self, id: u64, ev: Option<&StackEvent>, procs: &mut Processes) {
        let stack = match ev {
            Some(ev) => {
                self.count_errors(ev);
                self.intern(ev, procs)
            }
            None => {
                self.off_cpu_evicted += 1;
                self.intern_empty()
            }
        };
        self.off_cpu_ids.insert(id, stack);
    }

    /// An empty stack: for time whose stack is unknown.
    fn intern_empty(&mut self) -> u32 {
        let key = StackKey {
            pid: 0,
            kernel: Vec::new(),
            user: Vec::new(),
            python: Vec::new(),
        };
        match self.ids.get(&key) {
            Some(&id) => id,
            None => {
                let raw = RawStack {
                    pid: 0,
                    kernel: Vec::new(),
                    user: Vec::new(),
                    python: Vec::new(),
                };
                self.add(key, raw)
            }
        }
    }

    /// Adds a blocked interval, or a sum of them (its stacks were handed over before).
    pub fn off_cpu(&mut self, o: &OffCpu, procs: &mut Processes) {
        let stack = match self.off_cpu_ids.get(&o.stack_id) {
            Some(&id) => id,
            None => {
                self.off_cpu_evicted += 1;
                self.intern_empty()
            }
        };
        procs.seen_thread(o.pid, o.tid);
        self.samples.push(Sample {
            kind: SampleKind::OffCpu,
            time_ns: o.time_ns,
            pid: o.pid,
            tid: o.tid,
            stack,
            weight: o.blocked_ns,
            blocks: o.summed_blocks,
        });
    }

    fn count_errors(&mut self, ev: &StackEvent) {
        if ev.flags & flags::USTACK_ERROR != 0 {
            self.user_errors += 1;
        }
        if ev.flags & flags::KSTACK_ERROR != 0 {
            self.kernel_errors += 1;
        }
    }

    /// Adds a CPU sample.
    pub fn sample(&mut self, ev: &StackEvent, kind: SampleKind, procs: &mut Processes) {
        self.count_errors(ev);
        procs.sampled(ev.pid, ev.tid, super::comm_str(&ev.comm));
        let stack = self.intern(ev, procs);
        self.samples.push(Sample {
            kind,
            time_ns: ev.time_ns,
            pid: ev.pid,
            tid: ev.tid,
            stack,
            weight: ev.weight,
            blocks: None,
        });
    }

    /// Drops the samples taken before `t` (a flight recorder's history); interned stacks stay.
    pub fn evict_before(&mut self, t: u64) {
        self.samples.retain(|s| s.time_ns >= t);
    }

    /// Everything, samples in time order.
    pub fn finish(mut self) -> Sampled {
        self.samples.sort_by_key(|s| s.time_ns);
        Sampled {
            stacks: self.stacks,
            samples: self.samples,
            user_errors: self.user_errors,
            quality: self.quality,
            kernel_errors: self.kernel_errors,
            off_cpu_evicted: self.off_cpu_evicted,
        }
    }
}

/// A stack taken at a function's entry, with its caller put back when the frame-pointer walk
/// skipped it (see [`flags::ENTRY_RET`]).
pub fn with_caller(ev: &StackEvent) -> StackEvent {
    let mut ev = *ev;
    let ret = ev.user_bp;
    let len = (ev.ustack_len as usize).min(ev.ustack.len());
    if ev.flags & flags::ENTRY_RET != 0
        && ret != 0
        && len >= 1
        && len < ev.ustack.len()
        && (len < 2 || ev.ustack[1] != ret)
    {
        ev.ustack.copy_within(1..len, 2);
        ev.ustack[1] = ret;
        ev.ustack_len += 1;
    }
    ev
}
