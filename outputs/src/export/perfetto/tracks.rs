//! The tracks of a Perfetto trace: a process track per process, a thread track per thread,
//! and child tracks under them (a thread's overlapping spans, its blocked intervals, a
//! process's LLM calls, each GPU stream), counter tracks; and lanes, which keep every track's
//! slices nested or disjoint, as Perfetto requires.
use std::collections::HashMap;

use super::proto::{CounterDescriptor, ProcessDescriptor, ThreadDescriptor, TrackDescriptor};
use crate::recording::Recording;

/// What a track is, to give each one uuid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Process(u32),
    Thread(u32, u32),
    /// A named child of another track.
    Child(u64, String),
    /// A counter, by its name (and process).
    Counter(Option<u32>, String),
}

/// Every track handed out, with its descriptor.
#[derive(Default)]
pub(super) struct Tracks {
    uuids: HashMap<Key, u64>,
    /// Descriptors in the order tracks were made (a parent before its children).
    pub descriptors: Vec<TrackDescriptor>,
}

impl Tracks {
    fn get(&mut self, key: Key, make: impl FnOnce(&mut Self) -> TrackDescriptor) -> u64 {
        if let Some(&uuid) = self.uuids.get(&key) {
            return uuid;
        }
        let mut d = make(self);
        let uuid = self.uuids.len() as u64 + 1;
        d.uuid = Some(uuid);
        self.uuids.insert(key, uuid);
        self.descriptors.push(d);
        uuid
    }

    /// The track of process `pid`.
    pub fn process(&mut self, rec: &Recording, pid: u32) -> u64 {
        self.get(Key::Process(pid), |_| {
            let p = rec.processes.iter().find(|p| p.pid == pid);
            TrackDescriptor {
                process: Some(ProcessDescriptor {
                    pid: Some(pid as i32),
                    cmdline: p
                        .and_then(|p| p.cmdline.as_deref())
                        .map(|c| c.split(' ').map(str::to_string).collect())
                        .unwrap_or_default(),
                    process_name: Some(rec.process_name(pid)),
                }),
                ..Default::default()
            }
        })
    }

    /// The track of thread `tid` of process `pid`.
    pub fn thread(&mut self, rec: &Recording, pid: u32, tid: u32) -> u64 {
        self.get(Key::Thread(pid, tid), |tracks| {
            let parent = tracks.process(rec, pid);
            TrackDescriptor {
                parent_uuid: Some(parent),
                thread: Some(ThreadDescriptor {
                    pid: Some(pid as i32),
                    tid: Some(tid as i32),
                    thread_name: Some(rec.thread_name(pid, tid)),
                }),
                ..Default::default()
            }
        })
    }

    /// A track named `name` under `parent`.
    pub fn child(&mut self, parent: u64, name: String) -> u64 {
        self.get(Key::Child(parent, name.clone()), |_| TrackDescriptor {
            parent_uuid: Some(parent),
            name: Some(name),
            ..Default::default()
        })
    }

    /// A counter track named `name`, under process `pid`'s track or global.
    pub fn counter(&mut self, rec: &Recording, pid: Option<u32>, name: &str) -> u64 {
        self.get(Key::Counter(pid, name.to_string()), |tracks| {
            TrackDescriptor {
                parent_uuid: pid.map(|pid| tracks.process(rec, pid)),
                name: Some(name.to_string()),
                counter: Some(CounterDescriptor {
                    categories: vec!["modelprobe".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
    }
}

/// Slices placed on lanes where each lane's slices nest or are disjoint; each lane's events
/// come out in time order, ends before the next begin.
#[derive(Default)]
pub(super) struct Lanes {
    /// Per lane: the ends of its open slices, outermost first.
    open: Vec<Vec<u64>>,
}

impl Lanes {
    /// Places `[start, end)` (slices come in start order, outer first at equal starts): its
    /// lane, and the ends of the slices that closed on that lane before it began.
    pub fn place(&mut self, start: u64, end: u64) -> (usize, Vec<u64>) {
        for (i, open) in self.open.iter_mut().enumerate() {
            let closed = open.iter().rev().take_while(|&&e| e <= start).count();
            let fits = open[..open.len() - closed].last().is_none_or(|&e| end <= e);
            if fits {
                let ended = open.split_off(open.len() - closed);
                open.push(end);
                return (i, ended.into_iter().rev().collect());
            }
        }
        self.open.push(vec![end]);
        (self.open.len() - 1, Vec::new())
    }

    /// The ends still open on every lane, innermost first per lane.
    pub fn finish(self) -> Vec<(usize, Vec<u64>)> {
        self.open
            .into_iter()
            .enumerate()
            .map(|(i, mut o)| {
                o.reverse();
                (i, o)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_keep_slices_nested_or_disjoint() {
        let mut l = Lanes::default();
        assert_eq!(l.place(10, 50), (0, vec![]));
        assert_eq!(l.place(12, 20), (0, vec![]));
        // Overlaps 10..50 without nesting in 12..20's parent after it ends: lane 0 still fits
        // (20 closed, 30..40 inside 10..50).
        assert_eq!(l.place(30, 40), (0, vec![20]));
        // 45..60 crosses 10..50's end: a second lane.
        assert_eq!(l.place(45, 60), (1, vec![]));
        assert_eq!(l.place(70, 80), (0, vec![40, 50]));
        assert_eq!(l.finish(), vec![(0, vec![80]), (1, vec![60])]);
    }
}
