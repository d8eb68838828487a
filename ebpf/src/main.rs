//! modelprobe's BPF programs, one module per concern:
//!
//! - [`sampling`]: `mp_cpu_sample` (perf event, `cpu-clock` on every CPU): a thread of a target
//!   process was running; copy its kernel and user stacks into the ring buffer.
//! - [`offcpu`]: `mp_sched_switch` (tracepoint `sched/sched_switch`): a target thread blocked;
//!   stash its stacks, and when it is switched back in emit one off-CPU event weighted by the
//!   time blocked.
//! - [`lifecycle`]: `mp_task_newtask` / `mp_sched_exit` follow the target's process tree in the
//!   kernel, so children are sampled from their first instruction; with `mp_sched_exec`,
//!   `mp_task_rename` and `mp_signal_deliver`, they report lifecycle events as `Record`s.
//! - [`spans`]: `mp_span_enter` / `mp_span_exit` (uprobe / uretprobe): a probed function was
//!   entered or returned; the attach cookie says which probe and what else to keep. The
//!   `_stack` variants also take the calling stack (launch probes) or a failed call's stack
//!   (status probes).
//! - [`stdio`]: `mp_sys_write` / `mp_sys_writev` / `mp_sys_openat`: stdout/stderr writes and
//!   file opens, as `DataRecord`s.
//! - [`tls`]: `mp_tls_enter` / `mp_tls_exit` / `mp_tls_free` (uprobes on OpenSSL's
//!   `SSL_read`, `SSL_write`, their `_ex` forms and `SSL_free`): the plaintext of a target's
//!   TLS calls, for the LLM API calls the agent parses out of it.
//! - [`sockets`]: `mp_sock_*` (syscall tracepoints, with `--plain-http`): the same for plain
//!   HTTP on the target's TCP sockets.
//! - [`memory`]: `mp_mem_*` (syscall tracepoints on `mmap`, `munmap`, `mremap`, `brk`) and
//!   `mp_page_fault` (a sampled `page-faults` perf event), with `--memory`: where a target's
//!   memory comes from, by stack.
//! - [`unwind`]: the user-stack walk through the agent's CFI tables, used by every program
//!   that takes a stack (the kernel's frame-pointer walk where a process has none).
//! - [`python`]: the Python frames of a thread of a known CPython, read with every stack.
//! - [`maps`] holds every map and the load-time `CONFIG`; [`emit`] writes the three record
//!   types.
//!
//! Filtering happens first, before anything is copied: only processes in `TARGETS` cost more
//! than a hash lookup. Every dropped event increments a per-CPU `LOST` counter the agent reports.
//!
//! Each program is a thin entry point over a `try_` function returning `Result<u32, i64>`: the
//! error is the failing helper's (a negative errno, logged at debug through aya-log), and every
//! program returns 0 either way. Logs cost nothing unless the agent runs with `-vv`: it sets
//! `AYA_LOG_LEVEL` to 0 otherwise, and the verifier prunes the disabled branches.
#![no_std]
#![no_main]

mod emit;
mod lifecycle;
mod maps;
mod memory;
mod offcpu;
mod python;
mod sampling;
mod sockets;
mod spans;
mod stdio;
mod stop;
mod tls;
mod unwind;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
