//! Python function spans (`--probe py:MODULE:QUALNAME`) from inside the interpreter, through
//! `sys.monitoring` (PEP 669, CPython 3.12+): local events on the selected code objects only,
//! C callbacks ([`monitor`]), records to the agent through a shared ring ([`ring`]).
//!
//! The library gets its settings ([`modelprobe_common::pyprobe::config`]) one of two ways:
//!
//! - **loaded live** (`attach`): the agent writes them into this library's config area
//!   ([`CONFIG_AREA`]) in the image it loads. A thread of the library's own waits for the
//!   interpreter, takes the GIL (`PyGILState_Ensure`) at the interpreter's next switch, sets the
//!   probes up, and gives it back; the host's threads are never stopped for it.
//! - **preloaded** (`run`): `LD_PRELOAD` and the config in `MODELPROBE_PY_CONFIG`. The library
//!   adds a C audit hook before the interpreter starts; at `cpython.run_*` (the main script,
//!   module or command about to run, GIL held) it sets the probes up, so nothing the script
//!   does is missed. Every Python process of the launched tree does so (each with its ring);
//!   a child forked without `exec` inherits the probes but writes nothing.
//!
//! Either way a thread then waits for the agent's stop request (detach): it takes the GIL,
//! removes every local event and callback, frees the tool id, takes the import hook out, and
//! exits. An interpreter older than 3.12, a process with none, a finalizing one, or a tool id
//! shortage ends in a one-line reason in the ring's header instead.
pub mod capi;
pub mod codes;
pub mod monitor;
pub mod ring;

use std::{
    ffi::{c_char, c_int, c_void, CStr, CString},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use modelprobe_common::pyprobe::{config, config_area, state, CONFIG_BYTES, CONFIG_ENV};

use crate::threads;
use capi::{Api, MethodDef, Obj, FILE_INPUT, METH_FASTCALL};
use ring::Ring;

/// The config area the agent patches in an image it loads live (see the module docs).
#[used]
#[no_mangle]
pub static mut MODELPROBE_PY_CONFIG_AREA: [u8; 16 + CONFIG_BYTES] = config_area();

/// The setup and teardown code run in the interpreter.
const SETUP_PY: &str = include_str!("setup.py");

/// How often the library's thread looks for a stop request.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Longest the interpreter's exit waits for the agent to map the ring.
const EXIT_WAIT: Duration = Duration::from_secs(2);

static API: OnceLock<Api> = OnceLock::new();
/// The ring, until the probes are removed (then unmapped and closed).
static RING: Mutex<Option<Arc<Ring>>> = Mutex::new(None);
static CONFIG: OnceLock<String> = OnceLock::new();
/// The interpreter is exiting: the library's thread must not take the GIL again.
static FINAL: AtomicBool = AtomicBool::new(false);
/// Setup ran (or was tried).
static SET_UP: AtomicBool = AtomicBool::new(false);
/// The main script's code was seen.
static MAIN_SEEN: AtomicBool = AtomicBool::new(false);
/// This process was forked from the one that set the probes up: the callbacks it inherited
/// must not write into the parent's ring.
pub(crate) static FORKED: AtomicBool = AtomicBool::new(false);
/// The setup code's namespace (a dict, owned), for the teardown.
static NAMESPACE: Mutex<usize> = Mutex::new(0);

/// The resolved C API, once known.
pub(crate) fn api() -> Option<&'static Api> {
    API.get()
}

/// The ring, while there is one.
pub(crate) fn ring() -> Option<Arc<Ring>> {
    RING.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The config written into this image, if any.
fn patched_config() -> Option<String> {
    // SAFETY: the area is only ever read (the agent patched it before `dlopen`); volatile, so
    // the compiler cannot assume the zeroes it was built with.
    let area = unsafe {
        let p = std::ptr::addr_of!(MODELPROBE_PY_CONFIG_AREA)
            .cast::<u8>()
            .add(16);
        (0..CONFIG_BYTES)
            .map(|i| std::ptr::read_volatile(p.add(i)))
            .take_while(|&b| b != 0)
            .collect::<Vec<u8>>()
    };
    (!area.is_empty()).then(|| String::from_utf8_lossy(&area).into_owned())
}

/// Called at load: starts the Python probes when this library was given a config. Returns
/// true when it was (the CUPTI listener then stays off: this copy is the Python one).
pub fn on_load() -> bool {
    if let Some(text) = patched_config() {
        start(text, false);
        return true;
    }
    let Ok(text) = std::env::var(CONFIG_ENV) else {
        return false;
    };
    // Every process of the launched tree that runs Python sets up (workers a launcher or
    // `multiprocessing` starts with a new interpreter included); the others do nothing.
    start(text, true);
    true
}

fn start(text: String, launched: bool) {
    let token = config::value(&text, "token")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    // No interpreter: no ring either. A launched command may be a wrapper (a pyenv shim, `env`)
    // that execs Python next, whose own copy reports; the agent says when none ever did.
    let Some(version) = capi::version_string() else {
        threads::debug("python probes: no CPython interpreter in this process");
        return;
    };
    let ring = match Ring::create(token) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            threads::debug(&format!("python probes: no ring: {e}"));
            return;
        }
    };
    *RING.lock().unwrap_or_else(|p| p.into_inner()) = Some(ring.clone());
    extern "C" fn in_child() {
        FORKED.store(true, Ordering::SeqCst);
    }
    // SAFETY: registers a plain function that only stores an atomic.
    unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    let fail = |why: String| {
        ring.set_state(state::FAILED, &why);
        let ring = ring.clone();
        if let Err(e) = threads::spawn_raw(c"modelprobe-py", move || let_go(&ring)) {
            threads::debug(&format!("python probes: no thread: {e}"));
        }
    };
    ring.set_facts(capi::version_hex(&version), -1, 0);
    match capi::major_minor(&version) {
        Some(v) if v >= (3, 12) => {}
        _ => {
            return fail(format!(
                "Python probes need CPython 3.12+ (sys.monitoring, PEP 669); this process \
                 runs {version}"
            ))
        }
    }
    let Some(api) = capi::resolve() else {
        return fail(format!(
            "CPython {version} lacks a C-API function the probes call"
        ));
    };
    let api: &'static Api = API.get_or_init(|| api);
    let _ = CONFIG.set(text);
    if launched {
        // SAFETY: CPython allows adding audit hooks before the interpreter starts.
        if unsafe { (api.PySys_AddAuditHook)(audit, std::ptr::null_mut()) } != 0 {
            return fail("PySys_AddAuditHook refused the hook".into());
        }
    }
    let wait = Duration::from_millis(
        config::value(CONFIG.get().map_or("", |s| s), "gil_wait_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000),
    );
    let spawned = threads::spawn_raw(c"modelprobe-py", move || serve(api, ring, launched, wait));
    if let Err(e) = spawned {
        threads::debug(&format!("python probes: no thread: {e}"));
    }
}

/// The library's thread: sets up (when loaded live), then waits for a stop request.
fn serve(api: &'static Api, ring: Arc<Ring>, launched: bool, wait: Duration) {
    let ring = &*ring;
    serve_until_stopped(api, ring, launched, wait);
    if ring.state() != state::ACTIVE {
        let_go(ring);
    }
}

/// Once the agent has read why the probes are not there (or after a while), closes the ring:
/// the process keeps nothing of the session but the idle library.
fn let_go(ring: &Ring) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ring.agent_mapped() && Instant::now() < deadline {
        std::thread::sleep(STOP_POLL);
    }
    RING.lock().unwrap_or_else(|p| p.into_inner()).take();
}

fn serve_until_stopped(api: &'static Api, ring: &Ring, launched: bool, wait: Duration) {
    if !launched {
        let deadline = Instant::now() + wait;
        // SAFETY: Py_IsInitialized may be called without the GIL.
        while unsafe { (api.Py_IsInitialized)() } == 0 {
            if Instant::now() > deadline || ring.stop_requested() {
                ring.set_state(state::FAILED, "the interpreter is not initialized");
                return;
            }
            std::thread::sleep(STOP_POLL);
        }
        // SAFETY: both may be called without the GIL.
        if api.is_finalizing.is_some_and(|f| unsafe { f() } != 0) {
            ring.set_state(state::FAILED, "the interpreter is finalizing");
            return;
        }
        // SAFETY: a thread the interpreter does not know takes the GIL the documented way;
        // it blocks until the running thread lets go at its next switch.
        let gil = unsafe { (api.PyGILState_Ensure)() };
        if ring.stop_requested() {
            ring.set_state(state::STOPPED, "stopped before the GIL came");
        } else {
            SET_UP.store(true, Ordering::SeqCst);
            // SAFETY: GIL held.
            unsafe { set_up(api, ring) };
        }
        // SAFETY: the state PyGILState_Ensure returned, on the same thread.
        unsafe { (api.PyGILState_Release)(gil) };
    }
    loop {
        if FINAL.load(Ordering::SeqCst) {
            return;
        }
        if ring.stop_requested() {
            break;
        }
        std::thread::sleep(STOP_POLL);
    }
    if ring.state() != state::ACTIVE || FINAL.load(Ordering::SeqCst) {
        if ring.state() == state::PENDING {
            ring.set_state(state::STOPPED, "stopped before setup");
        }
        return;
    }
    // SAFETY: as above.
    let gil = unsafe { (api.PyGILState_Ensure)() };
    // SAFETY: GIL held.
    unsafe { tear_down(api, ring) };
    // The ring goes with the last reference (this thread's): unmapped and closed, so the
    // process keeps nothing of the session but the idle library.
    RING.lock().unwrap_or_else(|p| p.into_inner()).take();
    // SAFETY: the state PyGILState_Release returned.
    unsafe { (api.PyGILState_Release)(gil) };
}

/// The audit hook of a launched command: sets up when the main code is about to run, then
/// hands the main script's code to the setup code before it runs (`exec` with no Python frame
/// running), so its functions are probed before they are defined.
unsafe extern "C" fn audit(event: *const c_char, args: Obj, _data: *mut c_void) -> c_int {
    if event.is_null() {
        return 0;
    }
    // SAFETY: CPython passes a NUL-terminated event name.
    let name = unsafe { CStr::from_ptr(event) }.to_bytes();
    let (Some(api), Some(ring)) = (api(), ring()) else {
        return 0;
    };
    let ring = &*ring;
    if name == b"exec" && ring.state() == state::ACTIVE && !MAIN_SEEN.load(Ordering::Relaxed) {
        // SAFETY: audit hooks run with the GIL held; `args` is the event's tuple.
        unsafe {
            if (api.PyEval_GetFrame)().is_null() {
                MAIN_SEEN.store(true, Ordering::Relaxed);
                let ns = *NAMESPACE.lock().unwrap_or_else(|p| p.into_inner()) as Obj;
                let main = if ns.is_null() {
                    std::ptr::null_mut()
                } else {
                    (api.PyDict_GetItemString)(ns, c"_mp_main".as_ptr())
                };
                if !main.is_null() && (api.PyTuple_Size)(args) > 0 {
                    let r = (api.PyObject_CallOneArg)(main, (api.PyTuple_GetItem)(args, 0));
                    if r.is_null() {
                        threads::debug(&format!("python probes: {}", error_text(api)));
                    } else {
                        (api.Py_DecRef)(r);
                    }
                }
            }
        }
        return 0;
    }
    if SET_UP.load(Ordering::Relaxed) || !name.starts_with(b"cpython.run_") {
        return 0;
    }
    SET_UP.store(true, Ordering::SeqCst);
    if ring.stop_requested() {
        ring.set_state(state::STOPPED, "stopped before setup");
    } else {
        // SAFETY: audit hooks run with the GIL held.
        unsafe { set_up(api, ring) };
    }
    0
}

/// `Type: message` of the pending exception (cleared).
///
/// # Safety
/// GIL held.
unsafe fn error_text(api: &Api) -> String {
    // SAFETY: GIL held; references released.
    unsafe {
        let (mut t, mut v, mut tb) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        (api.PyErr_Fetch)(&mut t, &mut v, &mut tb);
        let name = if t.is_null() {
            std::ptr::null_mut()
        } else {
            (api.PyObject_GetAttrString)(t, c"__name__".as_ptr())
        };
        let msg = if v.is_null() {
            std::ptr::null_mut()
        } else {
            (api.PyObject_Str)(v)
        };
        let text = format!(
            "{}: {}",
            String::from_utf8_lossy(api.utf8(name)),
            String::from_utf8_lossy(api.utf8(msg))
        );
        for o in [name, msg, t, v, tb] {
            if !o.is_null() {
                (api.Py_DecRef)(o);
            }
        }
        (api.PyErr_Clear)();
        text
    }
}

/// Runs `code` in `ns`; the error's text on failure.
///
/// # Safety
/// GIL held; `ns` a live dict.
unsafe fn run(api: &Api, code: &str, ns: Obj) -> Result<(), String> {
    let code = CString::new(code).map_err(|_| "NUL in code".to_string())?;
    // SAFETY: GIL held; the result's reference released.
    unsafe {
        let r = (api.PyRun_String)(code.as_ptr(), FILE_INPUT, ns, ns);
        if r.is_null() {
            return Err(error_text(api));
        }
        (api.Py_DecRef)(r);
    }
    Ok(())
}

/// `_mp_exit()`, registered with `atexit`: the interpreter is ending. Gives the agent a moment
/// to map the ring if it has not yet (a short script's records would go with the process).
unsafe extern "C" fn at_exit(_m: Obj, _args: *const Obj, _n: isize) -> Obj {
    FINAL.store(true, Ordering::SeqCst);
    if let Some(ring) = ring() {
        let deadline = Instant::now() + EXIT_WAIT;
        while !ring.agent_mapped() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    match api() {
        // SAFETY: atexit functions run with the GIL.
        Some(api) => unsafe { api.new_none() },
        None => std::ptr::null_mut(),
    }
}

static EXIT_DEF: MethodDef = MethodDef {
    name: c"_mp_exit".as_ptr(),
    meth: at_exit as *const c_void,
    flags: METH_FASTCALL,
    doc: std::ptr::null(),
};

/// Builds the namespace, runs the setup code, and records the outcome in the ring.
///
/// # Safety
/// GIL held.
unsafe fn set_up(api: &'static Api, ring: &Ring) {
    let Some(text) = CONFIG.get() else {
        return;
    };
    let Some(ring_arc) = self::ring() else {
        return;
    };
    // SAFETY: GIL held; each new reference is either stored in the dict (and released) or
    // kept as the namespace until the teardown.
    unsafe {
        let ns = (api.PyDict_New)();
        if ns.is_null() {
            ring.set_state(state::FAILED, &error_text(api));
            return;
        }
        (api.PyDict_SetItemString)(ns, c"__builtins__".as_ptr(), (api.PyEval_GetBuiltins)());
        let Ok(ctext) = CString::new(text.as_str()) else {
            ring.set_state(state::FAILED, "NUL in the config");
            return;
        };
        let config = (api.PyUnicode_FromString)(ctext.as_ptr());
        (api.PyDict_SetItemString)(ns, c"_mp_config".as_ptr(), config);
        (api.Py_DecRef)(config);
        let defs = monitor::FUNCTIONS
            .iter()
            .map(|(n, d)| (*n, d))
            .chain(std::iter::once((c"_mp_exit", &EXIT_DEF)));
        for (name, def) in defs {
            let f = (api.PyCFunction_NewEx)(def, std::ptr::null_mut(), std::ptr::null_mut());
            if f.is_null() {
                ring.set_state(state::FAILED, &error_text(api));
                return;
            }
            (api.PyDict_SetItemString)(ns, name.as_ptr(), f);
            (api.Py_DecRef)(f);
        }
        monitor::install(api, ring_arc);
        let outcome = run(api, SETUP_PY, ns).and_then(|()| run(api, "_mp_tool = _mp_setup()", ns));
        if let Err(why) = outcome {
            monitor::uninstall();
            (api.Py_DecRef)(ns);
            ring.set_state(
                state::FAILED,
                &format!("setting the probes up failed: {why}"),
            );
            return;
        }
        let tool = (api.PyDict_GetItemString)(ns, c"_mp_tool".as_ptr());
        let tool = if tool.is_null() {
            -1
        } else {
            (api.PyLong_AsLong)(tool) as i32
        };
        let probed = monitor::probed();
        let version = capi::version_string().unwrap_or_default();
        ring.set_facts(capi::version_hex(&version), tool, probed);
        *NAMESPACE.lock().unwrap_or_else(|p| p.into_inner()) = ns as usize;
        ring.set_state(
            state::ACTIVE,
            &format!(
                "CPython {version}: sys.monitoring tool {tool}, {probed} function(s) probed \
                 so far (more as their modules load)"
            ),
        );
    }
}

/// Removes everything [`set_up`] put in place.
///
/// # Safety
/// GIL held.
unsafe fn tear_down(api: &Api, ring: &Ring) {
    let ns = std::mem::take(&mut *NAMESPACE.lock().unwrap_or_else(|p| p.into_inner())) as Obj;
    if ns.is_null() {
        return;
    }
    // SAFETY: GIL held; the namespace is ours.
    unsafe {
        let outcome = run(api, "_mp_teardown()", ns);
        monitor::uninstall();
        (api.Py_DecRef)(ns);
        match outcome {
            Ok(()) => ring.set_state(state::STOPPED, "probes removed, tool id freed"),
            Err(why) => ring.set_state(state::STOPPED, &format!("removing the probes: {why}")),
        }
    }
}
