//! Parsing `TARGET:SYMBOL[@N]`, and `py:MODULE:QUALNAME[@args[=N]][@ret]` for Python functions.
use crate::{Error, Result};

/// One `--probe` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The text as given.
    pub text: String,
    /// Binary or library: a path, or a file name.
    pub target: String,
    /// Function name or glob.
    pub symbol: String,
    /// Integer arguments to keep, 0..=6 (a Python probe: arguments whose `repr` is kept).
    pub args: u8,
    /// A Python probe keeps its return value's `repr` (`@ret`).
    pub ret: bool,
}

/// The target that marks a Python probe (`py:MODULE:QUALNAME`).
pub const PYTHON_TARGET: &str = "py";

/// Arguments `@args` keeps when it gives no number.
pub const PY_DEFAULT_ARGS: u8 = 3;

impl ProbeSpec {
    /// Parses a spec; errors name what is wrong with it.
    pub fn parse(text: &str) -> Result<ProbeSpec> {
        if let Some(rest) = text.strip_prefix("py:") {
            return Self::parse_python(text, rest);
        }
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "bad --probe {text:?}: {why} (expected TARGET:SYMBOL[@N], e.g. libllama.so:llama_decode@2)"
            ))
        };
        let (target, rest) = text.split_once(':').ok_or_else(|| bad("no ':'"))?;
        if target.is_empty() {
            return Err(bad("empty target"));
        }
        let (symbol, args) = match rest.rsplit_once('@') {
            Some((sym, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u8 = n.parse().map_err(|_| bad("argument count too large"))?;
                if n > 6 {
                    return Err(bad("at most 6 arguments can be captured"));
                }
                (sym, n)
            }
            _ => (rest, 0),
        };
        if symbol.is_empty() {
            return Err(bad("empty symbol"));
        }
        Ok(ProbeSpec {
            text: text.to_string(),
            target: target.to_string(),
            symbol: symbol.to_string(),
            args,
            ret: false,
        })
    }

    fn parse_python(text: &str, rest: &str) -> Result<ProbeSpec> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "bad --probe {text:?}: {why} (expected py:MODULE:QUALNAME[@args[=N]][@ret], e.g. \
                 py:app.model:Model.predict@args=2@ret)"
            ))
        };
        let mut parts = rest.split('@');
        let main = parts.next().unwrap_or_default();
        let (module, qualname) = main
            .split_once(':')
            .ok_or_else(|| bad("no ':' between module and function"))?;
        if module.is_empty() || qualname.is_empty() {
            return Err(bad("empty module or function"));
        }
        let (mut args, mut ret) = (0, false);
        for opt in parts.flat_map(|p| p.split(',')) {
            match opt.split_once('=') {
                None if opt == "args" => args = PY_DEFAULT_ARGS,
                None if opt == "ret" => ret = true,
                Some(("args", n)) => {
                    args = n
                        .parse()
                        .ok()
                        .filter(|n| *n <= 16)
                        .ok_or_else(|| bad("@args=N takes 0 to 16"))?
                }
                _ => return Err(bad(&format!("unknown option {opt:?}"))),
            }
        }
        Ok(ProbeSpec {
            text: text.to_string(),
            target: PYTHON_TARGET.to_string(),
            symbol: main.to_string(),
            args,
            ret,
        })
    }

    /// True for a Python probe (`py:MODULE:QUALNAME`).
    pub fn is_python(&self) -> bool {
        self.target == PYTHON_TARGET
    }

    /// A Python probe's module and qualified name (globs kept).
    pub fn python_parts(&self) -> Option<(&str, &str)> {
        self.is_python()
            .then(|| self.symbol.split_once(':'))
            .flatten()
    }

    /// True when the symbol is a glob.
    pub fn is_glob(&self) -> bool {
        self.symbol.contains(['*', '?'])
    }
}

/// Shell-style match of `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s = ProbeSpec::parse("libllama.so:llama_decode@2").unwrap();
        assert_eq!(
            (s.target.as_str(), s.symbol.as_str(), s.args),
            ("libllama.so", "llama_decode", 2)
        );
        let s = ProbeSpec::parse("/usr/bin/python3.11:PyObject_Call").unwrap();
        assert_eq!((s.target.as_str(), s.args), ("/usr/bin/python3.11", 0));
        let s = ProbeSpec::parse("myserver:handle_*").unwrap();
        assert!(s.is_glob());
        let s = ProbeSpec::parse("app:ns::f").unwrap();
        assert_eq!(s.symbol, "ns::f");
        for bad in ["nocolon", ":sym", "lib:", "lib:f@7", "lib:@2"] {
            let e = ProbeSpec::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("TARGET:SYMBOL"), "{e}");
        }
    }

    #[test]
    fn parses_python_specs() {
        let s = ProbeSpec::parse("py:app.model:Model.predict").unwrap();
        assert!(s.is_python());
        assert_eq!(s.python_parts(), Some(("app.model", "Model.predict")));
        assert_eq!((s.args, s.ret), (0, false));
        let s = ProbeSpec::parse("py:app.*:handle_*@args=2@ret").unwrap();
        assert_eq!((s.args, s.ret), (2, true));
        let s = ProbeSpec::parse("py:app:f@args,ret").unwrap();
        assert_eq!((s.args, s.ret), (PY_DEFAULT_ARGS, true));
        for bad in [
            "py:nocolon",
            "py::f",
            "py:m:",
            "py:m:f@args=99",
            "py:m:f@frames",
        ] {
            let e = ProbeSpec::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("py:MODULE:QUALNAME"), "{e}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("handle_*", "handle_request"));
        assert!(glob_match("*decode*", "llama_decode_impl"));
        assert!(glob_match("f?o", "foo"));
        assert!(!glob_match("handle_*", "xhandle_a"));
        assert!(!glob_match("f?o", "fo"));
        assert!(glob_match("*", ""));
    }
}
