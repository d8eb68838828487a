//! Python function spans (`--probe py:MODULE:QUALNAME`, and the PyTorch, transformers and vLLM
//! packs): the agent's half.
//!
//! The work happens inside the target, in the `python` part of modelprobe's in-process library
//! (`agent/inject/src/python/`): `sys.monitoring` (CPython 3.12+) local events on the selected
//! code objects only, C callbacks, a shared ring. Here: the settings handed to it ([`config`],
//! [`patch_image`] for a library loaded live), the ring's reading end ([`ring`]), and the
//! records turned into spans, probes, stacks and exception events ([`spans`]).
pub mod ring;
pub mod spans;

use modelprobe_common::pyprobe::{config_area, CONFIG_BYTES};

use crate::probes::ProbeSpec;

/// The packs turned on with `packs`: each probes its framework's functions once the framework
/// is imported (nothing while it is not).
pub const PACKS: &[&str] = &["pytorch", "transformers", "vllm"];

/// The config text the library reads (see `modelprobe_common::pyprobe::config`).
///
pub fn config(token: u64, specs: &[ProbeSpec], packs: bool) -> String {
    let mut out = format!("token={token}\n");
    for s in specs {
        if let Some((module, qualname)) = s.python_parts() {
            out.push_str(&format!(
                "probe={module}\t{qualname}\t{}\t{}\n",
                s.args,
                u8::from(s.ret)
            ));
        }
    }
    if packs {
        for p in PACKS {
            out.push_str(&format!("pack={p}\n"));
        }
    }
    out
}

/// A copy of the library image with `config` written into its config area (after the
/// marker), for loading live.
pub fn patch_image(image: &[u8], config: &str) -> Result<Vec<u8>, String> {
    let area = config_area();
    let marker = &area[..16];
    let mut found = image
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(i, _)| i);
    let (Some(at), None) = (found.next(), found.next()) else {
        return Err("the in-process library has no single config area (rebuild it with `cargo xtask build-inject`)".into());
    };
    if config.len() >= CONFIG_BYTES {
        return Err(format!(
            "the Python probe settings take {} bytes; at most {} fit",
            config.len(),
            CONFIG_BYTES - 1
        ));
    }
    let start = at + marker.len();
    if image.len() < start + CONFIG_BYTES
        || image[start..start + CONFIG_BYTES].iter().any(|&b| b != 0)
    {
        return Err("the in-process library's config area is not empty".into());
    }
    let mut out = image.to_vec();
    out[start..start + config.len()].copy_from_slice(config.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines_and_patching() {
        let specs = [
            ProbeSpec::parse("py:app:Model.predict@args=2@ret").unwrap(),
            ProbeSpec::parse("libc.so.6:malloc").unwrap(),
        ];
        let c = config(9, &specs, true);
        assert_eq!(
            c,
            "token=9\nprobe=app\tModel.predict\t2\t1\npack=pytorch\npack=transformers\npack=vllm\n"
        );
        let mut image = vec![7u8; 64];
        image.extend_from_slice(&config_area());
        image.extend_from_slice(&[7u8; 64]);
        let patched = patch_image(&image, "token=1\n").unwrap();
        assert_eq!(&patched[64 + 16..64 + 24], b"token=1\n");
        assert!(patch_image(&patched, "token=2\n").is_err(), "patched twice");
        assert!(patch_image(&[0u8; 100], "x").is_err(), "no area");
    }
}
