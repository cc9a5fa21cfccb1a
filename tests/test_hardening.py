"""Defects found in review (issue 12), one test each: crashes, hangs, stale results, behaviour."""
import copy
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading

import numpy as np
import pytest

import fastlstm
from fastlstm import Sequential, _core
from fastlstm.layers import LSTM, Dense, Embedding
from test_robust import data, model

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_python(code, timeout=120, env=None, **kwargs):
    """Runs `code` in a fresh interpreter (a crash or hang there fails the test, not pytest)."""
    full_env = {k: v for k, v in dict(os.environ, **(env or {})).items() if v is not None}  # None: unset
    # cwd outside the checkout: its source folder fastlstm/ (no built _core) would shadow the
    # installed package
    kwargs.setdefault("cwd", tempfile.gettempdir())
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, **kwargs)


# ---- 1. a backward racing forwards on one workspace ---------------------------------------

def test_backward_racing_forwards_on_one_workspace_never_crashes():
    for attempt in range(8):  # the race crashed about one run in three
        backward_racing_forwards()


def backward_racing_forwards():
    r = run_python("""
        import threading
        import numpy as np
        from fastlstm import _core
        ws = _core.Workspace()
        R = np.zeros((8, 32), np.float32)
        small = (np.zeros((2, 4), np.int32), np.zeros((1, 32), np.float32))
        big = (np.random.default_rng(0).integers(0, 2000, size=(300, 40), dtype=np.int32),
               np.zeros((2000, 32), np.float32))
        _core.rnn_forward_tokens(*small, R, workspace=ws)
        done = threading.Event()
        def forwards():
            while not done.is_set():
                for ids, table in (small, big):
                    _core.rnn_forward_tokens(ids, table, R, workspace=ws)
        t = threading.Thread(target=forwards)
        t.start()
        errors = 0
        for _ in range(3000):
            try:
                dtable, dR = _core.rnn_backward_table(ws, R, np.ones((2, 8), np.float32))
                assert dtable.shape == (1, 32) and dR.shape == (8, 32)
            except ValueError:
                errors += 1
        done.set()
        t.join()
        print("ok", errors)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok")


def test_dense_backward_racing_forwards_never_crashes():
    r = run_python("""
        import threading
        import numpy as np
        from fastlstm import _core
        ws = _core.Workspace()
        H = 4
        K, R, b = np.zeros((3, 4 * H), np.float32), np.zeros((H, 4 * H), np.float32), np.zeros(4 * H, np.float32)
        small, big = np.zeros((2, 4, 3), np.float32), np.zeros((300, 40, 3), np.float32)
        _core.rnn_forward(small, K, R, b, workspace=ws)
        done = threading.Event()
        def forwards():
            while not done.is_set():
                for x in (small, big):
                    _core.rnn_forward(x, K, R, b, workspace=ws)
        t = threading.Thread(target=forwards)
        t.start()
        for _ in range(2000):
            try:
                _core.rnn_backward(ws, small, K, R, np.ones((2, H), np.float32))
            except ValueError:
                pass
        done.set()
        t.join()
        print("ok")
    """)
    assert r.returncode == 0, r.stderr[-2000:]


def test_layer_methods_racing_each_other_never_crash():
    """Training calls and backwards of one LSTM layer from several threads: each call either
    works or raises a clear exception (shapes are checked under the workspace's lock)."""
    r = run_python("""
        import threading
        import numpy as np
        from fastlstm.layers import LSTM, Embedding
        emb, lstm = Embedding(500, 8), LSTM(6)
        emb.build()
        lstm.build((None, None, 8))
        rng = np.random.default_rng(0)
        shapes = [(2, 3), (64, 30), (7, 1), (200, 12)]
        def caller(seed):
            r = np.random.default_rng(seed)
            for k in range(300):
                B, T = shapes[int(r.integers(len(shapes)))]
                try:
                    if r.integers(3):
                        lstm.call(emb.call(r.integers(0, 500, size=(B, T))), training=True)
                    else:
                        lstm.call(r.normal(size=(B, T, 8)).astype(np.float32), training=True)
                    lstm.backward(np.ones((int(r.integers(1, 4)) * B // 2 or 1, 6), np.float32))
                except (ValueError, AttributeError, IndexError):
                    pass
        threads = [threading.Thread(target=caller, args=(s,)) for s in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_ids_changed_by_another_thread_after_the_check_never_crash():
    """The kernel reads the checked copy of the ids, not the caller's array."""
    r = run_python("""
        import threading, time
        import numpy as np
        from fastlstm import _core
        ws = _core.Workspace()
        H = 64
        R = np.zeros((H, 4 * H), np.float32)
        big_ids, big_table = np.zeros((512, 400), np.int32), np.zeros((1, 4 * H), np.float32)
        for attempt in range(5):
            ids, table = np.zeros((4, 4), np.int32), np.zeros((1, 4 * H), np.float32)
            a = threading.Thread(target=lambda: _core.rnn_forward_tokens(big_ids, big_table, R, workspace=ws))
            a.start()
            time.sleep(0.01)
            b = threading.Thread(target=lambda: _core.rnn_forward_tokens(ids, table, R, workspace=ws))
            b.start()
            time.sleep(0.005)
            ids[:] = 1 << 30  # after b's call began, while b waits for the workspace
            a.join()
            b.join()
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_backward_after_an_inference_forward_is_a_value_error():
    ws = _core.Workspace()
    R = np.zeros((2, 8), np.float32)
    _core.rnn_forward_tokens(np.zeros((3, 2), np.int32), np.zeros((1, 8), np.float32), R, workspace=ws)
    _core.rnn_forward_tokens(np.zeros((3, 2), np.int32), np.zeros((1, 8), np.float32), R,
                              workspace=ws, training=False)
    with pytest.raises(ValueError, match="training=True"):
        _core.rnn_backward_table(ws, R, np.ones((3, 2), np.float32))


# ---- 2. fork after threaded use --------------------------------------------------------------

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) >= 2


@pytest.mark.skipif(not TWO_CPUS, reason="the parent needs 2 CPUs to run a team of threads")
def test_forked_child_predicts_the_same_after_threaded_use():
    r = run_python("""
        import multiprocessing as mp
        import warnings
        import numpy as np
        import fastlstm
        from fastlstm import Sequential
        from fastlstm.layers import LSTM, Dense, Embedding
        fastlstm.utils.set_random_seed(3)
        m = Sequential([Embedding(50, 16), LSTM(32), Dense(4, activation="softmax")])
        x = np.random.default_rng(0).integers(0, 50, size=(300, 20))
        fastlstm.set_num_threads(2)
        want = m.predict(x, verbose=0)
        def child(q):
            fastlstm.set_num_threads(2)
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                got = m.predict(x, verbose=0)
                got2 = m.predict(x, verbose=0)
            q.put((got, got2, [str(a.message) for a in w], fastlstm.get_num_threads()))
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        got, got2, warned, n = q.get(timeout=30)
        p.join(30)
        assert p.exitcode == 0, p.exitcode
        assert np.array_equal(got, want) and np.array_equal(got2, want)
        assert len(warned) == 1 and "fork" in warned[0], warned
        assert n == 1
        assert np.array_equal(m.predict(x, verbose=0), want) and fastlstm.get_num_threads() == 2  # parent unaffected
        print("ok")
    """, timeout=90)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-3000:]


def test_fork_while_another_thread_trains_gives_a_working_child():
    """Locks and workspaces held by a thread that does not exist in the child are re-created."""
    r = run_python("""
        import multiprocessing as mp
        import threading
        import warnings
        import numpy as np
        import fastlstm
        from fastlstm import Sequential
        from fastlstm.layers import LSTM, Dense, Embedding
        from fastlstm.preprocessing import to_categorical
        warnings.simplefilter("ignore")
        fastlstm.utils.set_random_seed(3)
        m = Sequential([Embedding(300, 32), LSTM(64), Dense(4, activation="softmax")])
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 300, size=(200, 60)), to_categorical(rng.integers(0, 4, size=200), 4)
        stop = threading.Event()
        def train():
            while not stop.is_set():
                m.train_on_batch(x, y)
        t = threading.Thread(target=train)
        t.start()
        def child(q):
            q.put((m.predict(x[:5], verbose=0).shape, m.train_on_batch(x[:8], y[:8]) > 0))
        ctx = mp.get_context("fork")
        ok = True
        for attempt in range(10):  # forks at different points of the training steps
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,))
            p.start()
            try:
                ok = ok and q.get(timeout=30) == ((5, 4), True)
            except Exception:
                ok = False
            p.join(5)
            if p.exitcode is None:
                p.kill()
                ok = False
        stop.set()
        t.join()
        print("ok" if ok else "failed")
    """, timeout=400)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-3000:]


@pytest.mark.skipif(not TWO_CPUS, reason="threads need 2 CPUs")
def test_querying_the_thread_count_before_fork_keeps_the_child_threaded():
    r = run_python("""
        import multiprocessing as mp
        import warnings
        import numpy as np
        import fastlstm
        from fastlstm.layers import LSTM
        n = fastlstm.get_num_threads()
        def child(q):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                lstm = LSTM(4)
                lstm.build((None, None, 3))
                lstm.call(np.zeros((2, 3, 3), np.float32))
            q.put((fastlstm.get_num_threads(), len(w)))
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        print(q.get(timeout=30) == (n, 0) and n >= 2)
        p.join(10)
    """)
    assert r.stdout.strip() == "True", r.stdout + r.stderr[-2000:]


# ---- 3. an allocation failure is a MemoryError, never an abort ------------------------------

_ALLOC_SCRIPT = """
    import resource, sys
    import numpy as np
    from fastlstm import _core
    B = 1 << 19                        # one time step, distinct tokens: 2 chunks of 2**18 rows
    ids = np.arange(B, dtype=np.int32).reshape(B, 1)
    table = np.zeros((B, 4), np.float32)
    R = np.zeros((1, 4), np.float32)
    dh = np.ones((B, 1), np.float32)
    small = _core.Workspace()          # threads and their malloc arenas exist before the limit
    _core.rnn_forward_tokens(ids[:64], table[:64], R, workspace=small)
    _core.rnn_backward_table(small, R, dh[:64])
    ws = _core.Workspace()
    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    extra = int(sys.argv[1]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, resource.RLIM_INFINITY))
    try:
        _core.rnn_forward_tokens(ids, table, R, workspace=ws)
        _core.rnn_backward_table(ws, R, dh)
        print("ok")
    except MemoryError:
        print("MemoryError")
"""


@pytest.mark.skipif(_core.build_info()["sanitize"] if hasattr(_core, "build_info") else False,
                    reason="AddressSanitizer reserves terabytes of address space: RLIMIT_AS cannot apply")
def test_running_out_of_memory_is_a_memory_error_at_every_limit():
    """The address-space limit is swept down to where the call just fits: every outcome is a
    result or a MemoryError (an allocation inside an OpenMP region used to abort)."""
    def outcome(extra_mb):
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(_ALLOC_SCRIPT), str(extra_mb)],
                           capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
        assert r.returncode == 0, f"limit +{extra_mb} MB: exit {r.returncode}\n{r.stderr[-1500:]}"
        return r.stdout.strip()

    lo, hi = 0, 2048  # MB above the current size: lo fails, hi fits
    assert outcome(hi) == "ok" and outcome(lo) == "MemoryError"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if outcome(mid) == "ok":
            hi = mid
        else:
            lo = mid
    for extra in range(max(0, hi - 6), hi):  # just below the fit: the last allocations fail
        assert outcome(extra) in ("ok", "MemoryError")


# ---- 4. sizes past int ---------------------------------------------------------------------

def test_dense_positions_past_int32_are_a_clear_error():
    r = run_python("""
        import resource
        import numpy as np
        from fastlstm import _core
        if not _core.build_info()["sanitize"]:  # ASan reserves terabytes of address space
            resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY))  # no 32 GB table
        x = np.zeros((1 << 16, 1 << 15, 0), np.float32)   # 2**31 positions, no elements
        try:
            _core.rnn_forward(x, np.zeros((0, 4), np.float32), np.zeros((1, 4), np.float32),
                               np.zeros(4, np.float32))
        except ValueError as e:
            print("ValueError:", e)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ValueError:") and "2**31" in r.stdout, r.stdout


def test_embedding_input_dim_past_int32_ids_is_a_clear_error():
    with pytest.raises(ValueError, match=r"input_dim .* 2\*\*31"):
        Embedding(2**31 + 1, 4)
    Embedding(2**31, 1)  # ids up to 2**31 - 1 fit int32 (nothing allocated until build)


# ---- 5. zero time steps ---------------------------------------------------------------------

def test_zero_time_steps_give_the_zero_state_on_a_reused_workspace(rng):
    m = model()
    empty = np.zeros((2, 0), np.int32)
    first = m.predict(empty)
    padded = rng.integers(1, 20, size=(2, 6))
    padded[:, :2] = 0  # leading padding: the shared padding trajectory runs and leaves a state
    m.predict(padded)
    np.testing.assert_array_equal(m.predict(empty), first)
    np.testing.assert_allclose(first, np.full((2, 4), 1 / 4), rtol=1e-6)  # softmax of zero logits
    ws = _core.Workspace()
    R = np.ones((3, 12), np.float32)
    ids = np.ones((2, 5), np.int32)
    ids[:, :3] = 0
    _core.rnn_forward_tokens(ids, np.ones((2, 12), np.float32), R, pad_row=0, workspace=ws)
    h = _core.rnn_forward_tokens(np.zeros((2, 0), np.int32), np.ones((2, 12), np.float32), R, workspace=ws)
    np.testing.assert_array_equal(h, np.zeros((2, 3), np.float32))


# ---- 6. predict while another thread trains ---------------------------------------------------

def observed_during_training(rng, observe, steps):
    """Runs `steps` training steps on one thread while this one calls observe(model, probe)
    in a loop. Returns the observations and the predictions of the weights after each whole
    number of steps (computed afterwards by another model)."""
    fastlstm.utils.set_random_seed(5)
    m = model(V=4000, E=64, H=48)
    x, y = data(rng, n=64, T=30, V=4000)
    probe = x[:8]
    snapshots, seen, stop = [m.get_weights()], [], threading.Event()

    def train():
        try:
            for step in range(steps):
                m.train_on_batch(x, y)
                snapshots.append(m.get_weights())
        finally:
            stop.set()

    t = threading.Thread(target=train)
    t.start()
    while not stop.is_set():
        seen.append(observe(m, probe))
    t.join()
    reference = model(V=4000, E=64, H=48)
    allowed = []
    for w in snapshots:
        reference.set_weights(w)
        allowed.append(reference.predict(probe))
    return seen, allowed


def test_predict_during_training_sees_whole_steps_only(rng):
    """Each concurrent prediction equals the prediction of the weights after some whole
    number of steps (never a mix of arrays updated by a step and arrays not yet updated)."""
    preds, allowed = observed_during_training(rng, lambda m, probe: m.predict(probe), steps=30)
    assert len(preds) > 10
    for p in preds:
        assert any(np.array_equal(p, a) for a in allowed), "a prediction mixed two steps' weights"


def test_ctrl_c_while_waiting_for_the_weights_leaves_the_lock_usable():
    r = run_python("""
        import os, signal, threading
        from fastlstm.models import _ReadWriteLock
        lk = _ReadWriteLock()
        held, release = threading.Event(), threading.Event()
        def reader():
            with lk.reading():
                held.set()
                release.wait()
        t = threading.Thread(target=reader)
        t.start()
        held.wait()
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        try:
            with lk.writing():  # e.g. set_weights in the main thread, Ctrl-C while it waits
                pass
        except KeyboardInterrupt:
            pass
        release.set()
        t.join()
        done = threading.Event()
        def later_reader():  # e.g. a predict after the interrupted set_weights
            with lk.reading():
                done.set()
        threading.Thread(target=later_reader, daemon=True).start()
        got_in = done.wait(5)
        with lk.writing():  # and a later writer
            pass
        print(got_in)
    """)
    assert r.stdout.strip() == "True", r.stdout + r.stderr[-2000:]


def test_a_model_pickled_while_another_thread_trains_holds_whole_steps(rng):
    copies, allowed = observed_during_training(
        rng, lambda m, probe: pickle.loads(pickle.dumps(m)).predict(probe), steps=20)
    assert len(copies) > 3
    for p in copies:
        assert any(np.array_equal(p, a) for a in allowed), "a pickled model mixed two steps' weights"


# ---- 7. a wrong first call does not fix the shapes -------------------------------------------

def test_a_mistaken_first_call_does_not_build_the_model():
    m = Sequential([LSTM(4), Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match=r"expected ndim=3 .*, found ndim=2"):
        m.predict(np.zeros((1, 7)))
    assert not m.built
    out = m.predict(np.zeros((2, 5, 3)))
    assert out.shape == (2, 3) and m.layers[0].kernel.shape == (3, 16)
    for built in (Sequential([LSTM(4)]), m):  # the same errors before and after building
        with pytest.raises(TypeError, match="must hold numbers"):
            built.predict(np.array([[["a"]]]))
        with pytest.raises(ValueError, match="expected ndim=3"):
            built.predict(np.zeros((1, 7)))
    with pytest.raises(ValueError, match=r"expected shape=\(None, None, 3\), found shape=\(2, 5, 4\)"):
        m.predict(np.zeros((2, 5, 4)))


# ---- 8. initializer arrays are copied ---------------------------------------------------------

def test_initializer_arrays_are_copied_not_adopted(rng):
    pretrained = rng.normal(size=(20, 6)).astype(np.float32)
    kernel = rng.normal(size=(5, 4)).astype(np.float32)
    before = pretrained.copy(), kernel.copy()
    m = Sequential([Embedding(20, 6, embeddings_initializer=lambda shape: pretrained), LSTM(5),
                    Dense(4, activation="softmax", kernel_initializer=lambda shape: kernel)])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    m.fit(*data(rng), verbose=0)
    np.testing.assert_array_equal(pretrained, before[0])
    np.testing.assert_array_equal(kernel, before[1])
    assert not np.array_equal(m.layers[0].embeddings, pretrained)  # the model's copy trained


# ---- 9. thread count ----------------------------------------------------------------------------

def test_default_threads_follow_omp_num_threads_and_affinity():
    code = "import fastlstm; print(fastlstm.get_num_threads())"
    assert run_python(code, env={"OMP_NUM_THREADS": "1"}).stdout.strip() == "1"
    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[0]
        pinned = run_python(f"import os; os.sched_setaffinity(0, {{{cpu}}}); " + code,
                            env={"OMP_NUM_THREADS": None})
        assert pinned.stdout.strip() == "1", pinned.stderr


def test_set_num_threads_rejects_bad_counts_and_caps_large_ones(rng, threads):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="must be >= 1"):
            fastlstm.set_num_threads(bad)
    for bad in (1.5, "2", True, None):
        with pytest.raises(TypeError, match="must be an int"):
            fastlstm.set_num_threads(bad)
    with pytest.raises(ValueError, match="must be >= 1"):
        fastlstm.set_num_threads(-(2**70))
    fastlstm.set_num_threads(np.int64(1))
    assert fastlstm.get_num_threads() == 1
    fastlstm.set_num_threads(2**70)  # capped like any large count
    m = model()
    x, _ = data(rng)
    want = m.predict(x)
    fastlstm.set_num_threads(5000)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert fastlstm.get_num_threads() == usable
    np.testing.assert_array_equal(m.predict(x), want)


# ---- 10. pickling and deep copies -------------------------------------------------------------

@pytest.mark.parametrize("clone", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy])
def test_models_pickle_and_deepcopy_and_train_on(rng, clone):
    m = model()
    x, y = data(rng)
    m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    other = clone(m)
    np.testing.assert_array_equal(other.predict(x), m.predict(x))
    assert other.optimizer.iterations == m.optimizer.iterations
    for a, b in zip(m.get_weights(), other.get_weights()):
        assert not np.shares_memory(a, b)
    m.train_on_batch(x[:8], y[:8])
    other.train_on_batch(x[:8], y[:8])  # the same Adam state: the same step
    for a, b in zip(m.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert pickle.loads(pickle.dumps(Sequential())).layers == []
    pretrained = rng.normal(size=(20, 6)).astype(np.float32)
    lam = Sequential([Embedding(20, 6, embeddings_initializer=lambda shape: pretrained), LSTM(3)])
    np.testing.assert_array_equal(clone(lam).layers[0].embeddings, pretrained)


# ---- 11. Ctrl-C during validation ------------------------------------------------------------

@pytest.mark.parametrize("epochs", [1, 3])
def test_ctrl_c_during_validation_stops_fit(rng, epochs, monkeypatch):
    m = model()
    x, y = data(rng)
    steps = []
    train_step, evaluate = m._train_step, m._evaluate

    def counting_step(*a):
        steps.append(1)
        return train_step(*a)

    def interrupted_evaluate(*a):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while validating
        return evaluate(*a)

    monkeypatch.setattr(m, "_train_step", counting_step)
    monkeypatch.setattr(m, "_evaluate", interrupted_evaluate)
    with pytest.raises(KeyboardInterrupt, match="validation"):
        m.fit(x, y, batch_size=8, epochs=epochs, validation_data=(x, y), verbose=0)
    assert len(steps) == 5  # the first epoch's batches, none of the next
    assert m.optimizer.iterations == 5


# ---- 12. weights files --------------------------------------------------------------------

def test_save_weights_respects_the_umask_and_refuses_keras_legacy_formats(tmp_path):
    m = model()
    old = os.umask(0o022)
    try:
        m.save_weights(tmp_path / "w.npz")
        os.umask(0o027)
        m.save_weights(tmp_path / "v.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "v.npz").stat().st_mode & 0o777 == 0o640
    os.chmod(tmp_path / "w.npz", 0o600)  # the user's choice for an existing file stays, as np.savez
    m.save_weights(tmp_path / "w.npz")
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == 0o600
    for name in ("model.h5", "model.keras", "M.H5"):  # .weights.h5 is Keras's weights file (test_saving)
        with pytest.raises(ValueError, match=r"\.weights\.h5 or numpy's \.npz"):
            m.save_weights(tmp_path / name)
    for name in ("model.h5", "M.HDF5"):
        with pytest.raises(ValueError, match=r"legacy"):
            m.load_weights(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npz", "w.npz"]


# ---- 13. Embedding -> LSTM as the last layers -------------------------------------------------

@pytest.mark.keras
def test_embedding_lstm_as_the_last_layers_trains_like_keras(rng):
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(20, 6),
                           keras.layers.LSTM(5)])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(20, 6), LSTM(5)])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    m.set_weights(km.get_weights())
    x, _ = data(rng)
    y = np.abs(rng.normal(size=(40, 5))).astype(np.float32)
    y /= y.sum(axis=1, keepdims=True)
    for step in range(3):
        assert abs(km.train_on_batch(x, y) - m.train_on_batch(x, y)) <= 1e-5
    for got, want in zip(m.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, atol=2e-6)
    m.fit(x, y, epochs=1, verbose=0)


# ---- 14. summary of an empty model ------------------------------------------------------------

def test_summary_of_an_empty_model_prints_like_keras(capsys):
    Sequential().summary()
    out = capsys.readouterr().out
    assert 'Model: "sequential"' in out and "Total params: 0" in out


# ---- 15-17. project hygiene --------------------------------------------------------------------

def test_license_ships_and_the_version_has_one_source():
    from importlib import metadata

    text = (REPO / "LICENSE").read_text()
    assert "MIT License" in text and "Permission is hereby granted" in text
    dist = metadata.distribution("fastlstm")
    assert dist.version == fastlstm.__version__
    assert any(pathlib.PurePath(f).name == "LICENSE" for f in dist.files or []), "LICENSE not in the wheel"
    meta = dist.metadata
    assert (meta["Author"] or meta["Author-email"]) and meta.get_all("Classifier")
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]  # only in fastlstm/__init__.py


def test_sdist_holds_the_license():
    out = run_python(f"""
        import os, tarfile, tempfile
        from scikit_build_core.build import build_sdist
        os.chdir({str(REPO)!r})
        d = tempfile.mkdtemp()
        name = build_sdist(d)
        print(sorted(n.split("/", 1)[1] for n in tarfile.open(os.path.join(d, name)).getnames() if "/" in n))
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'LICENSE'" in out.stdout and "'tests/test_data.py'" in out.stdout


def test_extras_are_used_and_build_defines_exist():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    sources = "\n".join(p.read_text() for p in (REPO / "bench").glob("*.py"))
    for req in project["optional-dependencies"]["bench"]:
        module = req.split(">")[0].split("=")[0].split("[")[0].replace("-cpu", "").replace("-", "_")
        assert f"import {module}" in sources, f"{req} is in the bench extra but bench/ never imports it"
    cmake = (REPO / "CMakeLists.txt").read_text()
    csrc = "\n".join(p.read_text() for p in (REPO / "csrc").iterdir())
    for define in __import__("re").findall(r"target_compile_definitions\([^)]*PRIVATE([^)]*)\)", cmake):
        for name in define.split():
            assert name.split("=")[0] in csrc, f"{name} defined for code that no longer uses it"


def test_documents_cited_are_in_the_repository():
    import re

    texts = {p: p.read_text() for p in [REPO / "README.md", *REPO.glob("tests/*.py"), *REPO.glob("fastlstm/**/*.py")]}
    for path, text in texts.items():
        for doc in set(re.findall(r"\b([A-Z][A-Z_]+\.md)\b", text)):  # documents, not outputs (results.md)
            assert (REPO / doc).exists(), f"{path.name} cites {doc}, which is not in the repository"


def test_data_lookup_for_tests_uses_the_library_search(tmp_path, monkeypatch, data_dir):
    """The data_dir fixture's lookup: FASTLSTM_DATA_DIR, else the Keras cache, else
    fastlstm's cache; never a download."""
    import conftest
    from fastlstm.datasets import _files, reuters

    monkeypatch.delenv("FASTLSTM_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert conftest.find_data_dir() is None
    keras_cache = tmp_path / ".keras" / "datasets"
    keras_cache.mkdir(parents=True)
    (keras_cache / "reuters.npz").symlink_to((data_dir / "reuters.npz").resolve())
    assert conftest.find_data_dir() == keras_cache
    assert reuters.NPZ_SHA256 == _files.sha256(keras_cache / "reuters.npz")


# ---- review of the engine issue: a failed forward leaves no usable workspace ---------------

def test_a_forward_that_fails_its_checks_leaves_no_backward():
    """A forward whose ids, mask or dropout masks fail their checks after the workspace took
    them: the next backward is a ValueError, never a crash or the old forward's shapes with
    the new data (ids: a heap overflow; masks: wrong gradients)."""
    r = run_python("""
        import numpy as np
        from fastlstm import _core
        rng = np.random.default_rng(0)
        ids = rng.integers(0, 20, size=(64, 50)).astype(np.int32)
        table = rng.normal(size=(20, 32)).astype(np.float32)
        rec = rng.normal(size=(8, 32)).astype(np.float32)
        dh = np.ones((64, 8), np.float32)
        for bad in (dict(ids=np.full((64, 50), 10**6, np.int32)),
                    dict(mask=np.ones((64, 50), bool), recurrent_dropout_mask=np.ones((1, 1, 1), np.float32))):
            ws = _core.Workspace()
            _core.rnn_forward_tokens(ids, table, rec, workspace=ws)
            args = {**dict(ids=ids, mask=None, recurrent_dropout_mask=None), **bad}
            try:
                _core.rnn_forward_tokens(args.pop("ids"), table, rec, workspace=ws, **args)
            except ValueError:
                pass
            else:
                raise SystemExit("the bad forward passed")
            try:
                _core.rnn_backward_table(ws, rec, dh)
            except ValueError as e:
                assert "preceding" in str(e), e
            else:
                raise SystemExit("backward ran on a workspace whose forward failed")
        x = rng.normal(size=(4, 5, 3)).astype(np.float32)
        K, R, b = (rng.normal(size=s).astype(np.float32) for s in ((3, 8), (2, 8), (8,)))
        ws = _core.Workspace()
        _core.rnn_forward(x, K, R, b, workspace=ws)
        try:
            _core.rnn_forward(x, K, R, b, workspace=ws, mask=np.ones((4, 5), bool),
                              recurrent_dropout_mask=np.ones((4, 4, 3), np.float32))
        except ValueError:
            pass
        try:
            _core.rnn_backward(ws, x, K, R, np.ones((4, 2), np.float32))
        except ValueError as e:
            assert "preceding" in str(e), e
        else:
            raise SystemExit("dense backward ran on a workspace whose forward failed")
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])
