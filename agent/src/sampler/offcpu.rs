//! The agent's side of off-CPU time and CPU time (see `modelprobe_common::offcpu`): reads the
//! in-kernel sums, swapping the two tables so the kernel never writes the one being read,
//! copies out each stack the first time an interval names it, and reads the per-thread CPU
//! time the scheduler tracepoint keeps.
use std::collections::HashSet;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use modelprobe_common::{
    offcpu::{stat, OffCpuEvent, OffCpuKey, OffCpuSum, ThreadCpu},
    StackEvent,
};

use super::{take_map, EventSink};
use crate::{recording::OffCpuStats, Error, Result};

/// A blocked interval, or a sum of them, as handed to an [`EventSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffCpu {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The stacks' id, handed over before by [`EventSink::off_cpu_stack`].
    pub stack_id: u64,
    /// One block: when it began. A sum: when the interval it covers began.
    pub time_ns: u64,
    /// Nanoseconds blocked (summed, for a sum).
    pub blocked_ns: u64,
    /// A sum: how many blocks it holds. `None` for one block.
    pub summed_blocks: Option<u64>,
}

/// The off-CPU and CPU-time maps.
pub struct OffCpuTables {
    sums: [HashMap<MapData, OffCpuKey, OffCpuSum>; 2],
    /// The sum table the kernel writes now.
    active: usize,
    /// When each table last became the active one (CLOCK_MONOTONIC ns).
    since: [u64; 2],
    active_index: Array<MapData, u32>,
    stacks: HashMap<MapData, u64, StackEvent>,
    /// Stack ids already handed to the sink.
    delivered: HashSet<u64>,
    thread_cpu: HashMap<MapData, u32, ThreadCpu>,
    stats: PerCpuArray<MapData, u64>,
}

impl OffCpuTables {
    /// Takes the maps out of the loaded object; sums start in table 0 at `now_ns`.
    pub fn new(bpf: &mut aya::Ebpf, now_ns: u64) -> Result<Self> {
        let open = |what: &'static str| move |e| Error::bpf(format!("opening {what}"), e);
        let sums = [
            HashMap::try_from(take_map(bpf, "OFFCPU_SUMS_0")?).map_err(open("OFFCPU_SUMS_0"))?,
            HashMap::try_from(take_map(bpf, "OFFCPU_SUMS_1")?).map_err(open("OFFCPU_SUMS_1"))?,
        ];
        let stacks =
            HashMap::try_from(take_map(bpf, "OFFCPU_STACKS")?).map_err(open("OFFCPU_STACKS"))?;
        let thread_cpu =
            HashMap::try_from(take_map(bpf, "THREAD_CPU")?).map_err(open("THREAD_CPU"))?;
        let mut active_index =
            Array::try_from(take_map(bpf, "OFFCPU_ACTIVE")?).map_err(open("OFFCPU_ACTIVE"))?;
        active_index
            .set(0, 0, 0)
            .map_err(|e| Error::bpf("setting OFFCPU_ACTIVE", e))?;
        let stats =
            PerCpuArray::try_from(take_map(bpf, "OFFCPU_STATS")?).map_err(open("OFFCPU_STATS"))?;
        Ok(OffCpuTables {
            sums,
            active: 0,
            since: [now_ns, now_ns],
            active_index,
            stacks,
            delivered: HashSet::new(),
            thread_cpu,
            stats,
        })
    }

    /// Hands the stacks behind `stack_id` to `sink` if they have not been yet.
    fn deliver_stack(&mut self, stack_id: u64, sink: &mut impl EventSink) {
        if self.delivered.insert(stack_id) {
            let stack = self.stacks.get(&stack_id, 0).ok();
            sink.off_cpu_stack(stack_id, stack.as_ref());
        }
    }

    /// One timeline event from the ring, with its stacks.
    pub fn event(&mut self, ev: &OffCpuEvent, sink: &mut impl EventSink) {
        self.deliver_stack(ev.stack_id, sink);
        sink.off_cpu(&OffCpu {
            pid: ev.pid,
            tid: ev.tid,
            stack_id: ev.stack_id,
            time_ns: ev.start_ns,
            blocked_ns: ev.blocked_ns,
            summed_blocks: None,
        });
    }

    /// Reads and empties the table the kernel stopped writing at the last swap, then makes it
    /// the active one. Between the two calls a whole poll interval passes, so no program can
    /// still be adding to the table read. With `last`, both tables are read (the recording is
    /// over; the caller has stopped the writers or accepts the race of the last microseconds).
    pub fn drain_sums(&mut self, now_ns: u64, last: bool, sink: &mut impl EventSink) -> usize {
        let idle = 1 - self.active;
        let mut n = self.drain_table(idle, sink);
        if let Err(e) = self.active_index.set(0, idle as u32, 0) {
            log::warn!("off-CPU sums not swapped ({e}); read in place");
        } else {
            self.active = idle;
            self.since[idle] = now_ns;
        }
        if last {
            n += self.drain_table(1 - self.active, sink);
        }
        n
    }

    fn drain_table(&mut self, table: usize, sink: &mut impl EventSink) -> usize {
        let entries: Vec<(OffCpuKey, OffCpuSum)> =
            self.sums[table].iter().filter_map(|r| r.ok()).collect();
        for (key, sum) in &entries {
            let _ = self.sums[table].remove(key);
            self.deliver_stack(key.stack_id, sink);
            sink.off_cpu(&OffCpu {
                pid: key.pid,
                tid: key.tid,
                stack_id: key.stack_id,
                time_ns: self.since[table],
                blocked_ns: sum.blocked_ns,
                summed_blocks: Some(sum.blocks),
            });
        }
        entries.len()
    }

    /// Each live target thread's time on CPU so far: (tid, its entry).
    pub fn thread_cpu(&self) -> Vec<(u32, ThreadCpu)> {
        self.thread_cpu.iter().filter_map(|r| r.ok()).collect()
    }

    /// Where blocked intervals went, summed over CPUs.
    pub fn stats(&self) -> OffCpuStats {
        let read = |i: u32| {
            self.stats
                .get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        OffCpuStats {
            events: read(stat::EVENTS),
            summed: read(stat::SUMMED),
            events_summed: read(stat::EVENTS_SUMMED),
        }
    }
}
