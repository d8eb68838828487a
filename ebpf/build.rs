//! Tells the BPF programs which architecture's `pt_regs` they run against.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"loongarch64\"))");
    aya_build::emit_bpf_target_arch_cfg().expect("emit bpf_target_arch");
}
