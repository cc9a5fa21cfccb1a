"""fastlstm._core against an independent float64 numpy LSTM and finite differences."""
import numpy as np
import pytest

import fastlstm
from fastlstm import _core

import numpy_lstm as ref

SHAPES = [  # B, T, E, H
    (1, 1, 1, 1),
    (1, 9, 3, 2),
    (2, 1, 3, 5),
    (3, 5, 4, 7),
    (5, 7, 6, 13),
    (8, 4, 10, 9),
    (17, 12, 11, 33),
    (130, 6, 3, 5),  # three chunks of rows
]


def weights(rng, E, H, scale=0.5):
    f32 = lambda *s: (rng.normal(size=s) * scale).astype(np.float32)
    return f32(E, 4 * H), f32(H, 4 * H), f32(4 * H)


def rel_err(a, b):
    """max |a - b| / max |b|: error relative to the reference's scale."""
    b = np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def token_batch(rng, B, T, V):
    """Token ids with the padding cases: some leading padding, all padding, none."""
    ids = rng.integers(1, V, size=(B, T)).astype(np.int32)
    for b in range(B):
        ids[b, : rng.integers(0, T + 1)] = 0
    if B > 1:
        ids[0, :] = 0  # a row of padding only
    if B > 2:  # and a row with none
        ids[2, :] = rng.integers(1, V, size=T)
    return ids


def token_problem(rng, B, T, E, H, V):
    """Embeddings (V,E), LSTM weights, padded token ids (B,T) and the projected table (V,4H)."""
    emb = rng.normal(size=(V, E)).astype(np.float32)
    K, R, b = weights(rng, E, H)
    ids = token_batch(rng, B, T, V)
    return emb, K, R, b, ids, _core.affine(emb, K, b)


@pytest.mark.parametrize("B,T,E,H", SHAPES)
def test_dense_forward_matches_numpy(rng, B, T, E, H):
    x = rng.normal(size=(B, T, E)).astype(np.float32)
    K, R, b = weights(rng, E, H)
    h_last, h_seq = _core.rnn_forward(x, K, R, b, return_sequences=True)
    want, _ = ref.lstm_forward(x, K, R, b)
    assert h_seq.shape == (B, T, H) and h_last.shape == (B, H)
    assert rel_err(h_seq, want) <= 1e-5
    assert rel_err(h_last, want[:, -1]) <= 1e-5
    np.testing.assert_array_equal(_core.rnn_forward(x, K, R, b), h_last)


@pytest.mark.parametrize("B,T,E,H", SHAPES)
def test_dense_backward_matches_numpy(rng, B, T, E, H):
    x = rng.normal(size=(B, T, E)).astype(np.float32)
    K, R, b = weights(rng, E, H)
    dh_last = rng.normal(size=(B, H)).astype(np.float32)
    dh_seq = rng.normal(size=(B, T, H)).astype(np.float32)
    ws = _core.Workspace()
    _core.rnn_forward(x, K, R, b, workspace=ws)
    _, cache = ref.lstm_forward(x, K, R, b)
    for seq in (None, dh_seq):
        got = _core.rnn_backward(ws, x, K, R, dh_last, seq)
        want = ref.lstm_backward(cache, dh_last, seq)[:4]
        for name, g, w in zip(["dx", "dkernel", "drecurrent", "dbias"], got, want):
            assert g.shape == w.shape, name
            assert rel_err(g, w) <= 1e-5, name


@pytest.mark.parametrize("B,T,E,H", SHAPES)
def test_token_path_matches_numpy(rng, B, T, E, H):
    """Embedding rows projected once + leading-padding skip == the plain LSTM on emb[ids]."""
    V = 7
    emb, K, R, b, ids, table = token_problem(rng, B, T, E, H, V)
    ws = _core.Workspace()
    h_last, h_seq = _core.rnn_forward_tokens(ids, table, R, pad_row=0, return_sequences=True, workspace=ws)
    want, cache = ref.lstm_forward(emb[ids], K, R, b)
    assert rel_err(h_seq, want) <= 1e-5
    assert rel_err(h_last, want[:, -1]) <= 1e-5

    dh_last = rng.normal(size=(B, H)).astype(np.float32)
    dh_seq = rng.normal(size=(B, T, H)).astype(np.float32)
    for seq in (None, dh_seq):
        dtable, drec = _core.rnn_backward_table(ws, R, dh_last, seq)
        dz = ref.lstm_backward(cache, dh_last, seq)[4]
        dtable_want = np.zeros((V, 4 * H))
        np.add.at(dtable_want, ids.reshape(-1), dz.reshape(-1, 4 * H))
        assert rel_err(dtable, dtable_want) <= 1e-5
        assert rel_err(drec, ref.lstm_backward(cache, dh_last, seq)[2]) <= 1e-5
        # and through the projection to the embedding table
        demb, dK, db = _core.affine_backward(emb, K, dtable)
        _, dK_w, _, db_w, _ = ref.lstm_backward(cache, dh_last, seq)
        assert rel_err(dK, dK_w) <= 1e-5 and rel_err(db, db_w) <= 1e-5
        demb_want = np.zeros((V, E))
        np.add.at(demb_want, ids.reshape(-1), ref.lstm_backward(cache, dh_last, seq)[0].reshape(-1, E))
        assert rel_err(demb, demb_want) <= 1e-5


def test_token_path_with_a_large_table(rng, threads):
    """More table rows than positions (U > B*T): fewer chunks keep their own table gradient."""
    B, T, E, H, V = 200, 3, 4, 5, 900
    emb, K, R, b, ids, table = token_problem(rng, B, T, E, H, V)
    dh = rng.normal(size=(B, H)).astype(np.float32)
    want, cache = ref.lstm_forward(emb[ids], K, R, b)
    ref_grads = ref.lstm_backward(cache, dh, None)
    dz = ref_grads[4]
    dtable_want = np.zeros((V, 4 * H))
    np.add.at(dtable_want, ids.reshape(-1), dz.reshape(-1, 4 * H))
    outs = []
    for n in (1, 2):
        fastlstm.set_num_threads(n)
        ws = _core.Workspace()
        h = _core.rnn_forward_tokens(ids, table, R, pad_row=0, workspace=ws)
        dtable, drec = _core.rnn_backward_table(ws, R, dh)
        assert rel_err(h, want[:, -1]) <= 1e-5 and rel_err(dtable, dtable_want) <= 1e-5
        assert rel_err(drec, ref_grads[2]) <= 1e-5
        outs.append((h, dtable, drec))
    for a, b_ in zip(*outs):
        np.testing.assert_array_equal(a, b_)


def test_token_rows_read_by_one_row_each_for_any_thread_count(rng, threads):
    """Table rows that no two batch rows share (input dropout's per-sample tables): the chunks
    scatter into one table gradient, each row's the dz of its one position, as the dense path
    gives it; rows nobody reads are zero; the same bits at 1 and 2 threads, run after run
    (large enough that a chunk's scatter would overlap another's zeroing, were it racing)."""
    B, T, H, spare = 128, 200, 64, 50
    table = (rng.normal(size=(B * T + spare, 4 * H)) * 0.1).astype(np.float32)
    R = (rng.normal(size=(H, 4 * H)) * 0.1).astype(np.float32)
    ids = rng.permutation(B * T).astype(np.int32).reshape(B, T)
    dh = rng.normal(size=(B, H)).astype(np.float32)
    ws = _core.Workspace()
    _core.rnn_forward_projected(np.ascontiguousarray(table[ids]), R, workspace=ws)
    dense = _core.rnn_backward_table(ws, R, dh)[0]  # (B,T,4H): position b*T+t's own row
    want = np.zeros_like(table)
    want[ids.reshape(-1)] = dense.reshape(-1, 4 * H)
    for n in (1, 2, 2, 2):
        fastlstm.set_num_threads(n)
        _core.rnn_forward_tokens(ids, table, R, workspace=ws)
        np.testing.assert_array_equal(_core.rnn_backward_table(ws, R, dh)[0], want)


def test_inference_forward_equals_training_forward(rng):
    """training=False keeps only the current step (no gates for backward): same outputs."""
    B, T, E, H, V = 9, 13, 5, 6, 5
    emb, K, R, b, ids, table = token_problem(rng, B, T, E, H, V)
    for forward, args in ((_core.rnn_forward_tokens, (ids, table, R, 0)), (_core.rnn_forward, (emb[ids], K, R, b))):
        ws = _core.Workspace()
        train = forward(*args, return_sequences=True, workspace=ws, training=True)
        infer = forward(*args, return_sequences=True, workspace=ws, training=False)
        for a, want in zip(infer, train):
            np.testing.assert_array_equal(a, want)
        with pytest.raises(ValueError, match=r"training=True\) on the same workspace"):
            if forward is _core.rnn_forward:
                _core.rnn_backward(ws, emb[ids], K, R, np.zeros((B, H), np.float32))
            else:
                _core.rnn_backward_table(ws, R, np.zeros((B, H), np.float32))


def test_token_path_without_padding_skip_is_the_same(rng):
    B, T, E, H, V = 6, 10, 5, 8, 4
    emb, K, R, b, ids, table = token_problem(rng, B, T, E, H, V)
    skip = _core.rnn_forward_tokens(ids, table, R, pad_row=0)
    plain = _core.rnn_forward_tokens(ids, table, R, pad_row=-1)
    assert np.abs(skip - plain).max() <= 1e-6


# the Embedding's backward: rows of one id summed in order, as numpy's np.add.at (float32 adds);
# 2000 x 100 values are enough for the columns to be split between two threads.
@pytest.mark.parametrize("V,N,E", [(1, 1, 1), (5, 0, 3), (3, 40, 17), (50, 2000, 100), (1000, 2000, 33), (4, 9, 0)])
def test_add_rows_at_sums_as_numpy_add_at(rng, threads, V, N, E):
    ids = rng.integers(0, V, size=N).astype(np.int32)
    values = rng.normal(size=(N, E)).astype(np.float32)
    want = np.zeros((V, E), np.float32)
    np.add.at(want, ids, values)
    for n in (1, 2):
        fastlstm.set_num_threads(n)
        got = _core.add_rows_at(V, ids, values)
        assert got.dtype == np.float32 and got.shape == (V, E)
        np.testing.assert_array_equal(got, want)  # the same float32 sums, in the same order
    for bad in (-1, V):
        with pytest.raises(ValueError, match="out of range"):
            _core.add_rows_at(V, np.array([0, bad], np.int32), np.zeros((2, E), np.float32))
    with pytest.raises(ValueError, match="values must have shape"):
        _core.add_rows_at(V, ids, np.zeros((N + 1, E), np.float32))


# Every ISA level's tiles and tails: columns in one partial vector, in part of a panel, in a
# two-panel AVX-512 tile (17-31, 33-47), several k blocks (E > 256); rows in every row tile.
@pytest.mark.parametrize("N,E,M", [(1, 1, 1), (7, 3, 46), (49, 100, 400), (130, 5, 33), (0, 4, 16), (100, 100, 46),
                                   (13, 300, 31), (25, 7, 17), (9, 5, 48), (12, 3, 8), (24, 4, 5), (8, 2, 33),
                                   (11, 6, 3), (37, 9, 64), (2, 513, 20)])
def test_affine_and_its_backward_match_numpy(rng, threads, N, E, M):
    x = rng.normal(size=(N, E)).astype(np.float32)
    K = rng.normal(size=(E, M)).astype(np.float32)
    b = rng.normal(size=M).astype(np.float32)
    dz = rng.normal(size=(N, M)).astype(np.float32)
    x64, K64, dz64 = (a.astype(np.float64) for a in (x, K, dz))
    outs = []
    for n in (1, 2):
        fastlstm.set_num_threads(n)
        z = _core.affine(x, K, b)
        dx, dK, db = _core.affine_backward(x, K, dz)
        assert _core.affine_backward(x, K, dz, need_dx=False)[0] is None
        assert z.shape == (N, M) and dx.shape == (N, E) and dK.shape == (E, M) and db.shape == (M,)
        if N:
            assert rel_err(z, x64 @ K64 + b) <= 1e-5
            assert rel_err(dx, dz64 @ K64.T) <= 1e-5
            assert rel_err(dK, x64.T @ dz64) <= 1e-5
            assert rel_err(db, dz64.sum(0)) <= 1e-5
        else:
            assert not dK.any() and not db.any()
        outs.append((z, dx, dK, db))
    for a, b_ in zip(*outs):  # the work split does not depend on the thread count
        np.testing.assert_array_equal(a, b_)


def loss_fn64(x, K, R, b, W1, W2):
    h_seq, _ = ref.lstm_forward(x, K, R, b)
    return np.sum(h_seq[:, -1] * W1) + np.sum(h_seq * W2)


def test_reference_and_kernel_match_finite_differences(rng):
    """Central differences in float64 on a tiny problem, for every gradient incl. dx."""
    B, T, E, H = 2, 4, 3, 3
    x = rng.normal(size=(B, T, E))
    K, R, b = (w.astype(np.float64) for w in weights(rng, E, H))
    W1, W2 = rng.normal(size=(B, H)), rng.normal(size=(B, T, H))
    params = [x, K, R, b]
    numeric = []
    eps = 1e-6
    for p in params:
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            up = loss_fn64(*params, W1, W2)
            p[idx] = old - eps
            down = loss_fn64(*params, W1, W2)
            p[idx] = old
            g[idx] = (up - down) / (2 * eps)
        numeric.append(g)
    _, cache = ref.lstm_forward(x, K, R, b)
    analytic = ref.lstm_backward(cache, W1, W2)[:4]
    for a, n in zip(analytic, numeric):
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-8)
    f32 = lambda a: np.asarray(a, np.float32)
    ws = _core.Workspace()
    _core.rnn_forward(f32(x), f32(K), f32(R), f32(b), workspace=ws)
    kernel = _core.rnn_backward(ws, f32(x), f32(K), f32(R), f32(W1), f32(W2))
    for k, n in zip(kernel, numeric):
        assert rel_err(k, n) <= 1e-5


def test_one_and_two_threads_are_bitwise_identical(rng, threads):
    B, T, E, H, V = 37, 23, 16, 21, 11
    emb, K, R, b, ids, _ = token_problem(rng, B, T, E, H, V)
    x = emb[ids]
    dh = rng.normal(size=(B, H)).astype(np.float32)
    outs = []
    for n in (1, 2):
        fastlstm.set_num_threads(n)
        assert fastlstm.get_num_threads() == n
        ws, wt = _core.Workspace(), _core.Workspace()
        h = _core.rnn_forward(x, K, R, b, workspace=ws)
        grads = _core.rnn_backward(ws, x, K, R, dh)
        table = _core.affine(emb, K, b)
        ht = _core.rnn_forward_tokens(ids, table, R, pad_row=0, workspace=wt)
        gt = _core.rnn_backward_table(wt, R, dh)
        outs.append([h, *grads, ht, *gt])
    for a, b_ in zip(*outs):
        np.testing.assert_array_equal(a, b_)


def test_a_row_does_not_depend_on_the_rows_beside_it(rng):
    # Every product rounds in k order with one FMA per term whatever the tile a row lands
    # in, so forward results are bitwise the same whichever rows share the call.
    emb, K, R, b, ids, table = token_problem(rng, 200, 12, 8, 6, 30)
    one_by_one = lambda f, n, step: np.concatenate([f(s, min(s + step, n)) for s in range(0, n, step)])
    np.testing.assert_array_equal(_core.affine(emb, K, b), one_by_one(lambda i, j: _core.affine(emb[i:j], K, b), 30, 1))
    for step in (1, 7, 64):
        h = one_by_one(lambda i, j: _core.rnn_forward_tokens(ids[i:j], table, R, pad_row=0, training=False), 200, step)
        np.testing.assert_array_equal(_core.rnn_forward_tokens(ids, table, R, pad_row=0), h)
        x = emb[ids]
        h = one_by_one(lambda i, j: _core.rnn_forward(x[i:j], K, R, b, training=False), 200, step)
        np.testing.assert_array_equal(_core.rnn_forward(x, K, R, b), h)


def at_offset(a, offset):
    """A copy of a whose data starts `offset` floats past a 64-byte boundary."""
    buf = np.empty(a.size + 32, a.dtype)
    start = (-buf.ctypes.data % 64) // a.itemsize + offset
    out = buf[start:start + a.size].reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 64 == offset * a.itemsize
    return out


@pytest.mark.parametrize("B,T,E,H,V", [(37, 23, 16, 21, 11), (64, 10, 100, 100, 50)])
def test_results_do_not_depend_on_the_alignment_of_the_inputs(rng, B, T, E, H, V):
    # The kernels read inputs in place (no aligned copy): every result must be bitwise the
    # same wherever the arrays start.
    emb, K, R, b, ids, _ = token_problem(rng, B, T, E, H, V)
    x = emb[ids]
    dh = rng.normal(size=(B, H)).astype(np.float32)
    dz = rng.normal(size=(V, 4 * H)).astype(np.float32)

    def run(o):
        a = lambda arr: at_offset(arr, o)
        ws, wt = _core.Workspace(), _core.Workspace()
        h = _core.rnn_forward(a(x), a(K), a(R), a(b), workspace=ws)
        grads = _core.rnn_backward(ws, a(x), a(K), a(R), a(dh))
        table = _core.affine(a(emb), a(K), a(b))
        ht = _core.rnn_forward_tokens(a(ids), a(table), a(R), pad_row=0, workspace=wt)
        gt = _core.rnn_backward_table(wt, a(R), a(dh))
        w, m, v = a(emb), a(emb * 0.5), a(np.abs(emb))
        _core.adam_update(w, a(dz[:, :E]), m, v, None, 1.0, 1e-3, 0.9, 0.1, 0.999, 1e-3, 1e-7)
        return [h, *grads, table, *_core.affine_backward(a(emb), a(K), a(dz)), ht, *gt, w, m, v]

    aligned = run(0)
    for o in (1, 3, 7):
        for got, want in zip(run(o), aligned):
            np.testing.assert_array_equal(got, want)


def test_empty_batch_and_zero_steps(rng):
    K, R, b = weights(rng, 3, 4)
    assert _core.rnn_forward(np.zeros((0, 5, 3), np.float32), K, R, b).shape == (0, 4)
    ws = _core.Workspace()
    h = _core.rnn_forward(np.zeros((2, 0, 3), np.float32), K, R, b, workspace=ws)
    np.testing.assert_array_equal(h, 0)  # zero initial state, no steps
    dx, dK, dR, db = _core.rnn_backward(ws, np.zeros((2, 0, 3), np.float32), K, R, np.ones((2, 4), np.float32))
    assert dx.shape == (2, 0, 3) and not dK.any() and not dR.any() and not db.any()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x=np.zeros((2, 3), np.float32)), "x must have shape"),
        (dict(x=np.zeros((2, 3, 4), np.float64)), "x must have dtype float32, got float64"),
        (dict(x=[[[0.0] * 4] * 3] * 2), "x must be a numpy array"),
        (dict(K=np.zeros((5, 8), np.float32)), r"kernel must have shape \(E, 4H\) = \(4, 8\), got \(5, 8\)"),
        (dict(R=np.zeros((2, 7), np.float32)), "recurrent_kernel must have shape"),
        (dict(b=np.zeros(9, np.float32)), "bias must have shape"),
        (dict(b=np.zeros(8, np.int32)), "bias must have dtype float32"),
    ],
)
def test_bad_arrays_raise_value_error(change, message):
    args = dict(x=np.zeros((2, 3, 4), np.float32), K=np.zeros((4, 8), np.float32),
                R=np.zeros((2, 8), np.float32), b=np.zeros(8, np.float32))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        _core.rnn_forward(args["x"], args["K"], args["R"], args["b"])


def test_bad_token_input_raises_value_error(rng):
    table = np.zeros((5, 8), np.float32)
    R = np.zeros((2, 8), np.float32)
    ids = np.zeros((2, 3), np.int32)
    for bad, message in [(5, r"ids\[1, 2\] = 5 is not a table row in \[0, 5\)"), (-1, "= -1 is not a table row")]:
        wrong = ids.copy()
        wrong[1, 2] = bad
        with pytest.raises(ValueError, match=message):
            _core.rnn_forward_tokens(wrong, table, R)
    with pytest.raises(ValueError, match="ids must have dtype int32, got int64"):
        _core.rnn_forward_tokens(ids.astype(np.int64), table, R)
    with pytest.raises(ValueError, match="pad_row must be -1 or a table row"):
        _core.rnn_forward_tokens(ids, table, R, pad_row=5)
    with pytest.raises(ValueError, match="table"):
        _core.rnn_forward_tokens(ids, np.zeros((5, 7), np.float32), R)


def test_backward_checks_its_workspace(rng):
    K, R, b = weights(rng, 3, 2)
    x = np.zeros((4, 5, 3), np.float32)
    dh = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="preceding rnn_forward"):
        _core.rnn_backward(_core.Workspace(), x, K, R, dh)
    ws = _core.Workspace()
    _core.rnn_forward(x, K, R, b, workspace=ws)
    with pytest.raises(ValueError, match="dh_last must have shape"):
        _core.rnn_backward(ws, x, K, R, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="preceding rnn_forward_tokens or rnn_forward_projected"):
        _core.rnn_backward_table(ws, R, dh)
    with pytest.raises(ValueError, match="x must have shape"):
        _core.rnn_backward(ws, x[:2], K, R, dh)


def test_set_num_threads_rejects_non_positive(threads):
    with pytest.raises(ValueError, match=">= 1"):
        fastlstm.set_num_threads(0)


def test_fma_peak_is_measured():
    one = _core.fma_peak_gflops(1)
    assert 1 < one < 1e4  # a real machine's single-thread fp32 rate, in GFLOP/s
    with pytest.raises(ValueError, match=">= 1"):
        _core.fma_peak_gflops(0)


def test_token_path_with_an_empty_batch():
    """B = 0 (found by hypothesis under UBSan): empty outputs, zero gradients, no UB."""
    R = np.zeros((2, 8), np.float32)
    ws = _core.Workspace()
    h = _core.rnn_forward_tokens(np.zeros((0, 3), np.int32), np.zeros((4, 8), np.float32), R, 0, workspace=ws)
    dtable, dR = _core.rnn_backward_table(ws, R, np.zeros((0, 2), np.float32))
    assert h.shape == (0, 2) and not dtable.any() and not dR.any()
