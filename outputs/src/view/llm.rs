//! LLM API calls in the viewer: one `"spans"` track per process that made any, in its
//! process group, titled "LLM calls". Calls that overlap (an asyncio loop runs many at once)
//! take separate lanes (`l`), and each carries its GenAI attributes (`t`) for the details pane.
use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use super::encode::{column, deltas, rel, Strings};
use crate::{export::gen_ai_attributes, export::span_name, recording::Recording};

/// Lanes for intervals sorted by start: each takes the first lane free at its start.
fn lanes(intervals: &[(u64, u64)]) -> Vec<u32> {
    let mut ends: Vec<u64> = Vec::new();
    intervals
        .iter()
        .map(|&(start, end)| {
            let lane = match ends.iter().position(|&e| e <= start) {
                Some(l) => l,
                None => {
                    ends.push(0);
                    ends.len() - 1
                }
            };
            ends[lane] = end.max(start);
            lane as u32
        })
        .collect()
}

/// Writes the LLM tracks; `group_of` gives a pid's group index (`None`: no group).
pub(super) fn write_tracks(
    rec: &Recording,
    group_of: &dyn Fn(u32) -> Option<usize>,
    strings: &mut Strings,
    w: &mut dyn Write,
    first_track: &mut bool,
) -> io::Result<()> {
    let mut by_pid: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, c) in rec.llm.calls.iter().enumerate() {
        by_pid.entry(c.pid).or_default().push(i);
    }
    for (pid, mut idx) in by_pid {
        let Some(group) = group_of(pid) else {
            continue;
        };
        idx.sort_by_key(|&i| rec.llm.calls[i].start_ns);
        let calls = || idx.iter().map(|&i| &rec.llm.calls[i]);
        if !std::mem::take(first_track) {
            w.write_all(b",")?;
        }
        let mut first = true;
        w.write_all(b"{")?;
        column(w, &mut first, "group", &group)?;
        column(w, &mut first, "kind", &"spans")?;
        column(w, &mut first, "title", &"LLM calls")?;
        column(w, &mut first, "sub", &format!("{} calls", idx.len()))?;
        column(w, &mut first, "pid", &pid)?;
        w.write_all(b",\"spans\":{")?;
        let mut first = true;
        column(
            w,
            &mut first,
            "s",
            &deltas(calls().map(|c| rel(rec, c.start_ns))),
        )?;
        let intervals: Vec<(u64, u64)> = calls().map(|c| (c.start_ns, c.end_ns)).collect();
        column(
            w,
            &mut first,
            "d",
            &intervals
                .iter()
                .map(|(s, e)| e.saturating_sub(*s))
                .collect::<Vec<_>>(),
        )?;
        let names: Vec<u32> = calls().map(|c| strings.id(&span_name(c))).collect();
        column(w, &mut first, "n", &names)?;
        column(w, &mut first, "l", &lanes(&intervals))?;
        let attrs: Vec<u32> = calls()
            .map(|c| {
                let text = serde_json::Value::Object(gen_ai_attributes(c)).to_string();
                strings.id(&text) + 1
            })
            .collect();
        column(w, &mut first, "t", &attrs)?;
        w.write_all(b"}}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_calls_take_separate_lanes() {
        assert_eq!(lanes(&[(0, 10), (2, 5), (6, 8), (11, 12)]), [0, 1, 1, 0]);
        assert_eq!(lanes(&[]), Vec::<u32>::new());
    }
}
