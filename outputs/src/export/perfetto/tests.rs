//! Perfetto traces of known recordings, decoded back: the sequence's start, balanced and
//! time-ordered slices per track, nesting, flows to GPU work, interned stacks.
use std::collections::HashMap;

use prost::Message;

use super::{proto::*, *};
use crate::recording::fixtures::{gpu_recording, sample_recording};

fn decoded(rec: &Recording) -> Trace {
    Trace::decode(encode(rec).expect("something to show").as_slice()).unwrap()
}

/// Per track: its (type, timestamp, name) events in file order.
fn by_track(t: &Trace) -> HashMap<u64, Vec<(i32, u64, Option<String>)>> {
    let mut out: HashMap<u64, Vec<_>> = HashMap::new();
    for p in &t.packet {
        if let Some(e) = &p.track_event {
            out.entry(e.track_uuid.unwrap()).or_default().push((
                e.r#type.unwrap(),
                p.timestamp.unwrap(),
                e.name.clone(),
            ));
        }
    }
    out
}

/// Every track's slices balance and end in time order, innermost first.
fn assert_balanced(t: &Trace) {
    for (track, events) in by_track(t) {
        let mut open: Vec<u64> = Vec::new();
        let mut last = 0;
        for (ty, ts, name) in events {
            assert!(ts >= last, "track {track}: {name:?} at {ts} after {last}");
            last = ts;
            if ty == EventType::SliceBegin as i32 {
                open.push(ts);
            } else if ty == EventType::SliceEnd as i32 {
                let began = open
                    .pop()
                    .unwrap_or_else(|| panic!("track {track}: end without begin"));
                assert!(began <= ts);
            }
        }
        assert!(
            open.is_empty(),
            "track {track}: {} slices never end",
            open.len()
        );
    }
}

#[test]
fn a_trace_starts_its_sequence_and_describes_every_track_first() {
    let rec = gpu_recording();
    let t = decoded(&rec);
    let first = &t.packet[0];
    assert_eq!(first.sequence_flags, Some(SEQ_INCREMENTAL_STATE_CLEARED));
    assert!(first.interned_data.is_some());
    assert!(t
        .packet
        .iter()
        .all(|p| p.trusted_packet_sequence_id == Some(1)));
    let described: Vec<u64> = t
        .packet
        .iter()
        .filter_map(|p| p.track_descriptor.as_ref()?.uuid)
        .collect();
    let first_event = t
        .packet
        .iter()
        .position(|p| p.track_event.is_some())
        .unwrap();
    assert!(
        t.packet[..first_event]
            .iter()
            .filter(|p| p.track_descriptor.is_some())
            .count()
            == described.len()
    );
    for p in &t.packet {
        if let Some(e) = &p.track_event {
            assert!(described.contains(&e.track_uuid.unwrap()));
        }
    }
    let processes: Vec<_> = t
        .packet
        .iter()
        .filter_map(|p| p.track_descriptor.as_ref()?.process.as_ref())
        .map(|p| (p.pid.unwrap(), p.process_name.clone().unwrap()))
        .collect();
    assert!(processes.contains(&(10, "trainer".into())), "{processes:?}");
    assert_balanced(&t);
}

#[test]
fn every_gpu_op_is_a_slice_on_its_stream_with_a_flow_from_its_launch() {
    let rec = gpu_recording();
    let t = decoded(&rec);
    let names = super::GpuNames::new(&rec.gpu);
    let begins: Vec<&TrackEvent> = t
        .packet
        .iter()
        .filter_map(|p| p.track_event.as_ref())
        .filter(|e| e.r#type == Some(EventType::SliceBegin as i32))
        .collect();
    let gpu: Vec<_> = begins.iter().filter(|e| e.categories == ["gpu"]).collect();
    assert_eq!(gpu.len(), rec.gpu.ops.len());
    for op in &rec.gpu.ops {
        assert!(gpu
            .iter()
            .any(|e| e.name.as_deref() == Some(&*names.op_name(op))));
    }
    // Each launch's flow leaves its span and reaches its ops.
    let joined = rec
        .gpu
        .ops
        .iter()
        .filter(|op| launch_of(&rec, op).and_then(|l| l.span).is_some())
        .count();
    assert!(joined > 0);
    let into_gpu = gpu.iter().filter(|e| !e.flow_ids.is_empty()).count();
    assert_eq!(into_gpu, joined);
    for e in gpu.iter().filter(|e| !e.flow_ids.is_empty()) {
        assert!(
            begins
                .iter()
                .any(|s| s.categories == ["probe"] && s.flow_ids == e.flow_ids),
            "no launching span for flow {:?}",
            e.flow_ids
        );
    }
}

#[test]
fn spans_that_do_not_nest_go_to_a_lane_of_their_own() {
    let mut rec = gpu_recording();
    let mut s = rec.spans[0].clone();
    s.start_ns = rec.spans[0].start_ns + 1;
    s.end_ns = rec.spans[0].end_ns + 1_000;
    rec.spans.push(s);
    let t = decoded(&rec);
    assert_balanced(&t);
    let lanes: Vec<_> = t
        .packet
        .iter()
        .filter_map(|p| p.track_descriptor.as_ref()?.name.clone())
        .filter(|n| n.starts_with("overlapping spans"))
        .collect();
    assert_eq!(lanes, ["overlapping spans #1"]);
}

#[test]
fn cpu_samples_are_perf_samples_with_their_stacks_root_first() {
    let rec = sample_recording();
    let t = decoded(&rec);
    let interned = t.packet[0].interned_data.as_ref().unwrap();
    let name_of: HashMap<u64, String> = interned
        .function_names
        .iter()
        .map(|s| {
            (
                s.iid.unwrap(),
                String::from_utf8(s.str.clone().unwrap()).unwrap(),
            )
        })
        .collect();
    let frame_name: HashMap<u64, &str> = interned
        .frames
        .iter()
        .map(|f| {
            (
                f.iid.unwrap(),
                name_of[&f.function_name_id.unwrap()].as_str(),
            )
        })
        .collect();
    let stacks: HashMap<u64, Vec<&str>> = interned
        .callstacks
        .iter()
        .map(|c| {
            (
                c.iid.unwrap(),
                c.frame_ids.iter().map(|f| frame_name[f]).collect(),
            )
        })
        .collect();
    assert_eq!(stacks.len(), 2, "two distinct stacks, each interned once");
    let samples: Vec<&PerfSample> = t
        .packet
        .iter()
        .filter_map(|p| p.perf_sample.as_ref())
        .collect();
    assert_eq!(samples.len(), 3);
    let main_hot = samples
        .iter()
        .filter(|s| stacks[&s.callstack_iid.unwrap()] == ["main", "hot;a"])
        .count();
    assert_eq!(main_hot, 2);
    assert!(samples.iter().all(|s| s.pid == Some(7) && s.tid == Some(7)));
    // Every mapping's path is interned.
    for m in &interned.mappings {
        assert!(interned
            .mapping_paths
            .iter()
            .any(|p| p.iid == Some(m.path_string_ids[0])));
    }
}

#[test]
fn a_recording_with_nothing_to_draw_writes_no_file() {
    let rec = Recording::new(Default::default());
    let dir = std::env::temp_dir().join(format!("mp-perfetto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(Perfetto.export(&rec, &dir).unwrap().is_empty());
    let files = Perfetto.export(&gpu_recording(), &dir).unwrap();
    assert_eq!(files, [dir.join("trace.pftrace")]);
    std::fs::remove_dir_all(dir).unwrap();
}
