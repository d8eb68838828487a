//! The GPU sections over recordings whose every total is known.
use super::super::build;
use super::*;
use crate::recording::fixtures::gpu_recording;

#[test]
fn top_kernels_by_gpu_time() {
    let report = build(&gpu_recording(), 2);
    let s = report.section("gpu_kernels").unwrap();
    assert_eq!(
        s.rows,
        [
            vec![
                json!(41.1),
                json!(0.3),
                json!(2),
                json!(150.0),
                json!(200.0),
                json!("gemm(float*, float*, int)")
            ],
            vec![
                json!(20.5),
                json!(0.15),
                json!(2),
                json!(75.0),
                json!(100.0),
                json!("relu_kernel")
            ],
        ],
        "--top 2 keeps the two heaviest"
    );
    let all = build(&gpu_recording(), 10);
    let rows = &all.section("gpu_kernels").unwrap().rows;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[2],
        [
            json!(9.6),
            json!(0.07),
            json!(2),
            json!(35.0),
            json!(40.0),
            json!("softmax")
        ]
    );
}

#[test]
fn copies_and_memsets_with_bandwidth() {
    let report = build(&gpu_recording(), 5);
    assert_eq!(
        report.section("gpu_memcpy").unwrap().rows,
        [
            vec![
                json!("memcpy DtoH"),
                json!(1),
                json!(500_000),
                json!(0.48),
                json!(0.1),
                json!(5.0)
            ],
            vec![
                json!("memcpy HtoD"),
                json!(1),
                json!(1_000_000),
                json!(0.95),
                json!(0.1),
                json!(10.0)
            ],
            vec![
                json!("memset"),
                json!(1),
                json!(4096),
                json!(0.0),
                json!(0.01),
                json!(0.41)
            ],
        ]
    );
}

#[test]
fn busy_time_counts_overlapping_work_once() {
    let report = build(&gpu_recording(), 5);
    let rows = &report.section("gpu_utilization").unwrap().rows;
    let row = |d: &str, s: &str| {
        rows.iter()
            .find(|r| r[0] == d && r[1] == s)
            .unwrap_or_else(|| panic!("no row {d} {s}: {rows:?}"))[2..]
            .to_vec()
    };
    // 150-500 (four ops on two streams of two processes), 1100-1150, 4050-4100.
    assert_eq!(row("GPU 0", "all"), [json!(7), json!(0.45), json!(4.5)]);
    assert_eq!(
        row("GPU 0", "7 (pid 10)"),
        [json!(4), json!(0.38), json!(3.8)]
    );
    assert_eq!(
        row("GPU 0", "9 (pid 10)"),
        [json!(1), json!(0.1), json!(1.0)]
    );
    assert_eq!(
        row("GPU 0", "7 (pid 20)"),
        [json!(1), json!(0.1), json!(1.0)]
    );
    assert_eq!(
        row("GPU 0", "8 (pid 10)"),
        [json!(1), json!(0.04), json!(0.4)]
    );
    assert_eq!(row("GPU 1", "all"), [json!(2), json!(0.11), json!(1.1)]);
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[1][1], "7 (pid 10)", "busiest stream first");
    let top1 = build(&gpu_recording(), 1);
    assert_eq!(top1.section("gpu_utilization").unwrap().rows.len(), 4);
}

#[test]
fn queue_delay_percentiles_of_joined_ops() {
    let report = build(&gpu_recording(), 5);
    assert_eq!(
        report.section("gpu_queue_delay").unwrap().rows,
        [
            // 50, 50, 100, 50, 60 of 6 kernels (the other process's is not joined).
            vec![
                json!("kernel"),
                json!(5),
                json!(6),
                json!(50.0),
                json!(100.0),
                json!(100.0)
            ],
            vec![
                json!("memcpy"),
                json!(1),
                json!(2),
                json!(100.0),
                json!(100.0),
                json!(100.0)
            ],
            vec![
                json!("all"),
                json!(6),
                json!(9),
                json!(50.0),
                json!(100.0),
                json!(100.0)
            ],
        ]
    );
}

#[test]
fn sources_headline_and_lost_records() {
    let rec = gpu_recording();
    let report = build(&rec, 5);
    let s = report.section("gpu_sources").unwrap();
    assert_eq!(
        s.rows[0][..7],
        [
            json!(10),
            json!("trainer"),
            json!("on"),
            json!(22),
            json!(3),
            json!(12.5),
            json!(40.0)
        ]
    );
    assert_eq!(s.rows[1][2], "busy");
    assert_eq!(s.rows[1][3], Value::Null);
    let text = report.to_text();
    assert!(
        text.contains("GPU timings off: another tool holds CUPTI"),
        "{text}"
    );
    assert!(
        text.contains("6 kernels, 2 copies, 1 memset on 2 devices: 0.730 ms of GPU time; tracing off in 1 of 2 processes"),
        "{text}"
    );
    let lost = report.section("lost").unwrap();
    assert!(lost
        .rows
        .contains(&vec![json!("GPU activity records (CUPTI)"), json!(3)]));
}

#[test]
fn absent_sections_say_why() {
    let mut rec = gpu_recording();
    rec.gpu.ops.clear();
    rec.gpu
        .sources
        .iter_mut()
        .for_each(|s| s.state = "no-cupti".into());
    let report = build(&rec, 5);
    let why = report
        .section("gpu_kernels")
        .unwrap()
        .absent
        .clone()
        .unwrap();
    assert!(
        why.contains("GPU tracing was off in every process"),
        "{why}"
    );
    let mut rec = gpu_recording();
    for op in &mut rec.gpu.ops {
        (op.launch, op.launch_span) = (None, None);
    }
    let why = build(&rec, 5)
        .section("gpu_queue_delay")
        .unwrap()
        .absent
        .clone()
        .unwrap();
    assert!(
        why.starts_with("none of the 9 GPU operations is joined"),
        "{why}"
    );
    let plain = build(&crate::recording::fixtures::sample_recording(), 5);
    for id in [
        "gpu_kernels",
        "gpu_memcpy",
        "gpu_utilization",
        "gpu_queue_delay",
        "gpu_sources",
    ] {
        assert!(plain.section(id).is_none(), "{id}: folded into one line");
    }
    assert!(plain.section("gpu").unwrap().absent.is_some());
}
