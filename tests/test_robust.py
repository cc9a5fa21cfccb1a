"""Bad input, bad files, interrupts and threads: clear errors, consistent models, same answers."""
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlstm
from fastlstm import Sequential, _core
from fastlstm.datasets import _files, reuters
from fastlstm.layers import LSTM, Dense, Embedding
from fastlstm.preprocessing import to_categorical


def model(V=20, E=6, H=5, K=4):
    m = Sequential([Embedding(V, E), LSTM(H), Dense(K, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return m


def data(rng, n=40, T=9, V=20, K=4):
    x = rng.integers(0, V, size=(n, T))
    x[:, :3] = 0
    return x, to_categorical(rng.integers(0, K, size=n), K)


# ---- bad input gets a clear error --------------------------------------------------------

@pytest.mark.parametrize("bad", [-1, 20, 2**40, -(2**40)])
def test_out_of_range_token_ids_name_value_and_range(rng, bad):
    m = model()
    x, y = data(rng)
    x[3, 5] = bad
    for call in (lambda: m.predict(x), lambda: m.fit(x, y, verbose=0), lambda: m.evaluate(x, y, verbose=0)):
        with pytest.raises(IndexError, match=rf"token id {bad} is out of range.*\[0, 20\)"):
            call()


@pytest.mark.parametrize("x, error, message", [
    (np.full((2, 3), 1.5), ValueError, "whole-number token ids"),
    (np.full((2, 3), np.nan), ValueError, "whole-number token ids"),
    (np.array([["a", "b"]]), TypeError, "integer token ids"),
    (np.zeros((2, 3, 1), np.int32), ValueError, r"2-D \(batch, timesteps\)"),
    (np.zeros(3, np.int32), ValueError, "batch and a time axis"),
    ([[1, 2], [3]], ValueError, "pad_sequences"),
])
def test_bad_inputs(x, error, message):
    with pytest.raises(error, match=message):
        model().predict(x)


def test_bad_labels_and_arguments(rng):
    m = model()
    x, y = data(rng)
    nan_y = y.copy()
    nan_y[0, 0] = np.nan
    cases = [
        (lambda: m.fit(x, y[:-1], verbose=0), "different numbers of samples"),
        (lambda: m.fit(x, nan_y, verbose=0), "NaN"),
        (lambda: m.fit(x, y[:, :3], verbose=0), r"shape \(n, 4\)"),
        (lambda: m.fit(x, y, batch_size=0, verbose=0), "batch_size must be a positive integer"),
        (lambda: m.fit(x, y, batch_size=-3, verbose=0), "batch_size must be a positive integer"),
        (lambda: m.predict(x, batch_size=0), "batch_size must be a positive integer"),
        (lambda: m.fit(x, y, validation_split=1.5, verbose=0), "validation_split"),
        (lambda: m.set_weights(m.get_weights()[:-1]), "expected 6 arrays, got 5"),
        (lambda: m.set_weights([w[..., :1] for w in m.get_weights()]), "weight 0 must have shape"),
        (lambda: m.fit(x[:0], y[:0], verbose=0), "no training samples"),
        (lambda: m.evaluate(x[:0], y[:0], verbose=0), "no samples"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    sparse = model()
    sparse.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    for labels, message in [(np.array([0.5] * 40), "whole numbers"), (np.full(40, 4), r"\[0, 4\)"), (np.full(40, -1), r"\[0, 4\)")]:
        with pytest.raises(ValueError, match=message):
            sparse.fit(x, labels, verbose=0)
    assert np.isfinite(np.concatenate([w.ravel() for w in m.get_weights()])).all()  # nothing half-done


def test_empty_predict_is_empty(rng):
    out = model().predict(np.zeros((0, 7), np.int32))
    assert out.shape == (0, 4) and out.dtype == np.float32


def test_layouts_and_int_types_give_the_same_answers(rng):
    m = model()
    x, _ = data(rng)
    want = m.predict(x.astype(np.int32))
    big = np.zeros((x.shape[0], 2 * x.shape[1]), np.int64)
    big[:, ::2] = x
    for variant in (x.astype(np.int64), np.asfortranarray(x), big[:, ::2], x.astype(np.uint16), x.astype(np.float64)):
        np.testing.assert_array_equal(m.predict(variant), want)


def test_custom_initializers_are_made_float32_c_contiguous_or_rejected(rng):
    """A user initializer may return float64 or Fortran order: the weight is converted (the
    kernels and Adam update weights in place); a wrong shape is a clear error."""
    fortran64 = lambda shape: np.asfortranarray(rng.normal(size=shape) * 0.1)
    m = Sequential([Embedding(20, 6, embeddings_initializer=fortran64),
                    LSTM(5, kernel_initializer=fortran64, recurrent_initializer=fortran64),
                    Dense(4, activation="softmax", kernel_initializer=fortran64)])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    x, y = data(rng)
    m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for w in m.weights:
        assert w.dtype == np.float32 and w.flags.c_contiguous
    with pytest.raises(ValueError, match=r"initializer returned shape \(2, 2\), expected \(6, 20\)"):
        Sequential([Embedding(20, 6), LSTM(5, kernel_initializer=lambda shape: np.zeros((2, 2)))]).predict(x)


@settings(max_examples=200, deadline=None)
@given(
    B=st.integers(0, 4), T=st.integers(0, 4), E=st.integers(0, 4), H=st.integers(0, 4),
    kE=st.integers(0, 4), kH4=st.integers(0, 17), rH=st.integers(0, 4), rH4=st.integers(0, 17),
    bH4=st.integers(0, 17), dtype=st.sampled_from([np.float32, np.float64, np.int32]),
    which=st.integers(0, 3),
)
def test_kernel_argument_checks_never_crash(B, T, E, H, kE, kH4, rH, rH4, bH4, dtype, which):
    """Any shapes and dtypes: either a correct-shape result or a ValueError, never a crash."""
    arrays = [np.zeros((B, T, E), np.float32), np.zeros((kE, kH4), np.float32),
              np.zeros((rH, rH4), np.float32), np.zeros(bH4, np.float32)]
    arrays[which] = arrays[which].astype(dtype)
    valid = dtype == np.float32 and rH >= 1 and rH4 == 4 * rH and kE == E and kH4 == bH4 == 4 * rH
    try:
        h = _core.rnn_forward(*arrays)
    except ValueError:
        assert not valid
        return
    assert valid and h.shape == (B, rH)


@settings(max_examples=200, deadline=None)
@given(B=st.integers(0, 3), T=st.integers(0, 4), U=st.integers(0, 5), H=st.integers(1, 3),
       lo=st.integers(-3, 6), pad=st.integers(-2, 6), cols=st.integers(0, 13))
def test_token_kernel_argument_checks_never_crash(B, T, U, H, lo, pad, cols):
    ids = np.full((B, T), lo, np.int32)
    table = np.zeros((U, cols), np.float32)
    R = np.zeros((H, 4 * H), np.float32)
    ws = _core.Workspace()
    valid = (B * T == 0 or 0 <= lo < U) and -1 <= pad < U and cols == 4 * H
    try:
        h = _core.rnn_forward_tokens(ids, table, R, pad, workspace=ws)
    except ValueError:
        assert not valid
        return
    assert valid and h.shape == (B, H)
    dtable, dR = _core.rnn_backward_table(ws, R, np.ones((B, H), np.float32))
    assert dtable.shape == (U, 4 * H) and dR.shape == (H, 4 * H)


# ---- data files -----------------------------------------------------------------------------

def test_offline_without_data_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTLSTM_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(reuters, "ORIGIN", "http://127.0.0.1:9/")  # nothing listens: refused
    t0 = time.monotonic()
    with pytest.raises(OSError, match="FASTLSTM_DATA_DIR") as err:
        reuters.load_data()
    assert time.monotonic() - t0 < 10
    assert "FASTLSTM_DATA_DIR" in str(err.value) and "http://127.0.0.1:9/reuters.npz" in str(err.value)
    assert not list((tmp_path / "cache" / "fastlstm").glob("*"))  # no partial file left


def test_corrupt_cached_copy_is_replaced_by_a_verified_download(tmp_path, monkeypatch, data_dir,
                                                                serve_downloads):
    """fastlstm's own cache holds a truncated file: it is fetched again and checked."""
    monkeypatch.delenv("FASTLSTM_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "fastlstm" / "reuters.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    serve_downloads((data_dir / "reuters.npz").read_bytes())  # the real bytes
    (x, _), _ = reuters.load_data()
    assert len(x) == 8982 and _files.sha256(cached) == reuters.NPZ_SHA256


def test_npz_with_forbidden_pickle_is_refused(tmp_path):
    import io
    import pickle
    import zipfile

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    pickle.dump(Evil(), buf)
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buf.getvalue())
    with pytest.raises(ValueError, match="refusing to unpickle posix.system"):
        _files.load_npz(path)


# ---- weights files --------------------------------------------------------------------------

def test_save_weights_is_atomic(rng, tmp_path, monkeypatch):
    m = model()
    path = tmp_path / "w.npz"
    m.save_weights(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    m.fit(*data(rng), verbose=0)
    with pytest.raises(OSError, match="disk full"):
        m.save_weights(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["w.npz"]


# ---- interrupts and threads -----------------------------------------------------------------

def test_ctrl_c_stops_fit_at_a_batch_boundary(rng):
    m = model()
    x, y = data(rng, n=400)
    steps_per_epoch = 400 // 8
    handler_before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt, match="after a whole batch"):
        m.fit(x, y, batch_size=8, epochs=10_000, verbose=0)
    timer.join()
    # consistent: every parameter took the same number of Adam steps, and the model works on
    done = m.optimizer.iterations
    assert 0 < done < 10_000 * steps_per_epoch
    assert np.isfinite(np.concatenate([w.ravel() for w in m.get_weights()])).all()
    m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert m.optimizer.iterations == done + steps_per_epoch
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored


def test_predict_from_many_threads_matches_one_at_a_time(rng):
    m = model(V=50, E=16, H=12)
    batches = [rng.integers(0, 50, size=(int(rng.integers(1, 40)), 15)) for _ in range(24)]
    want = [m.predict(b, batch_size=16) for b in batches]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda b: m.predict(b, batch_size=16), batches))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_training_is_bitwise_identical_for_1_and_2_threads(rng, threads):
    x, y = data(rng, n=64)
    weights = []
    for n in (1, 2):
        fastlstm.set_num_threads(n)
        fastlstm.utils.set_random_seed(7)
        m = model()
        m.fit(x, y, batch_size=16, epochs=2, verbose=0)
        weights.append(m.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
