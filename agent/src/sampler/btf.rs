//! Offsets in the kernel's own structures, from its BTF (`/sys/kernel/btf/vmlinux`), for the
//! BPF programs that read a field no helper returns.
//!
//! Written by hand rather than with a BTF crate, for start-up time: btf-rs and aya-obj turn all
//! of a kernel's ~100k types into objects (about 150 ms of CPU on each start, a quarter of
//! `modelprobe run -- /bin/true`), where two member offsets are wanted. [`BtfTypes`] walks the
//! type section once, in place, and decodes only the structs asked for. A test checks its
//! answers against btf-rs on this machine's kernel.

/// Where the kernel's BTF is, unless `MODELPROBE_KERNEL_BTF` says (as in preflight).
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

fn btf_path() -> std::path::PathBuf {
    std::env::var_os("MODELPROBE_KERNEL_BTF").map_or_else(|| VMLINUX_BTF.into(), Into::into)
}

/// What the BPF programs read from the kernel's structures, from one pass over its BTF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.thread.fsbase` (x86-64): a thread's `%fs` base, which is its
    /// `pthread_self()` (Python frames). `None` on another architecture or without BTF.
    pub task_fsbase: Option<u32>,
    /// Where a task's pending uretprobes keep the return addresses they replaced (see
    /// [`UretprobeOffsets`]).
    pub uretprobes: Option<UretprobeOffsets>,
}

/// `task_struct.utask`, `uprobe_task.return_instances`, and `return_instance`'s `stack`,
/// `orig_ret_vaddr` and `next`: a function with a uretprobe returns to the uprobe trampoline,
/// and the walk of a stack through it reads the real return address here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UretprobeOffsets {
    /// `task_struct.utask`.
    pub task_utask: u32,
    /// `uprobe_task.return_instances`.
    pub utask_instances: u32,
    /// `return_instance.stack`: the stack slot whose return address was replaced.
    pub ri_stack: u32,
    /// `return_instance.orig_ret_vaddr`.
    pub ri_orig_ret: u32,
    /// `return_instance.next`: the next outer pending return.
    pub ri_next: u32,
}

/// What a kernel without readable BTF costs.
const NO_BTF: &str =
    "no Python frames, and stacks through a function with a return probe stop there";

/// The offsets, from the kernel's BTF; `python` asks for the fsbase one (x86-64 only).
pub fn kernel_offsets(python: bool) -> KernelOffsets {
    let path = btf_path();
    let Ok(bytes) = std::fs::read(&path)
        .inspect_err(|e| log::warn!("reading {}: {e}; {NO_BTF}", path.display()))
    else {
        return KernelOffsets::default();
    };
    let Ok(btf) =
        BtfTypes::new(&bytes).inspect_err(|e| log::warn!("{}: {e}; {NO_BTF}", path.display()))
    else {
        return KernelOffsets::default();
    };
    let wanted = [
        ("task_struct", "thread"),
        ("thread_struct", "fsbase"),
        ("task_struct", "utask"),
        ("uprobe_task", "return_instances"),
        ("return_instance", "stack"),
        ("return_instance", "orig_ret_vaddr"),
        ("return_instance", "next"),
    ];
    let Ok(found) = btf
        .member_offsets(&wanted)
        .inspect_err(|e| log::warn!("{}: {e}; {NO_BTF}", path.display()))
    else {
        return KernelOffsets::default();
    };
    let task_fsbase = match found[..2] {
        _ if !python || !cfg!(target_arch = "x86_64") => None,
        [Some(thread), Some(fsbase)] => Some(thread + fsbase),
        _ => {
            log::warn!("the kernel's BTF has no task_struct.thread.fsbase; no Python frames");
            None
        }
    };
    let uretprobes = match found[2..] {
        [Some(task_utask), Some(utask_instances), Some(ri_stack), Some(ri_orig_ret), Some(ri_next)] => {
            Some(UretprobeOffsets {
                task_utask,
                utask_instances,
                ri_stack,
                ri_orig_ret,
                ri_next,
            })
        }
        _ => {
            log::debug!(
                "the kernel's BTF lacks the uprobe return instances: stacks through a function with a return probe stop there"
            );
            None
        }
    };
    KernelOffsets {
        task_fsbase,
        uretprobes,
    }
}

/// Why a BTF blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF (bad magic or header)")]
    Header,
    #[error("BTF type {0} is truncated or of an unknown kind {1}")]
    Type(u32, u32),
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// A BTF blob's type and string sections, read in place (native byte order, as the running
/// kernel writes it).
pub struct BtfTypes<'a> {
    types: &'a [u8],
    strings: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> BtfTypes<'a> {
    /// Checks the header (`struct btf_header`) and finds the two sections.
    pub fn new(blob: &'a [u8]) -> Result<Self, BtfError> {
        let magic = blob.get(0..2).map(|m| u16::from_ne_bytes([m[0], m[1]]));
        if magic != Some(MAGIC) {
            return Err(BtfError::Header);
        }
        let field = |i: usize| u32_at(blob, 4 + 4 * i).ok_or(BtfError::Header);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
        let section = |off: u32, len: u32| {
            let start = hdr_len as usize + off as usize;
            blob.get(start..start + len as usize)
                .ok_or(BtfError::Header)
        };
        Ok(BtfTypes {
            types: section(type_off, type_len)?,
            strings: section(str_off, str_len)?,
        })
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&c| c == 0).unwrap_or(rest.len())]
    }

    /// For each `(struct, member)`, the member's byte offset in the first struct of that name
    /// that has it (`None` when absent or a bitfield). One pass over the types, stopping early
    /// once all are found; an error when a type before that cannot be decoded.
    pub fn member_offsets(&self, wanted: &[(&str, &str)]) -> Result<Vec<Option<u32>>, BtfError> {
        let mut found = vec![None; wanted.len()];
        let mut at = 0usize;
        let mut id = 1u32;
        while at + 12 <= self.types.len() && found.iter().any(Option::is_none) {
            let len = self.type_len(at, id)?;
            let (name_off, info) = (u32_at(self.types, at).unwrap_or(0), self.info(at));
            if (info >> 24) & 0x1f == KIND_STRUCT {
                let name = self.name(name_off);
                for (i, (s, m)) in wanted.iter().enumerate() {
                    if found[i].is_none() && name == s.as_bytes() {
                        found[i] = self.member(at, info, m);
                    }
                }
            }
            at += len;
            id += 1;
        }
        Ok(found)
    }

    fn info(&self, at: usize) -> u32 {
        u32_at(self.types, at + 4).unwrap_or(0)
    }

    /// The byte offset of `member` in the struct at `at`.
    fn member(&self, at: usize, info: u32, member: &str) -> Option<u32> {
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 != 0;
        (0..vlen).find_map(|i| {
            let m = at + 12 + 12 * i;
            if self.name(u32_at(self.types, m)?) != member.as_bytes() {
                return None;
            }
            let raw = u32_at(self.types, m + 8)?;
            // With kind_flag, the top 8 bits are a bitfield size and the rest the bit offset.
            let (bits, bitfield) = if kind_flag {
                (raw & 0x00ff_ffff, raw >> 24 != 0)
            } else {
                (raw, false)
            };
            (!bitfield && bits % 8 == 0).then_some(bits / 8)
        })
    }

    /// The size of the type record at `at`: `struct btf_type` (12 bytes) and what its kind
    /// appends (`include/uapi/linux/btf.h`).
    fn type_len(&self, at: usize, id: u32) -> Result<usize, BtfError> {
        let info = self.info(at);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let extra = match kind {
            // INT, VAR and DECL_TAG carry one u32.
            1 | 14 | 17 => 4,
            // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG: nothing.
            2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
            // ARRAY: struct btf_array.
            3 => 12,
            // STRUCT, UNION (btf_member), DATASEC (btf_var_secinfo), ENUM64 (btf_enum64).
            4 | 5 | 15 | 19 => 12 * vlen,
            // ENUM (btf_enum), FUNC_PROTO (btf_param).
            6 | 13 => 8 * vlen,
            _ => return Err(BtfError::Type(id, kind)),
        };
        let len = 12 + extra;
        if at + len > self.types.len() {
            return Err(BtfError::Type(id, kind));
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same offsets from btf-rs, which decodes every type: a check of the hand-written walk.
    fn btf_rs_offset(btf: &btf_rs::Btf, name: &str, member: &str) -> Option<u32> {
        for t in btf.resolve_types_by_name(name).ok()? {
            let btf_rs::Type::Struct(s) = t else { continue };
            for m in &s.members {
                if btf.resolve_name(m).ok().as_deref() == Some(member) {
                    let bits = m.bit_offset();
                    return (bits % 8 == 0).then_some(bits / 8);
                }
            }
        }
        None
    }

    #[test]
    fn agrees_with_btf_rs_on_this_kernel() {
        let Ok(bytes) = std::fs::read(VMLINUX_BTF) else {
            return;
        };
        let reference = btf_rs::Btf::from_bytes(&bytes).expect("btf-rs parses the kernel's BTF");
        let mine = BtfTypes::new(&bytes).expect("header");
        let wanted = [
            ("task_struct", "thread"),
            ("task_struct", "pid"),
            ("task_struct", "tgid"),
            ("task_struct", "comm"),
            ("task_struct", "mm"),
            ("thread_struct", "fsbase"),
            ("thread_struct", "gsbase"),
            ("task_struct", "real_parent"),
            ("linux_binprm", "filename"),
            ("sk_buff", "len"),
        ];
        let got = mine.member_offsets(&wanted).expect("every type decodes");
        for ((s, m), got) in wanted.iter().zip(got) {
            let want = btf_rs_offset(&reference, s, m);
            assert!(want.is_some(), "btf-rs finds {s}.{m}");
            assert_eq!(got, want, "{s}.{m}");
        }
        // And the ones the sampler asks for.
        let k = kernel_offsets(true);
        let off = k.task_fsbase.expect("task_struct.thread.fsbase");
        // The thread struct comes last in task_struct, kilobytes in.
        assert!(off > 1024, "{off}");
        let u = k.uretprobes.expect("uprobe return instances");
        for (s, m, got) in [
            ("task_struct", "utask", u.task_utask),
            ("uprobe_task", "return_instances", u.utask_instances),
            ("return_instance", "stack", u.ri_stack),
            ("return_instance", "orig_ret_vaddr", u.ri_orig_ret),
            ("return_instance", "next", u.ri_next),
        ] {
            assert_eq!(Some(got), btf_rs_offset(&reference, s, m), "{s}.{m}");
        }
    }

    #[test]
    fn absent_members_and_bad_blobs() {
        assert!(matches!(BtfTypes::new(b"nope"), Err(BtfError::Header)));
        assert!(matches!(BtfTypes::new(&[]), Err(BtfError::Header)));
        let Ok(bytes) = std::fs::read(VMLINUX_BTF) else {
            return;
        };
        let btf = BtfTypes::new(&bytes).expect("header");
        assert_eq!(
            btf.member_offsets(&[("task_struct", "no_such_member"), ("no_such_struct", "x")])
                .expect("a walk over every type"),
            vec![None, None]
        );
        // A blob cut inside its type section: the header's lengths no longer fit.
        assert!(BtfTypes::new(&bytes[..bytes.len() / 2]).is_err());
    }
}
