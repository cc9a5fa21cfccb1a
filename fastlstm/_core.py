"""The C++ kernels, at the best ISA level this CPU runs.

The kernels are built once per ISA level, each into its own extension module
``fastlstm._core_<level>`` (x86-64: ``baseline`` (SSE2), ``avx2`` (x86-64-v3: AVX2 + FMA),
``avx512`` (x86-64-v4: AVX-512 F/BW/DQ/VL); aarch64: ``neon``). At import this module picks the
highest level that was compiled and that the CPU and OS support (``fastlstm._cpu`` asks the
CPU), or the one the environment variable ``FASTLSTM_ISA`` names, and re-exports that module's
functions: the rest of the package only ever sees ``fastlstm._core``. Results are bitwise the
same for any thread count within one level; across levels they agree to float32 round-off
(only some levels have FMA).
"""
import importlib
import importlib.util
import os

from fastlstm import _cpu

LEVELS = tuple(_cpu.levels())  # this architecture's levels, lowest first
SUPPORTED = tuple(_cpu.supported())  # those the running CPU and OS support
COMPILED = tuple(level for level in LEVELS if importlib.util.find_spec(f"fastlstm._core_{level}") is not None)


def _choose(forced, compiled, supported):
    """The level to import: `forced` (FASTLSTM_ISA's value, "" for none) if this build has it
    and the CPU runs it (else a clear ImportError), otherwise the best of both."""
    usable = [level for level in compiled if level in supported]
    if forced:
        name = forced.strip().lower()
        if name not in LEVELS:
            raise ImportError(f"FASTLSTM_ISA={forced!r} is not an ISA level of this architecture; "
                              f"choose one of {', '.join(LEVELS)} (or unset it for the best supported)")
        if name not in supported:
            raise ImportError(f"FASTLSTM_ISA={forced!r}: this CPU does not support the {name} level "
                              f"(it supports {', '.join(supported)})")
        if name not in compiled:
            raise ImportError(f"FASTLSTM_ISA={forced!r}: this build of fastlstm has no {name} kernels "
                              f"(compiled: {', '.join(compiled) or 'none'})")
        return name
    if not usable:
        raise ImportError(f"fastlstm has no kernels this CPU can run: compiled {', '.join(compiled) or 'none'}, "
                          f"the CPU supports {', '.join(supported)}; reinstall it (pip install fastlstm)")
    return usable[-1]


ACTIVE = _choose(os.environ.get("FASTLSTM_ISA", ""), COMPILED, SUPPORTED)
_kernels = importlib.import_module(f"fastlstm._core_{ACTIVE}")
globals().update({name: getattr(_kernels, name) for name in dir(_kernels) if not name.startswith("__")})


def cpu_info():
    """The kernels' ISA levels and threads: a dict with ``compiled`` (the levels this build
    has, lowest first), ``supported`` (the levels this CPU and OS run), ``active`` (the one in
    use: the best of both, or ``FASTLSTM_ISA``'s), ``vector_floats`` (floats per vector in
    its products) and ``threads`` (``fastlstm.get_num_threads()``)."""
    return {"compiled": list(COMPILED), "supported": list(SUPPORTED), "active": ACTIVE,
            "vector_floats": _kernels.build_info()["vector_floats"], "threads": _kernels.get_num_threads()}
