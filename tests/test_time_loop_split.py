"""The time loops on many cores: how threads share the chunks of a batch (teams splitting each
step by blocks of units), and training bitwise the same for any thread count with teams at
work. More threads than this machine's cores run under FASTLSTM_OVERSUBSCRIBE=1, in a fresh
interpreter (the switch is read at import)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from fastlstm import _core

SEED = dict(B=100, T=100, H=100, G=4, U=1000, shared_rows=True, training=True)  # train_reuters's LSTM


def split(threads, **shape):
    return _core.time_loop_split(**{**SEED, **shape}, threads=threads)


@pytest.mark.parametrize("threads", [8, 16, 32])
@pytest.mark.parametrize("shape", [{}, dict(B=512), dict(B=64, H=256, G=3), dict(training=False, B=1000)])
def test_enough_pieces_for_many_cores_and_balanced(threads, shape):
    s = split(threads, **shape)
    full = {**SEED, **shape}
    H, panels = full["H"], -(-full["H"] // 16)
    # every member a block of whole 16-unit panels, the blocks in order covering [0, H)
    lo = [u for u, _ in s["units"]]
    assert lo[0] == 0 and s["units"][-1][1] == H and len(s["units"]) == s["team"]
    assert all(a[1] == b[0] for a, b in zip(s["units"], s["units"][1:]))
    assert all(u % 16 == 0 for u in lo)
    # as many pieces as threads, unless the layer has fewer panels than a team would need
    pieces = s["chunks"] * s["team"]
    assert pieces == min(threads // s["chunks"], panels) * s["chunks"] or s["chunks"] > threads
    assert pieces >= min(threads, s["chunks"] * panels) * 0.85
    assert s["teams"] * s["team"] <= threads
    # balance: members' panels differ by at most one (the last panel may be partial)
    n_panels = [-(-(b - a) // 16) for a, b in s["units"]]
    assert max(n_panels) - min(n_panels) <= 1


def test_the_seed_split_on_8_16_32_threads():
    """Stated figures: 2 chunks of 50 rows; 7 panels of 16 units (100 = 6 x 16 + 4)."""
    assert [(s["chunks"], s["team"]) for s in map(split, (1, 2, 8, 16, 32))] == \
        [(2, 1), (2, 1), (2, 4), (2, 7), (2, 7)]
    assert split(8)["units"] == [(0, 16), (16, 48), (48, 80), (80, 100)]
    big = split(32, B=512)  # 8 chunks of 64 rows, teams of 4
    assert (big["chunks"], big["team"]) == (8, 4)


def test_small_steps_keep_one_thread_per_chunk():
    # a step of one row of 64 units is a few microseconds: a barrier per step would cost more
    assert split(8, B=1, H=64)["team"] == 1
    assert split(2, B=1, H=256)["team"] == 2
    assert split(32, splittable=False)["team"] == 1  # gated cells: one thread per chunk


def test_oversubscription_switch(tmp_path):
    code = "import fastlstm; fastlstm.set_num_threads(64); print(fastlstm.get_num_threads())"
    env = {**os.environ, "FASTLSTM_OVERSUBSCRIBE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 64
    env.pop("FASTLSTM_OVERSUBSCRIBE")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert int(out.stdout) == len(os.sched_getaffinity(0))


# Each case (name: cell and inputs; B, H; thread counts) trains at 1 thread and at each count
# (teams at 4+ threads, one row's at 2+: checked below on what the layers record)
CASES = textwrap.dedent("""
    import json, sys, numpy as np, fastlstm
    from fastlstm import Sequential
    from fastlstm.layers import GRU, LSTM, SimpleRNN, Bidirectional, Dense, Embedding
    from fastlstm.preprocessing import to_categorical
    V, T = 40, 11

    def data(kind, B):
        rng = np.random.default_rng(B)
        ids = rng.integers(1, V, size=(B, T))
        ids[::3, :5] = 0      # leading padding: rows start late, from the shared trajectory
        ids[1::4, 7:] = 0     # trailing padding
        ids[2::5, 4:6] = 0    # holes (masked steps inside a row)
        y = to_categorical(rng.integers(0, 3, size=B), 3)
        return (ids if kind != "dense" else rng.normal(size=(B, T, 6)).astype(np.float32)), y

    def model(name, H):
        cell = {"lstm": LSTM, "gru": GRU, "simple_rnn": SimpleRNN}[name.split("-")[0]]
        head = [Dense(3, activation="softmax")]
        if name.endswith("tokens"):
            return [Embedding(V, 8), cell(H, return_sequences=True), cell(H)] + head
        if name.endswith("mask"):
            return [Embedding(V, 8, mask_zero=True), Bidirectional(cell(H, return_sequences=True)),
                    cell(H, go_backwards=True)] + head
        if name.endswith("dense"):
            return [cell(H, return_sequences=True), cell(H)] + head
        if name == "gru-reset_before":
            return [Embedding(V, 8), GRU(H, reset_after=False)] + head
        return [Embedding(V, 8), LSTM(H, recurrent_dropout=0.3)] + head  # lstm-recurrent_dropout

    def train(name, B, H, threads):
        fastlstm.set_num_threads(threads)
        fastlstm.utils.set_random_seed(5)
        x, y = data("dense" if name.endswith("dense") else "tokens", B)
        m = Sequential(model(name, H))
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        m.fit(x, y, batch_size=B, epochs=2, verbose=0)
        rnns = [r for l in m.layers for r in (l, getattr(l, "forward_layer", None), getattr(l, "backward_layer", None))
                if hasattr(r, "_workspace")]
        # the team each recurrent layer's training steps ran, forward and backward: the same for
        # every layer (all have B rows and H units), or None
        teams = {tuple(r._workspace.teams) for r in rnns}
        return m.get_weights() + [m.predict(x, verbose=0)], teams.pop() if len(teams) == 1 else None

    report = {}
    for name, B, H, threads in json.loads(sys.argv[1]):
        base, _ = train(name, B, H, 1)
        report[name + f" B={B} H={H}"] = {}
        for n in threads:
            got, teams = train(name, B, H, n)
            report[name + f" B={B} H={H}"][n] = [all(np.array_equal(a, b) for a, b in zip(base, got)), teams]
    print(json.dumps(report))
""")
THREADS = (2, 3, 4, 7, 8, 16)  # 7: teams of 3 and an idle thread; 16: the seed's teams of 7 (H = 100)
TEAM_CASES = [(f"{c}-{k}", B, H) for c in ("lstm", "gru", "simple_rnn") for k in ("tokens", "mask", "dense")
              for B, H in ((70, 64), (40, 100))]
# one row: one chunk, a team of every size up to 3 (2 threads: 2, 3 threads: 3)
ONE_ROW_CASES = [("lstm-tokens", 1, 160), ("gru-mask", 1, 192), ("simple_rnn-dense", 1, 320)]
SOLO_CASES = [("gru-reset_before", 40, 100), ("lstm-recurrent_dropout", 40, 100)]


def test_training_is_bitwise_the_same_with_teams(tmp_path):
    env = {**os.environ, "FASTLSTM_OVERSUBSCRIBE": "1"}
    cases = [c + (THREADS,) for c in TEAM_CASES + SOLO_CASES] + [c + ((2, 3),) for c in ONE_ROW_CASES]
    out = subprocess.run([sys.executable, "-c", CASES, json.dumps(cases)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report) == len(cases)
    different = {name: [n for n, (same, _) in r.items() if not same] for name, r in report.items()}
    # the layers' own record of the teams their steps ran, forward and backward
    teams = {name: {int(n): tuple(t) if t else None for n, (_, t) in r.items()} for name, r in report.items()}
    for name, B, H in TEAM_CASES:
        t = teams[f"{name} B={B} H={H}"]
        # 2 chunks: 1 thread each up to 3 threads, a team of 2 at 4, of 2 or 3 (an idle thread) at 7
        assert t[2] == t[3] == (1, 1) and t[4] == (2, 2) and t[7][0] == t[7][1] >= 2, (name, t)
        assert t[8][0] == t[8][1] >= 2, (name, t)
        if H == 100 and not name.startswith("simple_rnn"):  # 7 blocks of 16 units, enough work for 7
            assert t[16] == (7, 7), (name, t)
    for name, B, H in ONE_ROW_CASES:
        assert teams[f"{name} B={B} H={H}"] == {2: (2, 2), 3: (3, 3)}, name
    for name, B, H in SOLO_CASES:
        assert set(teams[f"{name} B={B} H={H}"].values()) == {(1, 1)}, name
    assert not any(different.values()), different
