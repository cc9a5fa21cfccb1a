"""A smoke test of an installed fastlstm on another CPU (CI runs it under qemu-x86_64 -cpu
Nehalem from a portable wheel): `python tests/smoke.py LEVEL` checks that LEVEL is the active
ISA level, that the LSTM kernel matches the float64 numpy reference, and that a model trains
and predicts."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy_lstm as ref  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm import _core, layers  # noqa: E402


def main(level):
    info = fastlstm.cpu_info()
    print(info)
    assert info["active"] == level, f"active level {info['active']}, expected {level}"
    rng = np.random.default_rng(0)
    B, T, E, H = 5, 7, 6, 9
    x = rng.normal(size=(B, T, E)).astype(np.float32)
    K, R = (rng.normal(size=(n, 4 * H)).astype(np.float32) * 0.3 for n in (E, H))
    b = rng.normal(size=4 * H).astype(np.float32)
    h_seq, _ = ref.lstm_forward(*(a.astype(np.float64) for a in (x, K, R, b)))
    got = _core.rnn_forward(x, K, R, b)
    assert np.abs(got - h_seq[:, -1]).max() <= 1e-5, np.abs(got - h_seq[:, -1]).max()

    fastlstm.utils.set_random_seed(1)
    ids = rng.integers(1, 30, size=(40, 12))
    y = rng.integers(0, 3, size=40)
    model = fastlstm.Sequential([layers.Embedding(30, 8), layers.LSTM(10), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(ids, y, batch_size=8, epochs=2, verbose=0)
    p = model.predict(ids, verbose=0)
    assert p.shape == (40, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.isfinite(history.history["loss"]).all()
    print(f"smoke test passed at the {level} level: loss {history.history['loss']}")


if __name__ == "__main__":
    main(sys.argv[1])
