//! The probes of one session: resolved once, attached to every process of the target tree.
use std::collections::HashSet;

use super::{resolve, ProbeSpec, ResolvedProbe, SearchContext};
use crate::{sampler::Sampler, trace::ProbeInfo, Result};

/// Specs, what they resolved to, and where they are attached.
#[derive(Debug, Default)]
pub struct ProbeSet {
    specs: Vec<ProbeSpec>,
    resolved: Vec<(ResolvedProbe, u32)>,
    table: Vec<ProbeInfo>,
    attached: HashSet<(u32, u32)>,
}

impl ProbeSet {
    /// Resolves every spec against the target; any failure is an error naming the spec.
    pub fn resolve(specs: &[ProbeSpec], ctx: &SearchContext) -> Result<ProbeSet> {
        let mut set = ProbeSet {
            specs: specs.to_vec(),
            ..ProbeSet::default()
        };
        for spec in specs {
            for r in resolve::resolve(spec, ctx)? {
                set.add(spec, r);
            }
        }
        Ok(set)
    }

    fn add(&mut self, spec: &ProbeSpec, r: ResolvedProbe) -> u32 {
        let info = ProbeInfo {
            spec: spec.text.clone(),
            path: r.target_path.display().to_string(),
            function: r.symbol.clone(),
            args: spec.args,
        };
        if let Some(i) = self.table.iter().position(|p| *p == info) {
            return i as u32;
        }
        self.table.push(info);
        let id = self.table.len() as u32 - 1;
        self.resolved.push((r, id));
        id
    }

    /// True when no probe was asked for.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Number of functions probed.
    pub fn function_count(&self) -> usize {
        self.table.len()
    }

    /// Attaches every resolved probe to process `pid` (once); returns how many were new.
    pub fn attach_to(&mut self, sampler: &mut Sampler, pid: u32) -> Result<usize> {
        let mut n = 0;
        for (r, id) in &self.resolved {
            if self.attached.insert((pid, *id)) {
                sampler.attach_span(&r.host_path, r.file_offset, *id as u64, pid)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// After `pid` exec'd a new image: resolve the specs again in it and attach what matches.
    /// Best effort: a spec the new image lacks is skipped with a debug log.
    pub fn on_exec(&mut self, sampler: &mut Sampler, pid: u32) -> Result<usize> {
        if self.specs.is_empty() {
            return Ok(0);
        }
        let ctx = SearchContext::for_process(pid);
        for spec in self.specs.clone() {
            match resolve::resolve(&spec, &ctx) {
                Ok(found) => {
                    for r in found {
                        self.add(&spec, r);
                    }
                }
                Err(e) => log::debug!("after exec of pid {pid}: {e}"),
            }
        }
        self.attach_to(sampler, pid)
    }

    /// The probe table for the recording.
    pub fn table(&self) -> Vec<ProbeInfo> {
        self.table.clone()
    }
}
