"""The Keras-style model: against Keras itself (torch backend), numpy formulas, round trips."""
import numpy as np
import pytest

import fastlstm
from fastlstm import Sequential, _core
from fastlstm.layers import LSTM, Dense, Embedding
from fastlstm.optimizers import Adam
from fastlstm.preprocessing import to_categorical


def small_data(rng, n=64, T=12, V=30, K=5):
    x = rng.integers(1, V, size=(n, T))
    for row in x:
        row[: rng.integers(0, T)] = 0  # pre-padding of varied length
    y = rng.integers(0, K, size=n)
    return x.astype(np.int32), y


def small_model(V=30, E=8, H=6, K=5, loss="categorical_crossentropy"):
    model = Sequential([Embedding(V, E), LSTM(H), Dense(K, activation="softmax")])
    model.compile(loss=loss, optimizer="adam", metrics=["accuracy"])
    return model


def keras_model(V=30, E=8, H=6, K=5):
    import keras

    model = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(V, E),
                              keras.layers.LSTM(H), keras.layers.Dense(K, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(), metrics=["accuracy"])
    return model


def test_weights_exist_at_construction_in_keras_order():
    model = small_model()
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(30, 8), (8, 24), (6, 24), (24,), (6, 5), (5,)]
    assert model.count_params() == sum(int(np.prod(s)) for s in shapes)


def test_initializers_follow_keras():
    fastlstm.utils.set_random_seed(0)
    emb, kernel, rec, bias, dk, db = small_model(V=200, E=64, H=32).get_weights()
    assert np.abs(emb).max() <= 0.05 and emb.std() > 0.02
    limit = np.sqrt(6 / (64 + 128))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
    np.testing.assert_allclose(rec @ rec.T, np.eye(32), atol=1e-5)  # orthogonal rows
    np.testing.assert_array_equal(bias, np.r_[np.zeros(32), np.ones(32), np.zeros(64)])
    assert not db.any()


@pytest.mark.keras
def test_predictions_and_adam_steps_match_keras(rng):
    """Same weights in, same predictions and, step by step, the same weights out."""
    km = keras_model()
    model = small_model()
    model.set_weights(km.get_weights())
    x, y = small_data(rng)
    Y = to_categorical(y, 5)
    np.testing.assert_allclose(model.predict(x), km.predict(x, verbose=0), atol=1e-6)
    for step in range(5):
        batch = slice(16 * (step % 4), 16 * (step % 4) + 16)
        k_loss = km.train_on_batch(x[batch], Y[batch])[0]
        f_loss = model.train_on_batch(x[batch], Y[batch])[0]
        assert abs(k_loss - f_loss) <= 1e-5
    for got, want in zip(model.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, atol=2e-6)


@pytest.mark.keras
def test_dense_input_lstm_matches_keras(rng):
    import keras

    km = keras.Sequential([keras.Input(shape=(7, 4)), keras.layers.LSTM(5, return_sequences=True),
                           keras.layers.LSTM(3), keras.layers.Dense(2, activation="softmax")])
    km.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    model = Sequential([LSTM(5, return_sequences=True, input_shape=(7, 4)), LSTM(3), Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    model.set_weights(km.get_weights())
    x = rng.normal(size=(10, 7, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=10)
    for _ in range(3):
        np.testing.assert_allclose(model.train_on_batch(x, y), km.train_on_batch(x, y), atol=1e-5)
    for got, want in zip(model.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, atol=2e-6)


def test_adam_matches_numpy_formula(rng):
    w0 = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in w0] for _ in range(4)]
    opt = Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6)
    ws = [w.copy() for w in w0]
    for g in grads:
        opt.apply(g, ws)
    for k, w in enumerate(w0):  # textbook Adam in float64, Keras's step size form
        w, m, v = w.astype(np.float64), 0.0, 0.0
        for t, g in enumerate(grads, start=1):
            m = 0.8 * m + 0.2 * g[k]
            v = 0.99 * v + 0.01 * g[k] ** 2
            w = w - 0.01 * np.sqrt(1 - 0.99 ** t) / (1 - 0.8 ** t) * m / (np.sqrt(v) + 1e-6)
        np.testing.assert_allclose(ws[k], w, rtol=1e-5, atol=1e-6)


def test_predict_and_evaluate_do_not_depend_on_how_rows_are_grouped(rng):
    # predict/evaluate forward ~1024 rows per call; the logits are bitwise what batch-by-batch
    # calls give (numpy's exp in the softmax may round a last bit differently by position).
    model = small_model()
    x, y = small_data(rng, n=2500)
    Y = to_categorical(y, 5)
    logits = model._forward(x, training=False)[0][0].logits
    one_by_one = np.concatenate([model._forward(x[s:s + 7], training=False)[0][0].logits for s in range(0, 2500, 7)])
    np.testing.assert_array_equal(logits, one_by_one)
    probs = np.concatenate([model.predict(x[s:s + 7], batch_size=7) for s in range(0, 2500, 7)])
    np.testing.assert_allclose(model.predict(x, batch_size=7, verbose=0), probs, rtol=1e-6, atol=0)
    loss, acc = model.evaluate(x, Y, batch_size=100, verbose=0)
    per_batch = [model.evaluate(x[s:s + 100], Y[s:s + 100], batch_size=100, verbose=0) for s in range(0, 2500, 100)]
    assert loss == pytest.approx(sum(l for l, _ in per_batch) / 25, rel=1e-6)
    assert acc == pytest.approx(sum(round(a * 100) for _, a in per_batch) / 2500, rel=1e-6)  # float32, as Keras


def test_evaluate_matches_numpy(rng):
    model = small_model()
    x, y = small_data(rng, n=45)
    probs = model.predict(x, batch_size=7).astype(np.float64)
    assert probs.shape == (45, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
    loss = -np.mean(np.log(probs[np.arange(45), y]))
    acc = np.mean(probs.argmax(axis=1) == y)
    got_loss, got_acc = model.evaluate(x, to_categorical(y, 5), batch_size=10, verbose=0)
    assert abs(got_loss - loss) <= 1e-5 and got_acc == pytest.approx(acc, rel=1e-6)  # float32, as Keras
    sparse = small_model(loss="sparse_categorical_crossentropy")
    sparse.set_weights(model.get_weights())
    np.testing.assert_allclose(sparse.evaluate(x, y, verbose=0), [got_loss, got_acc], rtol=1e-6)


def test_fit_history_validation_and_reproducibility(rng):
    x, y = small_data(rng, n=50)
    Y = to_categorical(y, 5)
    runs = []
    for _ in range(2):
        fastlstm.utils.set_random_seed(42)
        model = small_model()
        h = model.fit(x, Y, batch_size=8, epochs=3, validation_split=0.2, verbose=0)
        runs.append((h, model.get_weights()))
    h = runs[0][0]
    assert sorted(h.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(v) == 3 for v in h.history.values()) and h.epoch == [0, 1, 2]
    assert h.history["loss"][-1] < h.history["loss"][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)
    # the validation part is the last 20%, before shuffling: its loss is evaluate() on it
    np.testing.assert_allclose(h.history["val_loss"][-1], _evaluate_with(runs[0][1], x[40:], Y[40:])[0], rtol=1e-6)


def _evaluate_with(weights, x, y):
    model = small_model()
    model.set_weights(weights)
    return model.evaluate(x, y, verbose=0)


def test_fit_prints_keras_style_lines(rng, capsys):
    x, y = small_data(rng, n=20)
    small_model().fit(x, to_categorical(y, 5), batch_size=8, epochs=2, validation_data=(x, to_categorical(y, 5)))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2" and out[2] == "Epoch 2/2"
    # Keras's bar, off a terminal printed once finished
    assert out[1].startswith("\x1b[1m3/3\x1b[0m ") and "/step - accuracy: " in out[1] and "val_loss: " in out[1]


def test_save_load_round_trip(rng, tmp_path):
    model = small_model()
    x, y = small_data(rng, n=20)
    model.fit(x, to_categorical(y, 5), epochs=1, verbose=0)
    path = tmp_path / "model.weights.npz"
    model.save_weights(path)
    other = small_model()
    other.load_weights(path)
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x), other.predict(x))
    assert [p.name for p in tmp_path.iterdir()] == ["model.weights.npz"]  # no temporary left
    with pytest.raises(ValueError, match=r"weight 0 must have shape \(30, 9\), got \(30, 8\)"):
        small_model(E=9).load_weights(path)


def test_summary_lists_layers(capsys):
    small_model().summary()
    out = capsys.readouterr().out
    assert "embedding (Embedding)" in out and "(None, 6)" in out and "Total params: 635" in out
