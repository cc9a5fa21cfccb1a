"""ISA levels: which kernels are built and chosen, that each level's objects hold only its
own instructions, and that the levels agree. The whole suite also runs at every level the CI
machine supports (.ci/run sets FASTLSTM_ISA)."""
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastlstm
from fastlstm import _core

X86 = platform.machine().lower() in ("x86_64", "amd64")
WIDTH = {"baseline": 4, "avx2": 8, "avx512": 16, "neon": 4}


def cpuinfo_levels():
    """The x86-64 levels this CPU supports, read from the kernel's /proc/cpuinfo flags
    (independent of fastlstm._cpu, which asks CPUID)."""
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    levels = ["baseline"]
    if {"avx2", "fma", "bmi1", "bmi2", "popcnt", "sse4_2"} <= flags:
        levels.append("avx2")
        if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags:
            levels.append("avx512")
    return levels


def run(args, **env):
    """A fresh interpreter, outside the checkout (its source folder fastlstm/ has no built
    kernels and would shadow the installed package)."""
    return subprocess.run([sys.executable, *args], env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=600, cwd=tempfile.gettempdir())


def run_at(level, code):
    """Runs `code` with FASTLSTM_ISA=level; its stdout's last line as JSON."""
    out = run(["-c", code], FASTLSTM_ISA=level)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_info_lists_every_level_built_and_the_cpus():
    info = fastlstm.cpu_info()
    assert set(info) == {"compiled", "supported", "active", "vector_floats", "threads"}
    if X86:  # a default build has all three levels; FASTLSTM_LEVELS (at build and test time) fewer
        built = {level for level in os.environ.get("FASTLSTM_LEVELS", "").split(";") if level}
        want = [level for level in _core.LEVELS if level in built] or ["baseline", "avx2", "avx512"]
        assert info["compiled"] == want, "a build with FASTLSTM_LEVELS set is tested with the same setting"
        assert info["supported"] == cpuinfo_levels()
    assert info["threads"] == fastlstm.get_num_threads()
    want = os.environ.get("FASTLSTM_ISA", "").strip().lower() or usable_levels()[-1]
    assert info["active"] == want
    assert info["vector_floats"] == WIDTH[want] == _core.build_info()["vector_floats"]
    assert _core.build_info()["isa"] == want


def usable_levels():
    info = fastlstm.cpu_info()
    return [level for level in info["compiled"] if level in info["supported"]]


def test_fastlstm_isa_forces_each_supported_level():
    for level in usable_levels():
        got = run_at(level, "import json, fastlstm; print(json.dumps(fastlstm.cpu_info()))")
        assert got["active"] == level and got["vector_floats"] == WIDTH[level]


def test_a_bad_fastlstm_isa_is_a_clear_import_error():
    out = run(["-c", "import fastlstm"], FASTLSTM_ISA="sse9")
    assert out.returncode != 0
    assert "FASTLSTM_ISA='sse9' is not an ISA level" in out.stderr
    choose = _core._choose
    if X86:
        assert choose("", ("baseline", "avx2", "avx512"), ("baseline", "avx2")) == "avx2"
        assert choose(" AVX2", ("baseline", "avx2"), ("baseline", "avx2", "avx512")) == "avx2"
        with pytest.raises(ImportError, match="this CPU does not support the avx512 level"):
            choose("avx512", ("baseline", "avx2", "avx512"), ("baseline", "avx2"))
        with pytest.raises(ImportError, match="this build of fastlstm has no avx512 kernels"):
            choose("avx512", ("baseline", "avx2"), ("baseline", "avx2", "avx512"))
        with pytest.raises(ImportError, match="no kernels this CPU can run"):
            choose("", ("avx512",), ("baseline", "avx2"))


def test_info_command_prints_the_levels():
    out = run(["-m", "fastlstm", "info"])
    assert out.returncode == 0, out.stderr
    info = fastlstm.cpu_info()
    assert f"ISA levels compiled:  {', '.join(info['compiled'])}" in out.stdout
    assert re.search(rf"active: +{info['active']} \({info['vector_floats']} floats per vector", out.stdout)


def disassembly(level):
    path = importlib.util.find_spec(f"fastlstm._core_{level}").origin
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True,
                          check=True).stdout, path


@pytest.mark.skipif(not X86, reason="x86-64's levels")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_each_level_holds_only_its_own_vector_instructions():
    """An inline function compiled at two levels becomes one weak symbol, and the linker may keep
    the wider copy for all: each level is its own module, whose only exported code is its
    PyInit (inline functions stay local), and whose code uses no wider register than its own."""
    for level in fastlstm.cpu_info()["compiled"]:
        text, path = disassembly(level)
        # baseline: no VEX or EVEX instruction at all (their mnemonics start with v); avx2: no
        # AVX-512 register (zmm, mask registers k0-k7)
        wider = {"baseline": r"^\s*[0-9a-f]+:\s+v[a-z0-9]+\s", "avx2": r"%zmm|%k[0-7]\b|\{1to", "avx512": None}[level]
        if wider:
            found = re.search(wider, text, re.M)
            assert found is None, f"{level}: {found.group(0).strip() if found else ''} in {path}"
        symbols = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True,
                                 check=True).stdout.split("\n")
        code = [line.split()[-1] for line in symbols if re.match(r"\S+ [TtWiu] ", line)]
        assert code == [f"PyInit__core_{level}"], f"{level}: exported code symbols {code}"
        # its products are as wide as its vectors (some tens of FMAs even at -O1, the sanitizer build's)
        if level == "avx512":
            assert len(re.findall(r"vfmadd\w+ps\s+\S*%zmm", text)) > 10
        if level == "avx2":
            assert len(re.findall(r"vfmadd\w+ps\s+\S*%ymm", text)) > 10


TRAIN = """
import json, numpy as np, fastlstm
from fastlstm import layers
fastlstm.utils.set_random_seed(3)
rng = np.random.default_rng(0)
x = rng.integers(0, 50, size=(37, 23)); x[:, :5] = 0
y = rng.integers(0, 5, size=37)
out = {}
for name, rnn in (("lstm", layers.LSTM(19)), ("gru", layers.GRU(21)),
                  ("bilstm", layers.Bidirectional(layers.LSTM(9, return_sequences=True)))):
    stack = [layers.Embedding(50, 13, mask_zero=name == "gru"), rnn]
    if name == "bilstm":
        stack.append(layers.GlobalMaxPooling1D())
    model = fastlstm.Sequential(stack + [layers.Dense(5, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
    out[name] = model.predict(x, verbose=0).tolist()
print(json.dumps(out))
"""


def test_every_level_trains_to_the_same_predictions():
    """Two epochs (8 steps) of Adam on LSTM, masked GRU and Bidirectional models: every level
    within 1e-6 relative of the widest (levels differ in FMA use and summation width only)."""
    levels = usable_levels()
    if len(levels) < 2:
        pytest.skip(f"one ISA level usable here ({levels}): nothing to compare")
    results = {level: run_at(level, TRAIN) for level in levels}
    ref = results[levels[-1]]
    for level in levels[:-1]:
        for name in ref:
            a, b = np.array(results[level][name]), np.array(ref[name])
            rel = np.abs(a - b).max() / np.abs(b).max()
            assert rel <= 1e-6, f"{level} vs {levels[-1]}, {name}: {rel:.2e}"
            assert not np.array_equal(a, np.zeros_like(a))
