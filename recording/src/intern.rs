//! Frames and stacks added to a finished recording (Python spans, tracebacks), reusing the
//! ones it already holds.
use std::collections::HashMap;

use crate::{Frame, Recording};

/// Indexes of a recording's frames and stacks, to add more without duplicates.
#[derive(Debug, Default)]
pub struct Interner {
    frames: HashMap<Frame, u32>,
    stacks: HashMap<Vec<u32>, u32>,
}

impl Interner {
    /// An index of what `rec` holds now.
    pub fn new(rec: &Recording) -> Interner {
        Interner {
            frames: rec
                .frames
                .iter()
                .enumerate()
                .map(|(i, f)| (f.clone(), i as u32))
                .collect(),
            stacks: rec
                .stacks
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as u32))
                .collect(),
        }
    }

    /// The stack of `frames` (outermost first) in `rec`, added if new; `None` for no frames.
    pub fn stack(
        &mut self,
        rec: &mut Recording,
        frames: impl IntoIterator<Item = Frame>,
    ) -> Option<u32> {
        let ids: Vec<u32> = frames
            .into_iter()
            .map(|frame| match self.frames.get(&frame) {
                Some(&id) => id,
                None => {
                    let id = rec.frames.len() as u32;
                    self.frames.insert(frame.clone(), id);
                    rec.frames.push(frame);
                    id
                }
            })
            .collect();
        if ids.is_empty() {
            return None;
        }
        Some(*self.stacks.entry(ids.clone()).or_insert_with(|| {
            rec.stacks.push(ids);
            (rec.stacks.len() - 1) as u32
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameKind, Meta};

    #[test]
    fn frames_and_stacks_are_reused() {
        let frame = |name: &str| Frame {
            name: name.into(),
            module: None,
            file: None,
            line: None,
            kind: FrameKind::Python,
            inlined: false,
        };
        let mut rec = Recording::new(Meta::default());
        rec.frames.push(frame("a"));
        rec.stacks.push(vec![0]);
        let mut i = Interner::new(&rec);
        assert_eq!(i.stack(&mut rec, [frame("a")]), Some(0));
        assert_eq!(i.stack(&mut rec, [frame("a"), frame("b")]), Some(1));
        assert_eq!(i.stack(&mut rec, [frame("a"), frame("b")]), Some(1));
        assert_eq!(i.stack(&mut rec, []), None);
        assert_eq!((rec.frames.len(), rec.stacks.len()), (2, 2));
    }
}
