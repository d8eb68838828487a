//! Which libcupti to load: one matching the CUDA the process already uses, found without the
//! user preloading anything.
//!
//! In order: a libcupti the process already mapped; `$MODELPROBE_CUPTI`; one beside the
//! mapped libcudart (the CUDA 13 wheels keep all libraries in one folder); the CUDA toolkit
//! layout around it (`extras/CUPTI/lib64`); the `nvidia-cuda-cupti` wheel in the process's
//! Python environment (`site-packages/nvidia/cuda_cupti/lib`, `nvidia/cu13/lib`); the usual
//! toolkit folders; last, the dynamic loader's own search by soname. Candidates whose major
//! version matches the mapped libcudart come first.
use std::path::{Path, PathBuf};

/// The process's mapped files (from `/proc/self/maps`), deduplicated, in map order.
pub fn mapped_files(maps: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        let path = PathBuf::from(path);
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// True when the process has loaded the CUDA driver.
pub fn has_cuda_driver(mapped: &[PathBuf]) -> bool {
    mapped
        .iter()
        .any(|p| file_name(p).starts_with("libcuda.so"))
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// The major version in a soname like `libcudart.so.12.4.127` (12).
fn major(name: &str) -> Option<u32> {
    name.split(".so.").nth(1)?.split('.').next()?.parse().ok()
}

/// libcupti candidates, best first; `list` lists a folder's file names (absent folder: empty).
pub fn candidates(
    mapped: &[PathBuf],
    env: Option<&str>,
    list: &dyn Fn(&Path) -> Vec<String>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    if let Some(p) = mapped
        .iter()
        .find(|p| file_name(p).starts_with("libcupti.so"))
    {
        push(p.clone());
    }
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        push(PathBuf::from(p));
    }
    let cudart = mapped
        .iter()
        .find(|p| file_name(p).starts_with("libcudart.so"));
    let want = cudart.and_then(|p| major(file_name(p)));
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = cudart.and_then(|p| p.parent()) {
        dirs.push(dir.to_path_buf());
        if let Some(up) = dir.parent() {
            dirs.push(up.join("extras/CUPTI/lib64"));
            // Wheels: nvidia/cuda_runtime/lib → nvidia/cuda_cupti/lib.
            dirs.push(up.parent().unwrap_or(up).join("cuda_cupti/lib"));
        }
    }
    for p in mapped {
        let s = p.to_string_lossy();
        if let Some(i) = s.find("/site-packages/") {
            let site = Path::new(&s[..i + "/site-packages".len()]);
            for sub in [
                "nvidia/cuda_cupti/lib",
                "nvidia/cu13/lib",
                "nvidia/cu12/lib",
            ] {
                let d = site.join(sub);
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
            break;
        }
    }
    for d in [
        "/usr/local/cuda/extras/CUPTI/lib64",
        "/usr/local/cuda/targets/x86_64-linux/lib",
        "/usr/local/cuda/lib64",
        "/usr/lib/x86_64-linux-gnu",
    ] {
        dirs.push(PathBuf::from(d));
    }
    let mut found: Vec<(bool, PathBuf)> = Vec::new();
    for dir in &dirs {
        let mut names: Vec<String> = list(dir)
            .into_iter()
            .filter(|n| n.starts_with("libcupti.so"))
            .collect();
        // Versioned sonames before the bare development link.
        names.sort_by_key(|n| (n == "libcupti.so", n.clone()));
        for n in names {
            let matches = want.is_none_or(|w| major(&n) == Some(w) || n == "libcupti.so");
            found.push((!matches, dir.join(n)));
        }
    }
    // Stable: keeps the folder order within "matches" and "does not match".
    found.sort_by_key(|(mismatch, _)| *mismatch);
    for (_, p) in found {
        push(p);
    }
    let sonames: Vec<String> = match want {
        Some(w) => vec![format!("libcupti.so.{w}"), "libcupti.so".into()],
        None => vec![
            "libcupti.so.13".into(),
            "libcupti.so.12".into(),
            "libcupti.so".into(),
        ],
    };
    for s in sonames {
        push(PathBuf::from(s));
    }
    out
}

/// Lists a folder's file names; empty when it cannot be read.
pub fn list_dir(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(paths: &[&str]) -> Vec<PathBuf> {
        let text: String = paths
            .iter()
            .map(|p| format!("7f0000000000-7f0000001000 r-xp 00000000 fd:01 42 {p}\n"))
            .chain(["7ffc0000-7ffc1000 rw-p 00000000 00:00 0 [stack]\n".to_string()])
            .collect();
        mapped_files(&text)
    }

    #[test]
    fn a_mapped_cupti_wins_and_no_driver_is_seen() {
        let m = maps(&["/usr/bin/python3", "/opt/x/libcupti.so.12"]);
        assert!(!has_cuda_driver(&m));
        let c = candidates(&m, None, &|_| vec![]);
        assert_eq!(c[0], PathBuf::from("/opt/x/libcupti.so.12"));
    }

    #[test]
    fn pytorch_cu12_wheels_find_the_cupti_wheel_of_the_same_major() {
        let site = "/venv/lib/python3.12/site-packages";
        let m = maps(&[
            "/usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06",
            &format!("{site}/torch/lib/libtorch_cuda.so"),
            &format!("{site}/nvidia/cuda_runtime/lib/libcudart.so.12"),
        ]);
        assert!(has_cuda_driver(&m));
        let list = |d: &Path| -> Vec<String> {
            match d.to_str().unwrap() {
                x if x == format!("{site}/nvidia/cuda_cupti/lib") => {
                    vec!["libcupti.so.12".into(), "libnvperf_host.so".into()]
                }
                "/usr/local/cuda/extras/CUPTI/lib64" => {
                    vec!["libcupti.so".into(), "libcupti.so.13".into()]
                }
                _ => vec![],
            }
        };
        let c = candidates(&m, None, &list);
        assert_eq!(
            c[0],
            PathBuf::from(format!("{site}/nvidia/cuda_cupti/lib/libcupti.so.12"))
        );
        // The toolkit's unversioned link may still fit; its .so.13 comes after every match.
        let pos = |p: &str| c.iter().position(|x| x == Path::new(p)).unwrap();
        assert!(
            pos("/usr/local/cuda/extras/CUPTI/lib64/libcupti.so")
                < pos("/usr/local/cuda/extras/CUPTI/lib64/libcupti.so.13")
        );
        assert_eq!(c.last().unwrap(), Path::new("libcupti.so"));
    }

    #[test]
    fn cuda13_wheels_keep_cupti_beside_cudart_and_env_comes_second() {
        let lib = "/venv/lib/python3.12/site-packages/nvidia/cu13/lib";
        let m = maps(&[&format!("{lib}/libcudart.so.13")]);
        let list = |d: &Path| -> Vec<String> {
            if d == Path::new(lib) {
                vec!["libcudart.so.13".into(), "libcupti.so.13".into()]
            } else {
                vec![]
            }
        };
        let c = candidates(&m, Some("/custom/libcupti.so"), &list);
        assert_eq!(c[0], PathBuf::from("/custom/libcupti.so"));
        assert_eq!(c[1], PathBuf::from(format!("{lib}/libcupti.so.13")));
    }

    #[test]
    fn toolkit_layout_without_python() {
        let m = maps(&["/usr/local/cuda-12.8/lib64/libcudart.so.12.8.57"]);
        let list = |d: &Path| -> Vec<String> {
            if d == Path::new("/usr/local/cuda-12.8/extras/CUPTI/lib64") {
                vec!["libcupti.so.12".into(), "libcupti.so.2025.1.0".into()]
            } else {
                vec![]
            }
        };
        let c = candidates(&m, None, &list);
        assert_eq!(
            c[0],
            PathBuf::from("/usr/local/cuda-12.8/extras/CUPTI/lib64/libcupti.so.12")
        );
    }
}
