//! A fixture workload with known hot spots, profiled by the end-to-end tests and by the demo.
//!
//! - `mp_hot_a` and `mp_hot_b` burn CPU on the main thread in a 3:1 ratio of work;
//! - `mp_sleep` (on its own thread) blocks in `nanosleep` in a loop: pure off-CPU time;
//! - with `--child`, a forked child process burns CPU in `mp_child_burn`;
//! - with `--jit`, the main thread also runs generated machine code in anonymous executable
//!   memory, named `mp_jit_spin` in `/tmp/perf-PID.map` (as JITs do), and deletes that map on
//!   exit.
//!
//! `mp-workload [--seconds S] [--child] [--jit] [--exit-code N]`; prints `ready <pid>` when
//! started.
//!
//! `mp-workload --calls N` calls `mp_span_outer(i)` for i in 0..N, each calling
//! `mp_span_target(i)`, which sleeps 2 ms and returns 2i; then it exits. `--segv` makes it die
//! of SIGSEGV after its `ready` line.
//!
//! `--logs` prints a known set of lines in several log formats and write shapes (split writes,
//! writev); `--model PATH` opens and reads a model file; `--flood N` writes N lines of 1000
//! bytes to stderr as fast as it can, one `write` each. All three then exit.
//!
//! `--dlopen LIB --calls N` waits 300 ms, then loads LIB with dlopen and calls its
//! `mp_lib_work(i)` N times (the late-dlopen case).
//!
//! `--tight N` calls the tiny `mp_tiny` N times and prints `elapsed_ms` (probe-hit cost);
//! `--flood N --rate R` paces the flood at R lines per second and prints `elapsed_ms`.
//!
//! `mp-workload --work ROUNDS [--threads T]` is the benchmark shape instead: T threads each do
//! a fixed amount of work (ROUNDS calls of `mp_hot_a` + `mp_hot_b`), then it prints
//! `elapsed_ms <ms>` and exits, so slowdown under a profiler is a ratio of elapsed times.
//! Built with frame pointers (see `.cargo/config.toml`), as the sampler unwinds by them.
use std::{hint::black_box, io::Write, os::fd::AsRawFd, time::Instant};

const UNIT: u64 = 200_000;

#[inline(always)]
fn spin(iterations: u64) -> u64 {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
    for i in 0..iterations {
        x = black_box(x.rotate_left(5) ^ i).wrapping_mul(0x100_0000_01b3);
    }
    x
}

/// Three units of work per call.
#[no_mangle]
#[inline(never)]
pub extern "C" fn mp_hot_a() -> u64 {
    spin(3 * UNIT)
}

/// One unit of work per call.
#[no_mangle]
#[inline(never)]
pub extern "C" fn mp_hot_b() -> u64 {
    spin(UNIT)
}

/// Burns CPU in the child process. (Two units, so that LLVM cannot merge it with `mp_hot_b`
/// as an identical function.)
#[no_mangle]
#[inline(never)]
pub extern "C" fn mp_child_burn() -> u64 {
    spin(2 * UNIT)
}

/// Sleeps `ms` milliseconds with a raw `nanosleep` system call made from this very function, so
/// that a frame-pointer unwind from the blocked thread's user registers starts here (a libc
/// wrapper built without frame pointers would hide this frame).
#[no_mangle]
#[inline(never)]
pub extern "C" fn mp_sleep(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads `ts` and ignores the null remainder pointer; the asm clobbers
    // only the registers the syscall ABI says it does.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_nanosleep => _,
            in("rdi") &ts as *const libc::timespec,
            in("rsi") 0usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
}

/// Generated code: a count-down loop (`mov rcx, 2^22; 1: dec rcx; jnz 1b; ret`) in anonymous
/// executable memory, announced in the perf map like a JIT would.
struct Jit {
    run: extern "C" fn(),
    map_path: String,
}

impl Jit {
    #[cfg(target_arch = "x86_64")]
    fn new() -> Jit {
        const CODE: [u8; 13] = [
            0x48, 0xc7, 0xc1, 0x00, 0x00, 0x40, 0x00, // mov rcx, 0x400000
            0x48, 0xff, 0xc9, // dec rcx
            0x75, 0xfb, // jnz -5
            0xc3, // ret
        ];
        // SAFETY: a fresh anonymous mapping, written before it is executed and never unmapped
        // while `run` can be called; the code is a self-contained leaf that only uses rcx.
        unsafe {
            let mem = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(mem, libc::MAP_FAILED, "mmap for JIT code");
            std::ptr::copy_nonoverlapping(CODE.as_ptr(), mem.cast::<u8>(), CODE.len());
            let map_path = format!("/tmp/perf-{}.map", std::process::id());
            std::fs::write(
                &map_path,
                format!("{:x} {:x} mp_jit_spin\n", mem as usize, CODE.len()),
            )
            .expect("write perf map");
            Jit {
                run: std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(mem),
                map_path,
            }
        }
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.map_path);
    }
}

/// The cheapest function worth probing: the probe's cost dominates its own.
#[no_mangle]
#[inline(never)]
pub extern "C" fn mp_tiny(x: u64) -> u64 {
    black_box(x) ^ 1
}

/// A probe target with a known duration (2 ms) and result (2i).
#[no_mangle]
#[inline(never)]
pub extern "C" fn mp_span_target(i: u64) -> u64 {
    mp_sleep(2);
    black_box(i * 2)
}

/// Calls `mp_span_target`, so spans nest.
#[no_mangle]
#[inline(never)]
pub extern "C" fn mp_span_outer(i: u64) -> u64 {
    black_box(mp_span_target(black_box(i))) + 1
}

fn raw_write(fd: i32, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for its length; a short or failed write is fine for a fixture.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// The lines `--logs` prints, one write shape each.
fn print_logs() {
    raw_write(1, b"INFO: starting up\n");
    raw_write(2, b"WARNING:model:slow layer 3\n");
    // One line in two writes.
    raw_write(1, b"E1124 13:01:02.123456  42 server.cc:10] CUDA error ");
    raw_write(1, b"out of memory\n");
    // One line from a writev of two pieces.
    let parts: [&[u8]; 2] = [b"[DEBUG] vec", b"tored write\n"];
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: `iov` points at live buffers for the duration of the call.
    unsafe { libc::writev(2, iov.as_ptr(), iov.len() as i32) };
    raw_write(1, b"plain line without level\n");
    raw_write(2, b"CRITICAL: giving up");
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn fixed_work(rounds: u64, threads: usize) {
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                (0..rounds).fold(0u64, |acc, _| {
                    acc.wrapping_add(mp_hot_a()).wrapping_add(mp_hot_b())
                })
            })
        })
        .collect();
    let sum = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .fold(0u64, u64::wrapping_add);
    println!("checksum {sum:x}");
    println!("elapsed_ms {:.3}", start.elapsed().as_secs_f64() * 1e3);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = arg_value(&args, "--seconds")
        .map(|s| s.parse().expect("--seconds takes a number"))
        .unwrap_or(3.0);
    let exit_code: i32 = arg_value(&args, "--exit-code")
        .map(|s| s.parse().expect("--exit-code takes an integer"))
        .unwrap_or(0);
    let role_child = args.iter().any(|a| a == "--role-child");
    if let Some(rounds) = arg_value(&args, "--work") {
        let rounds: u64 = rounds.parse().expect("--work takes an integer");
        let threads: usize = arg_value(&args, "--threads")
            .map(|s| s.parse().expect("--threads takes an integer"))
            .unwrap_or(1);
        fixed_work(rounds, threads);
        return;
    }
    let start = Instant::now();
    let deadline = || start.elapsed().as_secs_f64() >= seconds;

    if role_child {
        let mut acc = 0u64;
        while !deadline() {
            acc = acc.wrapping_add(mp_child_burn());
        }
        println!("child checksum {acc:x}");
        return;
    }

    println!("ready {}", std::process::id());
    std::io::stdout().flush().expect("flush stdout");

    if let Some(path) = arg_value(&args, "--model") {
        use std::io::Read;
        let mut head = [0u8; 64];
        let n = std::fs::File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .expect("read model file");
        println!("read {n} bytes of {path}");
        if args.iter().any(|a| a == "--hold") {
            // Keep it open (and mapped, as safetensors loaders do) while the workload runs.
            let file = std::fs::File::open(&path).expect("open model file");
            let len = file.metadata().expect("stat model file").len() as usize;
            // SAFETY: a private read-only mapping of a file this fixture owns; never unmapped,
            // never written.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(map, libc::MAP_FAILED, "mmap model file");
            std::mem::forget(file);
        }
    }
    if args.iter().any(|a| a == "--logs") {
        print_logs();
        return;
    }
    if let Some(n) = arg_value(&args, "--tight") {
        let n: u64 = n.parse().expect("--tight takes an integer");
        let start = Instant::now();
        let sum = (0..n).fold(0u64, |acc, i| acc.wrapping_add(mp_tiny(i)));
        println!("checksum {sum:x}");
        println!("elapsed_ms {:.3}", start.elapsed().as_secs_f64() * 1e3);
        return;
    }
    if let Some(n) = arg_value(&args, "--flood") {
        let n: u64 = n.parse().expect("--flood takes an integer");
        let rate: Option<f64> =
            arg_value(&args, "--rate").map(|r| r.parse().expect("--rate takes a number"));
        let mut line = vec![b'x'; 999];
        line.push(b'\n');
        let start = Instant::now();
        for i in 0..n {
            if let Some(rate) = rate {
                // Pace: line i is due at i / rate seconds.
                while start.elapsed().as_secs_f64() < i as f64 / rate {
                    std::hint::spin_loop();
                }
            }
            raw_write(2, &line);
        }
        println!("elapsed_ms {:.3}", start.elapsed().as_secs_f64() * 1e3);
        return;
    }
    if let Some(lib) = arg_value(&args, "--dlopen") {
        let n: i64 = arg_value(&args, "--calls")
            .map_or(10, |n| n.parse().expect("--calls takes an integer"));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let name = std::ffi::CString::new(lib.clone()).expect("no NUL in path");
        // SAFETY: dlopen/dlsym with valid C strings; the symbol has the C signature declared.
        let sum: i64 = unsafe {
            let handle = libc::dlopen(name.as_ptr(), libc::RTLD_NOW);
            assert!(!handle.is_null(), "dlopen {lib} failed");
            let sym = libc::dlsym(handle, c"mp_lib_work".as_ptr());
            assert!(!sym.is_null(), "no mp_lib_work in {lib}");
            let work: extern "C" fn(i64) -> i64 = std::mem::transmute(sym);
            (0..n).map(|i| work(i)).sum()
        };
        println!("dlopen calls {n} sum {sum}");
        return;
    }
    if let Some(n) = arg_value(&args, "--calls") {
        let n: u64 = n.parse().expect("--calls takes an integer");
        let sum: u64 = (0..n).map(|i| mp_span_outer(i)).sum();
        println!("calls {n} sum {sum}");
        return;
    }
    if args.iter().any(|a| a == "--segv") {
        // SAFETY: deliberately not safe: the fixture must die of SIGSEGV.
        unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u64>(), 1) };
    }

    let child = args.iter().any(|a| a == "--child").then(|| {
        std::process::Command::new(std::env::current_exe().expect("current_exe"))
            .args(["--role-child", "--seconds", &seconds.to_string()])
            .spawn()
            .expect("spawn child")
    });
    let sleeper = std::thread::Builder::new()
        .name("mp-sleeper".into())
        .spawn(move || {
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < seconds {
                mp_sleep(20);
            }
        })
        .expect("spawn sleeper");

    let jit = args.iter().any(|a| a == "--jit").then(Jit::new);
    let mut acc = 0u64;
    while !deadline() {
        acc = acc.wrapping_add(mp_hot_a());
        acc = acc.wrapping_add(mp_hot_b());
        if let Some(jit) = &jit {
            (jit.run)();
        }
    }
    drop(jit);
    sleeper.join().expect("sleeper thread");
    if let Some(mut c) = child {
        c.wait().expect("wait child");
    }
    println!("checksum {acc:x}");
    std::process::exit(exit_code);
}
