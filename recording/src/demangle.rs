//! C++ names as people read them.

/// A C++ mangled name demangled (`_Z9vectorAddPfi` -> `vectorAdd(float*, int)`), or as is:
/// for names that do not come through the symbolizer (kernel names from the CUDA pack and
/// CUPTI), so the CPU and GPU sides name a kernel the same way.
pub fn demangle(name: &str) -> String {
    cpp_demangle::Symbol::new(name)
        .ok()
        .map(|s| s.to_string())
        .unwrap_or_else(|| name.to_string())
}
