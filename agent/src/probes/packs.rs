//! Built-in probe packs: the CUDA runtime and driver APIs, cuBLAS GEMMs and NCCL collectives,
//! switched on when their library is in the target (mapped, on its library path, or linked
//! into its executable).
//!
//! A pack is a table of functions and how to read their arguments. The kernel side records
//! integer arguments and the return value like any span probe; [`decode`] turns them into span
//! attributes (kernel name, grid and block, bytes and direction) and error events.
use std::collections::BTreeMap;

use modelprobe_common::{memory::heap_fn, tls_fn};
use serde_json::{json, Value};

use super::{function_symbols, resolve_target, ProbeSpec, ResolvedProbe, SearchContext};

/// How a pack function's arguments read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// `cudaLaunchKernel(func, dim3 grid, dim3 block, ...)`: arg0 is the host stub (named by
    /// its symbol), the dim3s arrive as (x | y << 32, z) register pairs.
    RuntimeLaunch,
    /// `cudaLaunchKernelExC(config, func, args)`: arg1 is the host stub.
    RuntimeLaunchEx,
    /// `cuLaunchKernel(f, gx, gy, gz, bx, by, ...)`: a function handle and dims; the kernel is
    /// named from the `GetFunction` call that returned the handle.
    DriverLaunch,
    /// An allocation (`cudaMalloc(void **out, size_t bytes)`, `cuMemAlloc`, `cuMemCreate`):
    /// `args[bytes]` bytes of `space` memory (`device`, `host`, `managed`), the pointer (or
    /// handle) read through `out` (arg0) at return, the calling stack kept: GPU memory by stack.
    Alloc {
        /// Index of the byte count.
        bytes: usize,
        /// `device`, `host` (page-locked) or `managed`.
        space: &'static str,
    },
    /// A free of the pointer (or handle) in `args[n]` (`cudaFree`, `cuMemFree`, `cuMemRelease`).
    Free {
        /// Index of the pointer.
        ptr: usize,
        /// As in [`Decoder::Alloc`].
        space: &'static str,
    },
    /// The C library's allocator (`--memory=malloc`): a `memory::heap_fn` constant; its own
    /// programs sample allocations in the kernel (no span).
    Heap(u64),
    /// `cuModuleGetFunction(CUfunction *out, CUmodule, const char *name)` and
    /// `cuLibraryGetKernel`: the name is read at entry, the handle through `out` at return.
    GetFunction,
    /// A copy of `bytes = args[n]` in direction `args[k]` (a `cudaMemcpyKind`), or implied.
    Copy {
        /// Index of the byte count.
        bytes: usize,
        /// Index of the `cudaMemcpyKind`, or `None` when the function implies it.
        kind: Option<usize>,
        /// The direction when implied.
        implied: &'static str,
    },
    /// A set or an allocation of `args[n]` bytes.
    Bytes(usize),
    /// `llama_decode(ctx, llama_batch batch)` / `llama_encode`: the batch travels on the stack;
    /// its first field, `int32_t n_tokens`, is the low half of stack word 0 (`args[6]`).
    LlamaBatch,
    /// A function whose return value is a count of tokens (`llama_tokenize`).
    TokenCount,
    /// A function whose return value is a token id (`llama_sampler_sample`).
    Token,
    /// A GEMM whose m, n, k are `args[3..6]` (cuBLAS): FLOPs are 2mnk.
    Gemm,
    /// A collective moving `args[count]` elements of NCCL data type `args[dtype]`.
    Collective {
        /// Index of the element count.
        count: usize,
        /// Index of the `ncclDataType_t`.
        dtype: usize,
    },
    /// Nothing to read beyond the call itself (sync, free, graph launch).
    Plain,
    /// An OpenSSL call whose plaintext is captured (a `modelprobe_common::tls_fn` constant):
    /// attached with the TLS programs, not as a span.
    Tls(u64),
}

/// One function of a pack.
#[derive(Debug, Clone, Copy)]
pub struct PackFn {
    /// Symbol name.
    pub name: &'static str,
    /// How to read it.
    pub decoder: Decoder,
    /// Whether it returns a status code (non-zero: an error event) rather than a value.
    pub returns_status: bool,
}

/// A pack: libraries it looks for and the functions it probes in them.
#[derive(Debug)]
pub struct Pack {
    /// Short name (`cuda-runtime`).
    pub name: &'static str,
    /// Library file names, as for `--probe` targets.
    pub libraries: &'static [&'static str],
    /// Functions probed where present.
    pub functions: &'static [PackFn],
    /// How a non-zero return is named (`cudaError_t` or `CUresult`).
    pub error_names: fn(u64) -> &'static str,
    /// Only where the process has the library mapped (or its executable exports the
    /// functions), not where it merely could load it: a library nearly every process could
    /// load (OpenSSL) would otherwise cost every session its probes.
    pub only_mapped: bool,
}

impl PackFn {
    /// Whether its calling stack is kept at entry: runtime and driver calls that queue GPU
    /// work (launches, copies, memsets), whose GPU time the GPU flame graph charges to it.
    pub fn keeps_launch_stack(&self) -> bool {
        matches!(self.decoder, Decoder::Alloc { .. })
            || (self.name.starts_with("cuda") || self.name.starts_with("cu"))
                && ["Launch", "Memcpy", "Memset"]
                    .iter()
                    .any(|w| self.name.contains(w))
    }
}

/// An allocation of `space` memory: `(void **out, size_t bytes, ...)`.
const fn alloc(space: &'static str) -> Decoder {
    Decoder::Alloc { bytes: 1, space }
}

/// A free of `space` memory: `(void *ptr, ...)`.
const fn free(space: &'static str) -> Decoder {
    Decoder::Free { ptr: 0, space }
}

const fn f(name: &'static str, decoder: Decoder) -> PackFn {
    PackFn {
        name,
        decoder,
        returns_status: true,
    }
}

/// A function that returns a value (a count, a token, a pointer), not a status.
const fn value(name: &'static str, decoder: Decoder) -> PackFn {
    PackFn {
        name,
        decoder,
        returns_status: false,
    }
}

const fn copy(bytes: usize, kind: usize) -> Decoder {
    Decoder::Copy {
        bytes,
        kind: Some(kind),
        implied: "",
    }
}

const fn copy_dir(bytes: usize, implied: &'static str) -> Decoder {
    Decoder::Copy {
        bytes,
        kind: None,
        implied,
    }
}

/// The packs that trace GPU work (switched off by `profiling.gpu: false`).
pub const GPU_PACKS: &[&str] = crate::recording::GPU_PACKS;

/// The built-in packs.
pub static PACKS: &[Pack] = &[
    Pack {
        name: "cuda-runtime",
        libraries: &["libcudart.so"],
        functions: &[
            f("cudaLaunchKernel", Decoder::RuntimeLaunch),
            f("cudaLaunchKernelExC", Decoder::RuntimeLaunchEx),
            f("cudaGraphLaunch", Decoder::Plain),
            f("cudaMemcpy", copy(2, 3)),
            f("cudaMemcpyAsync", copy(2, 3)),
            f(
                "cudaMemcpyPeer",
                Decoder::Copy {
                    bytes: 4,
                    kind: None,
                    implied: "DtoD (peer)",
                },
            ),
            f(
                "cudaMemcpyPeerAsync",
                Decoder::Copy {
                    bytes: 4,
                    kind: None,
                    implied: "DtoD (peer)",
                },
            ),
            f("cudaMemset", Decoder::Bytes(2)),
            f("cudaMemsetAsync", Decoder::Bytes(2)),
            f("cudaMalloc", alloc("device")),
            f("cudaMallocHost", alloc("host")),
            f("cudaHostAlloc", alloc("host")),
            f("cudaMallocAsync", alloc("device")),
            f("cudaMallocManaged", alloc("managed")),
            f("cudaFree", free("device")),
            f("cudaFreeHost", free("host")),
            f("cudaFreeAsync", free("device")),
            f("cudaDeviceSynchronize", Decoder::Plain),
            f("cudaStreamSynchronize", Decoder::Plain),
            f("cudaEventSynchronize", Decoder::Plain),
        ],
        error_names: runtime_error_name,
        only_mapped: false,
    },
    Pack {
        name: "cuda-driver",
        libraries: &["libcuda.so"],
        functions: &[
            f("cuLaunchKernel", Decoder::DriverLaunch),
            f("cuModuleGetFunction", Decoder::GetFunction),
            f("cuLibraryGetKernel", Decoder::GetFunction),
            f("cuLaunchKernelEx", Decoder::Plain),
            f("cuGraphLaunch", Decoder::Plain),
            f("cuMemcpyHtoD_v2", copy_dir(2, "HtoD")),
            f("cuMemcpyDtoH_v2", copy_dir(2, "DtoH")),
            f("cuMemcpyDtoD_v2", copy_dir(2, "DtoD")),
            f("cuMemcpyHtoDAsync_v2", copy_dir(2, "HtoD")),
            f("cuMemcpyDtoHAsync_v2", copy_dir(2, "DtoH")),
            f("cuMemcpyDtoDAsync_v2", copy_dir(2, "DtoD")),
            f("cuMemsetD8_v2", Decoder::Bytes(2)),
            f("cuMemAlloc_v2", alloc("device")),
            f("cuMemAllocHost_v2", alloc("host")),
            f("cuMemAllocManaged", alloc("managed")),
            f("cuMemAllocAsync", alloc("device")),
            f("cuMemFree_v2", free("device")),
            f("cuMemFreeHost", free("host")),
            f("cuMemFreeAsync", free("device")),
            // The virtual memory API: physical memory by handle (mapped by cuMemMap).
            f("cuMemCreate", alloc("device")),
            f("cuMemRelease", free("device")),
            f("cuCtxSynchronize", Decoder::Plain),
            f("cuStreamSynchronize", Decoder::Plain),
            f("cuEventSynchronize", Decoder::Plain),
        ],
        error_names: driver_error_name,
        only_mapped: false,
    },
    Pack {
        name: "llama.cpp",
        libraries: &["libllama.so"],
        functions: &[
            f("llama_decode", Decoder::LlamaBatch),
            f("llama_encode", Decoder::LlamaBatch),
            value("llama_tokenize", Decoder::TokenCount),
            value("llama_sampler_sample", Decoder::Token),
            value("llama_model_load_from_file", Decoder::Plain),
            value("llama_load_model_from_file", Decoder::Plain),
            value("llama_init_from_model", Decoder::Plain),
        ],
        error_names: llama_error_name,
        only_mapped: false,
    },
    Pack {
        name: "cublas",
        libraries: &["libcublas.so"],
        functions: &[
            f("cublasSgemm_v2", Decoder::Gemm),
            f("cublasDgemm_v2", Decoder::Gemm),
            f("cublasHgemm", Decoder::Gemm),
            f("cublasGemmEx", Decoder::Gemm),
            f("cublasSgemmStridedBatched", Decoder::Gemm),
            f("cublasHgemmStridedBatched", Decoder::Gemm),
            f("cublasGemmStridedBatchedEx", Decoder::Gemm),
            f("cublasGemmBatchedEx", Decoder::Gemm),
        ],
        error_names: cublas_error_name,
        only_mapped: false,
    },
    Pack {
        name: "cublaslt",
        libraries: &["libcublasLt.so"],
        functions: &[f("cublasLtMatmul", Decoder::Plain)],
        error_names: cublas_error_name,
        only_mapped: false,
    },
    Pack {
        name: "nccl",
        libraries: &["libnccl.so"],
        functions: &[
            f("ncclAllReduce", Decoder::Collective { count: 2, dtype: 3 }),
            f("ncclBroadcast", Decoder::Collective { count: 2, dtype: 3 }),
            f("ncclReduce", Decoder::Collective { count: 2, dtype: 3 }),
            f("ncclAllGather", Decoder::Collective { count: 2, dtype: 3 }),
            f(
                "ncclReduceScatter",
                Decoder::Collective { count: 2, dtype: 3 },
            ),
            f("ncclSend", Decoder::Collective { count: 1, dtype: 2 }),
            f("ncclRecv", Decoder::Collective { count: 1, dtype: 2 }),
            f("ncclGroupEnd", Decoder::Plain),
        ],
        error_names: nccl_error_name,
        only_mapped: false,
    },
    Pack {
        name: OPENSSL_PACK,
        // Python's `_ssl`, curl and most wheels use the system's; Node links it statically
        // (found in the executable).
        libraries: &["libssl.so.3", "libssl.so.1.1", "libssl.so"],
        functions: &[
            value("SSL_write", Decoder::Tls(tls_fn::WRITE)),
            value("SSL_read", Decoder::Tls(tls_fn::READ)),
            value("SSL_write_ex", Decoder::Tls(tls_fn::WRITE_EX)),
            value("SSL_read_ex", Decoder::Tls(tls_fn::READ_EX)),
            value("SSL_free", Decoder::Tls(tls_fn::FREE)),
        ],
        error_names: no_error_name,
        only_mapped: true,
    },
    Pack {
        name: MALLOC_PACK,
        // glibc's; a program that links another allocator (jemalloc, tcmalloc) is seen
        // through its mmap and brk calls only.
        libraries: &["libc.so.6"],
        functions: &[
            value("malloc", Decoder::Heap(heap_fn::MALLOC)),
            value("calloc", Decoder::Heap(heap_fn::CALLOC)),
            value("realloc", Decoder::Heap(heap_fn::REALLOC)),
            value("free", Decoder::Heap(heap_fn::FREE)),
        ],
        error_names: no_error_name,
        // Every dynamically linked program maps it: attached before a launched command runs.
        only_mapped: false,
    },
];

/// The pack that captures TLS plaintext for the LLM calls (`--no-llm` turns it off).
pub const OPENSSL_PACK: &str = "openssl";

/// The pack that samples heap allocations (on only with `--memory=malloc`).
pub const MALLOC_PACK: &str = "malloc";

fn no_error_name(_: u64) -> &'static str {
    ""
}

impl Decoder {
    /// Which argument holds a host code address to name (a kernel's host stub), if any.
    pub fn host_stub_arg(self) -> Option<usize> {
        match self {
            Decoder::RuntimeLaunch => Some(0),
            Decoder::RuntimeLaunchEx => Some(1),
            _ => None,
        }
    }
}

/// Integer arguments a decoder reads.
fn args_needed(d: Decoder) -> u8 {
    match d {
        Decoder::RuntimeLaunch | Decoder::DriverLaunch => 6,
        Decoder::RuntimeLaunchEx => 2,
        Decoder::Copy { bytes, kind, .. } => (bytes.max(kind.unwrap_or(0)) + 1) as u8,
        Decoder::Bytes(n) => n as u8 + 1,
        Decoder::Alloc { bytes, .. } => bytes as u8 + 1,
        Decoder::Free { ptr, .. } => ptr as u8 + 1,
        Decoder::Gemm => 6,
        Decoder::GetFunction => 0,
        Decoder::LlamaBatch => 8,
        Decoder::TokenCount | Decoder::Token => 0,
        Decoder::Collective { count, dtype } => (count.max(dtype) + 1) as u8,
        Decoder::Plain | Decoder::Tls(_) | Decoder::Heap(_) => 0,
    }
}

/// A pack function found in the target, ready to attach.
#[derive(Debug, Clone)]
pub struct PackProbe {
    /// The pack.
    pub pack: &'static str,
    /// The spec it stands for (`libcudart.so:cudaMemcpy@4`).
    pub spec: ProbeSpec,
    /// Where it attaches.
    pub resolved: ResolvedProbe,
}

/// Every pack function present in the target. A pack whose library is absent contributes
/// nothing; functions a library version lacks are skipped. Each file's symbols are read once.
pub fn resolve_packs(ctx: &SearchContext) -> Vec<PackProbe> {
    let mut out = Vec::new();
    let exe_name = ctx
        .exe
        .as_ref()
        .and_then(|e| e.file_name()?.to_str().map(str::to_string));
    let mut symbols_of: std::collections::HashMap<std::path::PathBuf, Vec<super::FunctionSymbol>> =
        std::collections::HashMap::new();
    for pack in PACKS {
        // The library, a wheel's renamed copy of it, or the runtime linked statically into
        // the executable.
        let renamed = ctx.mapped.iter().filter_map(|m| {
            let name = m.file_name()?.to_str()?;
            let is_copy = pack
                .libraries
                .iter()
                .any(|l| library_name_matches(name, l) && !name.starts_with(l));
            is_copy.then(|| name.to_string())
        });
        let targets = pack
            .libraries
            .iter()
            .map(|l| l.to_string())
            .chain(renamed.collect::<Vec<_>>())
            .chain(exe_name.clone());
        for target in targets {
            let probe_target = ProbeSpec {
                text: target.clone(),
                target: target.clone(),
                symbol: String::new(),
                args: 0,
                ret: false,
            };
            let Ok(path) = resolve_target(&probe_target, ctx) else {
                continue;
            };
            let is_exe = ctx
                .exe
                .as_deref()
                .is_some_and(|e| e.file_name() == path.file_name());
            if pack.only_mapped && !is_exe && !ctx.mapped.contains(&path) {
                continue;
            }
            let host_path = ctx.host_path(&path);
            let symbols = symbols_of
                .entry(host_path.clone())
                .or_insert_with(|| function_symbols(&host_path).unwrap_or_default());
            let before = out.len();
            for pf in pack.functions {
                let Some(sym) = symbols.iter().find(|s| s.name == pf.name) else {
                    continue;
                };
                let args = args_needed(pf.decoder);
                out.push(PackProbe {
                    pack: pack.name,
                    spec: ProbeSpec {
                        text: format!("{target}:{}@{args}", pf.name),
                        target: target.clone(),
                        symbol: pf.name.to_string(),
                        args,
                        ret: false,
                    },
                    resolved: ResolvedProbe {
                        target_path: path.clone(),
                        host_path: host_path.clone(),
                        symbol: sym.name.clone(),
                        file_offset: sym.file_offset,
                    },
                });
            }
            if out.len() > before {
                break;
            }
        }
    }
    out
}

/// Whether file `name` is pack library `lib`: itself (`libssl.so.3`), a versioned name
/// (`libssl.so.3.0`), or a wheel's copy renamed by auditwheel (`libssl-a1b2c3d4.so.3`).
pub fn library_name_matches(name: &str, lib: &str) -> bool {
    if name == lib || name.starts_with(&format!("{lib}.")) {
        return true;
    }
    let Some(at) = lib.find(".so") else {
        return false;
    };
    let (stem, suffix) = lib.split_at(at);
    name.strip_prefix(stem)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| rest.contains(suffix))
}

/// The pack function behind a probe, by pack name and function.
pub fn lookup(pack: &str, function: &str) -> Option<(&'static Pack, PackFn)> {
    let p = PACKS.iter().find(|p| p.name == pack)?;
    let f = p.functions.iter().find(|f| f.name == function)?;
    Some((p, *f))
}

fn memcpy_kind(kind: u64) -> &'static str {
    match kind {
        0 => "HtoH",
        1 => "HtoD",
        2 => "DtoH",
        3 => "DtoD",
        4 => "default",
        _ => "unknown",
    }
}

/// Span attributes for a pack call. `symbol` names a host address (the kernel stub).
pub fn decode(
    decoder: Decoder,
    args: &[u64],
    symbol: &mut dyn FnMut(u64) -> Option<String>,
) -> BTreeMap<String, Value> {
    let arg = |i: usize| args.get(i).copied().unwrap_or(0);
    let dims = |xy: u64, z: u64| json!([xy & 0xffff_ffff, xy >> 32, z & 0xffff_ffff]);
    let mut a = BTreeMap::new();
    match decoder {
        Decoder::RuntimeLaunch => {
            let stub = arg(0);
            a.insert(
                "kernel".into(),
                json!(symbol(stub).unwrap_or_else(|| format!("{stub:#x}"))),
            );
            a.insert("grid".into(), dims(arg(1), arg(2)));
            a.insert("block".into(), dims(arg(3), arg(4)));
        }
        Decoder::RuntimeLaunchEx => {
            let stub = arg(1);
            a.insert(
                "kernel".into(),
                json!(symbol(stub).unwrap_or_else(|| format!("{stub:#x}"))),
            );
        }
        Decoder::DriverLaunch => {
            a.insert("function_handle".into(), json!(format!("{:#x}", arg(0))));
            a.insert("grid".into(), json!([arg(1), arg(2), arg(3)]));
            a.insert("block_xy".into(), json!([arg(4), arg(5)]));
        }
        Decoder::Copy {
            bytes,
            kind,
            implied,
        } => {
            a.insert("bytes".into(), json!(arg(bytes)));
            let dir = kind.map_or(implied, |k| memcpy_kind(arg(k)));
            a.insert("direction".into(), json!(dir));
        }
        Decoder::Bytes(n) => {
            a.insert("bytes".into(), json!(arg(n)));
        }
        Decoder::Alloc { bytes, space } => {
            // The pointer comes from the return probe (`handle`, renamed `ptr` by the caller).
            a.insert("bytes".into(), json!(arg(bytes)));
            a.insert("memory".into(), json!("alloc"));
            a.insert("space".into(), json!(space));
        }
        Decoder::Free { ptr, space } => {
            a.insert("ptr".into(), json!(format!("{:#x}", arg(ptr))));
            a.insert("memory".into(), json!("free"));
            a.insert("space".into(), json!(space));
        }
        Decoder::LlamaBatch => {
            let n = arg(6) & 0xffff_ffff;
            a.insert("n_tokens".into(), json!(n));
            a.insert(
                "phase".into(),
                json!(if n > 1 { "prefill" } else { "decode" }),
            );
        }
        Decoder::TokenCount | Decoder::Token | Decoder::GetFunction | Decoder::Heap(_) => {}
        Decoder::Gemm => {
            // int m, n, k: the low 32 bits of their registers.
            let (m, n, k) = (
                arg(3) & 0xffff_ffff,
                arg(4) & 0xffff_ffff,
                arg(5) & 0xffff_ffff,
            );
            a.insert("m".into(), json!(m));
            a.insert("n".into(), json!(n));
            a.insert("k".into(), json!(k));
            a.insert("flops".into(), json!(2 * m * n * k));
        }
        Decoder::Collective { count, dtype } => {
            let (name, size) = nccl_type(arg(dtype) & 0xffff_ffff);
            a.insert("count".into(), json!(arg(count)));
            a.insert("dtype".into(), json!(name));
            if size > 0 {
                a.insert("bytes".into(), json!(arg(count) * size));
            }
        }
        Decoder::Plain | Decoder::Tls(_) => {}
    }
    a
}

/// Name and element size of an `ncclDataType_t`.
fn nccl_type(t: u64) -> (&'static str, u64) {
    match t {
        0 => ("int8", 1),
        1 => ("uint8", 1),
        2 => ("int32", 4),
        3 => ("uint32", 4),
        4 => ("int64", 8),
        5 => ("uint64", 8),
        6 => ("float16", 2),
        7 => ("float32", 4),
        8 => ("float64", 8),
        9 => ("bfloat16", 2),
        10 => ("float8e4m3", 1),
        11 => ("float8e5m2", 1),
        _ => ("unknown", 0),
    }
}

fn llama_error_name(code: u64) -> &'static str {
    // llama_decode: 1 = no KV slot for the batch, 2 = aborted, negative = error.
    match code {
        1 => "no KV cache slot",
        2 => "aborted",
        _ => "llama error",
    }
}

fn cublas_error_name(code: u64) -> &'static str {
    match code {
        1 => "CUBLAS_STATUS_NOT_INITIALIZED",
        3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE",
        8 => "CUBLAS_STATUS_ARCH_MISMATCH",
        11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED",
        14 => "CUBLAS_STATUS_INTERNAL_ERROR",
        15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        _ => "cublasStatus_t",
    }
}

fn nccl_error_name(code: u64) -> &'static str {
    match code {
        1 => "ncclUnhandledCudaError",
        2 => "ncclSystemError",
        3 => "ncclInternalError",
        4 => "ncclInvalidArgument",
        5 => "ncclInvalidUsage",
        6 => "ncclRemoteError",
        7 => "ncclInProgress",
        _ => "ncclResult_t",
    }
}

fn runtime_error_name(code: u64) -> &'static str {
    match code {
        1 => "cudaErrorInvalidValue",
        2 => "cudaErrorMemoryAllocation",
        3 => "cudaErrorInitializationError",
        4 => "cudaErrorCudartUnloading",
        98 => "cudaErrorInvalidDeviceFunction",
        100 => "cudaErrorNoDevice",
        101 => "cudaErrorInvalidDevice",
        209 => "cudaErrorNoKernelImageForDevice",
        400 => "cudaErrorInvalidResourceHandle",
        700 => "cudaErrorIllegalAddress",
        701 => "cudaErrorLaunchOutOfResources",
        702 => "cudaErrorLaunchTimeout",
        719 => "cudaErrorLaunchFailure",
        _ => "cudaError",
    }
}

fn driver_error_name(code: u64) -> &'static str {
    match code {
        1 => "CUDA_ERROR_INVALID_VALUE",
        2 => "CUDA_ERROR_OUT_OF_MEMORY",
        3 => "CUDA_ERROR_NOT_INITIALIZED",
        100 => "CUDA_ERROR_NO_DEVICE",
        101 => "CUDA_ERROR_INVALID_DEVICE",
        201 => "CUDA_ERROR_INVALID_CONTEXT",
        400 => "CUDA_ERROR_INVALID_HANDLE",
        500 => "CUDA_ERROR_NOT_FOUND",
        700 => "CUDA_ERROR_ILLEGAL_ADDRESS",
        701 => "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        719 => "CUDA_ERROR_LAUNCH_FAILED",
        _ => "CUresult",
    }
}

/// The error name of a non-zero return of a pack function (the API returns a 32-bit enum).
pub fn error_name(pack: &Pack, ret: u64) -> &'static str {
    (pack.error_names)(ret & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_match_versions_and_wheel_copies() {
        assert!(library_name_matches("libssl.so.3", "libssl.so.3"));
        assert!(library_name_matches("libssl.so.3.0", "libssl.so.3"));
        assert!(library_name_matches("libssl-a1b2c3d4.so.3", "libssl.so.3"));
        assert!(library_name_matches(
            "libcudart-d6e8f4a1.so.12",
            "libcudart.so"
        ));
        assert!(!library_name_matches(
            "libssl-a1b2c3d4.so.1.1",
            "libssl.so.3"
        ));
        assert!(!library_name_matches("libssl3.so", "libssl.so.3"));
        assert!(!library_name_matches("libsslx.so.3", "libssl.so.3"));
    }

    #[test]
    fn decodes_launches_and_copies() {
        let mut names = |addr: u64| (addr == 0x1000).then(|| "vectorAdd(float*, int)".to_string());
        let launch = decode(
            Decoder::RuntimeLaunch,
            &[0x1000, (1 << 32) | 256, 1, (1 << 32) | 128, 1, 0],
            &mut names,
        );
        assert_eq!(launch["kernel"], json!("vectorAdd(float*, int)"));
        assert_eq!(launch["grid"], json!([256, 1, 1]));
        assert_eq!(launch["block"], json!([128, 1, 1]));
        let unnamed = decode(Decoder::RuntimeLaunch, &[0x2000, 0, 0, 0, 0, 0], &mut names);
        assert_eq!(unnamed["kernel"], json!("0x2000"));
        let (_, memcpy) = lookup("cuda-runtime", "cudaMemcpy").unwrap();
        let copy = decode(memcpy.decoder, &[0, 0, 4096, 2], &mut names);
        assert_eq!(
            (copy["bytes"].clone(), copy["direction"].clone()),
            (json!(4096), json!("DtoH"))
        );
        let (_, htod) = lookup("cuda-driver", "cuMemcpyHtoD_v2").unwrap();
        assert_eq!(
            decode(htod.decoder, &[0, 0, 8], &mut names)["direction"],
            json!("HtoD")
        );
        assert_eq!(args_needed(memcpy.decoder), 4);
        let (_, gemm) = lookup("cublas", "cublasSgemm_v2").unwrap();
        let g = decode(
            gemm.decoder,
            &[0, 0, 0, 0xffff_ffff_0000_0040, 32, 16],
            &mut names,
        );
        assert_eq!(
            (g["m"].clone(), g["n"].clone(), g["k"].clone()),
            (json!(64), json!(32), json!(16))
        );
        assert_eq!(g["flops"], json!(2 * 64 * 32 * 16));
        let (_, ar) = lookup("nccl", "ncclAllReduce").unwrap();
        let c = decode(ar.decoder, &[0, 0, 1000, 9], &mut names);
        assert_eq!(
            (c["dtype"].clone(), c["bytes"].clone()),
            (json!("bfloat16"), json!(2000))
        );
        let (pack, _) = lookup("cuda-runtime", "cudaFree").unwrap();
        assert_eq!(error_name(pack, 1), "cudaErrorInvalidValue");
        assert_eq!(
            error_name(pack, 0xffff_ffff_0000_0002),
            "cudaErrorMemoryAllocation"
        );
    }
}
