//! CUPTI, on and off: loads libcupti once, subscribes to the runtime and driver APIs (to learn
//! which thread issued each correlation id, and when), enables activity recording, and turns
//! completed activity buffers over to [`records`](crate::records) for the
//! [`outbox`](crate::outbox).
//!
//! Once CUPTI holds our callbacks the library pins itself in memory (`RTLD_NODELETE`): CUPTI
//! may call them for as long as the process lives, so the code must never be unloaded.
use std::{
    ffi::c_void,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc, Mutex, OnceLock,
    },
    time::Duration,
};

use cupti_sys::{decode_raw, types as t, Cupti, CuptiError, Layout};
use modelprobe_common::gpu::{state, ClockPair, Hello};

use crate::{api, find, outbox, records};

/// CUPTI once loaded, for the rest of the process's life.
struct Loaded {
    cupti: &'static Cupti,
    layout: Layout,
}

// SAFETY: `Loaded` is read-only after creation; CUPTI's functions may be called from any
// thread.
unsafe impl Send for Loaded {}
// SAFETY: as above.
unsafe impl Sync for Loaded {}

static LOADED: OnceLock<Loaded> = OnceLock::new();
static PINNED: AtomicBool = AtomicBool::new(false);
static BUFFER_BYTES: AtomicUsize = AtomicUsize::new(1 << 20);
/// Records CUPTI reported dropped in this session.
static CUPTI_DROPPED: AtomicU64 = AtomicU64::new(0);
/// The subscriber handle of the current session (as an address; 0 when none).
static SUBSCRIBER: AtomicUsize = AtomicUsize::new(0);
/// Buffers CUPTI completed, waiting for [`read_completed`]: (context, stream, buffer, valid
/// bytes), the pointers as addresses.
static COMPLETED: Mutex<Vec<(usize, u32, usize, usize)>> = Mutex::new(Vec::new());
/// CUPTI's calls of this library's buffer callbacks (requests and completions) so far: what the
/// [`takeover`](crate::takeover) watch looks at.
static BUFFER_CALLS: AtomicU64 = AtomicU64::new(0);
/// True once CUPTI stamps records with [`timestamp`] (CLOCK_MONOTONIC).
static MONOTONIC_STAMPS: AtomicBool = AtomicBool::new(false);
/// The activity kinds recorded, and whether failing to enable one ends the session.
const KINDS: [(t::CUpti_ActivityKind, bool); 6] = [
    (
        t::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
        true,
    ),
    (t::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY, true),
    (t::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMSET, true),
    (t::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY2, false),
    (
        t::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_SYNCHRONIZATION,
        false,
    ),
    (t::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MARKER, false),
];

/// True once CUPTI holds callbacks into this library (it must then never be unloaded).
pub fn pinned() -> bool {
    PINNED.load(Ordering::SeqCst)
}

/// Why tracing could not start: a [`state`] value and one line for the user.
pub type Refusal = (u32, String);

/// Turns CUPTI on for an agent session. `Ok` carries the CUPTI version and a line saying
/// which library is used.
pub fn start(hello: &Hello, pid: u32) -> Result<(u32, String), Refusal> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mapped = find::mapped_files(&maps);
    if !find::has_cuda_driver(&mapped) {
        return Err((
            state::NO_CUDA,
            format!("no CUDA in process {pid}: it has not loaded the CUDA driver (libcuda.so.1)"),
        ));
    }
    let loaded = load(&mapped, pid)?;
    let cupti = loaded.cupti;
    let f = cupti.functions();
    BUFFER_BYTES.store(
        (hello.buffer_kib.clamp(64, 64 << 10) as usize) << 10,
        Ordering::SeqCst,
    );
    CUPTI_DROPPED.store(0, Ordering::SeqCst);
    records::reset_ranges();
    // Subscribe first: when another tool (Kineto, Nsight) holds CUPTI, nothing of it is
    // touched. Activity buffer callbacks are process-wide: registering ours before knowing we
    // are the subscriber would take the other tool's records away.
    let ((r, subscriber), holder) = subscribe(cupti);
    if r == t::CUptiResult::CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED {
        // CUPTI 13 names the holder ("CUPTI for <name>"); older ones do not.
        let holder = holder
            .unwrap_or_else(|| "the PyTorch profiler/Kineto, Nsight Systems or DCGM".to_string());
        return Err((
            state::BUSY,
            format!(
                "GPU timings off for process {pid}: another tool already holds CUPTI \
                 ({holder}); CUDA calls are still traced by uprobes"
            ),
        ));
    }
    check(cupti, r, "cuptiSubscribe")?;
    SUBSCRIBER.store(subscriber as usize, Ordering::SeqCst);
    api::new_session();
    if !PINNED.load(Ordering::SeqCst) {
        pin_self();
        // SAFETY: both callbacks have the signatures CUPTI expects and live as long as the
        // process (the library is pinned just above).
        let r = unsafe {
            (f.activity_register_callbacks)(Some(buffer_requested), Some(buffer_completed))
        };
        if let Err(e) = check(cupti, r, "cuptiActivityRegisterCallbacks") {
            unsubscribe(cupti);
            return Err(e);
        }
        if let Some(register) = f.activity_register_timestamp_callback {
            // Records stamped with CLOCK_MONOTONIC itself: no clock to align, and nothing for
            // CUPTI's own clock to settle during cuInit. Once per process, before any kind.
            // SAFETY: `timestamp` has the signature CUPTI expects and lives as long as the
            // process (pinned).
            let r = unsafe { register(Some(timestamp)) };
            MONOTONIC_STAMPS.store(r == t::CUptiResult::CUPTI_SUCCESS, Ordering::SeqCst);
        }
        PINNED.store(true, Ordering::SeqCst);
    }
    if let Err((r, call)) = api::enable_api_callbacks(cupti, subscriber) {
        unsubscribe(cupti);
        return Err(check(cupti, r, call).expect_err("a failed call"));
    }
    api::set_active(true);
    for (kind, required) in KINDS {
        // SAFETY: a valid activity kind.
        let r = unsafe { (f.activity_enable)(kind) };
        if let Err(e) = check(cupti, r, "cuptiActivityEnable") {
            if required {
                stop();
                return Err(e);
            }
        }
    }
    Ok((
        cupti.version(),
        format!(
            "CUPTI API {} from {}{}",
            cupti.version(),
            cupti.path().display(),
            if MONOTONIC_STAMPS.load(Ordering::SeqCst) {
                ", timestamps on CLOCK_MONOTONIC"
            } else {
                ""
            }
        ),
    ))
}

/// Subscribes to the API callbacks as "modelprobe": `cuptiSubscribe_v2` where CUPTI has it
/// (13.0+), which also names the tool already subscribed when it refuses; else
/// `cuptiSubscribe`. Returns the result and handle, and the holder's name when refused.
fn subscribe(cupti: &Cupti) -> ((t::CUptiResult, t::CUpti_SubscriberHandle), Option<String>) {
    let f = cupti.functions();
    let mut subscriber: t::CUpti_SubscriberHandle = std::ptr::null_mut();
    let Some(subscribe_v2) = f.subscribe_v2 else {
        // SAFETY: `api_callback` matches CUpti_CallbackFunc and lives as long as the process
        // (the library pins itself right after a successful subscribe, before CUPTI can call
        // it back from another session).
        let r = unsafe {
            (f.subscribe)(
                &mut subscriber,
                Some(api::api_callback),
                std::ptr::null_mut(),
            )
        };
        return ((r, subscriber), None);
    };
    let mut old_name =
        [0 as std::ffi::c_char; cupti_sys::v13::CUPTI_OLD_SUBSCRIBER_NAME_MIN_LEN as usize];
    let mut params = t::CUpti_SubscriberParams {
        // The fields of CUDA 13.0's struct, the first to have cuptiSubscribe_v2; a later
        // CUPTI reads the rest (allowMultipleSubscribers) as absent: one subscriber, which is
        // what this library's process-wide activity buffers need.
        structSize: std::mem::offset_of!(t::CUpti_SubscriberParams, allowMultipleSubscribers),
        subscriberName: c"modelprobe".as_ptr(),
        oldSubscriberName: old_name.as_mut_ptr(),
        oldSubscriberSize: old_name.len(),
        allowMultipleSubscribers: 0,
        padding: [0; 7],
    };
    // SAFETY: as for cuptiSubscribe above; `params` and the name buffers outlive the call
    // (CUPTI copies the subscriber name).
    let r = unsafe {
        subscribe_v2(
            &mut subscriber,
            Some(api::api_callback),
            std::ptr::null_mut(),
            &mut params,
        )
    };
    // SAFETY: CUPTI writes a NUL-terminated string of at most the buffer's size; the last
    // byte is forced to NUL in case it filled it.
    let holder = unsafe {
        old_name[old_name.len() - 1] = 0;
        std::ffi::CStr::from_ptr(old_name.as_ptr())
    }
    .to_string_lossy()
    .trim()
    .to_string();
    ((r, subscriber), (!holder.is_empty()).then_some(holder))
}

/// NVTX's injection call, forwarded to the `InitializeInjectionNvtx2` of the libcupti this
/// process's GPU sessions use (found as [`start`] finds it, and loaded once for both). 0 when
/// there is none: NVTX then stays a no-op, as without an injection library.
///
/// # Safety
/// `get_export_table` is the `NvtxGetExportTableFunc_t` NVTX passed to this library's
/// `InitializeInjectionNvtx2` (it is handed on, not called here).
pub unsafe fn forward_nvtx(get_export_table: *const c_void) -> std::ffi::c_int {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let loaded = match load(&find::mapped_files(&maps), std::process::id()) {
        Ok(l) => l,
        Err((_, why)) => {
            eprintln!("modelprobe GPU library: NVTX ranges off: {why}");
            return 0;
        }
    };
    let Ok(path) = std::ffi::CString::new(loaded.cupti.path().as_os_str().as_encoded_bytes())
    else {
        return 0;
    };
    // SAFETY: RTLD_NOLOAD only returns the handle of a library already loaded (load() did),
    // taking one more reference, which is kept: libcupti stays for the process's life.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return 0;
    }
    // SAFETY: a valid handle and a NUL-terminated name.
    let sym = unsafe { libc::dlsym(handle, c"InitializeInjectionNvtx2".as_ptr()) };
    if sym.is_null() {
        eprintln!(
            "modelprobe GPU library: NVTX ranges off: {} has no InitializeInjectionNvtx2",
            loaded.cupti.path().display()
        );
        return 0;
    }
    // SAFETY: NVTX's documented injection entry point, `int (*)(NvtxGetExportTableFunc_t)`,
    // given the export-table function NVTX gave us.
    let init: unsafe extern "C" fn(*const c_void) -> std::ffi::c_int =
        unsafe { std::mem::transmute(sym) };
    // SAFETY: as above.
    unsafe { init(get_export_table) }
}

/// CUPTI's timestamps, when it takes ours: CLOCK_MONOTONIC, the recording's clock.
unsafe extern "C" fn timestamp() -> u64 {
    api::monotonic_ns()
}

fn load(mapped: &[std::path::PathBuf], pid: u32) -> Result<&'static Loaded, Refusal> {
    if let Some(l) = LOADED.get() {
        return Ok(l);
    }
    let env = std::env::var("MODELPROBE_CUPTI").ok();
    let mut tried = Vec::new();
    for path in find::candidates(mapped, env.as_deref(), &find::list_dir) {
        match Cupti::load(&path) {
            Ok(cupti) => {
                let cupti = cupti.leak();
                let layout = cupti.layout().map_err(|e| {
                    (
                        state::ERROR,
                        format!("GPU timings off for process {pid}: {e}"),
                    )
                })?;
                return Ok(LOADED.get_or_init(|| Loaded { cupti, layout }));
            }
            Err(e) => tried.push(format!("{}: {e}", path.display())),
        }
    }
    // The first failure says the most (later candidates are fallbacks by soname).
    let first = tried
        .first()
        .map(String::as_str)
        .unwrap_or("nothing to try");
    Err((
        state::NO_CUPTI,
        format!(
            "GPU timings off for process {pid}: no usable libcupti beside its CUDA runtime, \
             in the CUDA toolkit or in its Python environment (install the nvidia-cuda-cupti \
             wheel, or set MODELPROBE_CUPTI in its environment); {} tried, first: {first}",
            tried.len()
        ),
    ))
}

fn check(cupti: &Cupti, r: t::CUptiResult, call: &str) -> Result<(), Refusal> {
    CuptiError::check(r).map_err(|e| {
        let text = cupti
            .error_string(e)
            .unwrap_or_else(|| format!("error {}", e.code()));
        (state::ERROR, format!("{call} failed: {text}"))
    })
}

fn unsubscribe(cupti: &Cupti) {
    let sub = SUBSCRIBER.swap(0, Ordering::SeqCst) as t::CUpti_SubscriberHandle;
    if !sub.is_null() {
        // SAFETY: a subscriber this library created and has not released.
        unsafe { (cupti.functions().unsubscribe)(sub) };
    }
}

/// CUPTI's calls of this library's buffer callbacks so far.
pub fn buffer_calls() -> u64 {
    BUFFER_CALLS.load(Ordering::Relaxed)
}

/// Asks CUPTI for the buffers holding completed records (`forced`: all of them).
pub fn flush(forced: bool) {
    if let Some(l) = LOADED.get() {
        let flag = if forced {
            t::CUpti_ActivityFlag::CUPTI_ACTIVITY_FLAG_FLUSH_FORCED.0
        } else {
            0
        };
        // SAFETY: CUPTI is loaded and its callbacks registered; any flag value is accepted.
        unsafe { (l.cupti.functions().activity_flush_all)(flag) };
    }
}

/// Records CUPTI dropped in this session.
pub fn cupti_dropped() -> u64 {
    CUPTI_DROPPED.load(Ordering::SeqCst)
}

/// A clock pair: `cuptiGetTimestamp` between two CLOCK_MONOTONIC reads (best of three).
pub fn clock_pair() -> Option<ClockPair> {
    let l = LOADED.get()?;
    let mut best: Option<ClockPair> = None;
    for _ in 0..3 {
        let a = api::monotonic_ns();
        let c = l.cupti.timestamp().ok()?;
        let b = api::monotonic_ns();
        let pair = ClockPair {
            cupti_ns: c,
            mono_ns: a + (b - a) / 2,
            uncertainty_ns: (b - a) / 2,
        };
        if best.is_none_or(|p| pair.uncertainty_ns < p.uncertainty_ns) {
            best = Some(pair);
        }
    }
    best
}

/// Ends a session: stops recording new activity first, then flushes everything recorded
/// (bounded by `limit`: the flush runs on a helper thread), then turns the API callbacks off.
/// In that order no record made after the flush waits in CUPTI for the next session. Returns
/// false when the flush did not finish in time.
pub fn stop_within(limit: Duration) -> bool {
    disable_kinds();
    let (tx, rx) = mpsc::channel();
    let spawned = crate::threads::spawn_quiet("modelprobe-gpu-flush", move || {
        flush(true);
        let _ = tx.send(());
    });
    let finished = spawned.is_ok() && rx.recv_timeout(limit).is_ok();
    read_completed();
    stop();
    finished
}

/// Turns activity recording and the API callbacks off (records in flight are discarded).
pub fn stop() {
    api::set_active(false);
    disable_kinds();
    if let Some(l) = LOADED.get() {
        unsubscribe(l.cupti);
    }
    // What completes after the end of a session is not this session's: freed unread.
    read_completed();
}

fn disable_kinds() {
    let Some(l) = LOADED.get() else {
        return;
    };
    let f = l.cupti.functions();
    for (kind, _) in KINDS {
        // SAFETY: a valid activity kind; disabling one that is off is harmless.
        unsafe { (f.activity_disable)(kind) };
    }
}

/// Keeps this library loaded for the life of the process (CUPTI will hold our callbacks).
fn pin_self() {
    // SAFETY: dladdr fills `info` for an address inside this library.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: a valid address and out-pointer.
    let found = unsafe { libc::dladdr(pin_self as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return;
    }
    // SAFETY: dli_fname is this library's path, NUL-terminated; RTLD_NOLOAD only takes one
    // more reference to the already loaded library, and RTLD_NODELETE makes it permanent.
    unsafe {
        libc::dlopen(
            info.dli_fname,
            libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        )
    };
}

unsafe extern "C" fn buffer_requested(
    buffer: *mut *mut u8,
    size: *mut usize,
    max_records: *mut usize,
) {
    BUFFER_CALLS.fetch_add(1, Ordering::Relaxed);
    let bytes = BUFFER_BYTES.load(Ordering::Relaxed);
    // SAFETY: aligned_alloc with a power-of-two alignment and a size that is a multiple of it.
    let ptr = unsafe { libc::aligned_alloc(8, bytes) }.cast::<u8>();
    // SAFETY: CUPTI passes valid out-pointers.
    unsafe {
        *buffer = ptr;
        *size = if ptr.is_null() { 0 } else { bytes };
        *max_records = 0;
    }
}

unsafe extern "C" fn buffer_completed(
    context: t::CUcontext,
    stream_id: u32,
    buffer: *mut u8,
    _size: usize,
    valid: usize,
) {
    // O(1), and no CUPTI call: CUPTI runs this under its own lock, and every launch callback
    // waits for it. The buffer is read on the library's own thread ([`read_completed`]).
    BUFFER_CALLS.fetch_add(1, Ordering::Relaxed);
    COMPLETED.lock().unwrap_or_else(|p| p.into_inner()).push((
        context as usize,
        stream_id,
        buffer as usize,
        valid,
    ));
}

/// Reads the buffers CUPTI completed since the last call into the outbox (or, outside a
/// session, discards them), counts what CUPTI dropped, and frees them. Called from the
/// library's own thread; CUPTI is never called with the outbox locked.
pub fn read_completed() {
    let buffers = std::mem::take(&mut *COMPLETED.lock().unwrap_or_else(|p| p.into_inner()));
    for (context, stream_id, buffer, valid) in buffers {
        // SAFETY: a buffer CUPTI completed with `valid` bytes of records, handed over once.
        let _ = std::panic::catch_unwind(|| unsafe {
            read_buffer(context as t::CUcontext, stream_id, buffer as *mut u8, valid)
        });
        // SAFETY: `buffer` came from aligned_alloc in `buffer_requested` (or is null).
        unsafe { libc::free(buffer as *mut c_void) };
    }
}

/// True when CUDA graph launches' correlation ids cannot be trusted: CUPTI before 13.1 Update 1
/// gets them wrong in a process's profiling sessions after the first (fixed in 13.1 Update 1,
/// per its release notes). 13.1 Update 1 may report 13.1's API version (130100): it is then
/// counted as affected, which leaves joins out rather than making wrong ones.
pub fn graph_correlation_unreliable(cupti_version: u32, session: u32) -> bool {
    session > 1 && cupti_version <= 130_100
}

/// One completed buffer: its records to the outbox, its drop count.
///
/// # Safety
/// The arguments are CUPTI's for a completed buffer holding `valid` bytes of records.
unsafe fn read_buffer(context: t::CUcontext, stream_id: u32, buffer: *mut u8, valid: usize) {
    let Some(l) = LOADED.get() else {
        return;
    };
    let f = l.cupti.functions();
    if api::active() {
        let mut activities = Vec::new();
        let mut record: *mut t::CUpti_Activity = std::ptr::null_mut();
        loop {
            // SAFETY: `buffer` holds `valid` bytes of records CUPTI wrote; `record` is the
            // cursor CUPTI advances.
            let r = unsafe { (f.activity_get_next_record)(buffer, valid, &mut record) };
            if r != t::CUptiResult::CUPTI_SUCCESS {
                break;
            }
            // SAFETY: a record CUPTI just returned from this buffer, read with the layout of
            // the CUPTI that wrote it; the buffer is freed only after the conversion below.
            activities.push(unsafe { decode_raw(&l.layout, record) });
        }
        let unreliable_graphs = graph_correlation_unreliable(l.cupti.version(), api::session());
        let mut out = outbox::lock();
        for activity in &activities {
            records::convert(activity, unreliable_graphs, &mut out);
        }
    }
    let mut dropped = 0usize;
    // SAFETY: the context and stream CUPTI passed, and a valid out-pointer.
    let r = unsafe { (f.activity_get_num_dropped_records)(context, stream_id, &mut dropped) };
    if r == t::CUptiResult::CUPTI_SUCCESS && dropped > 0 {
        CUPTI_DROPPED.fetch_add(dropped as u64, Ordering::Relaxed);
    }
}
