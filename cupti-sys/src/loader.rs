//! Opening libcupti at run time and resolving the functions modelprobe calls.
//!
//! Symbols are looked up by the `CuptiLib` loader bindgen generated from the CUDA 13 headers (a
//! superset of the 12.x functions); each pointer is then copied into [`Functions`], whose field
//! types must equal the generated ones for this file to compile, so the signatures below are
//! checked against the headers.
use std::{
    ffi::{c_char, c_void, CStr, OsStr},
    num::NonZeroU32,
    path::PathBuf,
};

use crate::{
    layout::{Layout, UnsupportedVersion, DECODED_KINDS},
    types::{
        CUcontext, CUptiResult, CUpti_Activity, CUpti_ActivityAttribute, CUpti_ActivityConfig,
        CUpti_ActivityKind, CUpti_BuffersCallbackCompleteFunc,
        CUpti_BuffersCallbackCompleteFunc_v2, CUpti_BuffersCallbackRequestFunc,
        CUpti_BuffersCallbackRequestFunc_v2, CUpti_CallbackDomain, CUpti_CallbackFunc,
        CUpti_CallbackId, CUpti_ExternalCorrelationKind, CUpti_SubscriberHandle,
        CUpti_SubscriberParams, CUpti_TimestampCallbackFunc,
    },
    v13,
};

/// A CUPTI call that did not return `CUPTI_SUCCESS`. A newtype over the raw code, so codes
/// from a newer CUPTI stay representable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("CUPTI error {} ({})", .0, self.name().unwrap_or("a code newer than modelprobe"))]
pub struct CuptiError(NonZeroU32);

impl CuptiError {
    /// `Ok` for `CUPTI_SUCCESS`, the error otherwise.
    pub fn check(result: CUptiResult) -> Result<(), CuptiError> {
        match NonZeroU32::new(result.0) {
            None => Ok(()),
            Some(code) => Err(CuptiError(code)),
        }
    }

    /// The raw `CUptiResult`.
    pub fn code(self) -> u32 {
        self.0.get()
    }

    /// The `CUptiResult` constant's name, for the codes the headers knew.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 48] = [
            "CUPTI_SUCCESS",
            "CUPTI_ERROR_INVALID_PARAMETER",
            "CUPTI_ERROR_INVALID_DEVICE",
            "CUPTI_ERROR_INVALID_CONTEXT",
            "CUPTI_ERROR_INVALID_EVENT_DOMAIN_ID",
            "CUPTI_ERROR_INVALID_EVENT_ID",
            "CUPTI_ERROR_INVALID_EVENT_NAME",
            "CUPTI_ERROR_INVALID_OPERATION",
            "CUPTI_ERROR_OUT_OF_MEMORY",
            "CUPTI_ERROR_HARDWARE",
            "CUPTI_ERROR_PARAMETER_SIZE_NOT_SUFFICIENT",
            "CUPTI_ERROR_API_NOT_IMPLEMENTED",
            "CUPTI_ERROR_MAX_LIMIT_REACHED",
            "CUPTI_ERROR_NOT_READY",
            "CUPTI_ERROR_NOT_COMPATIBLE",
            "CUPTI_ERROR_NOT_INITIALIZED",
            "CUPTI_ERROR_INVALID_METRIC_ID",
            "CUPTI_ERROR_INVALID_METRIC_NAME",
            "CUPTI_ERROR_QUEUE_EMPTY",
            "CUPTI_ERROR_INVALID_HANDLE",
            "CUPTI_ERROR_INVALID_STREAM",
            "CUPTI_ERROR_INVALID_KIND",
            "CUPTI_ERROR_INVALID_EVENT_VALUE",
            "CUPTI_ERROR_DISABLED",
            "CUPTI_ERROR_INVALID_MODULE",
            "CUPTI_ERROR_INVALID_METRIC_VALUE",
            "CUPTI_ERROR_HARDWARE_BUSY",
            "CUPTI_ERROR_NOT_SUPPORTED",
            "CUPTI_ERROR_UM_PROFILING_NOT_SUPPORTED",
            "CUPTI_ERROR_UM_PROFILING_NOT_SUPPORTED_ON_DEVICE",
            "CUPTI_ERROR_UM_PROFILING_NOT_SUPPORTED_ON_NON_P2P_DEVICES",
            "CUPTI_ERROR_UM_PROFILING_NOT_SUPPORTED_WITH_MPS",
            "CUPTI_ERROR_CDP_TRACING_NOT_SUPPORTED",
            "CUPTI_ERROR_VIRTUALIZED_DEVICE_NOT_SUPPORTED",
            "CUPTI_ERROR_CUDA_COMPILER_NOT_COMPATIBLE",
            "CUPTI_ERROR_INSUFFICIENT_PRIVILEGES",
            "CUPTI_ERROR_OLD_PROFILER_API_INITIALIZED",
            "CUPTI_ERROR_OPENACC_UNDEFINED_ROUTINE",
            "CUPTI_ERROR_LEGACY_PROFILER_NOT_SUPPORTED",
            "CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED",
            "CUPTI_ERROR_VIRTUALIZED_DEVICE_INSUFFICIENT_PRIVILEGES",
            "CUPTI_ERROR_CONFIDENTIAL_COMPUTING_NOT_SUPPORTED",
            "CUPTI_ERROR_CMP_DEVICE_NOT_SUPPORTED",
            "CUPTI_ERROR_MIG_DEVICE_NOT_SUPPORTED",
            "CUPTI_ERROR_SLI_DEVICE_NOT_SUPPORTED",
            "CUPTI_ERROR_WSL_DEVICE_NOT_SUPPORTED",
            "CUPTI_ERROR_INVALID_CHIP_NAME",
            "CUPTI_ERROR_HES_TRACE_NOT_SUPPORTED_ON_MPS",
        ];
        let code = self.code();
        if code == CUptiResult::CUPTI_ERROR_UNKNOWN.0 {
            return Some("CUPTI_ERROR_UNKNOWN");
        }
        NAMES.get(usize::try_from(code).ok()?).copied()
    }
}

impl std::fmt::Debug for CuptiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CuptiError({}", self.code())?;
        if let Some(name) = self.name() {
            write!(f, " {name}")?;
        }
        write!(f, ")")
    }
}

/// Why libcupti could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The dynamic loader could not open the file.
    #[error("cannot load libcupti from {path}: {source}")]
    Open {
        /// The path given to [`Cupti::load`].
        path: PathBuf,
        /// What the dynamic loader said.
        #[source]
        source: libloading::Error,
    },
    /// The library lacks a function every supported CUPTI has.
    #[error("{path} has no {symbol}: it is not libcupti, or one older than CUDA 12")]
    MissingSymbol {
        /// The path given to [`Cupti::load`].
        path: PathBuf,
        /// The missing function.
        symbol: &'static str,
    },
    /// The CUDA driver cannot be loaded, so CUPTI cannot work (and CUPTI 13.2 crashes trying).
    #[error(
        "no CUDA driver on this machine ({source}); libcupti at {path} cannot work without it"
    )]
    NoDriver {
        /// The path given to [`Cupti::load`].
        path: PathBuf,
        /// What the dynamic loader said about libcuda.so.1.
        #[source]
        source: libloading::Error,
    },
    /// `cuptiGetVersion` failed.
    #[error("cuptiGetVersion failed in {path}: {source}")]
    Version {
        /// The path given to [`Cupti::load`].
        path: PathBuf,
        /// The CUPTI error.
        #[source]
        source: CuptiError,
    },
}

/// Why the records of a loaded CUPTI cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A version outside the layout table.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedVersion),
    /// `cuptiActivityGetStructSize` disagrees with the layout table.
    #[error("CUPTI API version {version} writes {cupti}-byte records of activity kind {kind}, the layout table says {table:?}: cupti-sys/src/layout.rs needs updating")]
    SizeMismatch {
        /// The API version.
        version: u32,
        /// The raw `CUpti_ActivityKind`.
        kind: u32,
        /// What CUPTI reports.
        cupti: usize,
        /// What the table has.
        table: Option<usize>,
    },
}

macro_rules! functions {
    (
        required { $( $(#[$rm:meta])* $rname:ident = $rsym:ident ( $($rarg:ty),* ); )* }
        optional { $( $(#[$om:meta])* $oname:ident = $osym:ident ( $($oarg:ty),* ); )* }
    ) => {
        /// The CUPTI functions modelprobe calls, resolved from the loaded library. The pointers
        /// are valid while the [`Cupti`] they came from is alive (see [`Cupti::leak`]).
        /// Optional ones are `None` in releases that lack them.
        #[derive(Clone, Copy)]
        pub struct Functions {
            $( $(#[$rm])* pub $rname: unsafe extern "C" fn($($rarg),*) -> CUptiResult, )*
            $( $(#[$om])* pub $oname: Option<unsafe extern "C" fn($($oarg),*) -> CUptiResult>, )*
        }

        impl Functions {
            /// Copies the pointers out of the generated loader; the first missing required
            /// function is the error.
            fn resolve(lib: &v13::CuptiLib) -> Result<Functions, &'static str> {
                Ok(Functions {
                    $( $rname: *lib.$rsym.as_ref().map_err(|_| stringify!($rsym))?, )*
                    $( $oname: lib.$osym.as_ref().ok().copied(), )*
                })
            }
        }

        impl std::fmt::Debug for Functions {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut list = f.debug_list();
                $( list.entry(&stringify!($rsym)); )*
                $( if self.$oname.is_some() { list.entry(&stringify!($osym)); } )*
                list.finish()
            }
        }
    };
}

functions! {
    required {
        /// `cuptiGetVersion`
        get_version = cuptiGetVersion(*mut u32);
        /// `cuptiGetResultString`
        get_result_string = cuptiGetResultString(CUptiResult, *mut *const c_char);
        /// `cuptiGetTimestamp`
        get_timestamp = cuptiGetTimestamp(*mut u64);
        /// `cuptiFinalize`
        finalize = cuptiFinalize();
        /// `cuptiSubscribe`
        subscribe = cuptiSubscribe(*mut CUpti_SubscriberHandle, CUpti_CallbackFunc, *mut c_void);
        /// `cuptiUnsubscribe`
        unsubscribe = cuptiUnsubscribe(CUpti_SubscriberHandle);
        /// `cuptiEnableCallback`
        enable_callback = cuptiEnableCallback(
            u32, CUpti_SubscriberHandle, CUpti_CallbackDomain, CUpti_CallbackId
        );
        /// `cuptiEnableDomain`
        enable_domain = cuptiEnableDomain(u32, CUpti_SubscriberHandle, CUpti_CallbackDomain);
        /// `cuptiActivityEnable`
        activity_enable = cuptiActivityEnable(CUpti_ActivityKind);
        /// `cuptiActivityDisable`
        activity_disable = cuptiActivityDisable(CUpti_ActivityKind);
        /// `cuptiActivityRegisterCallbacks`
        activity_register_callbacks = cuptiActivityRegisterCallbacks(
            CUpti_BuffersCallbackRequestFunc, CUpti_BuffersCallbackCompleteFunc
        );
        /// `cuptiActivityFlushAll`
        activity_flush_all = cuptiActivityFlushAll(u32);
        /// `cuptiActivityGetNextRecord`
        activity_get_next_record = cuptiActivityGetNextRecord(
            *mut u8, usize, *mut *mut CUpti_Activity
        );
        /// `cuptiActivityGetNumDroppedRecords`
        activity_get_num_dropped_records = cuptiActivityGetNumDroppedRecords(
            CUcontext, u32, *mut usize
        );
    }
    optional {
        /// `cuptiGetLastError`
        get_last_error = cuptiGetLastError();
        /// `cuptiGetCallbackName` (names a cbid)
        get_callback_name = cuptiGetCallbackName(CUpti_CallbackDomain, u32, *mut *const c_char);
        /// `cuptiActivityFlush`
        activity_flush = cuptiActivityFlush(CUcontext, u32, u32);
        /// `cuptiActivitySetAttribute` (buffer sizes, flush period, ...)
        activity_set_attribute = cuptiActivitySetAttribute(
            CUpti_ActivityAttribute, *mut usize, *mut c_void
        );
        /// `cuptiActivityRegisterTimestampCallback` (records stamped by our own clock)
        activity_register_timestamp_callback = cuptiActivityRegisterTimestampCallback(
            CUpti_TimestampCallbackFunc
        );
        /// `cuptiActivityPushExternalCorrelationId`
        activity_push_external_correlation_id = cuptiActivityPushExternalCorrelationId(
            CUpti_ExternalCorrelationKind, u64
        );
        /// `cuptiActivityPopExternalCorrelationId`
        activity_pop_external_correlation_id = cuptiActivityPopExternalCorrelationId(
            CUpti_ExternalCorrelationKind, *mut u64
        );
        /// `cuptiActivityGetStructSize` (CUDA 13.2+)
        activity_get_struct_size = cuptiActivityGetStructSize(CUpti_ActivityKind, u32, *mut usize);
        /// `cuptiSubscribe_v2`: subscribing alongside other tools (CUDA 13.0+)
        subscribe_v2 = cuptiSubscribe_v2(
            *mut CUpti_SubscriberHandle, CUpti_CallbackFunc, *mut c_void,
            *mut CUpti_SubscriberParams
        );
        /// `cuptiGetTimestamp_v2` (CUDA 13.3+)
        get_timestamp_v2 = cuptiGetTimestamp_v2(CUpti_SubscriberHandle, *mut u64);
        /// `cuptiActivityEnable_v2` (CUDA 13.2+)
        activity_enable_v2 = cuptiActivityEnable_v2(
            CUpti_SubscriberHandle, CUpti_ActivityKind, *mut CUpti_ActivityConfig
        );
        /// `cuptiActivityDisable_v2` (CUDA 13.2+)
        activity_disable_v2 = cuptiActivityDisable_v2(
            CUpti_SubscriberHandle, CUpti_ActivityKind, *mut CUpti_ActivityConfig
        );
        /// `cuptiActivityRegisterCallbacks_v2` (CUDA 13.2+)
        activity_register_callbacks_v2 = cuptiActivityRegisterCallbacks_v2(
            CUpti_SubscriberHandle, CUpti_BuffersCallbackRequestFunc_v2,
            CUpti_BuffersCallbackCompleteFunc_v2
        );
        /// `cuptiActivityGetNextRecord_v2` (CUDA 13.3+)
        activity_get_next_record_v2 = cuptiActivityGetNextRecord_v2(
            CUpti_SubscriberHandle, *mut u8, usize, *mut *mut CUpti_Activity
        );
        /// `cuptiActivityGetNumDroppedRecords_v2` (CUDA 13.3+)
        activity_get_num_dropped_records_v2 = cuptiActivityGetNumDroppedRecords_v2(
            CUpti_SubscriberHandle, CUcontext, u32, *mut usize
        );
        /// `cuptiActivitySetAttribute_v2` (CUDA 13.2+)
        activity_set_attribute_v2 = cuptiActivitySetAttribute_v2(
            CUpti_SubscriberHandle, CUpti_ActivityAttribute, *mut usize, *mut c_void
        );
        /// `cuptiActivityPushExternalCorrelationId_v2` (CUDA 13.3+)
        activity_push_external_correlation_id_v2 = cuptiActivityPushExternalCorrelationId_v2(
            CUpti_SubscriberHandle, CUpti_ExternalCorrelationKind, u64
        );
        /// `cuptiActivityPopExternalCorrelationId_v2` (CUDA 13.3+)
        activity_pop_external_correlation_id_v2 = cuptiActivityPopExternalCorrelationId_v2(
            CUpti_SubscriberHandle, CUpti_ExternalCorrelationKind, *mut u64
        );
    }
}

/// An opened libcupti.
pub struct Cupti {
    /// The generated loader; owns the library handle, so the pointers in `functions` stay
    /// valid as long as `self` does.
    _lib: v13::CuptiLib,
    /// libcuda.so.1, held open while CUPTI may use it.
    _driver: libloading::Library,
    functions: Functions,
    version: u32,
    path: PathBuf,
}

impl std::fmt::Debug for Cupti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cupti")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("functions", &self.functions)
            .finish()
    }
}

impl Cupti {
    /// Opens libcupti at `path` (a path, or a bare name the dynamic loader searches for, such
    /// as `libcupti.so.13`), resolves its functions and asks its API version.
    ///
    /// Opening runs the library's initializers, as any `dlopen` does; CUPTI's do not start
    /// tracing. The CUDA driver (`libcuda.so.1`) must be loadable, and is opened first: without
    /// it `cuptiGetVersion` fails in CUPTI 13.3+ and recurses until the stack overflows in
    /// CUPTI 13.2 (seen with the 13.2.23 and 13.2.86 wheels), so a process without CUDA gets
    /// [`LoadError::NoDriver`] instead. Inside a CUDA process (where the injection library
    /// runs) the driver is already loaded and this costs nothing.
    pub fn load(path: impl AsRef<OsStr>) -> Result<Cupti, LoadError> {
        let path_buf = PathBuf::from(path.as_ref());
        // SAFETY: dlopen of a library whose initializers we trust to be CUPTI's (the caller
        // chose the file); the symbols are then looked up by name only, not called.
        let lib =
            unsafe { v13::CuptiLib::new(path.as_ref()) }.map_err(|source| LoadError::Open {
                path: path_buf.clone(),
                source,
            })?;
        let functions = Functions::resolve(&lib).map_err(|symbol| LoadError::MissingSymbol {
            path: path_buf.clone(),
            symbol,
        })?;
        // SAFETY: the CUDA driver's initializers; in the processes CUPTI serves it is already
        // loaded, and elsewhere this is the check that keeps CUPTI from crashing without it.
        let driver = unsafe { libloading::Library::new("libcuda.so.1") }.map_err(|source| {
            LoadError::NoDriver {
                path: path_buf.clone(),
                source,
            }
        })?;
        let mut version = 0u32;
        // SAFETY: cuptiGetVersion writes one u32 through a valid pointer; it needs no CUDA
        // context and no prior CUPTI call.
        let result = unsafe { (functions.get_version)(&mut version) };
        CuptiError::check(result).map_err(|source| LoadError::Version {
            path: path_buf.clone(),
            source,
        })?;
        Ok(Cupti {
            _lib: lib,
            _driver: driver,
            functions,
            version,
            path: path_buf,
        })
    }

    /// The CUPTI API version (`cuptiGetVersion`): 18 to 28 for CUDA 12.x, `xxyyzz` (130000 for
    /// 13.0) from CUDA 13 on.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The path this library was loaded from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The resolved functions. Calling them is `unsafe`: see the CUPTI documentation of each.
    pub fn functions(&self) -> &Functions {
        &self.functions
    }

    /// The record layout of this release, checked against `cuptiActivityGetStructSize` where
    /// the library has it (CUDA 13.2+). A CUDA 13 release newer than this crate knows is
    /// accepted only when that function reports unchanged record sizes.
    pub fn layout(&self) -> Result<Layout, LayoutError> {
        let Ok(layout) = Layout::for_api_version(self.version) else {
            return Ok(Layout::newest_if_sizes_match(self.version, |kind| {
                self.struct_size(kind)
            })?);
        };
        for kind in DECODED_KINDS {
            if let Some(size) = self.struct_size(kind) {
                if Some(size) != layout.record_size(kind) {
                    return Err(LayoutError::SizeMismatch {
                        version: self.version,
                        kind: kind.0,
                        cupti: size,
                        table: layout.record_size(kind),
                    });
                }
            }
        }
        Ok(layout)
    }

    /// `cuptiActivityGetStructSize` for the running version, where the library has it.
    pub fn struct_size(&self, kind: CUpti_ActivityKind) -> Option<usize> {
        let f = self.functions.activity_get_struct_size?;
        let mut size = 0usize;
        // SAFETY: writes one usize through a valid pointer; version 0 means "this release".
        CuptiError::check(unsafe { f(kind, 0, &mut size) }).ok()?;
        Some(size)
    }

    /// CUPTI's timestamp now, in ns (`cuptiGetTimestamp`).
    pub fn timestamp(&self) -> Result<u64, CuptiError> {
        let mut ts = 0u64;
        // SAFETY: writes one u64 through a valid pointer.
        CuptiError::check(unsafe { (self.functions.get_timestamp)(&mut ts) })?;
        Ok(ts)
    }

    /// CUPTI's description of an error (`cuptiGetResultString`).
    pub fn error_string(&self, error: CuptiError) -> Option<String> {
        let mut s: *const c_char = std::ptr::null();
        // SAFETY: writes one pointer through a valid pointer.
        let result =
            unsafe { (self.functions.get_result_string)(CUptiResult(error.code()), &mut s) };
        if CuptiError::check(result).is_err() || s.is_null() {
            return None;
        }
        // SAFETY: on success CUPTI points `s` at a static NUL-terminated string.
        Some(unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
    }

    /// Keeps the library loaded for the rest of the process. CUPTI calls back into the
    /// registered functions from its own threads, so unloading it while anything is
    /// subscribed or enabled would crash the process; an injection library leaks it.
    pub fn leak(self) -> &'static Cupti {
        Box::leak(Box::new(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_a_missing_file_says_which_file() {
        let err = Cupti::load("/nonexistent/libcupti.so.13").unwrap_err();
        assert!(matches!(err, LoadError::Open { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot load libcupti from /nonexistent/libcupti.so.13: "),
            "{msg}"
        );
        assert!(msg.contains("No such file"), "{msg}");
    }

    #[test]
    fn loading_a_library_that_is_not_cupti_names_the_missing_function() {
        // libc is present everywhere and has none of CUPTI's symbols.
        let err = Cupti::load("libc.so.6").unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::MissingSymbol {
                    symbol: "cuptiGetVersion",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("it is not libcupti"), "{err}");
    }

    #[test]
    fn a_loaded_cupti_can_be_shared_with_cupti_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Cupti>();
        shareable::<crate::Activity>();
    }

    #[test]
    fn error_codes_keep_unknown_values() {
        assert_eq!(CuptiError::check(CUptiResult::CUPTI_SUCCESS), Ok(()));
        let e = CuptiError::check(CUptiResult::CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED)
            .unwrap_err();
        assert_eq!(e.code(), 39);
        assert_eq!(
            e.to_string(),
            "CUPTI error 39 (CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED)"
        );
        let newer = CuptiError::check(CUptiResult(4242)).unwrap_err();
        assert_eq!(newer.code(), 4242);
        assert_eq!(newer.name(), None);
        assert_eq!(
            CuptiError::check(CUptiResult::CUPTI_ERROR_UNKNOWN)
                .unwrap_err()
                .name(),
            Some("CUPTI_ERROR_UNKNOWN")
        );
    }

    #[test]
    fn error_names_match_the_header_values() {
        for (code, name) in [
            (
                CUptiResult::CUPTI_ERROR_NOT_INITIALIZED,
                "CUPTI_ERROR_NOT_INITIALIZED",
            ),
            (
                CUptiResult::CUPTI_ERROR_INVALID_KIND,
                "CUPTI_ERROR_INVALID_KIND",
            ),
            (
                CUptiResult::CUPTI_ERROR_HES_TRACE_NOT_SUPPORTED_ON_MPS,
                "CUPTI_ERROR_HES_TRACE_NOT_SUPPORTED_ON_MPS",
            ),
        ] {
            assert_eq!(CuptiError::check(code).unwrap_err().name(), Some(name));
        }
    }
}

/// Real libraries, when named: `CUPTI_SYS_TEST_LIBS=/a/libcupti.so.12:/b/libcupti.so.13`
/// (the `nvidia-cuda-cupti` wheels carry them). Without a CUDA driver each must be refused with
/// [`LoadError::NoDriver`], without crashing; with one, its version must have a layout that
/// agrees with `cuptiActivityGetStructSize`. Skipped when the variable is unset.
#[cfg(test)]
mod real {
    use super::*;

    #[test]
    fn real_libraries_load_or_are_refused_cleanly() {
        let Some(list) = std::env::var_os("CUPTI_SYS_TEST_LIBS") else {
            eprintln!("skipped: set CUPTI_SYS_TEST_LIBS to libcupti paths to check them");
            return;
        };
        // SAFETY: the CUDA driver's initializers, when it is installed.
        let has_driver = unsafe { libloading::Library::new("libcuda.so.1") }.is_ok();
        for path in std::env::split_paths(&list) {
            let cupti = match Cupti::load(&path) {
                Err(e @ LoadError::NoDriver { .. }) if !has_driver => {
                    eprintln!("{}: refused as it should be: {e}", path.display());
                    continue;
                }
                Err(e) => panic!("{e}"),
                Ok(cupti) => cupti,
            };
            let layout = cupti
                .layout()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let sizes: Vec<_> = DECODED_KINDS
                .iter()
                .map(|&k| (k.0, cupti.struct_size(k)))
                .collect();
            eprintln!(
                "{}: version {}, {layout:?}, struct sizes from CUPTI {sizes:?}",
                path.display(),
                cupti.version(),
            );
            for (kind, size) in sizes {
                if let Some(size) = size {
                    assert_eq!(
                        Some(size),
                        layout.record_size(CUpti_ActivityKind(kind)),
                        "{} kind {kind}",
                        path.display()
                    );
                }
            }
        }
    }
}
