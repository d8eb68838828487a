//! Offsets in the kernel's own structures, from its BTF (`/sys/kernel/btf/vmlinux`), for the
//! BPF programs that read a field no helper returns.
use btf_rs::{Btf, Type};

/// Where the kernel's BTF is, unless `MODELPROBE_KERNEL_BTF` says (as in preflight).
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

fn btf_path() -> std::path::PathBuf {
    std::env::var_os("MODELPROBE_KERNEL_BTF").map_or_else(|| VMLINUX_BTF.into(), Into::into)
}

/// Byte offset of `task_struct.thread.fsbase` (x86-64): a thread's `%fs` base, which is its
/// `pthread_self()`. `None` on another architecture or without BTF.
pub fn task_fsbase_offset() -> Option<u32> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let path = btf_path();
    let btf = Btf::from_file(&path)
        .inspect_err(|e| log::warn!("reading {}: {e}; no Python frames", path.display()))
        .ok()?;
    let thread = member_offset(&btf, "task_struct", "thread")?;
    let fsbase = member_offset(&btf, "thread_struct", "fsbase")?;
    Some(thread + fsbase)
}

/// Byte offset of the member `member` of the struct `name`.
fn member_offset(btf: &Btf, name: &str, member: &str) -> Option<u32> {
    for t in btf.resolve_types_by_name(name).ok()? {
        let Type::Struct(s) = t else { continue };
        for m in &s.members {
            if btf.resolve_name(m).ok().as_deref() == Some(member) {
                let bits = m.bit_offset();
                return (bits % 8 == 0).then_some(bits / 8);
            }
        }
    }
    log::warn!("the kernel's BTF has no {name}.{member}; no Python frames");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_fs_base_in_this_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return;
        }
        let off = task_fsbase_offset().expect("task_struct.thread.fsbase");
        // The thread struct comes last in task_struct, kilobytes in.
        assert!(off > 1024, "{off}");
    }
}
