//! The OTLP resource of each target process, in the OpenTelemetry semantic conventions:
//! `service.name` (the process's name), `process.*`, `host.name`, `os.*`, and the container and
//! Kubernetes pod its cgroup path names. Device-wide data (GPU counters, drop counters) goes
//! under a resource of the host alone.
use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{common::v1::KeyValue, resource::v1::Resource};

use super::{kv_int, kv_str};
use crate::recording::{Process, Recording};

/// The container and pod a cgroup path names, as far as it names them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupIds {
    /// The container id: 64 hex digits (Docker, containerd, CRI-O, Podman).
    pub container_id: Option<String>,
    /// The Kubernetes pod's uid (`kubepods...pod<uid>`).
    pub pod_uid: Option<String>,
}

/// Reads the container id and pod uid out of a cgroup path such as
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c_..slice/cri-containerd-<id>.scope`
/// or `/system.slice/docker-<id>.scope` or `/docker/<id>`.
pub fn cgroup_ids(path: &str) -> CgroupIds {
    let mut ids = CgroupIds::default();
    for segment in path.split('/') {
        let s = segment.strip_suffix(".scope").unwrap_or(segment);
        let s = s.strip_suffix(".slice").unwrap_or(s);
        // The container id is the segment's trailing 64 hex digits.
        if s.len() >= 64 {
            let tail = &s[s.len() - 64..];
            let head = &s[..s.len() - 64];
            if tail.bytes().all(|b| b.is_ascii_hexdigit())
                && (head.is_empty() || head.ends_with('-') || head.ends_with(':'))
            {
                ids.container_id = Some(tail.to_ascii_lowercase());
            }
        }
        // The pod uid follows "pod", with '_' for '-' under the systemd driver.
        if let Some(at) = s.rfind("pod") {
            let uid = s[at + 3..].replace('_', "-");
            if uid.len() == 36
                && uid.bytes().enumerate().all(|(i, b)| {
                    if matches!(i, 8 | 13 | 18 | 23) {
                        b == b'-'
                    } else {
                        b.is_ascii_hexdigit()
                    }
                })
            {
                ids.pod_uid = Some(uid);
            }
        }
    }
    ids
}

/// The host's own attributes (every resource carries them).
fn host_attributes(rec: &Recording) -> Vec<KeyValue> {
    let mut a = vec![kv_str("os.type", "linux")];
    if !rec.meta.hostname.is_empty() {
        a.push(kv_str("host.name", rec.meta.hostname.clone()));
    }
    if !rec.meta.kernel.is_empty() {
        a.push(kv_str("os.version", rec.meta.kernel.clone()));
    }
    a
}

/// The resource of device-wide data: the host, and `service.name` `modelprobe`.
pub fn host(rec: &Recording) -> Resource {
    let mut attributes = vec![kv_str("service.name", "modelprobe")];
    attributes.extend(host_attributes(rec));
    Resource {
        attributes,
        ..Default::default()
    }
}

/// One process's resource.
pub fn process(rec: &Recording, p: &Process) -> Resource {
    let mut a = vec![
        kv_str("service.name", p.name.clone()),
        kv_int("process.pid", p.pid as i64),
        kv_str("process.executable.name", p.name.clone()),
    ];
    if let Some(exe) = &p.exe {
        a.push(kv_str("process.executable.path", exe.clone()));
    }
    if let Some(cmd) = &p.cmdline {
        a.push(kv_str("process.command_line", cmd.clone()));
    }
    if let Some(cg) = &p.cgroup {
        a.push(kv_str("modelprobe.cgroup", cg.clone()));
        let ids = cgroup_ids(cg);
        if let Some(id) = ids.container_id {
            a.push(kv_str("container.id", id));
        }
        if let Some(uid) = ids.pod_uid {
            a.push(kv_str("k8s.pod.uid", uid));
        }
    }
    a.extend(host_attributes(rec));
    Resource {
        attributes: a,
        ..Default::default()
    }
}

/// Every process's resource by pid; a pid with data but no process entry gets one named
/// `pid-N`.
pub fn processes(rec: &Recording) -> BTreeMap<u32, Resource> {
    rec.processes
        .iter()
        .map(|p| (p.pid, process(rec, p)))
        .collect()
}

/// The resource of `pid`, from `known` or made for a pid the recording has no entry for.
pub fn of(rec: &Recording, known: &BTreeMap<u32, Resource>, pid: u32) -> Resource {
    known.get(&pid).cloned().unwrap_or_else(|| {
        process(
            rec,
            &Process {
                pid,
                name: rec.process_name(pid),
                cmdline: None,
                exe: None,
                cgroup: None,
            },
        )
    })
}
