//! The ptrace library injector (`modelprobe::live_load`) against real processes, as root: a busy
//! loop, eight busy threads, a thread blocked in `read` or in `nanosleep`, and a process flooded
//! with signals. The library must run and go again without a trace, and the target's results,
//! exit status, blocked calls and signal counts must be the same as without it.
//!
//! The fixture and the checks of what an injection leaves in it are in
//! `modelprobe_tests::inject_target`.
use std::{
    path::PathBuf,
    sync::{mpsc, Arc},
    time::Duration,
};

use modelprobe::live_load::{self, LiveLoadError, LoadOptions, Loaded};
use modelprobe_tests::inject_target::*;

/// Checks the library is loaded (ran its constructor, mapped under its memfd name).
fn assert_loaded(inj: &Loaded, loads: usize) {
    let pid = inj.pid;
    assert_eq!(notes(pid, "loaded"), loads, "constructor notes in {pid}");
    assert!(
        maps(pid)
            .iter()
            .any(|l| l.contains("/memfd:mp-inject-test")),
        "library not mapped in {pid}"
    );
    assert_eq!(inj.path_in_target, format!("/proc/self/fd/{}", inj.fd));
}

fn inject_test_lib(pid: u32, opts: &LoadOptions) -> Loaded {
    live_load::load(pid, &image(), "mp-inject-test", opts)
        .unwrap_or_else(|e| panic!("inject into {pid}: {e}"))
}

#[test]
fn a_busy_loop_gets_the_library_and_computes_the_same_checksum() {
    if !require_ptrace("a_busy_loop_gets_the_library_and_computes_the_same_checksum") {
        return;
    }
    let _serial = serial();
    const ITERS: &str = "400000000";
    let want = reference_run(&["busy", ITERS]);
    let t = Target::start(&["busy", ITERS]);
    let pid = t.pid();
    let fds = fd_count(pid);
    let opts = LoadOptions::default();
    let inj = inject_test_lib(pid, &opts);
    assert!(
        t.output().is_empty(),
        "the loop ended before the injection: raise ITERS ({:?})",
        t.output()
    );
    assert_loaded(&inj, 1);
    assert_eq!(inj.tid, pid, "the main thread is the one held");
    let back = live_load::retract(&inj, &opts).expect("retract");
    assert_unloaded(pid, 1);
    assert_eq!(fd_count(pid), fds, "fds of {pid} after retract");
    let busy_during_retract = t.output().is_empty();
    let (status, got) = t.finish(Duration::from_secs(120));
    assert!(status.success(), "{status}");
    assert_eq!(got, want, "checksum with an injection in the middle");
    println!(
        "busy loop: inject pause {:.2} ms, retract pause {:.2} ms (retract during the loop: {busy_during_retract})",
        ms(inj.pause),
        ms(back)
    );
}

#[test]
fn eight_busy_threads_and_fifty_inject_retract_cycles_leak_nothing() {
    if !require_ptrace("eight_busy_threads_and_fifty_inject_retract_cycles_leak_nothing") {
        return;
    }
    let _serial = serial();
    const ITERS: &str = "60000000";
    let want = reference_run(&["threads", ITERS]);
    let t = Target::start(&["threads", ITERS]);
    let pid = t.pid();
    let (fds, threads) = (fd_count(pid), thread_count(pid));
    assert_eq!(threads, 9, "main and 8 workers");
    let opts = LoadOptions::default();
    let (mut inject_pauses, mut retract_pauses) = (Vec::new(), Vec::new());
    let mut after_first = Vec::new();
    for cycle in 1..=50 {
        let inj = inject_test_lib(pid, &opts);
        assert_loaded(&inj, cycle);
        assert_eq!(
            fd_count(pid),
            fds + 1,
            "cycle {cycle}: the memfd stays open while loaded"
        );
        assert_threads(
            pid,
            threads + 1,
            &format!("cycle {cycle}: the library's thread"),
        );
        let back = live_load::retract(&inj, &opts)
            .unwrap_or_else(|e| panic!("cycle {cycle}: retract: {e}"));
        assert_unloaded(pid, cycle);
        assert_eq!(
            fd_count(pid),
            fds,
            "cycle {cycle}: fds of {pid} after retract"
        );
        assert_threads(pid, threads, &format!("cycle {cycle}: after retract"));
        inject_pauses.push(inj.pause);
        retract_pauses.push(back);
        if cycle == 1 {
            // glibc keeps the first library thread's stack cached for reuse: compare later
            // cycles with this one, not with the start.
            after_first = maps(pid);
        }
    }
    let after_last = maps(pid);
    let gone: Vec<_> = after_first
        .iter()
        .filter(|l| !after_last.contains(l))
        .collect();
    let new: Vec<_> = after_last
        .iter()
        .filter(|l| !after_first.contains(l))
        .collect();
    assert!(
        after_last.len() <= after_first.len() && new.iter().all(|l| l.contains("[heap]")),
        "mappings grew over 49 cycles: gone {gone:?}, new {new:?}"
    );
    let mut t = t;
    t.send("quit\n");
    let (status, got) = t.finish(Duration::from_secs(120));
    assert!(status.success(), "{status}");
    assert_eq!(
        got, want,
        "worker checksums with 50 injections in the middle"
    );
    println!(
        "50 cycles, 8 busy threads: inject pause {}",
        stats(&mut inject_pauses)
    );
    println!(
        "50 cycles, 8 busy threads: retract pause {}",
        stats(&mut retract_pauses)
    );
}

#[test]
fn a_read_blocked_during_injection_still_returns_the_data_written_later() {
    if !require_ptrace("a_read_blocked_during_injection_still_returns_the_data_written_later") {
        return;
    }
    let _serial = serial();
    let mut t = Target::start(&["read"]);
    let pid = t.pid();
    std::thread::sleep(Duration::from_millis(100)); // into read()
    let opts = LoadOptions::default();
    let inj = inject_test_lib(pid, &opts);
    assert_loaded(&inj, 1);
    live_load::retract(&inj, &opts).expect("retract");
    assert_unloaded(pid, 1);
    assert!(
        t.output().is_empty(),
        "read returned early: {:?}",
        t.output()
    );
    t.send("hello\n");
    let (status, got) = t.finish(Duration::from_secs(10));
    assert!(status.success(), "{status}: {got:?}");
    assert_eq!(got, ["read hello"]);
}

#[test]
fn a_nanosleep_interrupted_by_injection_sleeps_exactly_the_time_asked() {
    if !require_ptrace("a_nanosleep_interrupted_by_injection_sleeps_exactly_the_time_asked") {
        return;
    }
    let _serial = serial();
    let t = Target::start(&["sleep", "2000"]);
    let pid = t.pid();
    std::thread::sleep(Duration::from_millis(500));
    let opts = LoadOptions::default();
    let inj = inject_test_lib(pid, &opts);
    assert_loaded(&inj, 1);
    live_load::retract(&inj, &opts).expect("retract");
    assert_unloaded(pid, 1);
    let (status, got) = t.finish(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let line = got.first().expect("a result line");
    let elapsed: u64 = line
        .strip_prefix("slept rc=0 errno=0 elapsed_ms=")
        .unwrap_or_else(|| panic!("nanosleep failed: {line}"))
        .parse()
        .expect("elapsed_ms");
    // Restarted from the beginning (rather than resumed) it would last 2500 ms or more.
    assert!(
        (2000..2400).contains(&elapsed),
        "nanosleep(2000 ms) took {elapsed} ms"
    );
}

#[test]
fn signals_sent_while_a_thread_is_held_arrive_exactly_once() {
    if !require_ptrace("signals_sent_while_a_thread_is_held_arrive_exactly_once") {
        return;
    }
    let _serial = serial();
    let mut t = Target::start(&["signals"]);
    let pid = t.pid();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let injector = {
        let done = done.clone();
        std::thread::spawn(move || {
            let opts = LoadOptions::default();
            let mut pauses = Vec::new();
            for _ in 0..10 {
                let inj = inject_test_lib(pid, &opts);
                pauses.push(inj.pause);
                pauses.push(live_load::retract(&inj, &opts).expect("retract"));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            pauses
        })
    };
    let rt = libc::SIGRTMIN() + 1;
    let (mut usr1, mut rts) = (0u64, 0u64);
    let mut rounds = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds < 3 {
        rounds += 1;
        // A burst of queued real-time signals...
        for _ in 0..200 {
            // SAFETY: kill takes plain integers.
            if unsafe { libc::kill(pid as i32, rt) } == 0 {
                rts += 1;
            }
        }
        // ...and SIGUSR1 one at a time (standard signals merge while pending), each
        // acknowledged by the handler.
        for _ in 0..5 {
            // SAFETY: kill takes plain integers.
            assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
            usr1 += 1;
            let ack = t.stderr_byte(Duration::from_secs(5));
            assert_eq!(ack, Ok(b'u'), "SIGUSR1 #{usr1} was not handled");
        }
    }
    let mut pauses = injector.join().expect("injector thread");
    assert_eq!(notes(pid, "loaded"), 10);
    assert_unloaded(pid, 10);
    t.send("quit\n");
    let (status, got) = t.finish(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert_eq!(
        got,
        [format!("usr1 {usr1} rt {rts}")],
        "signals handled vs sent"
    );
    println!(
        "{rounds} rounds, {usr1} SIGUSR1 and {rts} SIGRTMIN+1 during 10 cycles; pause {}",
        stats(&mut pauses)
    );
}

#[test]
fn clear_errors_for_a_traced_or_missing_process_and_a_bad_library() {
    if !require_ptrace("clear_errors_for_a_traced_or_missing_process_and_a_bad_library") {
        return;
    }
    let _serial = serial();
    let opts = LoadOptions::default();

    let missing = 2_147_483_600;
    let e = live_load::load(missing, &image(), "x", &opts).expect_err("no such process");
    assert!(matches!(e, LiveLoadError::NoSuchProcess { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("process {missing} not found: check the pid (`ps -p {missing}`)")
    );

    let mut t = Target::start(&["read"]);
    let pid = t.pid();
    let info = live_load::preflight(pid).expect("preflight");
    assert!(info.libc.contains("libc"), "{info:?}");
    assert!(
        info.dlopen != 0 && info.dlclose != 0 && info.syscall_insn != 0,
        "{info:?}"
    );
    let e = live_load::load(pid, &image(), "a/b", &opts).expect_err("bad name");
    assert!(matches!(e, LiveLoadError::BadName { .. }), "{e:?}");

    // Held by a tracer (this test process), injection is refused and says by whom.
    let (to_tracer, tracer_rx) = mpsc::channel::<()>();
    let (traced_tx, traced) = mpsc::channel::<()>();
    let tracer = std::thread::spawn(move || {
        const NULL: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: PTRACE_SEIZE/INTERRUPT/DETACH take plain integers here; waitpid gets a valid
        // out-pointer.
        unsafe {
            assert_eq!(libc::ptrace(libc::PTRACE_SEIZE, pid as i32, NULL, NULL), 0);
            assert_eq!(
                libc::ptrace(libc::PTRACE_INTERRUPT, pid as i32, NULL, NULL),
                0
            );
            let mut status = 0;
            assert_eq!(
                libc::waitpid(pid as i32, &mut status, libc::__WALL),
                pid as i32
            );
            traced_tx.send(()).unwrap();
            tracer_rx.recv().unwrap();
            assert_eq!(libc::ptrace(libc::PTRACE_DETACH, pid as i32, NULL, NULL), 0);
        }
    });
    traced.recv().unwrap();
    let e = live_load::load(pid, &image(), "mp-inject-test", &opts).expect_err("traced");
    let me = std::process::id();
    assert!(
        matches!(e, LiveLoadError::AlreadyTraced { tracer, .. } if tracer == me),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(&format!(
            "process {pid} is already being traced by pid {me} ("
        )) && e
            .to_string()
            .ends_with("; detach it first (quit the debugger or strace)"),
        "{e}"
    );
    to_tracer.send(()).unwrap();
    tracer.join().expect("tracer thread");

    // A file that is not a library: dlopen's own message, and nothing left behind.
    let fds = fd_count(pid);
    let e = live_load::load(
        pid,
        &b"not an ELF file\n".repeat(256),
        "mp-inject-bad",
        &opts,
    )
    .expect_err("bad ELF");
    assert!(matches!(e, LiveLoadError::Dlopen { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("mp-inject-bad")
            && msg.contains("ELF")
            && msg.ends_with("the process was restored"),
        "{msg}"
    );
    assert_eq!(fd_count(pid), fds, "the memfd was closed again");
    assert_unloaded(pid, 0);

    // The process never noticed any of it.
    let inj = inject_test_lib(pid, &opts);
    live_load::retract(&inj, &opts).expect("retract");
    let e = live_load::retract(&inj, &opts).expect_err("retract twice");
    assert!(matches!(e, LiveLoadError::NotLoaded { .. }), "{e:?}");
    t.send("bye\n");
    let (status, got) = t.finish(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert_eq!(got, ["read bye"]);
}

#[test]
fn a_constructor_that_crashes_or_hangs_is_abandoned_and_the_process_goes_on() {
    if !require_ptrace("a_constructor_that_crashes_or_hangs_is_abandoned_and_the_process_goes_on") {
        return;
    }
    let _serial = serial();
    let opts = LoadOptions {
        call_timeout: Duration::from_millis(300),
        ..LoadOptions::default()
    };
    for (flag, want) in [
        (
            "crash",
            "crashed with signal 11 at 0x0; the thread was restored",
        ),
        ("hang", ""),
    ] {
        let mut t = Target::start(&["read"]);
        let pid = t.pid();
        std::thread::sleep(Duration::from_millis(100)); // into read()
        let fds = fd_count(pid);
        let flag_file = PathBuf::from(format!("/tmp/mp-inject-{pid}.{flag}"));
        std::fs::write(&flag_file, "").expect("writing the flag file");
        let e = live_load::load(pid, &image(), "mp-inject-test", &opts).expect_err(flag);
        let _ = std::fs::remove_file(&flag_file);
        let msg = e.to_string();
        if flag == "crash" {
            assert!(
                matches!(e, LiveLoadError::Crashed { signal: 11, .. }),
                "{e:?}"
            );
            assert!(
                msg.starts_with(&format!("dlopen in process {pid} {want}")),
                "{msg}"
            );
            assert_eq!(fd_count(pid), fds, "the memfd was closed again");
        } else {
            assert!(matches!(e, LiveLoadError::Timeout { .. }), "{e:?}");
            assert!(
                msg.starts_with(&format!(
                    "timed out after 300 ms waiting for process {pid} to return from dlopen; \
                     the thread was put back mid-call"
                )),
                "{msg}"
            );
        }
        assert_eq!(
            notes(pid, "loaded"),
            0,
            "{flag}: the constructor never finished"
        );
        // The held thread went back to its read(), which still works.
        t.send("still here\n");
        let (status, got) = t.finish(Duration::from_secs(10));
        assert!(status.success(), "{flag}: {status}");
        assert_eq!(got, ["read still here"], "{flag}");
    }
}
