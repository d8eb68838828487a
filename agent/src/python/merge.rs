//! Python frames merged into the native stack they ran on.
//!
//! Each call of the interpreter's eval loop (`_PyEval_EvalFrameDefault`) runs a run of Python
//! frames: one before 3.11, since then every Python-to-Python call made inside it (the
//! frames' entry flags and, from 3.12, the shim frame pushed at each entry say where one
//! call's run ends). Walking both stacks from the innermost, each eval-loop frame is replaced
//! by its run, so that C code called from Python (a numpy or torch operator) sits under the
//! Python line that called it and Python called back from C sits above that C code. Runs left
//! when the native stack has no more eval frames (a native walk cut short) go at the root,
//! innermost first: Python frames are never dropped.
use modelprobe_common::python::frame;

use super::PyFrameName;

/// True for the native function that evaluates Python frames.
pub fn is_eval_frame(name: &str) -> bool {
    // `.cold` parts that GCC splits off are the same function.
    name == "_PyEval_EvalFrameDefault" || name.starts_with("_PyEval_EvalFrameDefault.")
}

/// The Python frames split into the runs of each eval-loop call, innermost first; shim frames
/// end a run and are dropped.
pub fn runs(python: &[PyFrameName]) -> Vec<Vec<&PyFrameName>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for f in python {
        if f.flags & frame::SHIM != 0 {
            if !run.is_empty() {
                runs.push(std::mem::take(&mut run));
            }
            continue;
        }
        run.push(f);
        if f.flags & frame::ENTRY != 0 {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// Merges `native` (groups of frame ids, one group per address, innermost address first,
/// each with whether it is an eval-loop frame) with the Python frames of the same stack;
/// `python_id` turns a Python frame into a frame id. Returns groups in the same order.
pub fn merge<T>(
    native: Vec<(Vec<T>, bool)>,
    python: &[PyFrameName],
    mut python_id: impl FnMut(&PyFrameName) -> T,
) -> Vec<Vec<T>> {
    let mut runs = runs(python).into_iter();
    let mut out = Vec::with_capacity(native.len() + python.len());
    for (group, eval) in native {
        if eval {
            if let Some(run) = runs.next() {
                out.extend(run.into_iter().map(|f| vec![python_id(f)]));
                continue;
            }
        }
        out.push(group);
    }
    for run in runs {
        out.extend(run.into_iter().map(|f| vec![python_id(f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(name: &str, flags: u32) -> PyFrameName {
        PyFrameName {
            name: name.into(),
            file: "app.py".into(),
            line: Some(1),
            flags,
        }
    }

    fn merged(native: &[&str], python: &[PyFrameName]) -> Vec<String> {
        let groups = native
            .iter()
            .map(|n| (vec![n.to_string()], is_eval_frame(n)))
            .collect();
        merge(groups, python, |f| f.name.clone())
            .into_iter()
            .flatten()
            .collect()
    }

    #[test]
    fn before_311_each_eval_frame_is_one_python_frame() {
        let python = [py("leaf", frame::ENTRY), py("main", frame::ENTRY)];
        let native = [
            "dgemm_kernel",
            "_PyEval_EvalFrameDefault",
            "_PyFunction_Vectorcall",
            "_PyEval_EvalFrameDefault",
            "main",
        ];
        assert_eq!(
            merged(&native, &python),
            [
                "dgemm_kernel",
                "leaf",
                "_PyFunction_Vectorcall",
                "main",
                "main"
            ]
        );
    }

    #[test]
    fn from_312_shims_split_runs_and_c_code_stays_between() {
        // sorted(key=lambda) called from f, called from the module: two eval calls.
        let python = [
            py("<lambda>", 0),
            py("", frame::SHIM),
            py("f", 0),
            py("<module>", 0),
            py("", frame::SHIM),
        ];
        let native = [
            "_PyEval_EvalFrameDefault",
            "builtin_sorted",
            "_PyEval_EvalFrameDefault",
            "Py_RunMain",
        ];
        assert_eq!(
            merged(&native, &python),
            ["<lambda>", "builtin_sorted", "f", "<module>", "Py_RunMain"]
        );
    }

    #[test]
    fn on_311_entry_flags_end_runs() {
        let python = [
            py("inner", frame::ENTRY),
            py("f", 0),
            py("<module>", frame::ENTRY),
        ];
        let runs = runs(&python);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].len(), 2);
    }

    #[test]
    fn python_frames_without_eval_frames_go_at_the_root() {
        let python = [py("f", frame::ENTRY), py("<module>", frame::ENTRY)];
        let native = ["time_sleep", "_PyEval_EvalFrameDefault"];
        assert_eq!(merged(&native, &python), ["time_sleep", "f", "<module>"]);
        assert_eq!(merged(&native, &[]), native);
    }
}
