//! The library modelprobe puts inside a process for what can only be seen from within: GPU
//! timings from NVIDIA CUPTI, which reports them only in-process, and Python function spans
//! through `sys.monitoring` ([`python`]).
//!
//! It gets in two ways: the CUDA driver loads it at `cuInit` when `CUDA_INJECTION64_PATH`
//! names it (what `modelprobe run` sets up) and calls [`InitializeInjection`] (NVTX may load
//! it first, through `NVTX_INJECTION64_PATH`, and call [`InitializeInjectionNvtx2`]); or
//! `modelprobe attach --gpu` loads it into a running process, and its initializer runs.
//! Either way it only starts a thread that waits on an abstract Unix socket
//! (`modelprobe-gpu.<pid>`, see [`modelprobe_common::gpu`]): while no agent is connected it
//! costs one sleeping thread and touches neither CUDA nor CUPTI.
//!
//! When an agent connects, [`connection`] finds a libcupti matching the process's CUDA
//! ([`find`]), subscribes, and turns activity recording on ([`cupti`]); records go to the
//! agent through a bounded [`outbox`] (what does not fit is counted, never silently lost).
//! When the agent detaches or disappears, it flushes, sends the rest, and turns CUPTI off.
//! If another tool (Kineto, Nsight) already holds CUPTI, it says so and stays out of the way.
//!
//! Modules: [`listener`] (the socket), [`connection`] (one agent connection), [`threads`]
//! (what the library's threads share), [`api`] (which calls are reported, and how), [`cupti`]
//! (CUPTI on and off, its callbacks), [`records`] (activity records into wire ops),
//! [`takeover`] (noticing another tool taking the activity buffers over),
//! [`outbox`] (records waiting for the agent), [`find`] (which libcupti), [`python`] (Python
//! probes: set up, callbacks, their shared ring).

pub mod api;
pub mod connection;
pub mod cupti;
pub mod find;
pub mod listener;
pub mod outbox;
pub mod python;
pub mod records;
pub mod takeover;
pub mod threads;

use std::ffi::c_int;

/// Called by the CUDA driver during `cuInit` for the library named by `CUDA_INJECTION64_PATH`.
/// Returns 1 (success) whatever happens: a profiler must never make `cuInit` fail.
#[no_mangle]
pub extern "C" fn InitializeInjection() -> c_int {
    listener::start();
    1
}

/// Called by NVTX at a process's first NVTX call when `NVTX_INJECTION64_PATH` names this
/// library (what `modelprobe run` sets up): hands NVTX to CUPTI's own injection (the libcupti
/// the GPU session will use), so NVTX ranges become CUPTI marker records. Returns CUPTI's
/// answer, or 0 (NVTX then stays a no-op) when no libcupti is found.
///
/// # Safety
/// Called by NVTX, with its export-table function.
#[no_mangle]
pub unsafe extern "C" fn InitializeInjectionNvtx2(
    get_export_table: *const std::ffi::c_void,
) -> c_int {
    // SAFETY: NVTX's export-table function, handed on as it came.
    unsafe { cupti::forward_nvtx(get_export_table) }
}

/// Stops the library's thread (ending any agent session: flush, send, CUPTI off), for
/// `modelprobe attach --retract` before it unloads the library. Returns 0 when the library may
/// be unloaded, 1 when it must stay (CUPTI holds callbacks into it; it is idle either way).
#[no_mangle]
pub extern "C" fn modelprobe_inject_stop() -> c_int {
    listener::stop();
    c_int::from(cupti::pinned())
}

/// Runs when the library is loaded (`dlopen`), before `InitializeInjection`: a library loaded
/// into a running process is never called by the driver.
extern "C" fn on_load() {
    // Tests link the rlib into their own binary: no listener there.
    if cfg!(test) {
        return;
    }
    // A copy given Python probes to set (`--probe py:`) serves those alone.
    if python::on_load() {
        return;
    }
    listener::start();
}

// SAFETY (of the attribute): `.init_array` entries run once at load with no arguments, which
// is the signature `on_load` has; it only spawns a thread and never unwinds.
#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
