//! The pprof profiles, decoded back: values, stacks, inlining, labels.
use std::io::Read;

use prost::Message;

use super::*;
use crate::recording::{fixtures::sample_recording, Frame, Sample, Thread};

fn decode(path: &Path) -> proto::Profile {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    proto::Profile::decode(bytes.as_slice()).unwrap()
}

/// Each sample as (function names leaf first, values, labels as text).
fn samples(p: &proto::Profile) -> Vec<(Vec<String>, Vec<i64>, Vec<String>)> {
    let s = |i: i64| p.string_table[i as usize].clone();
    let function = |id: u64| &p.function[id as usize - 1];
    let location = |id: u64| &p.location[id as usize - 1];
    p.sample
        .iter()
        .map(|smp| {
            let names = smp
                .location_id
                .iter()
                .flat_map(|&l| location(l).line.iter())
                .map(|line| s(function(line.function_id).name))
                .collect();
            let labels = smp
                .label
                .iter()
                .map(|l| {
                    if l.str != 0 {
                        format!("{}={}", s(l.key), s(l.str))
                    } else {
                        format!("{}={}", s(l.key), l.num)
                    }
                })
                .collect();
            (names, smp.value.clone(), labels)
        })
        .collect()
}

#[test]
fn cpu_and_off_cpu_profiles_decode_to_the_recordings_samples() {
    let mut rec = sample_recording();
    rec.meta.frequency_hz = 100;
    rec.threads.push(Thread {
        pid: 7,
        tid: 7,
        name: "app-main".into(),
        cpu_ns: None,
    });
    let dir = std::env::temp_dir().join(format!("mp-pprof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = Pprof.export(&rec, &dir).unwrap();
    assert_eq!(
        files,
        [dir.join(CPU_FILE), dir.join(OFF_CPU_FILE)],
        "no GPU profile without GPU work"
    );
    let cpu = decode(&files[0]);
    let types: Vec<&str> = cpu
        .sample_type
        .iter()
        .map(|t| cpu.string_table[t.r#type as usize].as_str())
        .collect();
    assert_eq!(types, ["samples", "cpu"]);
    assert_eq!(cpu.period, 10_000_000);
    let mut got = samples(&cpu);
    got.sort();
    let labels = vec![
        "pid=7".to_string(),
        "tid=7".to_string(),
        "thread=app-main".to_string(),
    ];
    assert_eq!(
        got,
        [
            (
                vec!["do_syscall_64 [k]".to_string(), "main".to_string()],
                vec![1, 10_000_000],
                labels.clone()
            ),
            (
                vec!["hot;a".to_string(), "main".to_string()],
                vec![2, 20_000_000],
                labels.clone()
            ),
        ]
    );
    let off = samples(&decode(&files[1]));
    assert_eq!(off.len(), 1);
    assert_eq!(off[0].1, [2_500_000]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inlined_frames_share_their_callers_location_and_python_lines_are_lines() {
    let mut rec = sample_recording();
    let frame = |name: &str, kind, inlined, line: Option<u32>| Frame {
        name: name.into(),
        module: Some("app".into()),
        file: line.map(|_| "/srv/serve.py".into()),
        line,
        kind,
        inlined,
    };
    rec.frames = vec![
        frame("serve (serve.py:10)", FrameKind::Python, false, Some(10)),
        frame("serve (serve.py:12)", FrameKind::Python, false, Some(12)),
        frame("matmul", FrameKind::User, false, None),
        frame("dot", FrameKind::User, true, None),
    ];
    rec.stacks = vec![vec![0, 2, 3], vec![1, 2, 3]];
    rec.samples = [0, 1]
        .into_iter()
        .map(|stack| Sample {
            kind: SampleKind::Cpu,
            time_ns: 0,
            pid: 7,
            tid: 7,
            stack,
            weight: 1,
            blocks: None,
        })
        .collect();
    let p = profile(&rec, Kind::Cpu).unwrap();
    // `dot` is inlined in `matmul`: one location, two lines, the inlined one first.
    let leaf = &p.location[p.sample[0].location_id[0] as usize - 1];
    let name =
        |l: &proto::Line| &p.string_table[p.function[l.function_id as usize - 1].name as usize];
    assert_eq!(
        leaf.line.iter().map(name).collect::<Vec<_>>(),
        ["dot", "matmul"]
    );
    // One `serve` function, on two lines.
    let serve: Vec<&proto::Function> = p
        .function
        .iter()
        .filter(|f| p.string_table[f.name as usize] == "serve")
        .collect();
    assert_eq!(serve.len(), 1);
    assert_eq!(p.string_table[serve[0].filename as usize], "/srv/serve.py");
    let lines: Vec<i64> = p
        .sample
        .iter()
        .map(|s| p.location[*s.location_id.last().unwrap() as usize - 1].line[0].line)
        .collect();
    assert_eq!(lines, [10, 12]);
}
