//! CUPTI's API callbacks: which calls this library asks for (those that queue GPU work, by
//! callback id), and what it records from inside each: the thread, CLOCK_MONOTONIC time and
//! correlation id of the outermost such call on a thread, as a `WireLaunch` in the outbox,
//! which GPU activity records point back to.
use std::{
    ffi::{c_void, CStr},
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
};

use cupti_sys::{types as t, Cupti};
use modelprobe_common::gpu::WireLaunch;

use crate::outbox;

/// Launches (and activity records) are kept only while an agent session is on.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Counts sessions, so that a thread's call depth left over from an earlier one is forgotten.
static SESSION: AtomicU32 = AtomicU32::new(0);

/// True while a session is on.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Turns recording on or off.
pub fn set_active(on: bool) {
    ACTIVE.store(on, Ordering::SeqCst);
}

/// A new session begins: call depths seen before it no longer count.
pub fn new_session() {
    SESSION.fetch_add(1, Ordering::SeqCst);
}

/// The current session's ordinal in this process (1 for the first).
pub fn session() -> u32 {
    SESSION.load(Ordering::SeqCst)
}

/// CLOCK_MONOTONIC in ns: the clock launches are stamped with (and the recording's).
pub fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Name ids of the API functions that queue GPU work, by (domain, cbid), filled as each is
/// first called.
///
/// Read on every CUDA API call, so lock-free: per domain (runtime, driver) and callback id,
/// 0 = not seen yet, [`NO_WORK`], or the name id + 1. Name ids outlive sessions (the outbox
/// keeps its names), so the table never needs resetting.
static API_NAMES: [[AtomicU32; API_CBIDS]; 2] =
    [const { [const { AtomicU32::new(0) }; API_CBIDS] }; 2];
/// Callback ids the table covers (CUDA 13 has under 1,000 per domain); others are looked up
/// by name on each call.
const API_CBIDS: usize = 2048;
/// An [`API_NAMES`] entry for a call that queues no GPU work.
const NO_WORK: u32 = u32::MAX;
/// Set in an [`API_NAMES`] entry of a call that always makes an activity record (launches,
/// copies, memsets): the calls the [`takeover`](crate::takeover) watch counts.
const MAKES_RECORD: u32 = 1 << 31;

/// Record-making calls seen since the process started (see [`MAKES_RECORD`]).
static RECORD_CALLS: AtomicU64 = AtomicU64::new(0);

/// Record-making calls (launches, copies, memsets) seen so far.
pub fn record_calls() -> u64 {
    RECORD_CALLS.load(Ordering::Relaxed)
}

/// Turns on the API callbacks of the calls that queue GPU work, one callback id at a time
/// (every other CUDA call, `cudaGetDevice` around each ATen launch, costs nothing then). Where
/// CUPTI cannot name its callback ids, whole runtime and driver domains instead. A failure is
/// the result and the call that gave it.
pub(crate) fn enable_api_callbacks(
    cupti: &Cupti,
    subscriber: t::CUpti_SubscriberHandle,
) -> Result<(), (t::CUptiResult, &'static str)> {
    let f = cupti.functions();
    let domains = [
        t::CUpti_CallbackDomain::CUPTI_CB_DOMAIN_RUNTIME_API,
        t::CUpti_CallbackDomain::CUPTI_CB_DOMAIN_DRIVER_API,
    ];
    let mut enabled = 0;
    if let Some(name_of) = f.get_callback_name {
        for domain in domains {
            for cbid in 1..API_CBIDS as u32 {
                let mut name: *const std::ffi::c_char = std::ptr::null();
                // SAFETY: a valid domain, any id (unknown ones are an error), an out-pointer.
                let r = unsafe { name_of(domain, cbid, &mut name) };
                if r != t::CUptiResult::CUPTI_SUCCESS || name.is_null() {
                    continue;
                }
                // SAFETY: CUPTI's static NUL-terminated name of the function.
                let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
                if !queues_gpu_work(&name) {
                    continue;
                }
                // SAFETY: a live subscriber, a valid domain and a callback id CUPTI named.
                let r = unsafe { (f.enable_callback)(1, subscriber, domain, cbid) };
                if r != t::CUptiResult::CUPTI_SUCCESS {
                    return Err((r, "cuptiEnableCallback"));
                }
                enabled += 1;
            }
        }
    }
    if enabled == 0 {
        for domain in domains {
            // SAFETY: a live subscriber and a valid domain.
            let r = unsafe { (f.enable_domain)(1, subscriber, domain) };
            if r != t::CUptiResult::CUPTI_SUCCESS {
                return Err((r, "cuptiEnableDomain"));
            }
        }
    }
    Ok(())
}

/// True for the calls that always leave an activity record (a kernel, copy or memset), whatever
/// the timing: what the takeover watch expects buffers for.
fn makes_record(name: &str) -> bool {
    ["Launch", "Memcpy", "Memset"]
        .iter()
        .any(|w| name.contains(w))
        && !name.contains("Occupancy")
        && !name.contains("HostFunc")
}

/// True for API functions that queue GPU work (or wait for it): their correlation ids are
/// what activity records point back to.
pub fn queues_gpu_work(name: &str) -> bool {
    const WORDS: [&str; 6] = [
        "Launch",
        "Memcpy",
        "Memset",
        "Synchronize",
        "StreamWaitEvent",
        "EventRecord",
    ];
    WORDS.iter().any(|w| name.contains(w)) && !name.contains("Occupancy")
}

thread_local! {
    static TID: u32 = {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    };
    /// (session, depth) of the API calls this thread is inside, as far as callbacks said.
    static DEPTH: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Notes an API call entered (`enter`) or left on this thread; returns true for an entry
/// that is the outermost call (a runtime call's own driver call is not recorded again).
fn outermost(enter: bool) -> bool {
    let session = SESSION.load(Ordering::Relaxed);
    DEPTH.with(|d| {
        let (at, depth) = d.get();
        let depth = if at == session { depth } else { 0 };
        if enter {
            d.set((session, depth + 1));
            depth == 0
        } else {
            d.set((session, depth.saturating_sub(1)));
            false
        }
    })
}

pub(crate) unsafe extern "C" fn api_callback(
    _userdata: *mut c_void,
    domain: t::CUpti_CallbackDomain,
    cbid: t::CUpti_CallbackId,
    cbdata: *const c_void,
) {
    // A panic must never cross into CUDA's frames (it would abort the host process).
    // SAFETY: forwarded from CUPTI's call.
    let _ = std::panic::catch_unwind(|| unsafe { on_api(domain, cbid, cbdata) });
}

/// [`api_callback`]'s body.
///
/// # Safety
/// `cbdata` is what CUPTI passed for `domain`.
unsafe fn on_api(
    domain: t::CUpti_CallbackDomain,
    cbid: t::CUpti_CallbackId,
    cbdata: *const c_void,
) {
    if !ACTIVE.load(Ordering::Relaxed) || cbdata.is_null() {
        return;
    }
    if domain != t::CUpti_CallbackDomain::CUPTI_CB_DOMAIN_RUNTIME_API
        && domain != t::CUpti_CallbackDomain::CUPTI_CB_DOMAIN_DRIVER_API
    {
        return;
    }
    // SAFETY: for the runtime and driver domains CUPTI passes a CUpti_CallbackData.
    let data = unsafe { &*cbdata.cast::<t::CUpti_CallbackData>() };
    let enter = data.callbackSite == t::CUpti_ApiCallbackSite::CUPTI_API_ENTER;
    if !outermost(enter) {
        return;
    }
    let time_ns = monotonic_ns();
    let driver = domain == t::CUpti_CallbackDomain::CUPTI_CB_DOMAIN_DRIVER_API;
    let slot = API_NAMES[usize::from(driver)].get(cbid as usize);
    let name_id = match slot.map_or(0, |s| s.load(Ordering::Relaxed)) {
        NO_WORK => None,
        0 => {
            // SAFETY: functionName is CUPTI's static NUL-terminated name of the function.
            let name = (!data.functionName.is_null())
                .then(|| unsafe { CStr::from_ptr(data.functionName) }.to_string_lossy());
            let id = name.filter(|n| queues_gpu_work(n)).map(|n| {
                let makes = if makes_record(&n) { MAKES_RECORD } else { 0 };
                (outbox::lock().intern(&n), makes)
            });
            if let Some(s) = slot {
                s.store(id.map_or(NO_WORK, |(i, m)| (i + 1) | m), Ordering::Relaxed);
            }
            id
        }
        cached => Some(((cached & !MAKES_RECORD) - 1, cached & MAKES_RECORD)),
    };
    let Some((api, makes)) = name_id else {
        return;
    };
    if enter && makes != 0 {
        RECORD_CALLS.fetch_add(1, Ordering::Relaxed);
    }
    let tid = TID.with(|t| *t);
    outbox::lock().push_launch(WireLaunch {
        tid,
        correlation: data.correlationId,
        time_ns,
        api,
        _pad: 0,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_filter_keeps_calls_that_queue_work() {
        for n in [
            "cudaLaunchKernel",
            "cuLaunchKernel",
            "cudaMemcpyAsync",
            "cuMemcpyHtoDAsync_v2",
            "cudaMemsetAsync",
            "cudaStreamSynchronize",
            "cudaGraphLaunch",
            "cudaEventRecord",
        ] {
            assert!(queues_gpu_work(n), "{n}");
        }
        for n in [
            "cudaGetDevice",
            "cudaOccupancyMaxActiveBlocksPerMultiprocessor",
            "cudaMalloc",
            "cuCtxGetCurrent",
        ] {
            assert!(!queues_gpu_work(n), "{n}");
        }
    }
}
