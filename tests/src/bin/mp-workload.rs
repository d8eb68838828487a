//! A fixture workload with known hot spots, profiled by the end-to-end tests and by the demo.
//!
//! - `mp_hot_a` and `mp_hot_b` burn CPU on the main thread in a 3:1 ratio of work;
//! - `mp_sleep` (on its own thread) blocks in `nanosleep` in a loop: pure off-CPU time;
//! - with `--child`, a forked child process burns CPU in `mp_child_burn`.
//!
//! `mp-workload [--seconds S] [--child] [--exit-code N]`; prints `ready <pid>` when started.
//! Built with frame pointers (see `.cargo/config.toml`), as the sampler unwinds by them.
use std::{hint::black_box, io::Write, time::Instant};

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

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
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

    let mut acc = 0u64;
    while !deadline() {
        acc = acc.wrapping_add(mp_hot_a());
        acc = acc.wrapping_add(mp_hot_b());
    }
    sleeper.join().expect("sleeper thread");
    if let Some(mut c) = child {
        c.wait().expect("wait child");
    }
    println!("checksum {acc:x}");
    std::process::exit(exit_code);
}
