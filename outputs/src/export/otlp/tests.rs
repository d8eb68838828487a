//! OTLP requests from known recordings, decoded back with the same protobuf types.
use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        profiles::v1development::ExportProfilesServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value::Value as V, KeyValue},
    metrics::v1::metric::Data,
    trace::v1::Span,
};
use prost::Message;
use serde_json::json;

use super::{resource::cgroup_ids, *};
use crate::recording::{
    fixtures::sample_recording,
    llm::{LlmCall, Usage},
    logs::{Level, LogLine, Stream},
    Counter, Event, EventKind, ProbeInfo, Span as RecSpan, Thread,
};

const MS: u64 = 1_000_000;

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a V> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn s(v: Option<&V>) -> &str {
    match v {
        Some(V::StringValue(s)) => s,
        other => panic!("not a string: {other:?}"),
    }
}

fn i(v: Option<&V>) -> i64 {
    match v {
        Some(V::IntValue(i)) => *i,
        other => panic!("not an int: {other:?}"),
    }
}

/// Two nested probe spans and a later root on thread 7, an LLM call inside the outer span and
/// one on thread 8 alone; logs, events, a GPU counter, thread CPU times; a container's cgroup.
fn recording() -> Recording {
    let mut rec = sample_recording();
    rec.meta.start_unix_ms = 1_700_000_000_000;
    rec.meta.start_ns = 5 * MS;
    rec.meta.end_ns = 105 * MS;
    rec.meta.hostname = "gpu-node-1".into();
    rec.meta.lost.cpu_samples = 3;
    rec.processes[0].exe = Some("/usr/bin/python3.12".into());
    rec.processes[0].cmdline = Some("python3 serve.py".into());
    rec.processes[0].cgroup = Some(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_4a5b_8c9d_0123456789ab.slice/cri-containerd-4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a.scope".into(),
    );
    rec.threads = vec![
        Thread {
            pid: 7,
            tid: 7,
            name: "app".into(),
            cpu_ns: Some(40 * MS),
        },
        Thread {
            pid: 7,
            tid: 8,
            name: "worker".into(),
            cpu_ns: Some(10 * MS),
        },
    ];
    let probe = |f: &str| ProbeInfo {
        spec: format!("app:{f}"),
        path: "/opt/app".into(),
        function: f.into(),
        args: 1,
        pack: None,
    };
    rec.probes = vec![probe("outer"), probe("inner")];
    let span = |probe, start, end, attrs: BTreeMap<String, serde_json::Value>| RecSpan {
        probe,
        pid: 7,
        tid: 7,
        start_ns: start * MS,
        end_ns: end * MS,
        depth: probe,
        args: vec![42],
        ret: Some(0),
        attrs,
        stack: None,
    };
    let failed = BTreeMap::from([("error".to_string(), json!("CUDA_ERROR_OUT_OF_MEMORY"))]);
    rec.spans = vec![
        span(0, 10, 50, BTreeMap::new()),
        span(1, 12, 20, failed),
        span(0, 60, 70, BTreeMap::new()),
    ];
    let call = |tid, start, end| LlmCall {
        pid: 7,
        tid,
        start_ns: start * MS,
        first_token_ns: (start + 1) * MS,
        end_ns: end * MS,
        provider: "openai".into(),
        endpoint: "chat.completions".into(),
        model: "gpt-4o-mini".into(),
        status: 200,
        usage: Some(Usage {
            input_tokens: 11,
            output_tokens: 7,
            ..Usage::default()
        }),
        cost_usd: Some(0.5),
        ..LlmCall::default()
    };
    rec.llm.calls = vec![call(7, 25, 40), call(8, 30, 90)];
    rec.logs = vec![LogLine {
        time_ns: 15 * MS,
        pid: 7,
        tid: 7,
        stream: Stream::Stderr,
        level: Some(Level::Error),
        message: "CUDA out of memory".into(),
    }];
    rec.events = vec![Event {
        time_ns: 16 * MS,
        pid: 7,
        tid: 7,
        kind: EventKind::ApiError,
        message: "cudaMalloc: out of memory".into(),
        value: Some(2),
        stack: None,
    }];
    rec.counters = vec![Counter {
        name: "GPU 0 utilization".into(),
        unit: "%".into(),
        device: Some(0),
        pid: None,
        points: vec![(10 * MS, 50.0), (20 * MS, 75.0)],
    }];
    rec
}

fn decoded<M: Message + Default>(rec: &Recording, signal: Signal) -> Vec<M> {
    requests(rec)
        .into_iter()
        .filter(|r| r.signal == signal)
        .map(|r| M::decode(r.body.as_slice()).unwrap())
        .collect()
}

fn all_spans(rec: &Recording) -> Vec<Span> {
    decoded::<ExportTraceServiceRequest>(rec, Signal::Traces)
        .into_iter()
        .flat_map(|r| r.resource_spans)
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

#[test]
fn cgroup_paths_name_containers_and_pods() {
    let id = "4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
    let k8s = cgroup_ids(recording().processes[0].cgroup.as_deref().unwrap());
    assert_eq!(k8s.container_id.as_deref(), Some(id));
    assert_eq!(
        k8s.pod_uid.as_deref(),
        Some("1b2c3d4e-0000-4a5b-8c9d-0123456789ab")
    );
    let docker = cgroup_ids(&format!("/system.slice/docker-{id}.scope"));
    assert_eq!(
        (docker.container_id.as_deref(), docker.pod_uid),
        (Some(id), None)
    );
    let cgroupfs = cgroup_ids(&format!(
        "/kubepods/besteffort/pod1b2c3d4e-0000-4a5b-8c9d-0123456789ab/{id}"
    ));
    assert_eq!(cgroupfs.container_id.as_deref(), Some(id));
    assert!(cgroupfs.pod_uid.is_some());
    assert_eq!(
        cgroup_ids("/user.slice/user-0.slice/session-3.scope"),
        Default::default()
    );
}

#[test]
fn spans_nest_on_their_thread_with_unix_times_and_the_process_resource() {
    let rec = recording();
    let reqs = decoded::<ExportTraceServiceRequest>(&rec, Signal::Traces);
    assert_eq!(reqs.len(), 1);
    let res = reqs[0].resource_spans[0].resource.as_ref().unwrap();
    let r = &res.attributes;
    assert_eq!(s(attr(r, "service.name")), "app");
    assert_eq!(i(attr(r, "process.pid")), 7);
    assert_eq!(s(attr(r, "process.executable.path")), "/usr/bin/python3.12");
    assert_eq!(s(attr(r, "host.name")), "gpu-node-1");
    assert!(s(attr(r, "container.id")).starts_with("4f3a2b"));
    assert_eq!(
        s(attr(r, "k8s.pod.uid")),
        "1b2c3d4e-0000-4a5b-8c9d-0123456789ab"
    );

    let spans = all_spans(&rec);
    assert_eq!(spans.len(), 5, "3 probe spans and 2 LLM calls");
    let named = |n: &str, start_ms: u64| {
        let t = 1_700_000_000_000 * MS + (start_ms - 5) * MS;
        spans
            .iter()
            .find(|s| s.name == n && s.start_time_unix_nano == t)
            .unwrap_or_else(|| panic!("no {n} at {start_ms} ms in {spans:#?}"))
    };
    let outer = named("outer", 10);
    let inner = named("inner", 12);
    let later = named("outer", 60);
    let call_in = named("chat gpt-4o-mini", 25);
    let call_alone = named("chat gpt-4o-mini", 30);
    assert_eq!(
        outer.end_time_unix_nano - outer.start_time_unix_nano,
        40 * MS
    );
    assert!(outer.parent_span_id.is_empty() && later.parent_span_id.is_empty());
    assert_eq!(inner.parent_span_id, outer.span_id);
    assert_eq!(inner.trace_id, outer.trace_id);
    assert_eq!(call_in.parent_span_id, outer.span_id);
    assert_ne!(
        later.trace_id, outer.trace_id,
        "a new root starts a new trace"
    );
    assert!(call_alone.parent_span_id.is_empty());
    let mut ids: Vec<_> = spans.iter().map(|s| s.span_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "span ids are unique");
    assert!(spans
        .iter()
        .all(|s| s.trace_id.len() == 16 && s.span_id.len() == 8));

    // A failed call is an error; attributes carry the function, thread and arguments.
    let status = inner.status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (2, "CUDA_ERROR_OUT_OF_MEMORY")
    );
    assert!(outer.status.is_none());
    assert_eq!(s(attr(&outer.attributes, "code.function.name")), "outer");
    assert_eq!(i(attr(&outer.attributes, "thread.id")), 7);
    // LLM calls: CLIENT spans with the GenAI attributes and the first token as an event.
    assert_eq!(call_in.kind, 3);
    assert_eq!(
        s(attr(&call_in.attributes, "gen_ai.request.model")),
        "gpt-4o-mini"
    );
    assert_eq!(
        i(attr(&call_in.attributes, "gen_ai.usage.output_tokens")),
        7
    );
    assert_eq!(call_in.events[0].name, "gen_ai.first_token");
}

#[test]
fn metrics_carry_cpu_time_latency_tokens_cost_gpu_and_loss() {
    let rec = recording();
    let reqs = decoded::<ExportMetricsServiceRequest>(&rec, Signal::Metrics);
    let mut by_name = BTreeMap::new();
    for rm in reqs.iter().flat_map(|r| &r.resource_metrics) {
        let res = rm.resource.as_ref().unwrap();
        let service = s(attr(&res.attributes, "service.name")).to_string();
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            by_name.insert(m.name.clone(), (service.clone(), m.clone()));
        }
    }
    let get = |n: &str| {
        by_name
            .get(n)
            .unwrap_or_else(|| panic!("no {n}: {by_name:#?}"))
    };
    let value = |d: &Option<_>| match d {
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(v)) => *v,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(v)) => {
            *v as f64
        }
        None => f64::NAN,
    };
    let (svc, cpu) = get("process.cpu.time");
    assert_eq!(svc, "app");
    let Some(Data::Sum(sum)) = &cpu.data else {
        panic!("{cpu:?}")
    };
    assert!((value(&sum.data_points[0].value) - 0.05).abs() < 1e-9);
    assert_eq!(
        sum.data_points[0].start_time_unix_nano,
        1_700_000_000_000 * MS
    );
    assert_eq!(sum.data_points[0].time_unix_nano, 1_700_000_000_100 * MS);

    let (_, spans) = get("modelprobe.span.duration");
    let Some(Data::Histogram(h)) = &spans.data else {
        panic!()
    };
    let outer = h
        .data_points
        .iter()
        .find(|p| s(attr(&p.attributes, "code.function.name")) == "outer")
        .unwrap();
    assert_eq!(outer.count, 2);
    assert_eq!(outer.bucket_counts.iter().sum::<u64>(), 2);
    assert_eq!(outer.bucket_counts.len(), outer.explicit_bounds.len() + 1);
    assert!((outer.sum.unwrap() - 0.05).abs() < 1e-9);

    let (_, tokens) = get("gen_ai.client.token.usage");
    let Some(Data::Histogram(h)) = &tokens.data else {
        panic!()
    };
    let output = h
        .data_points
        .iter()
        .find(|p| s(attr(&p.attributes, "gen_ai.token.type")) == "output")
        .unwrap();
    assert_eq!((output.count, output.sum), (2, Some(14.0)));
    let (_, cost) = get("modelprobe.llm.cost");
    let Some(Data::Sum(c)) = &cost.data else {
        panic!()
    };
    assert!((value(&c.data_points[0].value) - 1.0).abs() < 1e-9);

    let (svc, gpu) = get("modelprobe.gpu.utilization");
    assert_eq!(svc, "modelprobe", "device counters are the host's");
    let Some(Data::Gauge(g)) = &gpu.data else {
        panic!()
    };
    assert_eq!(g.data_points.len(), 2);
    assert_eq!(value(&g.data_points[1].value), 75.0);
    let (_, lost) = get("modelprobe.lost");
    let Some(Data::Sum(l)) = &lost.data else {
        panic!()
    };
    let cpu_lost = l
        .data_points
        .iter()
        .find(|p| s(attr(&p.attributes, "modelprobe.lost.kind")) == "cpu_samples")
        .unwrap();
    assert_eq!(value(&cpu_lost.value), 3.0);
}

#[test]
fn logs_and_events_become_log_records() {
    let rec = recording();
    let reqs = decoded::<ExportLogsServiceRequest>(&rec, Signal::Logs);
    let records: Vec<_> = reqs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .collect();
    assert_eq!(records.len(), 2);
    let line = records[0];
    assert_eq!(
        (line.severity_number, line.severity_text.as_str()),
        (17, "ERROR")
    );
    assert_eq!(s(attr(&line.attributes, "log.iostream")), "stderr");
    let body = line.body.as_ref().and_then(|b| b.value.as_ref());
    assert_eq!(s(body), "CUDA out of memory");
    assert_eq!(records[1].event_name, "modelprobe.api_error");
    assert_eq!(i(attr(&records[1].attributes, "modelprobe.event.value")), 2);
}

#[test]
fn large_recordings_are_split_into_requests_with_nothing_left_out() {
    let mut rec = recording();
    let one = rec.spans[2].clone();
    rec.spans = (0..(BATCH as u64 * 2 + 100))
        .map(|n| RecSpan {
            pid: 7 + (n % 2) as u32,
            start_ns: 200 * MS + n * 10,
            end_ns: 200 * MS + n * 10 + 5,
            ..one.clone()
        })
        .collect();
    rec.llm.calls.clear();
    let reqs = requests(&rec);
    let traces: Vec<_> = reqs.iter().filter(|r| r.signal == Signal::Traces).collect();
    assert_eq!(traces.len(), 3);
    assert!(traces.iter().all(|r| r.items <= BATCH));
    assert_eq!(all_spans(&rec).len(), rec.spans.len());
    // A pid with no process entry still gets a resource.
    let req = ExportTraceServiceRequest::decode(traces[2].body.as_slice()).unwrap();
    let names: Vec<_> = req
        .resource_spans
        .iter()
        .map(|rs| {
            s(attr(
                &rs.resource.as_ref().unwrap().attributes,
                "service.name",
            ))
            .to_string()
        })
        .collect();
    assert!(names.contains(&"pid-8".to_string()), "{names:?}");
}

#[test]
fn files_are_one_request_each() {
    let rec = recording();
    let dir = std::env::temp_dir().join(format!("mp-otlp-{}", std::process::id()));
    let files = Otlp::default().export(&rec, &dir).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // Profiles: CPU, then off-CPU.
    assert_eq!(
        names,
        [
            "traces-0000.pb",
            "metrics-0000.pb",
            "logs-0000.pb",
            "profiles-0000.pb",
            "profiles-0001.pb"
        ]
    );
    let body = std::fs::read(&files[0]).unwrap();
    assert_eq!(
        ExportTraceServiceRequest::decode(body.as_slice())
            .unwrap()
            .resource_spans
            .len(),
        1
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_environment_sets_resource_attributes_and_the_service_name() {
    let extra = resource_from_env(
        Some("deployment.environment=prod, service.name=ignored,team=ml%2Cinfra,bad"),
        Some("inference-api"),
    );
    assert_eq!(
        extra,
        [
            ("deployment.environment".to_string(), "prod".to_string()),
            ("team".to_string(), "ml,infra".to_string()),
            ("service.name".to_string(), "inference-api".to_string()),
        ]
    );
    let rec = recording();
    for r in requests_with(&rec, &extra) {
        let resources: Vec<_> = match r.signal {
            Signal::Traces => ExportTraceServiceRequest::decode(r.body.as_slice())
                .unwrap()
                .resource_spans
                .into_iter()
                .filter_map(|x| x.resource)
                .collect(),
            Signal::Metrics => ExportMetricsServiceRequest::decode(r.body.as_slice())
                .unwrap()
                .resource_metrics
                .into_iter()
                .filter_map(|x| x.resource)
                .collect(),
            Signal::Logs => ExportLogsServiceRequest::decode(r.body.as_slice())
                .unwrap()
                .resource_logs
                .into_iter()
                .filter_map(|x| x.resource)
                .collect(),
            Signal::Profiles => ExportProfilesServiceRequest::decode(r.body.as_slice())
                .unwrap()
                .resource_profiles
                .into_iter()
                .filter_map(|x| x.resource)
                .collect(),
        };
        assert!(!resources.is_empty());
        for res in resources {
            let a = &res.attributes;
            assert_eq!(s(attr(a, "service.name")), "inference-api");
            assert_eq!(a.iter().filter(|k| k.key == "service.name").count(), 1);
            assert_eq!(s(attr(a, "team")), "ml,infra");
        }
    }
}

#[test]
fn profiles_hold_every_cpu_sample_by_process_with_a_consistent_dictionary() {
    let rec = recording();
    let cpu_total: u64 = rec
        .samples
        .iter()
        .filter(|s| s.kind == crate::recording::SampleKind::Cpu)
        .map(|s| s.weight)
        .sum();
    assert!(cpu_total > 0, "the fixture has CPU samples");
    let reqs: Vec<_> = requests(&rec)
        .into_iter()
        .filter(|r| r.signal == Signal::Profiles)
        .map(|r| ExportProfilesServiceRequest::decode(r.body.as_slice()).unwrap())
        .collect();
    assert!(!reqs.is_empty());
    let cpu = &reqs[0];
    let d = cpu.dictionary.as_ref().unwrap();
    // Entry 0 of every table is the empty one OTLP reserves.
    assert_eq!(d.string_table[0], "");
    assert_eq!(d.function_table[0], Default::default());
    assert_eq!(d.location_table[0], Default::default());
    assert_eq!(d.stack_table[0], Default::default());
    let name = |i: i32| d.string_table[i as usize].as_str();
    let mut total = 0i64;
    let mut leaves = Vec::new();
    for rp in &cpu.resource_profiles {
        let res = rp.resource.as_ref().unwrap();
        let pid = i(attr(&res.attributes, "process.pid"));
        assert!(rec.processes.iter().any(|p| i64::from(p.pid) == pid));
        let p = &rp.scope_profiles[0].profiles[0];
        let st = p.sample_type.unwrap();
        assert_eq!(
            (name(st.type_strindex), name(st.unit_strindex)),
            ("samples", "count")
        );
        let pt = p.period_type.unwrap();
        assert_eq!(
            (name(pt.type_strindex), name(pt.unit_strindex)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(
            p.period,
            1_000_000_000 / rec.meta.frequency_hz.max(1) as i64
        );
        assert_eq!(p.time_unix_nano, 1_700_000_000_000 * MS);
        assert_eq!(p.duration_nano, 100 * MS);
        assert_eq!(p.profile_id.len(), 16);
        for s in &p.samples {
            total += s.values[0];
            let stack = &d.stack_table[s.stack_index as usize];
            assert!(!stack.location_indices.is_empty());
            for &l in &stack.location_indices {
                assert!(l > 0 && (l as usize) < d.location_table.len());
                for line in &d.location_table[l as usize].lines {
                    assert!(line.function_index > 0);
                    assert!((line.function_index as usize) < d.function_table.len());
                }
            }
            let leaf = &d.location_table[stack.location_indices[0] as usize].lines[0];
            leaves.push(name(
                d.function_table[leaf.function_index as usize].name_strindex,
            ));
            let keys: Vec<&str> = s
                .attribute_indices
                .iter()
                .map(|&a| name(d.attribute_table[a as usize].key_strindex))
                .collect();
            assert_eq!(keys, ["thread.id", "thread.name"]);
        }
    }
    assert_eq!(total as u64, cpu_total, "every CPU sample, once");
    // The same leaves as the pprof export's.
    let pprof = crate::export::pprof::profile(&rec, crate::export::pprof::Kind::Cpu).unwrap();
    let pprof_leaf = |s: &crate::export::pprof::proto::Sample| {
        let loc = pprof
            .location
            .iter()
            .find(|l| l.id == s.location_id[0])
            .unwrap();
        let f = pprof
            .function
            .iter()
            .find(|f| f.id == loc.line[0].function_id)
            .unwrap();
        pprof.string_table[f.name as usize].clone()
    };
    let mut want: Vec<String> = pprof.sample.iter().map(pprof_leaf).collect();
    let mut got: Vec<String> = leaves.iter().map(|s| s.to_string()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}
