//! The same stack walk as the BPF side's (`ebpf/src/unwind.rs`), in user space, over the same
//! compiled rows: for a stack copied out of a stopped thread (`modelprobe stacks`). One
//! semantics for both, so a snapshot's stacks and a profile's agree; the BPF side's validated
//! scan of an innermost frame without rows is left out (a frame-pointer step instead).
use modelprobe_common::unwind::{cfa, rbp, UnwindRow};

/// The signal frame's `ucontext_t` fields (x86-64: after `uc_flags`, `uc_link`, `uc_stack`,
/// the general registers in `mcontext_t` order).
const UC_RBP: u64 = 40 + 10 * 8;
const UC_RSP: u64 = 40 + 15 * 8;
const UC_RIP: u64 = 40 + 16 * 8;

/// Where an address's rows are: the object's rows and the mapping's load bias.
pub struct Object<'a> {
    /// Rows sorted by `pc`.
    pub rows: &'a [UnwindRow],
    /// Runtime address minus ELF virtual address.
    pub bias: u64,
}

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// At the outermost frame: the stack is whole.
    Whole,
    /// At `max` frames.
    Truncated,
    /// A word of the stack could not be read (outside the copy), or a rule gave a frame
    /// below the last: the frames so far are right, the rest unknown.
    Stopped,
}

/// The frames of a stack from registers `(ip, sp, bp)`, innermost first (the first an
/// instruction pointer, the rest return addresses), and how the walk ended. `object` finds the
/// rows of an address (`None`: no table, stepped by frame pointer); `read` reads a stack word.
pub fn walk<'a>(
    regs: (u64, u64, u64),
    max: usize,
    object: impl Fn(u64) -> Option<Object<'a>>,
    read: impl Fn(u64) -> Option<u64>,
) -> (Vec<u64>, End) {
    let (mut ip, mut sp, mut bp) = regs;
    let mut adjust = 0;
    let mut frames = Vec::new();
    loop {
        if ip == 0 {
            return (frames, End::Whole);
        }
        if frames.len() == max {
            return (frames, End::Truncated);
        }
        frames.push(ip);
        let pc = ip - adjust;
        let found = object(pc).and_then(|o| {
            let svma = pc.wrapping_sub(o.bias);
            let i = o.rows.partition_point(|r| u64::from(r.pc) <= svma);
            (i > 0).then(|| o.rows[i - 1])
        });
        let rule = found.map_or(cfa::NONE, |r| r.cfa);
        let step = match rule {
            cfa::END => return (frames, End::Whole),
            cfa::SIGNAL => {
                let (Some(i), Some(s), Some(b)) =
                    (read(sp + UC_RIP), read(sp + UC_RSP), read(sp + UC_RBP))
                else {
                    return (frames, End::Stopped);
                };
                (ip, sp, bp, adjust) = (i, s, b, 0);
                continue;
            }
            cfa::NONE => {
                if bp == 0 {
                    return (frames, End::Whole);
                }
                read(bp).map(|saved| (bp + 16, saved))
            }
            cfa::RSP | cfa::RBP | cfa::PLT => {
                let r = found.unwrap_or_default();
                let reg = if rule == cfa::RBP { bp } else { sp };
                let mut at = reg.wrapping_add(r.cfa_offset as i64 as u64);
                if rule == cfa::PLT {
                    at = sp
                        + 8
                        + if (ip & 15) >= u64::from(r.plt_threshold) {
                            8
                        } else {
                            0
                        };
                }
                if r.rbp == rbp::AT_CFA {
                    read(at.wrapping_add(r.rbp_offset as i64 as u64)).map(|b| (at, b))
                } else {
                    Some((at, bp))
                }
            }
            _ => return (frames, End::Stopped),
        };
        let Some((cfa_addr, next_bp)) = step else {
            return (frames, End::Stopped);
        };
        // The stack grows down: a caller's frame is above.
        if cfa_addr <= sp {
            return (frames, End::Stopped);
        }
        let Some(ra) = read(cfa_addr - 8) else {
            return (frames, End::Stopped);
        };
        (ip, sp, bp, adjust) = (ra, cfa_addr, next_bp, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pc: u32, cfa: u8, cfa_offset: i16, rbp: u8, rbp_offset: i16) -> UnwindRow {
        UnwindRow {
            pc,
            cfa_offset,
            rbp_offset,
            cfa,
            rbp,
            ..Default::default()
        }
    }

    #[test]
    fn rows_frame_pointers_and_the_end_give_the_whole_stack() {
        // An object at bias 0x1000: f at 0x100 (after `push rbp; mov rbp,rsp`: CFA = rbp+16,
        // rbp saved at CFA-16), g at 0x200 (no frame pointer: CFA = rsp+24), _start at 0x300.
        let rows = [
            row(0x100, cfa::RBP, 16, rbp::AT_CFA, -16),
            row(0x200, cfa::RSP, 24, rbp::SAME, 0),
            row(0x300, cfa::END, 0, rbp::SAME, 0),
        ];
        let object = |pc: u64| {
            (0x1000..0x2000).contains(&pc).then_some(Object {
                rows: &rows,
                bias: 0x1000,
            })
        };
        // Stack (addresses): f's frame at 0x7000 (saved rbp at 0x7000, return into g at
        // 0x7008); g's frame: 16 bytes of locals then the return into _start at 0x7020.
        let stack = std::collections::HashMap::from([
            (0x7000u64, 0x8000u64),
            (0x7008, 0x1210),
            (0x7020, 0x1305),
        ]);
        let read = |a: u64| stack.get(&a).copied();
        let (frames, end) = walk((0x1110, 0x6ff0, 0x7000), 64, object, read);
        assert_eq!(frames, [0x1110, 0x1210, 0x1305]);
        assert_eq!(end, End::Whole);
        // Without rows: frame pointers (rbp chain) until a word is missing.
        let (frames, end) = walk((0x5000, 0x6ff0, 0x7000), 64, |_| None, read);
        assert_eq!(frames, [0x5000, 0x1210]);
        assert_eq!(end, End::Stopped);
        let (frames, end) = walk((0x1110, 0x6ff0, 0x7000), 2, object, read);
        assert_eq!((frames.len(), end), (2, End::Truncated));
    }
}
