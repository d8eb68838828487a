//! Profiles, OTLP's development signal (`/v1development/profiles`, `ExportProfilesServiceRequest`
//! of `opentelemetry-proto`'s `profiles` feature): CPU samples, blocked time and GPU time by
//! launch stack, one profile of each kind the recording has, per process.
//!
//! Built from the pprof export's tables ([`crate::export::pprof::profile`]), so both exports
//! name the same frames: each request holds the profile's dictionary (strings, functions,
//! mappings, locations, stacks and attributes; entry 0 of each table is the empty one OTLP
//! reserves) and a resource per process (see [`super::resource`]) with that process's samples.
//! The pprof's `pid` label picks the resource; `tid` and `thread` become sample attributes.
use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest,
    common::v1::{any_value, AnyValue},
    profiles::v1development::{
        Function, KeyValueAndUnit, Line, Location, Mapping, Profile, ProfilesDictionary,
        ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
    },
};

use super::{mix, recording_seed, resource, scope, unix_ns};
use crate::{
    export::pprof::{self, proto, Kind},
    recording::Recording,
};

/// One request per kind of profile the recording has; the item count is its samples.
pub(super) fn requests(rec: &Recording) -> Vec<(ExportProfilesServiceRequest, usize)> {
    [Kind::Cpu, Kind::OffCpu, Kind::Gpu, Kind::Memory]
        .into_iter()
        .enumerate()
        .filter_map(|(n, kind)| {
            let p = pprof::profile(rec, kind)?;
            Some(convert(rec, &p, n as u64))
        })
        .collect()
}

/// Index of an id in a table that starts with the reserved empty entry.
fn index(ids: &HashMap<u64, i32>, id: u64) -> i32 {
    ids.get(&id).copied().unwrap_or(0)
}

/// The pprof profile `p` as one request.
fn convert(rec: &Recording, p: &proto::Profile, n: u64) -> (ExportProfilesServiceRequest, usize) {
    let str_of = |i: i64| i32::try_from(i).unwrap_or(0);
    let mut dict = ProfilesDictionary {
        string_table: p.string_table.clone(),
        mapping_table: vec![Mapping::default()],
        location_table: vec![Location::default()],
        function_table: vec![Function::default()],
        link_table: vec![Default::default()],
        attribute_table: vec![KeyValueAndUnit::default()],
        stack_table: vec![Stack::default()],
    };
    if dict.string_table.is_empty() {
        dict.string_table.push(String::new());
    }
    let mut mappings = HashMap::new();
    for m in &p.mapping {
        mappings.insert(m.id, dict.mapping_table.len() as i32);
        dict.mapping_table.push(Mapping {
            filename_strindex: str_of(m.filename),
            ..Default::default()
        });
    }
    let mut functions = HashMap::new();
    for f in &p.function {
        functions.insert(f.id, dict.function_table.len() as i32);
        dict.function_table.push(Function {
            name_strindex: str_of(f.name),
            system_name_strindex: str_of(f.system_name),
            filename_strindex: str_of(f.filename),
            start_line: 0,
        });
    }
    let mut locations = HashMap::new();
    for l in &p.location {
        locations.insert(l.id, dict.location_table.len() as i32);
        dict.location_table.push(Location {
            mapping_index: index(&mappings, l.mapping_id),
            address: 0,
            lines: l
                .line
                .iter()
                .map(|line| Line {
                    function_index: index(&functions, line.function_id),
                    line: line.line,
                    column: 0,
                })
                .collect(),
            attribute_indices: Vec::new(),
        });
    }
    let string = |dict: &mut ProfilesDictionary, s: &str| -> i32 {
        match dict.string_table.iter().position(|t| t == s) {
            Some(i) => i as i32,
            None => {
                dict.string_table.push(s.to_string());
                dict.string_table.len() as i32 - 1
            }
        }
    };
    let key_of = |name: &str| {
        p.string_table
            .iter()
            .position(|s| s == name)
            .map(|i| i as i64)
    };
    let (pid_key, tid_key, thread_key) = (key_of("pid"), key_of("tid"), key_of("thread"));
    let mut stacks: HashMap<Vec<u64>, i32> = HashMap::new();
    let mut attributes: HashMap<(i64, i64, bool), i32> = HashMap::new();
    let mut by_pid: BTreeMap<u32, Vec<Sample>> = BTreeMap::new();
    for s in &p.sample {
        let stack_index = *stacks.entry(s.location_id.clone()).or_insert_with(|| {
            dict.stack_table.push(Stack {
                location_indices: s
                    .location_id
                    .iter()
                    .map(|&id| index(&locations, id))
                    .collect(),
            });
            dict.stack_table.len() as i32 - 1
        });
        let mut pid = 0u32;
        let mut attribute_indices = Vec::new();
        for l in &s.label {
            if Some(l.key) == pid_key {
                pid = l.num as u32;
                continue;
            }
            let (value, is_str) = if Some(l.key) == thread_key || l.str != 0 {
                (l.str, true)
            } else {
                (l.num, false)
            };
            let key = (l.key, value, is_str);
            let i = *attributes.entry(key).or_insert_with(|| {
                let name = p
                    .string_table
                    .get(l.key as usize)
                    .cloned()
                    .unwrap_or_default();
                let v = if is_str {
                    any_value::Value::StringValue(
                        p.string_table
                            .get(value as usize)
                            .cloned()
                            .unwrap_or_default(),
                    )
                } else {
                    any_value::Value::IntValue(value)
                };
                let key_strindex = string(
                    &mut dict,
                    if Some(l.key) == tid_key {
                        "thread.id"
                    } else if Some(l.key) == thread_key {
                        "thread.name"
                    } else {
                        &name
                    },
                );
                dict.attribute_table.push(KeyValueAndUnit {
                    key_strindex,
                    value: Some(AnyValue { value: Some(v) }),
                    unit_strindex: 0,
                });
                dict.attribute_table.len() as i32 - 1
            });
            attribute_indices.push(i);
        }
        by_pid.entry(pid).or_default().push(Sample {
            stack_index,
            attribute_indices,
            link_index: 0,
            values: s.value.first().copied().into_iter().collect(),
            timestamps_unix_nano: Vec::new(),
        });
    }
    let value_type = |v: Option<&proto::ValueType>| {
        v.map(|v| ValueType {
            type_strindex: str_of(v.r#type),
            unit_strindex: str_of(v.unit),
        })
    };
    let start = unix_ns(rec, rec.meta.start_ns);
    let duration = rec.meta.end_ns.saturating_sub(rec.meta.start_ns);
    let known = resource::processes(rec);
    let seed = recording_seed(rec);
    let mut items = 0;
    let resource_profiles = by_pid
        .into_iter()
        .map(|(pid, samples)| {
            items += samples.len();
            let id = [
                mix(seed ^ n ^ (u64::from(pid) << 8)),
                mix(seed ^ !n ^ u64::from(pid)),
            ];
            let mut profile_id = id[0].to_be_bytes().to_vec();
            profile_id.extend(id[1].to_be_bytes());
            ResourceProfiles {
                resource: Some(resource::of(rec, &known, pid)),
                scope_profiles: vec![ScopeProfiles {
                    scope: Some(scope()),
                    profiles: vec![Profile {
                        sample_type: value_type(p.sample_type.first()),
                        samples,
                        time_unix_nano: start,
                        duration_nano: duration,
                        period_type: value_type(p.period_type.as_ref()),
                        period: p.period,
                        profile_id,
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }
        })
        .collect();
    (
        ExportProfilesServiceRequest {
            resource_profiles,
            dictionary: Some(dict),
        },
        items,
    )
}
