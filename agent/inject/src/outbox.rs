//! Records waiting to be sent to the agent: filled by CUPTI's buffer callback and the API
//! callback (application threads), emptied by the session thread.
//!
//! Bounded: past [`CAP_BYTES`] new records are counted in [`Outbox::dropped`] instead of
//! kept, so a stalled agent can never make the host process grow without limit.
use std::{collections::HashMap, sync::Mutex};

use modelprobe_common::gpu::{
    as_bytes, msg, slice_as_bytes, ClockPair, Header, Wire, WireLaunch, WireOp, MAGIC, MAX_MESSAGE,
};

/// Most bytes of records held for the agent.
pub const CAP_BYTES: usize = 64 << 20;

/// Longest name kept, in bytes (longer C++ kernel names are cut).
pub const MAX_NAME: usize = 8 << 10;

/// The process's outbox.
pub static OUTBOX: Mutex<Outbox> = Mutex::new(Outbox::new());

/// Locks [`OUTBOX`], even if a thread panicked while holding it.
pub fn lock() -> std::sync::MutexGuard<'static, Outbox> {
    OUTBOX.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records and names not sent yet.
#[derive(Debug, Default)]
pub struct Outbox {
    names: Option<HashMap<String, u32>>,
    new_names: Vec<(u32, String)>,
    ops: Vec<WireOp>,
    launches: Vec<WireLaunch>,
    clock: Vec<ClockPair>,
    queued: usize,
    /// Records not kept because the outbox was full.
    pub dropped: u64,
}

/// `name`, cut to [`MAX_NAME`] bytes on a character boundary.
fn cut(name: &str) -> &str {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// What [`Outbox::take`] hands the sender.
#[derive(Debug, Default)]
pub struct Batch {
    /// Names first seen since the last batch.
    pub names: Vec<(u32, String)>,
    /// GPU operations.
    pub ops: Vec<WireOp>,
    /// Launching calls.
    pub launches: Vec<WireLaunch>,
    /// Clock pairs.
    pub clock: Vec<ClockPair>,
}

impl Outbox {
    /// An empty outbox.
    pub const fn new() -> Outbox {
        Outbox {
            names: None,
            new_names: Vec::new(),
            ops: Vec::new(),
            launches: Vec::new(),
            clock: Vec::new(),
            queued: 0,
            dropped: 0,
        }
    }

    /// Empties the outbox for a new agent session: ids stay, and every known name is
    /// announced again in the first batch.
    pub fn reset(&mut self) {
        let names = self.names.take();
        *self = Outbox::new();
        if let Some(names) = names {
            let mut all: Vec<(u32, String)> = names
                .iter()
                .map(|(n, &id)| (id, cut(n).to_owned()))
                .collect();
            all.sort_unstable_by_key(|(id, _)| *id);
            self.queued = all.iter().map(|(_, n)| n.len() + 8).sum();
            self.new_names = all;
            self.names = Some(names);
        }
    }

    /// The id of `name`, announcing it in the next batch when new.
    pub fn intern(&mut self, name: &str) -> u32 {
        let names = self.names.get_or_insert_with(HashMap::new);
        if let Some(&id) = names.get(name) {
            return id;
        }
        let id = names.len() as u32;
        let kept = cut(name);
        names.insert(name.to_owned(), id);
        self.queued += kept.len() + 8;
        self.new_names.push((id, kept.to_owned()));
        id
    }

    fn room(&mut self, bytes: usize) -> bool {
        if self.queued + bytes > CAP_BYTES {
            self.dropped += 1;
            return false;
        }
        self.queued += bytes;
        true
    }

    /// Queues a GPU operation.
    pub fn push_op(&mut self, op: WireOp) {
        if self.room(size_of::<WireOp>()) {
            self.ops.push(op);
        }
    }

    /// Queues a launching call.
    pub fn push_launch(&mut self, launch: WireLaunch) {
        if self.room(size_of::<WireLaunch>()) {
            self.launches.push(launch);
        }
    }

    /// Queues a clock pair (never dropped: they are few and the join needs them).
    pub fn push_clock(&mut self, pair: ClockPair) {
        self.queued += size_of::<ClockPair>();
        self.clock.push(pair);
    }

    /// Everything queued, leaving the outbox empty (names stay interned).
    pub fn take(&mut self) -> Batch {
        self.queued = 0;
        Batch {
            names: std::mem::take(&mut self.new_names),
            ops: std::mem::take(&mut self.ops),
            launches: std::mem::take(&mut self.launches),
            clock: std::mem::take(&mut self.clock),
        }
    }
}

impl Batch {
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
            && self.ops.is_empty()
            && self.launches.is_empty()
            && self.clock.is_empty()
    }

    /// The batch as protocol messages, each at most [`MAX_MESSAGE`] bytes; names come first
    /// so that every op's name is known when it arrives.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        names_messages(&self.names, &mut out);
        items_messages(msg::LAUNCHES, &self.launches, &mut out);
        items_messages(msg::OPS, &self.ops, &mut out);
        items_messages(msg::CLOCK, &self.clock, &mut out);
        out
    }
}

/// One message of `kind` with a fixed part.
pub fn message<T: Wire>(kind: u32, count: u32, body: &T, tail: &[u8]) -> Vec<u8> {
    let header = Header {
        magic: MAGIC,
        kind,
        count,
        _pad: 0,
    };
    let mut m = Vec::with_capacity(16 + size_of::<T>() + tail.len());
    m.extend_from_slice(as_bytes(&header));
    m.extend_from_slice(as_bytes(body));
    m.extend_from_slice(tail);
    m
}

fn items_messages<T: Wire>(kind: u32, items: &[T], out: &mut Vec<Vec<u8>>) {
    let per = (MAX_MESSAGE - size_of::<Header>()) / size_of::<T>();
    for chunk in items.chunks(per) {
        let header = Header {
            magic: MAGIC,
            kind,
            count: chunk.len() as u32,
            _pad: 0,
        };
        let mut m = Vec::with_capacity(16 + size_of_val(chunk));
        m.extend_from_slice(as_bytes(&header));
        m.extend_from_slice(slice_as_bytes(chunk));
        out.push(m);
    }
}

fn names_messages(names: &[(u32, String)], out: &mut Vec<Vec<u8>>) {
    let mut current: Vec<u8> = Vec::new();
    let mut count = 0u32;
    let flush = |current: &mut Vec<u8>, count: &mut u32, out: &mut Vec<Vec<u8>>| {
        if *count > 0 {
            let header = Header {
                magic: MAGIC,
                kind: msg::NAMES,
                count: *count,
                _pad: 0,
            };
            let mut m = as_bytes(&header).to_vec();
            m.append(current);
            out.push(m);
            *count = 0;
        }
    };
    for (id, name) in names {
        let padded = name.len().div_ceil(4) * 4;
        if 16 + current.len() + 8 + padded > MAX_MESSAGE {
            flush(&mut current, &mut count, out);
        }
        current.extend_from_slice(&id.to_le_bytes());
        current.extend_from_slice(&(name.len() as u32).to_le_bytes());
        current.extend_from_slice(name.as_bytes());
        current.resize(current.len() + padded - name.len(), 0);
        count += 1;
    }
    flush(&mut current, &mut count, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelprobe_common::gpu::read;

    #[test]
    fn names_are_interned_once_and_sent_first() {
        let mut o = Outbox::new();
        assert_eq!(o.intern("sgemm"), 0);
        assert_eq!(o.intern("HtoD"), 1);
        assert_eq!(o.intern("sgemm"), 0);
        o.push_op(WireOp {
            name: 0,
            ..Default::default()
        });
        let batch = o.take();
        assert_eq!(batch.names.len(), 2);
        let msgs = batch.messages();
        assert_eq!(read::<Header>(&msgs[0], 0).unwrap().kind, msg::NAMES);
        assert_eq!(read::<Header>(&msgs[0], 0).unwrap().count, 2);
        assert_eq!(read::<Header>(&msgs[1], 0).unwrap().kind, msg::OPS);
        // Names stay interned across batches, and are not sent again.
        assert_eq!(o.intern("sgemm"), 0);
        assert!(o.take().names.is_empty());
        // A new session hears every name again, with the same ids.
        o.reset();
        assert_eq!(
            o.take().names,
            [(0, "sgemm".to_string()), (1, "HtoD".to_string())]
        );
    }

    #[test]
    fn messages_stay_under_the_limit_and_keep_every_item() {
        let mut o = Outbox::new();
        for i in 0..5000 {
            o.push_op(WireOp {
                correlation: i,
                ..Default::default()
            });
        }
        o.intern(&"x".repeat(MAX_NAME * 2));
        let msgs = o.take().messages();
        assert!(msgs.iter().all(|m| m.len() <= MAX_MESSAGE));
        let ops: u32 = msgs
            .iter()
            .map(|m| read::<Header>(m, 0).unwrap())
            .filter(|h| h.kind == msg::OPS)
            .map(|h| h.count)
            .sum();
        assert_eq!(ops, 5000);
    }

    #[test]
    fn a_full_outbox_counts_what_it_drops() {
        let mut o = Outbox::new();
        let fit = CAP_BYTES / size_of::<WireOp>();
        for _ in 0..fit + 10 {
            o.push_op(WireOp::default());
        }
        assert_eq!(o.dropped, 10);
        assert_eq!(o.take().ops.len(), fit);
    }
}
