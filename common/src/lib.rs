//! Types shared by modelprobe's BPF programs (`ebpf/`) and its agent (`agent/`), and, in
//! [`gpu`], the wire protocol between the agent and its CUPTI injection library; in
//! [`pyprobe`], the shared ring of its Python probes.
//!
//! Everything here is `#[repr(C)]`, `Copy`, and laid out with no implicit padding, so the kernel
//! side and the user side agree byte for byte. The `layout` assertions at the bottom fail the
//! build of either side if a field moves.
//!
//! ```
//! use modelprobe_common::{StackEvent, MAX_STACK_DEPTH};
//! use modelprobe_common::python::MAX_PY_DEPTH;
//! assert_eq!(
//!     core::mem::size_of::<StackEvent>(),
//!     88 + 2 * 8 * MAX_STACK_DEPTH + 8 + 16 * MAX_PY_DEPTH + 8
//! );
//! ```
#![no_std]

pub mod gpu;
pub mod offcpu;
// User space only: the BPF target has no 32-bit atomics, and no use for it.
#[cfg(not(target_arch = "bpf"))]
pub mod pyprobe;
pub mod python;
pub mod unwind;

/// Deepest stack (kernel or user) one event carries; the kernel's `perf_event_max_stack` default.
pub const MAX_STACK_DEPTH: usize = 127;

/// Length of a task's `comm` (thread name), NUL padded.
pub const TASK_COMM_LEN: usize = 16;

/// What a [`StackEvent`] records.
pub mod kind {
    /// A `cpu-clock` sample of a running thread; `weight` is 1.
    pub const CPU_SAMPLE: u32 = 1;
    /// The stacks a thread blocked in (switched out while not runnable), as kept in
    /// `OFFCPU_STACKS` (the intervals themselves are [`offcpu`](super::offcpu) sums and events);
    /// `time_ns` is when the first thread blocked there.
    pub const OFF_CPU: u32 = 2;
    /// [`Record`](super::Record): a probed function was entered; `id` is the probe's cookie,
    /// `args[0..6]` its first six integer arguments, `args[6..8]` the first two 8-byte words of
    /// its stack arguments (where structs larger than 16 bytes and arguments past the sixth go).
    pub const SPAN_ENTER: u32 = 3;
    /// [`Record`](super::Record): a probed function returned; `id` is the probe's cookie,
    /// `args[0]` the return value.
    pub const SPAN_EXIT: u32 = 4;
    /// [`Record`](super::Record): a target created a task; `id` is the new task's id, `args[0]`
    /// the clone flags (`CLONE_THREAD` set for a thread).
    pub const TASK_NEW: u32 = 5;
    /// [`Record`](super::Record): a target called `execve`; `comm` is the new name.
    pub const EXEC: u32 = 6;
    /// [`Record`](super::Record): a target task exited; `args[0]` is 1 if it was the last of
    /// its process, `args[1]` the thread's nanoseconds on CPU since recording began (the
    /// scheduler's intervals, see [`offcpu`](super::offcpu)).
    pub const TASK_EXIT: u32 = 7;
    /// [`Record`](super::Record): a thread renamed itself; `comm` is the new name.
    pub const RENAME: u32 = 8;
    /// [`Record`](super::Record): a signal is being delivered; `id` is the signal number,
    /// `args` = [code, sa_handler, sa_flags].
    pub const SIGNAL: u32 = 9;
    /// [`DataRecord`](super::DataRecord): bytes a target wrote to stdout (fd 1) or stderr (2).
    pub const LOG: u32 = 10;
    /// [`DataRecord`](super::DataRecord): a target opened a file; `data` is its path.
    pub const OPEN: u32 = 11;
    /// [`StackEvent`](super::StackEvent): a probed function returned a non-zero status; the
    /// stacks are its caller's, `probe` is the probe id.
    pub const API_ERROR_STACK: u32 = 12;
    /// [`DataRecord`](super::DataRecord): a string argument of a probed call (see
    /// [`STRING_ARG2_COOKIE`](super::STRING_ARG2_COOKIE)); `probe` is the probe id.
    pub const ARG_STRING: u32 = 13;
    /// [`StackEvent`](super::StackEvent): the calling stack at the entry of a probed call that
    /// queues GPU work (see [`LAUNCH_STACK_COOKIE`](super::LAUNCH_STACK_COOKIE)); `probe` is
    /// the probe id.
    pub const SPAN_STACK: u32 = 14;
    /// [`TlsRecord`](super::TlsRecord): plaintext one `SSL_read`/`SSL_write` call moved (a piece
    /// of it: one call is sent as up to [`MAX_TLS_CHUNKS`](super::MAX_TLS_CHUNKS) records).
    pub const TLS_DATA: u32 = 15;
    /// [`TlsRecord`](super::TlsRecord) with no payload: `SSL_free` (or `close` of a socket)
    /// ended connection `conn`.
    pub const TLS_CLOSE: u32 = 16;
    /// [`TlsRecord`](super::TlsRecord) with no payload: a call moved `call_len` bytes that were
    /// not sent because the agent asked to skip them (`TLS_SKIP`: a large body that is no LLM
    /// call).
    pub const TLS_SKIPPED: u32 = 17;
    /// [`Record`](super::Record): a stop rule fired and the probe sent the process `SIGSTOP`
    /// from the thread that hit it (see [`stop`](super::stop)); `id` is the probe id,
    /// `args[0]` a [`stop::reason`](super::stop::reason), `args[1..7]` the call's first six
    /// arguments (a breakpoint) or its return value in `args[1]` (an API error), `args[7]` the
    /// address the call returns to (which a return probe's trampoline hides on the stack).
    pub const STOP: u32 = 18;
    /// [`Record`](super::Record): the kernel's OOM killer chose a target process
    /// (`oom/mark_victim`); `id` is the victim's pid, `args` = [total_vm, anon_rss, file_rss,
    /// shmem_rss] in KiB (0 where this kernel's tracepoint lacks them). The record's own
    /// `pid`/`tid` are the task that ran out (often another process).
    pub const OOM_KILL: u32 = 19;
    /// [`StackEvent`](super::StackEvent), on the `MEMORY` ring (`--memory`): a target's
    /// anonymous memory grew (`mmap`, `mremap`, `brk`); `mem_addr` is where the new range
    /// starts, `weight` its length in bytes, `mem_source` a
    /// [`memory::source`](super::memory::source) constant; the stacks are the caller's.
    pub const MEM_ALLOC: u32 = 20;
    /// [`Record`](super::Record), on the `MEMORY` ring: a target gave memory back (`munmap`,
    /// the old range of an `mremap`, a shrinking `brk`); `id` is the range's start, `args[0]`
    /// its length in bytes, `args[1]` a [`memory::source`](super::memory::source) constant.
    pub const MEM_FREE: u32 = 21;
    /// [`StackEvent`](super::StackEvent), on the `MEMORY` ring: a sampled page fault of a
    /// target (one in every `weight`: the perf event's sample period); `mem_addr` is the
    /// faulting address.
    pub const PAGE_FAULT: u32 = 22;
}

/// Memory by stack (`--memory`): what the `MEMORY` ring's [`kind::MEM_ALLOC`],
/// [`kind::MEM_FREE`] and [`kind::PAGE_FAULT`] events say.
pub mod memory {
    /// Where a [`MEM_ALLOC`](super::kind::MEM_ALLOC) or [`MEM_FREE`](super::kind::MEM_FREE)
    /// came from.
    pub mod source {
        /// An anonymous `mmap` (glibc's large blocks and arenas, Python's arenas, PyTorch's
        /// CPU allocator), or its `munmap`.
        pub const MMAP: u32 = 1;
        /// `mremap`: the old range is freed and the new one allocated by the caller.
        pub const MREMAP: u32 = 2;
        /// The program break moved (`brk`: glibc's main heap).
        pub const BRK: u32 = 3;
        /// A sampled `malloc`/`calloc`/`realloc` (`--memory=malloc`), or the `free` of one.
        pub const MALLOC: u32 = 4;
        /// A block of PyTorch's CUDA caching allocator (`pytorch:malloc` / `pytorch:free`).
        pub const TORCH: u32 = 5;
    }

    /// Static tracepoints (USDT) read by `mp_usdt`: each attached site has a [`UsdtSpec`] in
    /// `USDT_SPECS`, its index the attach cookie.
    pub mod usdt {
        /// Sites at once.
        pub const MAX_USDT_SITES: u32 = 64;
        /// Arguments read per site.
        pub const MAX_USDT_ARGS: usize = 4;

        /// What a site reports ([`UsdtSpec::event`]).
        pub mod event {
            /// `pytorch:malloc(ptr, device, size, stream)`: a `MEM_ALLOC` of source `TORCH`.
            pub const TORCH_MALLOC: u32 = 1;
            /// `pytorch:free(ptr)`: a `MEM_FREE` of source `TORCH`.
            pub const TORCH_FREE: u32 = 2;
        }

        /// Where an argument is ([`UsdtArgSpec::kind`]).
        pub mod arg {
            /// Not read (0).
            pub const NONE: u8 = 0;
            /// `value` itself.
            pub const CONST: u8 = 1;
            /// The register at `regs_off` in `pt_regs`.
            pub const REG: u8 = 2;
            /// User memory at that register plus `value`.
            pub const MEM: u8 = 3;
        }

        /// How to read one argument.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct UsdtArgSpec {
            /// An [`arg`] constant.
            pub kind: u8,
            /// Bytes (1, 2, 4, 8), negative for a signed value.
            pub size: i8,
            /// The register's offset in `pt_regs`.
            pub regs_off: u16,
            /// Explicit padding; always 0.
            pub _pad: u32,
            /// The constant, or the displacement from the register.
            pub value: i64,
        }

        /// One attached site.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct UsdtSpec {
            /// An [`event`] constant.
            pub event: u32,
            /// Arguments read.
            pub nargs: u32,
            /// Their specs.
            pub args: [UsdtArgSpec; MAX_USDT_ARGS],
        }
    }

    /// Which allocator function a heap probe is on (its attach cookie, `--memory=malloc`).
    pub mod heap_fn {
        /// `void *malloc(size_t size)`.
        pub const MALLOC: u64 = 1;
        /// `void *calloc(size_t n, size_t size)`.
        pub const CALLOC: u64 = 2;
        /// `void *realloc(void *ptr, size_t size)`: the old block freed, a new one allocated.
        pub const REALLOC: u64 = 3;
        /// `void free(void *ptr)`.
        pub const FREE: u64 = 4;
    }

    /// A sampled heap block, by process and address (`HEAP_SAMPLED`): its `free` is sent.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct HeapKey {
        /// The block's address.
        pub ptr: u64,
        /// Process id.
        pub pid: u32,
        /// Explicit padding; always 0.
        pub _pad: u32,
    }

    /// Sampled intervals in units of 1/1024 of the mean (`Config::heap_sample_bytes`): the
    /// exponential distribution's quantiles at (i + 0.5) / 64, so the bytes between two samples
    /// are exponentially distributed (a Poisson process over the bytes allocated, as tcmalloc's
    /// sampler): an allocation of `s` bytes is sampled with probability `1 - exp(-s / mean)`.
    pub const EXP_QUANTILES: [u32; 64] = [
        4968, 3844, 3320, 2976, 2719, 2513, 2342, 2195, 2067, 1953, 1851, 1758, 1672, 1594, 1520,
        1452, 1388, 1328, 1271, 1217, 1166, 1117, 1070, 1026, 983, 942, 903, 865, 828, 793, 759,
        726, 694, 663, 633, 603, 575, 547, 520, 494, 469, 444, 419, 395, 372, 349, 327, 305, 284,
        263, 243, 223, 203, 184, 165, 146, 128, 110, 92, 75, 58, 41, 24, 8,
    ];

    /// A memory syscall in progress on a thread, from its entry to its exit tracepoint.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MemPending {
        /// A [`source`] constant.
        pub source: u32,
        /// Explicit padding; always 0.
        pub _pad: u32,
        /// The length asked for (`mmap`'s `len`, `mremap`'s `new_len`).
        pub len: u64,
        /// `mremap`'s old address (0 for `mmap`).
        pub old_addr: u64,
        /// `mremap`'s old length (0 for `mmap`).
        pub old_len: u64,
    }
}

/// Stopping the target from a probe, at the call that asked for it (`--break`, `--stop-on
/// api_error`): the BPF side sends `SIGSTOP` from the thread that hit the probe, so every
/// thread stops with that one at the call, and reports it as a [`kind::STOP`] record.
pub mod stop {
    /// Why a process was stopped. Values of a [`kind::STOP`](super::kind::STOP) record's
    /// `args[0]`.
    pub mod reason {
        /// A breakpoint's condition held (see [`StopRule`](super::StopRule)).
        pub const BREAK: u64 = 1;
        /// A status-returning API call failed.
        pub const API_ERROR: u64 = 2;
    }

    /// Comparisons of a [`StopRule`]'s argument with its value (as signed 64-bit integers).
    pub mod op {
        /// Every call.
        pub const ANY: u32 = 0;
        /// `==`.
        pub const EQ: u32 = 1;
        /// `!=`.
        pub const NE: u32 = 2;
        /// `<`.
        pub const LT: u32 = 3;
        /// `<=`.
        pub const LE: u32 = 4;
        /// `>`.
        pub const GT: u32 = 5;
        /// `>=`.
        pub const GE: u32 = 6;
    }

    /// Breakpoints at once.
    pub const MAX_STOP_RULES: u32 = 64;

    /// A breakpoint on one probed function, in `STOP_RULES` under its probe id.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct StopRule {
        /// Which integer argument is compared (0..=5).
        pub arg: u32,
        /// An [`op`] constant.
        pub op: u32,
        /// What it is compared with.
        pub value: i64,
        /// The process is stopped from the `hit`-th matching call on (1: the first).
        pub hit: u64,
        /// Matching calls so far (counted by the BPF side).
        pub seen: u64,
    }

    /// Whether `arg` compared by `op` with `value` holds.
    pub fn holds(arg: i64, op: u32, value: i64) -> bool {
        match op {
            op::EQ => arg == value,
            op::NE => arg != value,
            op::LT => arg < value,
            op::LE => arg <= value,
            op::GT => arg > value,
            op::GE => arg >= value,
            _ => true,
        }
    }

    // SAFETY: integers only, no implicit padding (checked below): any bit pattern is valid.
    #[cfg(feature = "user")]
    unsafe impl aya::Pod for StopRule {}

    const _: () = assert!(core::mem::size_of::<StopRule>() == 32);
}

/// Set in a span probe's cookie when its function returns a status code: a non-zero return
/// (low 32 bits) also records the calling stack ([`kind::API_ERROR_STACK`]).
pub const STATUS_COOKIE: u64 = 1 << 63;

/// Set in a span probe's cookie when argument 0 is an out-parameter: the return record's
/// `args[1]` is the u64 it points to, read at return (`cuModuleGetFunction`'s handle).
pub const DEREF_ARG0_COOKIE: u64 = 1 << 62;

/// Set in a span probe's cookie when argument 2 is a C string to keep: the entry also sends it
/// as a [`DataRecord`] of kind [`kind::ARG_STRING`] with `probe` = the probe id.
pub const STRING_ARG2_COOKIE: u64 = 1 << 61;

/// Set in a span probe's cookie when it needs its first two stack-argument words (`args[6..8]`
/// of the entry record); without it they are not read, which keeps the common probe cheap.
pub const STACK_ARGS_COOKIE: u64 = 1 << 60;

/// Set in a span probe's cookie when its calling stack is kept at entry
/// ([`kind::SPAN_STACK`]): the CUDA calls that queue GPU work, whose GPU time is charged to
/// that stack.
pub const LAUNCH_STACK_COOKIE: u64 = 1 << 59;

/// The probe id part of a cookie.
pub const COOKIE_ID_MASK: u64 = 0xffff_ffff;

/// Most bytes of one write (or one path) a [`DataRecord`] carries; longer writes are cut and
/// the cut counted.
pub const DATA_CAPTURE: usize = 2048;

/// Bits of [`StackEvent::flags`].
pub mod flags {
    /// `user_ip`, `user_sp` and `user_bp` hold the interrupted user-mode registers. They are the
    /// seed a DWARF stack-copy unwinder needs; the frame-pointer walk does not use them.
    pub const USER_REGS: u32 = 1 << 0;
    /// Reading the user stack failed (for example a kernel thread, or a fault reading memory).
    pub const USTACK_ERROR: u32 = 1 << 1;
    /// Reading the kernel stack failed.
    pub const KSTACK_ERROR: u32 = 1 << 2;
    /// A [`SPAN_STACK`](super::kind::SPAN_STACK) taken at a function's first instruction:
    /// `user_bp` holds the return address read at the stack pointer. A frame-pointer walk
    /// there misses the caller when the function does not start with `push %rbp` (the
    /// kernel only fixes that case up), so the agent puts it back from this.
    pub const ENTRY_RET: u32 = 1 << 3;
    /// The user stack was unwound with the process's CFI tables (see [`unwind`](super::unwind)),
    /// not by frame pointers: it is whole at a function's first instruction too.
    pub const USTACK_CFI: u32 = 1 << 4;
    /// The user stack was cut at `MAX_STACK_DEPTH` frames: the outermost are missing.
    pub const USTACK_TRUNCATED: u32 = 1 << 5;
    /// At least one frame had no unwind table (JIT code, a mapping past the limits) and was
    /// stepped by its frame pointer.
    pub const USTACK_NO_UNWIND_INFO: u32 = 1 << 6;
    /// The walk stopped at a rule it cannot evaluate (a general DWARF expression), or at a
    /// frame whose stack pointer did not grow: the outer frames are missing.
    pub const USTACK_UNSUPPORTED: u32 = 1 << 7;
    /// The innermost frame was in code its object has no CFI for (hand-written assembly) and
    /// its caller was found by a validated scan of the words above the stack pointer.
    pub const USTACK_SCANNED: u32 = 1 << 8;
    /// The process runs a known CPython and the thread had a thread state: `pystack` holds
    /// its Python frames (possibly none, before its first Python call).
    pub const PYSTACK: u32 = 1 << 9;
    /// The Python frames were cut at `MAX_PY_DEPTH`: the outermost are missing.
    pub const PYSTACK_TRUNCATED: u32 = 1 << 10;
    /// The process runs a known CPython but the thread had no thread state (not a Python
    /// thread, or the interpreter not started yet).
    pub const PYSTACK_NO_THREAD: u32 = 1 << 11;
    /// A Python frame could not be read: the walk stopped there (the frames read are kept).
    pub const PYSTACK_ERROR: u32 = 1 << 12;
}

/// Indices of the per-CPU `LOST` counter array.
pub mod lost {
    /// CPU samples dropped because the ring buffer was full.
    pub const CPU_SAMPLE: u32 = 0;
    /// Blocked intervals dropped because the off-CPU sum table was full (a long block that
    /// finds the event ring full is summed instead, not dropped).
    pub const OFF_CPU: u32 = 1;
    /// Off-CPU intervals not tracked because the blocked-thread table was full.
    pub const OFF_CPU_TABLE_FULL: u32 = 2;
    /// New child processes not followed because the target table was full.
    pub const TARGETS_FULL: u32 = 3;
    /// Span records (enter or exit) dropped because the record ring buffer was full.
    pub const SPAN: u32 = 4;
    /// Process, thread and signal records dropped because the lifecycle ring buffer was full.
    pub const TASK: u32 = 5;
    /// Log writes dropped because the record ring buffer was full.
    pub const LOG: u32 = 6;
    /// File opens dropped because the record ring buffer was full.
    pub const OPEN: u32 = 7;
    /// TLS plaintext records dropped because the TLS ring buffer was full.
    pub const TLS: u32 = 8;
    /// TLS calls not followed because the table of calls in progress was full (socket calls
    /// and connected sockets too).
    pub const TLS_TABLE_FULL: u32 = 9;
    /// Memory events (allocations, frees, page faults) dropped because the `MEMORY` ring
    /// buffer was full, or syscalls not followed because the pending table was full.
    pub const MEMORY: u32 = 10;
    /// Number of counters.
    pub const COUNT: u32 = 11;
}

/// One stack event, as written to the ring buffer.
///
/// Stacks are stored inline (not as stack-map ids) so that nothing is lost to hash collisions
/// and an event is complete on its own. Frames are addresses, innermost first; only the first
/// `kstack_len` / `ustack_len` entries are meaningful.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackEvent {
    /// One of the [`kind`] constants.
    pub kind: u32,
    /// CPU the event was taken on.
    pub cpu: u32,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub time_ns: u64,
    /// 1 for a CPU sample; nanoseconds off CPU for an off-CPU event; 0 for the other kinds.
    pub weight: u64,
    /// User instruction pointer when [`flags::USER_REGS`] is set.
    pub user_ip: u64,
    /// User stack pointer when [`flags::USER_REGS`] is set.
    pub user_sp: u64,
    /// User frame pointer when [`flags::USER_REGS`] is set.
    pub user_bp: u64,
    /// Thread name, NUL padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// Number of valid entries in `kstack`.
    pub kstack_len: u32,
    /// Number of valid entries in `ustack`.
    pub ustack_len: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// The probe id (a cookie's [`COOKIE_ID_MASK`] bits) for [`kind::API_ERROR_STACK`] and
    /// [`kind::SPAN_STACK`]; 0 for the other kinds.
    pub probe: u32,
    /// Kernel frames, innermost first.
    pub kstack: [u64; MAX_STACK_DEPTH],
    /// User frames, innermost first.
    pub ustack: [u64; MAX_STACK_DEPTH],
    /// Number of valid entries in `pystack` (see [`flags::PYSTACK`]).
    pub py_len: u32,
    /// For [`kind::MEM_ALLOC`]: a [`memory::source`] constant; 0 for the other kinds.
    pub mem_source: u32,
    /// Python frames, innermost first (see [`python`]).
    pub pystack: [python::PyFrame; python::MAX_PY_DEPTH],
    /// For [`kind::MEM_ALLOC`] the new range's start, for [`kind::PAGE_FAULT`] the faulting
    /// address; 0 for the other kinds.
    pub mem_addr: u64,
}

/// A span, process, thread or signal record, as written to the `RECORDS` ring buffer.
///
/// One fixed layout for every [`kind`] from `SPAN_ENTER` on; the kind says how `id` and `args`
/// are read.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Record {
    /// One of the [`kind`] constants.
    pub kind: u32,
    /// CPU it was recorded on.
    pub cpu: u32,
    /// Process id (tgid) of the current task.
    pub pid: u32,
    /// Thread id of the current task.
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    /// Probe cookie, new task id or signal number, by kind.
    pub id: u64,
    /// Arguments, return value or details, by kind.
    pub args: [u64; 8],
    /// The current task's name, NUL padded.
    pub comm: [u8; TASK_COMM_LEN],
}

/// The fixed part of a [`DataRecord`], before its payload: what the agent reads first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataHeader {
    /// [`kind::LOG`], [`kind::OPEN`] or [`kind::ARG_STRING`].
    pub kind: u32,
    /// CPU it was recorded on.
    pub cpu: u32,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    /// LOG: bytes the write asked for (more than `len` when cut). OPEN: the open flags.
    /// ARG_STRING: unused.
    pub count: u64,
    /// LOG: the file descriptor. OPEN, ARG_STRING: unused.
    pub fd: u32,
    /// Valid bytes in the payload.
    pub len: u32,
    /// ARG_STRING: the probe id (a cookie's [`COOKIE_ID_MASK`] bits). LOG, OPEN: 0.
    pub probe: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

/// A record with a variable-length payload (log bytes, a path, a string argument), as written
/// to `RECORDS`: only the header and the first `header.len` bytes of `data` are sent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataRecord {
    /// Kind, ids, time and payload length.
    pub header: DataHeader,
    /// The payload.
    pub data: [u8; DATA_CAPTURE],
}

/// What a TLS probe is attached to: the low bits of its attach cookie.
pub mod tls_fn {
    /// `int SSL_write(SSL *, const void *buf, int num)`: returns the bytes written.
    pub const WRITE: u64 = 1;
    /// `int SSL_read(SSL *, void *buf, int num)`: returns the bytes read.
    pub const READ: u64 = 2;
    /// `int SSL_write_ex(SSL *, const void *buf, size_t num, size_t *written)`: returns 1 on
    /// success, the count through `written`.
    pub const WRITE_EX: u64 = 3;
    /// `int SSL_read_ex(SSL *, void *buf, size_t num, size_t *readbytes)`.
    pub const READ_EX: u64 = 4;
    /// `void SSL_free(SSL *)`: the connection ends.
    pub const FREE: u64 = 5;
}

/// Direction of a [`TlsRecord`]'s bytes.
pub mod tls_dir {
    /// The target wrote them (`SSL_write*`): requests, for a client.
    pub const WRITE: u32 = 0;
    /// The target read them (`SSL_read*`): responses, for a client.
    pub const READ: u32 = 1;
}

/// Most records one `SSL_read`/`SSL_write` call is sent as: its first `MAX_TLS_CHUNKS - 1`
/// pieces of [`DATA_CAPTURE`] bytes and, for a longer call, its last piece; the bytes between
/// are counted (the call's `call_len` against what arrived), not sent.
pub const MAX_TLS_CHUNKS: u32 = 16;

/// A piece of the plaintext of one TLS call (or, for plain HTTP, one socket read or write), or
/// the end of a connection, as written to the `TLS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsRecord {
    /// [`kind::TLS_DATA`] or [`kind::TLS_CLOSE`].
    pub kind: u32,
    /// CPU it was recorded on.
    pub cpu: u32,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CLOCK_MONOTONIC ns when the call returned (TLS_CLOSE: when `SSL_free` was entered).
    pub time_ns: u64,
    /// The connection (see [`plain_source`]).
    pub conn: u64,
    /// Bytes the whole call moved.
    pub call_len: u64,
    /// Where this piece starts within the call's bytes.
    pub offset: u32,
    /// Valid bytes in `data`.
    pub len: u32,
    /// A [`tls_dir`] constant.
    pub direction: u32,
    /// A [`plain_source`] constant: where the plaintext was read.
    pub source: u32,
    /// The bytes.
    pub data: [u8; DATA_CAPTURE],
}

/// Where a [`TlsRecord`]'s plaintext was read.
pub mod plain_source {
    /// OpenSSL's `SSL_read`/`SSL_write`: `conn` is the `SSL *`.
    pub const TLS: u32 = 0;
    /// A TCP socket's `read`/`write`/`recvfrom`/`sendto` (plain HTTP): `conn` is the socket's
    /// id, the time it was connected (unique within the process, unlike its file descriptor).
    pub const SOCKET: u32 = 1;
}

/// Size of a [`TlsRecord`]'s header, before `data`.
pub const TLS_HEADER: usize = core::mem::size_of::<TlsRecord>() - DATA_CAPTURE;

/// A TLS call in progress on a thread, kept from its entry to its return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsPending {
    /// The `SSL *`.
    pub conn: u64,
    /// The caller's buffer.
    pub buf: u64,
    /// `SSL_*_ex`: where the count is written; 0 otherwise.
    pub count_out: u64,
    /// A socket call: its file descriptor; 0 for a TLS call.
    pub fd: u64,
    /// A [`tls_dir`] constant.
    pub direction: u32,
    /// TLS calls of the same direction entered inside this one (an `SSL_read` built on
    /// `SSL_read_ex`): their returns are skipped, so the bytes are sent once.
    pub nested: u32,
}

/// A `TLS_SKIP` key: one direction of one connection of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsSkipKey {
    /// Process id (tgid).
    pub pid: u32,
    /// A [`tls_dir`] constant.
    pub direction: u16,
    /// A [`plain_source`] constant.
    pub source: u16,
    /// The connection, as [`TlsRecord::conn`] names it.
    pub conn: u64,
}

/// `SOCKETS` value of a socket whose first bytes were a TLS handshake: its encrypted bytes are
/// not sent (the TLS probes read its plaintext).
pub const SOCKET_MUTED: u64 = 0;

/// Size of a [`DataRecord`]'s header, before `data`.
pub const DATA_HEADER: usize = core::mem::size_of::<DataHeader>();

/// Settings the agent writes into the BPF object before loading it (a read-only global).
///
/// Tracepoint field offsets differ between kernels (for example `sched_process_fork` moved to
/// `__data_loc` strings in 6.x), so the agent reads them from tracefs at run time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Offset of `prev_state` in `sched/sched_switch`.
    pub switch_prev_state_off: u32,
    /// Size in bytes of `prev_state` (4 or 8).
    pub switch_prev_state_size: u32,
    /// Offset of `next_pid` in `sched/sched_switch`.
    pub switch_next_pid_off: u32,
    /// Offset of `group_dead` in `sched/sched_process_exit` (`u32::MAX` if the kernel lacks it).
    pub exit_group_dead_off: u32,
    /// Blocked intervals shorter than this are not recorded, in nanoseconds.
    pub offcpu_min_ns: u32,
    /// Offset of `clone_flags` in `task/task_newtask`.
    pub newtask_flags_off: u32,
    /// Offset of `pid` in `task/task_newtask`.
    pub newtask_pid_off: u32,
    /// Offset of `newcomm` in `task/task_rename`.
    pub rename_newcomm_off: u32,
    /// Offset of `sig` in `signal/signal_deliver`.
    pub deliver_sig_off: u32,
    /// Offset of `code` in `signal/signal_deliver`.
    pub deliver_code_off: u32,
    /// Offset of `sa_handler` in `signal/signal_deliver`.
    pub deliver_handler_off: u32,
    /// 1 to record blocked intervals (off-CPU time), 0 to only account CPU time.
    pub off_cpu: u32,
    /// Blocked intervals at least this long are sent as timeline events (within
    /// [`offcpu::EVENTS_PER_SECOND_PER_CPU`]); shorter ones are only summed. Nanoseconds.
    pub offcpu_event_min_ns: u32,
    /// 1 to wake the agent at once for each new process and exec (it has probes to attach
    /// before the process runs far); 0 to let those records wait for its next poll.
    pub lifecycle_wakeup: u32,
    /// Offset of the `%fs` base (`thread.fsbase`) in the kernel's `task_struct`, from its BTF:
    /// a thread's `pthread_self()`, which finds its Python thread state. `u32::MAX` when
    /// unknown (no Python frames).
    pub task_fsbase_off: u32,
    /// 1 to stop the process (`SIGSTOP` from the failing thread) when a status-returning API
    /// call fails, within the stop budget (`--stop-on api_error`).
    pub stop_on_api_error: u32,
    /// Offsets in `oom/mark_victim`: `pid`, then `total_vm`, `anon_rss`, `file_rss`,
    /// `shmem_rss` (`u32::MAX` where this kernel lacks the field).
    pub oom_pid_off: u32,
    /// See [`Config::oom_pid_off`].
    pub oom_total_vm_off: u32,
    /// See [`Config::oom_pid_off`].
    pub oom_anon_rss_off: u32,
    /// See [`Config::oom_pid_off`].
    pub oom_file_rss_off: u32,
    /// See [`Config::oom_pid_off`].
    pub oom_shmem_rss_off: u32,
    /// `--memory=malloc`: the mean bytes allocated between two sampled heap allocations.
    pub heap_sample_bytes: u32,
    /// Offsets of `task_struct.utask` and `uprobe_task.return_instances`, and of
    /// `return_instance`'s `stack`, `orig_ret_vaddr` and `next`, from the kernel's BTF: a
    /// stack walk through a function with a pending uretprobe (whose return address is the
    /// trampoline) reads the real one there. `u32::MAX` when unknown.
    pub task_utask_off: u32,
    /// See [`Config::task_utask_off`].
    pub utask_instances_off: u32,
    /// See [`Config::task_utask_off`].
    pub ri_stack_off: u32,
    /// See [`Config::task_utask_off`].
    pub ri_orig_ret_off: u32,
    /// See [`Config::task_utask_off`].
    pub ri_next_off: u32,
}

// SAFETY: both types are `repr(C)`, `Copy`, contain only integers and integer arrays, and have
// no implicit padding (checked by the `layout` assertions below), so any bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for StackEvent {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Record {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DataRecord {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DataHeader {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TlsRecord {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TlsSkipKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for memory::usdt::UsdtSpec {}

/// Compile-time layout checks: a change here must be made on both sides at once.
mod layout {
    use core::mem::{offset_of, size_of};

    use super::*;

    const _: () = assert!(offset_of!(StackEvent, time_ns) == 16);
    const _: () = assert!(offset_of!(StackEvent, weight) == 24);
    const _: () = assert!(offset_of!(StackEvent, user_ip) == 32);
    const _: () = assert!(offset_of!(StackEvent, comm) == 56);
    const _: () = assert!(offset_of!(StackEvent, kstack_len) == 72);
    const _: () = assert!(offset_of!(StackEvent, flags) == 80);
    const _: () = assert!(offset_of!(StackEvent, probe) == 84);
    const _: () = assert!(offset_of!(StackEvent, kstack) == 88);
    const _: () = assert!(offset_of!(StackEvent, ustack) == 88 + 8 * MAX_STACK_DEPTH);
    const _: () = assert!(offset_of!(StackEvent, py_len) == 88 + 16 * MAX_STACK_DEPTH);
    const _: () = assert!(offset_of!(StackEvent, pystack) == 96 + 16 * MAX_STACK_DEPTH);
    const _: () = assert!(
        offset_of!(StackEvent, mem_addr) == 96 + 16 * MAX_STACK_DEPTH + 16 * python::MAX_PY_DEPTH
    );
    const _: () =
        assert!(size_of::<StackEvent>() == 104 + 16 * MAX_STACK_DEPTH + 16 * python::MAX_PY_DEPTH);
    const _: () = assert!(size_of::<Config>() == 108);
    const _: () = assert!(size_of::<memory::HeapKey>() == 16);
    const _: () = assert!(size_of::<memory::usdt::UsdtArgSpec>() == 16);
    const _: () = assert!(size_of::<memory::usdt::UsdtSpec>() == 72);
    const _: () = assert!(size_of::<memory::MemPending>() == 32);
    const _: () = assert!(offset_of!(Record, kind) == 0);
    const _: () = assert!(offset_of!(Record, time_ns) == 16);
    const _: () = assert!(offset_of!(Record, id) == 24);
    const _: () = assert!(offset_of!(Record, args) == 32);
    const _: () = assert!(offset_of!(Record, comm) == 96);
    const _: () = assert!(size_of::<Record>() == 112);
    const _: () = assert!(offset_of!(DataHeader, kind) == 0);
    const _: () = assert!(offset_of!(DataHeader, time_ns) == 16);
    const _: () = assert!(offset_of!(DataHeader, count) == 24);
    const _: () = assert!(offset_of!(DataHeader, fd) == 32);
    const _: () = assert!(offset_of!(DataHeader, len) == 36);
    const _: () = assert!(offset_of!(DataHeader, probe) == 40);
    const _: () = assert!(size_of::<DataHeader>() == 48);
    const _: () = assert!(offset_of!(DataRecord, header) == 0);
    const _: () = assert!(offset_of!(DataRecord, data) == DATA_HEADER);
    const _: () = assert!(size_of::<DataRecord>() == DATA_HEADER + DATA_CAPTURE);
    const _: () = assert!(offset_of!(TlsRecord, kind) == 0);
    const _: () = assert!(offset_of!(TlsRecord, conn) == 24);
    const _: () = assert!(offset_of!(TlsRecord, call_len) == 32);
    const _: () = assert!(offset_of!(TlsRecord, offset) == 40);
    const _: () = assert!(offset_of!(TlsRecord, direction) == 48);
    const _: () = assert!(offset_of!(TlsRecord, data) == 56);
    const _: () = assert!(TLS_HEADER == 56);
    const _: () = assert!(size_of::<TlsPending>() == 40);
    const _: () = assert!(size_of::<TlsSkipKey>() == 16);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_event_is_padding_free() {
        // Sum of field sizes equals the struct size: no hidden padding for the kernel to leak.
        let fields = 4 * 4
            + 8 * 5
            + TASK_COMM_LEN
            + 4 * 4
            + 2 * 8 * MAX_STACK_DEPTH
            + 4 * 2
            + 16 * python::MAX_PY_DEPTH
            + 8;
        assert_eq!(fields, core::mem::size_of::<StackEvent>());
        assert_eq!(core::mem::align_of::<StackEvent>(), 8);
    }

    #[test]
    fn data_record_is_padding_free() {
        let header = 4 * 4 + 8 * 2 + 4 * 4;
        assert_eq!(header, core::mem::size_of::<DataHeader>());
        assert_eq!(header + DATA_CAPTURE, core::mem::size_of::<DataRecord>());
    }
}
