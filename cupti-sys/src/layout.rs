//! Which record struct a CUPTI release writes for each activity kind.
//!
//! CUPTI always fills the newest version of a record struct that it knows, and the version
//! changes between releases (`CUpti_ActivityKernel9` in CUDA 12.x, `Kernel10` to `Kernel13`
//! across CUDA 13.x), so a record can only be read once the loaded library's API version
//! (`cuptiGetVersion`) is known. The table below was read off the `cupti_activity.h` of every
//! `nvidia-cuda-cupti(-cu12)` wheel from 12.0.146 to 13.5.25: the struct a release writes is the
//! one its header documents as current (older ones move to `cupti_activity_deprecated.h`).
//!
//! | CUPTI API version       | CUDA       | kernel   | memcpy  | memset  | synchronization |
//! |-------------------------|------------|----------|---------|---------|-----------------|
//! | 18..=25                 | 12.0–12.6  | Kernel9  | Memcpy5 | Memset4 | Synchronization |
//! | 26..=99                 | 12.8–12.9  | Kernel9  | Memcpy6 | Memset4 | Synchronization2|
//! | 130000..=130099         | 13.0       | Kernel10 | Memcpy6 | Memset4 | Synchronization2|
//! | 130100..=130299         | 13.1–13.2  | Kernel11 | Memcpy6 | Memset4 | Synchronization2|
//! | 130300..=130399         | 13.3       | Kernel12 | Memcpy6 | Memset4 | Synchronization2|
//! | 130400..=130599         | 13.4–13.5  | Kernel13 | Memcpy7 | Memset5 | Synchronization2|
//!
//! The other kinds modelprobe reads use one struct throughout: `MemcpyPtoP4` (MEMCPY2), `API`
//! (RUNTIME, DRIVER), `Marker2` (MARKER) and `ExternalCorrelation`. Newer struct versions only
//! append fields, so the fields decoded here sit at the same offsets in every version; what
//! changes is the record size. API version 18 is also what CUDA 11.8 reports; CUDA 11 is not
//! supported (its kernel records are `Kernel8`).
use std::mem::size_of;

use crate::{types::CUpti_ActivityKind as Kind, v12, v13};

/// First CUPTI API version of CUDA 12.0.
const FIRST_12: u32 = 18;
/// First API version with `Memcpy6` and `Synchronization2` (CUDA 12.8).
const FIRST_12_8: u32 = 26;
/// CUDA 13 and later number API versions `xxyyzz` (major, minor, CUPTI update).
const FIRST_13: u32 = 130_000;
/// Newest API version whose headers this crate was generated from or checked against: 13.5.
const NEWEST_KNOWN: u32 = 130_599;

/// Version of the kernel record (`CUpti_ActivityKernelN`) a release writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelRecord {
    /// `CUpti_ActivityKernel9`, CUDA 12.x.
    V9,
    /// `CUpti_ActivityKernel10`, CUDA 13.0.
    V10,
    /// `CUpti_ActivityKernel11`, CUDA 13.1 and 13.2.
    V11,
    /// `CUpti_ActivityKernel12`, CUDA 13.3.
    V12,
    /// `CUpti_ActivityKernel13`, CUDA 13.4 and later.
    V13,
}

/// Version of the memcpy record (`CUpti_ActivityMemcpyN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemcpyRecord {
    /// `CUpti_ActivityMemcpy5`, CUDA 12.0 to 12.6.
    V5,
    /// `CUpti_ActivityMemcpy6`, CUDA 12.8 to 13.3.
    V6,
    /// `CUpti_ActivityMemcpy7`, CUDA 13.4 and later.
    V7,
}

/// Version of the memset record (`CUpti_ActivityMemsetN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemsetRecord {
    /// `CUpti_ActivityMemset4`, CUDA 12.0 to 13.3.
    V4,
    /// `CUpti_ActivityMemset5`, CUDA 13.4 and later.
    V5,
}

/// Version of the synchronization record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRecord {
    /// `CUpti_ActivitySynchronization`, CUDA 12.0 to 12.6.
    V1,
    /// `CUpti_ActivitySynchronization2`, CUDA 12.8 and later.
    V2,
}

/// The record structs one CUPTI release writes, chosen from its API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The CUPTI API version this layout was chosen for (`cuptiGetVersion`).
    pub api_version: u32,
    /// Kernel records (KERNEL and CONCURRENT_KERNEL).
    pub kernel: KernelRecord,
    /// Memcpy records (MEMCPY).
    pub memcpy: MemcpyRecord,
    /// Memset records (MEMSET).
    pub memset: MemsetRecord,
    /// Synchronization records (SYNCHRONIZATION).
    pub synchronization: SyncRecord,
}

/// A CUPTI API version this crate has no record layouts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("CUPTI API version {version} ({}) is not supported: modelprobe reads CUPTI from CUDA 12.0 to 13.5", describe_version(*.version))]
pub struct UnsupportedVersion {
    /// The API version `cuptiGetVersion` reported.
    pub version: u32,
}

/// "CUDA 13.2" for 130200, "CUDA 12.x" for 20, "CUDA 11 or older" for 15.
pub fn describe_version(version: u32) -> String {
    match version {
        0..FIRST_12 => "CUDA 11 or older".to_string(),
        FIRST_12..=99 => "CUDA 12.x".to_string(),
        FIRST_13.. => format!("CUDA {}.{}", version / 10_000, version / 100 % 100),
        _ => "not a CUPTI API version".to_string(),
    }
}

impl Layout {
    /// The layout of the release that reports `api_version`, or an error for releases older
    /// than CUDA 12.0 or newer than the newest headers this crate knows (13.5): a newer release
    /// may have grown its records, and reading a kernel name through a pointer at the wrong
    /// offset would crash the traced process. [`Layout::newest_if_sizes_match`] accepts a newer
    /// release whose records provably kept their size.
    pub fn for_api_version(api_version: u32) -> Result<Layout, UnsupportedVersion> {
        let (kernel, memcpy, memset, synchronization) = match api_version {
            FIRST_12..FIRST_12_8 => (
                KernelRecord::V9,
                MemcpyRecord::V5,
                MemsetRecord::V4,
                SyncRecord::V1,
            ),
            FIRST_12_8..=99 => (
                KernelRecord::V9,
                MemcpyRecord::V6,
                MemsetRecord::V4,
                SyncRecord::V2,
            ),
            FIRST_13..130_100 => (
                KernelRecord::V10,
                MemcpyRecord::V6,
                MemsetRecord::V4,
                SyncRecord::V2,
            ),
            130_100..130_300 => (
                KernelRecord::V11,
                MemcpyRecord::V6,
                MemsetRecord::V4,
                SyncRecord::V2,
            ),
            130_300..130_400 => (
                KernelRecord::V12,
                MemcpyRecord::V6,
                MemsetRecord::V4,
                SyncRecord::V2,
            ),
            130_400..=NEWEST_KNOWN => (
                KernelRecord::V13,
                MemcpyRecord::V7,
                MemsetRecord::V5,
                SyncRecord::V2,
            ),
            version => return Err(UnsupportedVersion { version }),
        };
        Ok(Layout {
            api_version,
            kernel,
            memcpy,
            memset,
            synchronization,
        })
    }

    /// For a CUDA 13 release newer than the newest known one: the newest known layout, if
    /// `struct_size` (CUPTI's `cuptiActivityGetStructSize` for the loaded library) reports the
    /// same size for every kind this crate decodes. Structs only ever grow by appending
    /// fields, so an unchanged size means an unchanged struct.
    pub fn newest_if_sizes_match(
        api_version: u32,
        mut struct_size: impl FnMut(Kind) -> Option<usize>,
    ) -> Result<Layout, UnsupportedVersion> {
        if let Ok(layout) = Layout::for_api_version(api_version) {
            return Ok(layout);
        }
        if !(NEWEST_KNOWN..200_000).contains(&api_version) {
            return Err(UnsupportedVersion {
                version: api_version,
            });
        }
        let newest = Layout {
            api_version,
            ..Layout::for_api_version(NEWEST_KNOWN).expect("the newest known version has a layout")
        };
        for kind in DECODED_KINDS {
            if struct_size(kind) != newest.record_size(kind) {
                return Err(UnsupportedVersion {
                    version: api_version,
                });
            }
        }
        Ok(newest)
    }

    /// Size in bytes of the record this release writes for `kind`, for the kinds decoded here.
    pub fn record_size(&self, kind: Kind) -> Option<usize> {
        Some(match kind {
            Kind::CUPTI_ACTIVITY_KIND_KERNEL | Kind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL => {
                match self.kernel {
                    KernelRecord::V9 => size_of::<v12::CUpti_ActivityKernel9>(),
                    KernelRecord::V10 => size_of::<v13::CUpti_ActivityKernel10>(),
                    KernelRecord::V11 => size_of::<v13::CUpti_ActivityKernel11>(),
                    KernelRecord::V12 => size_of::<v13::CUpti_ActivityKernel12>(),
                    KernelRecord::V13 => size_of::<v13::CUpti_ActivityKernel13>(),
                }
            }
            Kind::CUPTI_ACTIVITY_KIND_MEMCPY => match self.memcpy {
                MemcpyRecord::V5 => size_of::<v12::CUpti_ActivityMemcpy5>(),
                MemcpyRecord::V6 => size_of::<v13::CUpti_ActivityMemcpy6>(),
                MemcpyRecord::V7 => size_of::<v13::CUpti_ActivityMemcpy7>(),
            },
            Kind::CUPTI_ACTIVITY_KIND_MEMCPY2 => size_of::<v13::CUpti_ActivityMemcpyPtoP4>(),
            Kind::CUPTI_ACTIVITY_KIND_MEMSET => match self.memset {
                MemsetRecord::V4 => size_of::<v13::CUpti_ActivityMemset4>(),
                MemsetRecord::V5 => size_of::<v13::CUpti_ActivityMemset5>(),
            },
            Kind::CUPTI_ACTIVITY_KIND_SYNCHRONIZATION => match self.synchronization {
                SyncRecord::V1 => size_of::<v12::CUpti_ActivitySynchronization>(),
                SyncRecord::V2 => size_of::<v13::CUpti_ActivitySynchronization2>(),
            },
            Kind::CUPTI_ACTIVITY_KIND_RUNTIME | Kind::CUPTI_ACTIVITY_KIND_DRIVER => {
                size_of::<v13::CUpti_ActivityAPI>()
            }
            Kind::CUPTI_ACTIVITY_KIND_MARKER => size_of::<v13::CUpti_ActivityMarker2>(),
            Kind::CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION => {
                size_of::<v13::CUpti_ActivityExternalCorrelation>()
            }
            _ => return None,
        })
    }
}

/// The activity kinds [`crate::decode_record`] turns into something other than
/// [`crate::Activity::Other`].
pub const DECODED_KINDS: [Kind; 10] = [
    Kind::CUPTI_ACTIVITY_KIND_KERNEL,
    Kind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
    Kind::CUPTI_ACTIVITY_KIND_MEMCPY,
    Kind::CUPTI_ACTIVITY_KIND_MEMCPY2,
    Kind::CUPTI_ACTIVITY_KIND_MEMSET,
    Kind::CUPTI_ACTIVITY_KIND_SYNCHRONIZATION,
    Kind::CUPTI_ACTIVITY_KIND_RUNTIME,
    Kind::CUPTI_ACTIVITY_KIND_DRIVER,
    Kind::CUPTI_ACTIVITY_KIND_MARKER,
    Kind::CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_the_structs_their_headers_document() {
        let l = |v| Layout::for_api_version(v).unwrap();
        assert_eq!(l(18).kernel, KernelRecord::V9);
        assert_eq!(l(24).memcpy, MemcpyRecord::V5);
        assert_eq!(l(24).synchronization, SyncRecord::V1);
        assert_eq!(l(26).memcpy, MemcpyRecord::V6);
        assert_eq!(l(28).synchronization, SyncRecord::V2);
        assert_eq!(l(130_000).kernel, KernelRecord::V10);
        assert_eq!(l(130_001).kernel, KernelRecord::V10);
        assert_eq!(l(130_101).kernel, KernelRecord::V11);
        assert_eq!(l(130_202).kernel, KernelRecord::V11);
        assert_eq!(l(130_301).kernel, KernelRecord::V12);
        assert_eq!(l(130_300).memset, MemsetRecord::V4);
        let newest = l(130_500);
        assert_eq!(
            (newest.kernel, newest.memcpy, newest.memset),
            (KernelRecord::V13, MemcpyRecord::V7, MemsetRecord::V5)
        );
    }

    #[test]
    fn unknown_versions_are_refused_with_a_readable_reason() {
        for v in [0, 15, 17, 100, 129_999, 130_600, 140_000] {
            assert!(Layout::for_api_version(v).is_err(), "{v}");
        }
        let msg = Layout::for_api_version(17).unwrap_err().to_string();
        assert!(msg.contains("CUDA 11 or older"), "{msg}");
        let msg = Layout::for_api_version(130_600).unwrap_err().to_string();
        assert!(msg.contains("CUDA 13.6"), "{msg}");
    }

    #[test]
    fn a_newer_release_is_accepted_only_when_its_record_sizes_match() {
        let newest = Layout::for_api_version(130_500).unwrap();
        let same = |k| newest.record_size(k);
        assert_eq!(
            Layout::newest_if_sizes_match(130_600, same).unwrap().kernel,
            KernelRecord::V13
        );
        let grown = |k| {
            newest.record_size(k).map(|s| {
                if k == Kind::CUPTI_ACTIVITY_KIND_KERNEL {
                    s + 8
                } else {
                    s
                }
            })
        };
        assert!(Layout::newest_if_sizes_match(130_600, grown).is_err());
        assert!(Layout::newest_if_sizes_match(200_000, same).is_err());
    }

    #[test]
    fn record_sizes_are_those_of_the_headers() {
        let old = Layout::for_api_version(20).unwrap();
        let new = Layout::for_api_version(130_500).unwrap();
        let k = Kind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
        assert_eq!(old.record_size(k), Some(208));
        assert_eq!(new.record_size(k), Some(248));
        assert_eq!(old.record_size(Kind::CUPTI_ACTIVITY_KIND_MEMCPY), Some(88));
        assert_eq!(new.record_size(Kind::CUPTI_ACTIVITY_KIND_MEMCPY), Some(112));
        assert_eq!(new.record_size(Kind::CUPTI_ACTIVITY_KIND_MEMCPY2), Some(96));
        assert_eq!(
            old.record_size(Kind::CUPTI_ACTIVITY_KIND_SYNCHRONIZATION),
            Some(40)
        );
        assert_eq!(new.record_size(Kind::CUPTI_ACTIVITY_KIND_RUNTIME), Some(40));
        assert_eq!(new.record_size(Kind::CUPTI_ACTIVITY_KIND_MARKER), Some(56));
        assert_eq!(new.record_size(Kind::CUPTI_ACTIVITY_KIND_NAME), None);
    }
}
