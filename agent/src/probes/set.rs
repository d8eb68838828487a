//! The probes of one session: resolved once, attached to every process of the target tree.
use std::collections::HashSet;

use super::{
    packs::{resolve_packs, PackProbe},
    resolve, ProbeSpec, ResolvedProbe, SearchContext,
};
use crate::{recording::ProbeInfo, sampler::Sampler, Result};

/// Specs, what they resolved to, and where they are attached.
#[derive(Debug, Default)]
pub struct ProbeSet {
    specs: Vec<ProbeSpec>,
    resolved: Vec<(ResolvedProbe, u32)>,
    table: Vec<ProbeInfo>,
    attached: HashSet<(u32, u32)>,
    packs: bool,
    skipped_packs: Vec<&'static str>,
    launch_stacks: bool,
    /// Pack libraries (target paths) already searched for pack functions, so a library
    /// mapped by many processes is read once.
    searched_libs: HashSet<String>,
    /// PyTorch's allocator tracepoints (`--memory`).
    torch: Option<super::torch_memory::TorchMemory>,
    /// Pack probe ids by (file identity, offset): one function of one file under two paths
    /// (`/lib/...` and `/usr/lib/...` on a merged /usr) is probed once.
    by_file: std::collections::HashMap<((u64, u64), u64), u32>,
}

/// A file's identity (device, inode), whatever path names it.
fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl ProbeSet {
    /// Attach to PyTorch's CUDA caching allocator's tracepoints where `libc10_cuda.so` is
    /// mapped (`--memory`): GPU memory at tensor level.
    pub fn trace_torch_memory(&mut self) {
        self.torch.get_or_insert_with(Default::default);
    }

    /// Hands back what the session holds in the targets (the allocator tracepoints'
    /// semaphores).
    pub fn release(&mut self) {
        if let Some(t) = self.torch.as_mut() {
            t.release();
        }
    }

    /// Keep the calling stack of CUDA calls that queue GPU work (for GPU timings: the GPU
    /// flame graph charges GPU time to it). Off by default: it costs a stack walk per call.
    pub fn keep_launch_stacks(&mut self, on: bool) {
        self.launch_stacks = on;
    }

    /// Resolves every spec against the target; any failure is an error naming the spec.
    pub fn resolve(specs: &[ProbeSpec], ctx: &SearchContext) -> Result<ProbeSet> {
        let mut set = ProbeSet {
            specs: specs.to_vec(),
            ..ProbeSet::default()
        };
        for spec in specs {
            for r in resolve::resolve(spec, ctx)? {
                set.add(spec, r, None);
            }
        }
        Ok(set)
    }

    fn add(&mut self, spec: &ProbeSpec, r: ResolvedProbe, pack: Option<&str>) -> u32 {
        let info = ProbeInfo {
            spec: spec.text.clone(),
            path: r.target_path.display().to_string(),
            function: r.symbol.clone(),
            args: spec.args,
            pack: pack.map(str::to_string),
        };
        if let Some(i) = self.table.iter().position(|p| *p == info) {
            return i as u32;
        }
        // A pack's function found again under another path of the same file: one probe, or
        // every call would be counted twice. (A user's specs keep their own ids: a breakpoint's
        // rule finds its probe by spec.)
        let key = pack
            .and_then(|_| file_id(&r.host_path))
            .map(|f| (f, r.file_offset));
        if let Some(id) = key.and_then(|k| self.by_file.get(&k)) {
            return *id;
        }
        self.table.push(info);
        let id = self.table.len() as u32 - 1;
        self.resolved.push((r, id));
        if let Some(k) = key {
            self.by_file.insert(k, id);
        }
        id
    }

    /// True when nothing is probed (no spec, no pack found).
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty() && !self.packs
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
                let info = &self.table[*id as usize];
                let pack_fn = info
                    .pack
                    .as_deref()
                    .and_then(|p| crate::probes::packs::lookup(p, &info.function))
                    .map(|(_, f)| f);
                if let Some(crate::probes::packs::Decoder::Tls(which)) = pack_fn.map(|f| f.decoder)
                {
                    sampler.attach_tls(&r.host_path, r.file_offset, which, pid)?;
                    n += 1;
                    continue;
                }
                if let Some(crate::probes::packs::Decoder::Heap(which)) = pack_fn.map(|f| f.decoder)
                {
                    sampler.attach_heap(&r.host_path, r.file_offset, which, pid)?;
                    n += 1;
                    continue;
                }
                let mut cookie = *id as u64;
                if info.args > 6 {
                    cookie |= modelprobe_common::STACK_ARGS_COOKIE;
                }
                if pack_fn.is_some_and(|f| f.returns_status) {
                    cookie |= modelprobe_common::STATUS_COOKIE;
                }
                if self.launch_stacks && pack_fn.is_some_and(|f| f.keeps_launch_stack()) {
                    cookie |= modelprobe_common::LAUNCH_STACK_COOKIE;
                }
                if pack_fn.is_some_and(|f| {
                    matches!(
                        f.decoder,
                        crate::probes::packs::Decoder::GetFunction
                            | crate::probes::packs::Decoder::Alloc { .. }
                    )
                }) {
                    cookie |= modelprobe_common::DEREF_ARG0_COOKIE;
                }
                if pack_fn.is_some_and(|f| f.decoder == crate::probes::packs::Decoder::GetFunction)
                {
                    cookie |= modelprobe_common::STRING_ARG2_COOKIE;
                }
                sampler.attach_span(&r.host_path, r.file_offset, cookie, pid)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// After `pid` exec'd a new image: resolve the specs again in it and attach what matches.
    /// Best effort: a spec the new image lacks is skipped with a debug log.
    pub fn on_exec(&mut self, sampler: &mut Sampler, pid: u32) -> Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let ctx = SearchContext::for_process(pid);
        for spec in self.specs.clone() {
            match resolve::resolve(&spec, &ctx) {
                Ok(found) => {
                    for r in found {
                        self.add(&spec, r, None);
                    }
                }
                Err(e) => log::debug!("after exec of pid {pid}: {e}"),
            }
        }
        if self.packs {
            self.add_packs(resolve_packs(&ctx));
        }
        self.attach_to(sampler, pid)
    }

    /// Turns the built-in packs on: adds the pack functions found in the target (returns how
    /// many), and from then on searches every exec'd image for them too.
    /// Packs named in `skip` stay off.
    pub fn enable_packs(&mut self, ctx: &SearchContext, skip: &[&'static str]) -> usize {
        self.packs = true;
        self.skipped_packs = skip.to_vec();
        self.add_packs(resolve_packs(ctx))
    }

    fn add_packs(&mut self, found: Vec<PackProbe>) -> usize {
        let before = self.table.len();
        let skipped = self.skipped_packs.clone();
        self.searched_libs.extend(
            found
                .iter()
                .map(|p| p.resolved.target_path.display().to_string()),
        );
        for p in found.into_iter().filter(|p| !skipped.contains(&p.pack)) {
            self.add(&p.spec, p.resolved, Some(p.pack));
        }
        self.table.len() - before
    }

    /// `pid` mapped new files: if one is a pack library, resolve the packs in it and attach.
    pub fn on_new_files(
        &mut self,
        sampler: &mut Sampler,
        pid: u32,
        files: &[String],
    ) -> Result<usize> {
        let torch = match self.torch.as_mut() {
            Some(t) => t.on_new_files(sampler, pid, files).unwrap_or_else(|e| {
                log::warn!("pid {pid}: PyTorch's allocator tracepoints not attached: {e}");
                0
            }),
            None => 0,
        };
        self.on_new_pack_files(sampler, pid, files)
            .map(|n| n + torch)
    }

    fn on_new_pack_files(
        &mut self,
        sampler: &mut Sampler,
        pid: u32,
        files: &[String],
    ) -> Result<usize> {
        let pack_lib = |f: &String| {
            let name = f.rsplit('/').next().unwrap_or(f);
            crate::probes::packs::PACKS
                .iter()
                .flat_map(|p| p.libraries)
                .any(|lib| crate::probes::packs::library_name_matches(name, lib))
        };
        if !self.packs || !files.iter().any(pack_lib) {
            return Ok(0);
        }
        let unsearched: Vec<&String> = files
            .iter()
            .filter(|f| pack_lib(f) && !self.searched_libs.contains(*f))
            .collect();
        if unsearched.is_empty() {
            // Read already (another process loaded it first): its probes, for this process too.
            return self.attach_to(sampler, pid);
        }
        self.searched_libs.extend(unsearched.into_iter().cloned());
        let added = self.add_packs(resolve_packs(&SearchContext::for_process(pid)));
        if added > 0 {
            log::info!("pid {pid} loaded a pack library: probing {added} more function(s)");
        }
        self.attach_to(sampler, pid)
    }

    /// The probe table entries of `pack`.
    pub fn pack_functions(&self, pack: &str) -> Vec<&ProbeInfo> {
        self.table
            .iter()
            .filter(|p| p.pack.as_deref() == Some(pack))
            .collect()
    }

    /// The probe table for the recording.
    pub fn table(&self) -> Vec<ProbeInfo> {
        self.table.clone()
    }
}
