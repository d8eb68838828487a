# modelprobe's Python probes: set up and removed by the in-process library, with the GIL held,
# in a namespace of their own (never a module of the host). The callbacks are C functions
# (_mp_start and friends); this code only decides which code objects get local events.
#
# Globals given by the library: _mp_config (the agent's config text), the callbacks, and
# _mp_register / _mp_set_label. Results: _mp_tool (the sys.monitoring tool id), _mp_error.
import sys

# Nothing imported that the interpreter has not loaded already (no `fnmatch`, `re`): setting
# up must disturb the host as little as possible, its allocator's state included.
_external = sys.modules["_frozen_importlib_external"]

_M = sys.monitoring
_E = _M.events
_LOCAL = _E.PY_START | _E.PY_RESUME | _E.PY_RETURN | _E.PY_YIELD
_GLOBAL = _E.PY_UNWIND | _E.PY_THROW
_PACK_TORCH, _PACK_OTHER = 32, 64
_RET_NONE, _RET_REPR, _RET_LEN = 0, 1, 2
_CO_NEWLOCALS = 2

# Built-in packs: (module, qualname, keep args, return value, flags, argument names whose
# length is kept). Token counts: encode's result, decode's `token_ids`.
_PACKS = {
    "pytorch": [("torch.nn.modules.module", "Module._call_impl", 0, _RET_NONE, _PACK_TORCH, ())],
    "transformers": [
        ("transformers.generation.utils", "GenerationMixin.generate", 0, _RET_NONE, _PACK_OTHER, ()),
        ("transformers.tokenization_utils_base", "PreTrainedTokenizerBase.encode", 0, _RET_LEN, _PACK_OTHER, ()),
        ("transformers.tokenization_utils_base", "PreTrainedTokenizerBase.decode", 0, _RET_NONE, _PACK_OTHER, ("token_ids",)),
        ("transformers.tokenization_utils_base", "PreTrainedTokenizerBase.batch_decode", 0, _RET_LEN, _PACK_OTHER, ()),
    ],
    "vllm": [
        ("vllm.engine.llm_engine", "LLMEngine.step", 0, _RET_LEN, _PACK_OTHER, ()),
        ("vllm.v1.engine.core", "EngineCore.step", 0, _RET_NONE, _PACK_OTHER, ()),
        ("vllm.core.scheduler", "Scheduler.schedule", 0, _RET_NONE, _PACK_OTHER, ()),
        ("vllm.v1.core.sched.scheduler", "Scheduler.schedule", 0, _RET_NONE, _PACK_OTHER, ()),
    ],
}

_specs = []      # (module glob, qualname glob, args, ret, flags, names kept by length)
_probed = {}     # id(code) -> code, every code object with local events
_active = False
_tool = None
_names = {}      # PyTorch: id(module) -> path from the first module called above it


def _config():
    for line in _mp_config.splitlines():
        key, _, value = line.partition("=")
        if key == "probe":
            module, qual, nargs, ret = value.split("\t")
            _specs.append((module, qual, int(nargs), int(ret), 0, ()))
        elif key == "pack":
            _specs.extend(_PACKS.get(value, ()))


def fnmatchcase(text, pattern):
    """Shell-style `*` and `?` matching, case-sensitive (what `fnmatch.fnmatchcase` does for
    these two, without importing `re`)."""
    t, p, star, mark = 0, 0, -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]):
            t, p = t + 1, p + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, t, p + 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            t = mark
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _wanted(name):
    return any(fnmatchcase(name, s[0]) for s in _specs)


def _unwrap(obj):
    seen = 0
    while hasattr(obj, "__wrapped__") and seen < 16:
        obj = obj.__wrapped__
        seen += 1
    return obj


def _functions(obj, name, seen):
    """Functions defined in module `name` reachable from `obj` (a module or class)."""
    try:
        items = list(vars(obj).values())
    except TypeError:
        return
    for v in items:
        if isinstance(v, (staticmethod, classmethod)):
            v = v.__func__
        if isinstance(v, property):
            for f in (v.fget, v.fset, v.fdel):
                if f is not None:
                    yield from _functions_of(f, name, seen)
            continue
        if isinstance(v, type):
            if id(v) not in seen and getattr(v, "__module__", None) == name:
                seen.add(id(v))
                yield from _functions(v, name, seen)
            continue
        yield from _functions_of(v, name, seen)


def _functions_of(f, name, seen):
    f = _unwrap(f)
    code = getattr(f, "__code__", None)
    if code is None or id(code) in seen or getattr(f, "__module__", None) != name:
        return
    seen.add(id(code))
    yield from _nested(code, seen)


def _nested(code, seen):
    yield code
    for c in code.co_consts:
        if hasattr(c, "co_qualname") and id(c) not in seen:
            seen.add(id(c))
            yield from _nested(c, seen)


def _probe_module(module):
    """Sets probes on the functions a loaded module defines."""
    name = getattr(module, "__name__", None)
    if isinstance(name, str):
        _probe_matching(name, lambda: _functions(module, name, set()))


def _probe_code(code, name):
    """Sets probes on the functions of a module's code before it runs (every function's code
    object is a constant of the module's or its class bodies')."""
    # Not the module's own code nor class bodies: functions have their own locals.
    _probe_matching(
        name, lambda: (c for c in _nested(code, set()) if c.co_flags & _CO_NEWLOCALS)
    )


def _probe_matching(name, codes):
    """Probes each of `codes()` (walked only when a spec names module `name`) that a spec's
    qualified name matches."""
    specs = [s for s in _specs if fnmatchcase(name, s[0])]
    if not specs:
        return
    for code in codes():
        for spec in specs:
            if fnmatchcase(code.co_qualname, spec[1]):
                _probe(code, name, spec)
                break


def _mp_main(code):
    """The main script's code, about to run (from the `exec` audit event)."""
    if _active and code.co_name == "<module>":
        _probe_code(code, "__main__")


def _probe(code, module, spec):
    if id(code) in _probed:
        return
    _, _, nargs, ret, flags, by_length = spec
    params = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    if by_length:
        names, by_len = tuple(n for n in by_length if n in params), 1
    else:
        names, by_len = tuple(params[:nargs]), 0
    _mp_register(code, module, names, ret, flags, by_len)
    _M.set_local_events(_tool, code, _LOCAL)
    _probed[id(code)] = code
    if flags & _PACK_TORCH:
        _mp_set_label(_label)


def _label(module):
    """`model.layers.3.self_attn (LlamaAttention)`: the path from the outermost module called
    first, and the class."""
    key = id(module)
    path = _names.get(key)
    if path is None:
        try:
            for sub_path, sub in module.named_modules():
                _names.setdefault(id(sub), sub_path)
        except Exception:
            pass
        path = _names.get(key, "")
    cls = type(module).__name__
    return "%s (%s)" % (path, cls) if path else cls


_PLAIN_LOADERS = (_external.SourceFileLoader, _external.SourcelessFileLoader)


class _Loader:
    """Runs a module as its own loader would, then sets probes on its functions."""

    def __init__(self, inner):
        self._mp_inner = inner

    def create_module(self, spec):
        return self._mp_inner.create_module(spec)

    def exec_module(self, module):
        inner = self._mp_inner
        if _active and type(inner) in _PLAIN_LOADERS:
            # What their exec_module does, with probes set before the module's code runs (so
            # calls made while it is imported count too).
            code = inner.get_code(module.__name__)
            if code is None:
                raise ImportError("cannot load module %r" % module.__name__)
            try:
                _probe_code(code, module.__name__)
            except Exception:
                pass
            exec(code, module.__dict__)
            return
        inner.exec_module(module)
        if _active:
            try:
                _probe_module(module)
            except Exception:
                pass

    def __getattr__(self, name):
        return getattr(self._mp_inner, name)


class _Finder:
    """Picks up modules named by a probe when they are imported after the probes were set."""

    _busy = set()

    def find_spec(self, name, path=None, target=None):
        if not _active or name in self._busy or not _wanted(name):
            return None
        self._busy.add(name)
        try:
            for finder in sys.meta_path:
                if finder is self:
                    continue
                find = getattr(finder, "find_spec", None)
                spec = find(name, path, target) if find else None
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.discard(name)
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader)
        return spec


_finder = _Finder()


def _mp_setup():
    global _tool, _active
    if hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled():
        raise RuntimeError(
            "free-threaded CPython with the GIL off is not supported (the callbacks rely on it)"
        )
    _config()
    for tool in (4, 3, 2, 5):
        if _M.get_tool(tool) is None:
            _M.use_tool_id(tool, "modelprobe")
            _tool = tool
            break
    else:
        raise RuntimeError(
            "every sys.monitoring tool id is taken (%s)"
            % ", ".join("%d: %s" % (i, _M.get_tool(i)) for i in range(6))
        )
    _M.register_callback(_tool, _E.PY_START, _mp_start)
    _M.register_callback(_tool, _E.PY_RESUME, _mp_resume)
    _M.register_callback(_tool, _E.PY_THROW, _mp_resume)
    _M.register_callback(_tool, _E.PY_RETURN, _mp_return)
    _M.register_callback(_tool, _E.PY_YIELD, _mp_yield)
    _M.register_callback(_tool, _E.PY_UNWIND, _mp_unwind)
    _M.set_events(_tool, _GLOBAL)
    _active = True
    for module in list(sys.modules.values()):
        try:
            _probe_module(module)
        except Exception:
            pass
    sys.meta_path.insert(0, _finder)
    import atexit

    atexit.register(_mp_exit)
    return _tool


def _mp_teardown():
    global _active
    if not _active:
        return
    _active = False
    try:
        sys.meta_path.remove(_finder)
    except ValueError:
        pass
    for code in _probed.values():
        _M.set_local_events(_tool, code, 0)
    _M.set_events(_tool, 0)
    for event in (_E.PY_START, _E.PY_RESUME, _E.PY_THROW, _E.PY_RETURN, _E.PY_YIELD, _E.PY_UNWIND):
        _M.register_callback(_tool, event, None)
    _M.free_tool_id(_tool)
    import atexit

    atexit.unregister(_mp_exit)
    _probed.clear()
    _names.clear()
