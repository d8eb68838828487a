//! CPU samples' stacks as Perfetto's interned callstacks: each function name, mapping (the
//! frame's module), frame and callstack once, with iids from 1, written in the sequence's
//! first packet.
use std::collections::HashMap;

use super::proto::{Callstack, Frame, InternedData, InternedString, Mapping};
use crate::recording::Recording;

/// Interning tables under construction.
pub(super) struct Interner<'a> {
    rec: &'a Recording,
    names: HashMap<&'a str, u64>,
    paths: HashMap<&'a str, u64>,
    /// Recording frame index -> frame iid.
    frames: HashMap<u32, u64>,
    /// Recording stack index -> callstack iid.
    callstacks: HashMap<u32, u64>,
    data: InternedData,
}

impl<'a> Interner<'a> {
    pub fn new(rec: &'a Recording) -> Self {
        Interner {
            rec,
            names: HashMap::new(),
            paths: HashMap::new(),
            frames: HashMap::new(),
            callstacks: HashMap::new(),
            data: InternedData::default(),
        }
    }

    fn string(table: &mut HashMap<&'a str, u64>, out: &mut Vec<InternedString>, s: &'a str) -> u64 {
        let next = table.len() as u64 + 1;
        *table.entry(s).or_insert_with(|| {
            out.push(InternedString {
                iid: Some(next),
                str: Some(s.as_bytes().to_vec()),
            });
            next
        })
    }

    fn frame(&mut self, f: u32) -> u64 {
        if let Some(&iid) = self.frames.get(&f) {
            return iid;
        }
        let frame = &self.rec.frames[f as usize];
        let name = Self::string(&mut self.names, &mut self.data.function_names, &frame.name);
        // A mapping per module (one path string each): the flame graph groups by it.
        let module = frame.module.as_deref().unwrap_or("[unknown]");
        let known = self.paths.len();
        let path = Self::string(&mut self.paths, &mut self.data.mapping_paths, module);
        if self.paths.len() > known {
            self.data.mappings.push(Mapping {
                iid: Some(path),
                path_string_ids: vec![path],
            });
        }
        let iid = self.frames.len() as u64 + 1;
        self.data.frames.push(Frame {
            iid: Some(iid),
            function_name_id: Some(name),
            mapping_id: Some(path),
            rel_pc: Some(0),
        });
        self.frames.insert(f, iid);
        iid
    }

    /// The callstack iid of recording stack `stack` (root first, as both keep them).
    pub fn callstack(&mut self, stack: u32) -> u64 {
        if let Some(&iid) = self.callstacks.get(&stack) {
            return iid;
        }
        let rec = self.rec;
        let frame_ids = rec
            .stacks
            .get(stack as usize)
            .into_iter()
            .flatten()
            .map(|&f| self.frame(f))
            .collect();
        let iid = self.callstacks.len() as u64 + 1;
        self.data.callstacks.push(Callstack {
            iid: Some(iid),
            frame_ids,
        });
        self.callstacks.insert(stack, iid);
        iid
    }

    pub fn finish(self) -> InternedData {
        self.data
    }
}
