"""Keras's training API (compile / fit / evaluate / predict, losses, sample and class weights,
callbacks, progress output) against Keras 3 itself on the torch backend, from the same weights."""
import csv
import io
import re
import contextlib

import numpy as np
import pytest

import fastlstm
from fastlstm import Sequential, callbacks, losses
from fastlstm.layers import LSTM, Dense, Embedding


def _models(head=3, activation="softmax", units=5, vocab=30):
    """The same Embedding -> LSTM -> Dense model in fastlstm and Keras, Keras's weights in both."""
    import keras
    km = keras.Sequential([keras.Input((9,)), keras.layers.Embedding(vocab, 4), keras.layers.LSTM(units),
                           keras.layers.Dense(head, activation=activation)])
    m = Sequential([Embedding(vocab, 4), LSTM(units), Dense(head, activation=activation)])
    m.build((None, 9))
    m.set_weights(km.get_weights())
    return m, km


def _compiled(loss, metrics=None, **kw):
    """_models() compiled alike (Adam) in both libraries."""
    m, km = _models(**kw)
    for model in (m, km):
        model.compile(optimizer="adam", loss=loss, metrics=metrics)
    return m, km


def _data(rng, n=50, classes=3):
    x = rng.integers(1, 30, size=(n, 9))
    x[: n // 2, :3] = 0
    return x, rng.integers(0, classes, size=n)


def _assert_histories(h, kh, rtol=2e-5):
    assert list(h.history) == list(kh.history)
    assert h.epoch == kh.epoch and h.params == kh.params
    for k in kh.history:
        np.testing.assert_allclose(h.history[k], kh.history[k], rtol=rtol, atol=1e-6, err_msg=k)


def _assert_weights(m, km, atol=2e-5):
    for got, want in zip(m.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, atol=atol)


# ---- losses against Keras's own functions, gradients against finite differences -------------

def _keras_loss_values(name, kwargs, y, p):
    import keras
    return keras.ops.convert_to_numpy(getattr(keras.losses, name)(y, p, **kwargs))


LOSS_CASES = [
    ("categorical_crossentropy", {}, "onehot"),
    ("categorical_crossentropy", {"label_smoothing": 0.2}, "onehot"),
    ("categorical_crossentropy", {"from_logits": True}, "onehot"),
    ("sparse_categorical_crossentropy", {}, "ids"),
    ("sparse_categorical_crossentropy", {"from_logits": True}, "ids"),
    ("binary_crossentropy", {}, "binary"),
    ("binary_crossentropy", {"from_logits": True, "label_smoothing": 0.1}, "binary"),
    ("mean_squared_error", {}, "binary"),
    ("mean_absolute_error", {}, "binary"),
]


def _labels(kind, rng, n, k):
    if kind == "onehot":
        return np.eye(k, dtype=np.float32)[rng.integers(0, k, n)]
    if kind == "ids":
        return rng.integers(0, k, n)
    return rng.integers(0, 2, (n, k)).astype(np.float32)


@pytest.mark.keras
@pytest.mark.parametrize("name, kwargs, kind", LOSS_CASES)
def test_losses_match_keras_and_their_gradients_finite_differences(rng, name, kwargs, kind):
    n, k = 6, 4
    y = _labels(kind, rng, n, k)
    z = rng.normal(size=(n, k)).astype(np.float32)
    if kwargs.get("from_logits") or name.startswith("mean"):
        p = z
    elif name == "binary_crossentropy":
        p = 1 / (1 + np.exp(-z))
    else:
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    p = p.astype(np.float32)
    got = getattr(losses, name)(y, p, **kwargs)
    np.testing.assert_allclose(got, _keras_loss_values(name, kwargs, y, p), rtol=2e-6, atol=1e-7)
    loss = losses.get({"class_name": type(losses.get(name)).__name__, "config": kwargs})
    labels = loss.prepare(y, p.shape)
    _, grad = loss.values_and_gradient(labels, p)
    p64, eps = p.astype(np.float64), 1e-3
    for i, j in [(0, 0), (2, 1), (5, 3)]:
        hi, lo = p64.copy(), p64.copy()
        hi[i, j] += eps
        lo[i, j] -= eps
        f = lambda q: loss.values_and_gradient(labels, q.astype(np.float32))[0][i]  # noqa: E731
        fd = (float(f(hi)) - float(f(lo))) / (2 * eps)
        assert abs(grad[i, j] - fd) <= 2e-2 * max(1.0, abs(fd)), (i, j, grad[i, j], fd)


@pytest.mark.keras
def test_reduction_with_sample_weights_matches_keras(rng):
    import keras
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    p = rng.dirichlet(np.ones(3), 8).astype(np.float32)
    sw = rng.uniform(0, 2, 8).astype(np.float32)
    for reduction in ("sum_over_batch_size", "sum", "mean_with_sample_weight"):
        want = keras.losses.CategoricalCrossentropy(reduction=reduction)(y, p, sample_weight=sw)
        got = losses.CategoricalCrossentropy(reduction=reduction)(y, p, sample_weight=sw)
        np.testing.assert_allclose(got, float(want), rtol=2e-6)


def test_losses_take_the_logits_of_their_own_activation_only(rng):
    """A softmax output's logits serve the softmax cross-entropies, never binary_crossentropy
    (a softmax head with binary_crossentropy is computed on the probabilities, as Keras)."""
    dense = Dense(3, activation="softmax")
    dense.build((None, 5))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    out = dense.call(x)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    bce = losses.BinaryCrossentropy()
    values, grad = bce.values_and_gradient(y, out)
    p = np.asarray(out)
    np.testing.assert_allclose(values, bce.values_and_gradient(y, p.copy())[0])
    assert isinstance(grad, np.ndarray)
    _, g = losses.CategoricalCrossentropy().values_and_gradient(y, out)
    assert isinstance(g, fastlstm.layers.LogitsGradient)


def test_loss_identifiers_and_errors():
    assert isinstance(losses.get("mse"), losses.MeanSquaredError)
    assert isinstance(losses.get("BinaryCrossentropy"), losses.BinaryCrossentropy)
    assert isinstance(losses.get(losses.binary_crossentropy), losses.BinaryCrossentropy)
    assert losses.get({"class_name": "CategoricalCrossentropy", "config": {"from_logits": True}}).from_logits
    with pytest.raises(ValueError, match="Could not interpret loss identifier"):
        losses.get("hinge_of_doom")
    with pytest.raises(ValueError, match="custom loss"):
        losses.get(lambda y, p: (y - p) ** 2)
    m = Sequential([Embedding(30, 4), LSTM(3), Dense(3, activation="softmax")])
    m.compile()
    with pytest.raises(ValueError, match="No loss to compute"):
        m.fit(np.ones((4, 9), int), np.zeros(4), verbose=0)
    m.compile(loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="one-hot"):
        m.fit(np.ones((4, 9), int), np.zeros(4), verbose=0)
    with pytest.raises(ValueError, match="different numbers of samples"):
        m.fit(np.ones((4, 9), int), np.zeros((3, 3)), verbose=0)


# ---- fit against Keras: histories and weights --------------------------------------------------

@pytest.mark.keras
def test_fit_history_matches_keras_with_weights_validation_and_metric_names(rng):
    """shuffle=False: the same per-epoch logs (keys as the user wrote them, Keras's order) and
    the same weights, with sample weights, weighted validation, validation_freq and initial_epoch."""
    x, y = _data(rng)
    sw = rng.uniform(0.2, 2.0, len(x)).astype(np.float32)
    xv, yv = _data(rng, 20)
    swv = rng.uniform(0.2, 2.0, 20).astype(np.float32)
    m, km = _models()
    for model in (m, km):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["acc"],
                      weighted_metrics=["accuracy"])
    args = dict(batch_size=16, epochs=4, shuffle=False, sample_weight=sw, validation_data=(xv, yv, swv),
                validation_freq=2, initial_epoch=1, verbose=0)
    h, kh = m.fit(x, y, **args), km.fit(x, y, **args)
    _assert_histories(h, kh)
    _assert_weights(m, km)
    assert m.history is h and h.model is m
    np.testing.assert_allclose(m.evaluate(xv, yv, verbose=0), km.evaluate(xv, yv, verbose=0), rtol=2e-5)
    got, want = m.evaluate(xv, yv, return_dict=True, verbose=0), km.evaluate(xv, yv, return_dict=True, verbose=0)
    assert list(got) == list(want)
    assert m.metrics_names == km.metrics_names


@pytest.mark.keras
def test_class_weight_and_validation_split_match_keras(rng):
    x, y = _data(rng)
    m, km = _compiled("categorical_crossentropy", ["accuracy"])
    onehot = np.eye(3, dtype=np.float32)[y]
    args = dict(batch_size=10, epochs=2, shuffle=False, class_weight={0: 0.5, 2: 3.0}, validation_split=0.2,
                verbose=0)
    _assert_histories(m.fit(x, onehot, **args), km.fit(x, onehot, **args))
    _assert_weights(m, km)
    with pytest.raises(ValueError, match="class_weight` and `sample_weight"):
        m.fit(x, onehot, class_weight={0: 1.0}, sample_weight=np.ones(len(x)), verbose=0)


@pytest.mark.keras
def test_binary_head_trains_like_keras(rng):
    """IMDB-style: Dense(1, sigmoid) + binary_crossentropy, labels (n,) of 0/1; train_on_batch and
    test_on_batch results as Keras's (lists in metric order, dicts with return_dict)."""
    x, _ = _data(rng)
    y = rng.integers(0, 2, len(x)).astype(np.float32)
    m, km = _compiled("binary_crossentropy", ["accuracy"], head=1, activation="sigmoid")
    for _ in range(3):
        np.testing.assert_allclose(m.train_on_batch(x, y), km.train_on_batch(x, y), rtol=2e-5)
    np.testing.assert_allclose(m.test_on_batch(x, y), km.test_on_batch(x, y), rtol=2e-5)
    got, want = m.train_on_batch(x, y, return_dict=True), km.train_on_batch(x, y, return_dict=True)
    assert list(got) == list(want)
    _assert_weights(m, km)
    np.testing.assert_allclose(m.predict_on_batch(x), km.predict_on_batch(x), atol=3e-6)
    np.testing.assert_allclose(m(x), np.asarray(km(x).detach()), atol=3e-6)


@pytest.mark.keras
def test_mse_regression_head_matches_keras(rng):
    x, _ = _data(rng)
    y = rng.normal(size=(len(x), 2)).astype(np.float32)
    m, km = _models(head=2, activation=None)
    for model, loss in ((m, "mse"), (km, "mse")):
        model.compile(optimizer="adam", loss=loss, metrics=["mae"])
    args = dict(batch_size=25, epochs=2, shuffle=False, verbose=0)
    _assert_histories(m.fit(x, y, **args), km.fit(x, y, **args))
    _assert_weights(m, km)


# ---- callbacks ---------------------------------------------------------------------------------

def _recorder(base):
    class Recorder(base):
        def __init__(self):
            super().__init__()
            self.calls = []

    for hook in ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
                 "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin",
                 "on_test_batch_end", "on_predict_begin", "on_predict_end", "on_predict_batch_begin",
                 "on_predict_batch_end"):
        def record(self, *args, logs=None, _hook=hook):
            if len(args) > ("batch" in _hook or "epoch" in _hook):
                *args, logs = args
            args = tuple(args) + (logs,)
            keys = sorted(k for k in logs if k != "outputs") if logs else []
            self.calls.append((_hook,) + tuple(args[:-1]) + (tuple(keys),))
        setattr(Recorder, hook, record)
    return Recorder()


@pytest.mark.keras
def test_callback_hooks_are_called_as_keras_calls_them(rng):
    import keras
    x, y = _data(rng, 30)
    m, km = _compiled("sparse_categorical_crossentropy", ["accuracy"])
    mine, theirs = _recorder(callbacks.Callback), _recorder(keras.callbacks.Callback)
    m.fit(x, y, batch_size=8, epochs=2, validation_data=(x[:10], y[:10]), callbacks=[mine], verbose=0)
    km.fit(x, y, batch_size=8, epochs=2, validation_data=(x[:10], y[:10]), callbacks=[theirs], verbose=0)
    m.evaluate(x, y, batch_size=16, callbacks=[mine], verbose=0)
    km.evaluate(x, y, batch_size=16, callbacks=[theirs], verbose=0)
    m.predict(x, batch_size=16, callbacks=[mine], verbose=0)
    km.predict(x, batch_size=16, callbacks=[theirs], verbose=0)
    assert mine.calls == theirs.calls
    assert mine.model is m and mine.params == theirs.params


@pytest.mark.keras
def test_early_stopping_restores_the_best_weights_as_keras(rng):
    import keras
    x, y = _data(rng)
    m, km = _models()
    for model in (m, km):
        model.compile(optimizer=fastlstm.optimizers.Adam(0.05) if model is m else keras.optimizers.Adam(0.05),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    kwargs = dict(monitor="val_accuracy", patience=1, restore_best_weights=True, min_delta=0.001,
                  start_from_epoch=1)
    args = dict(batch_size=10, epochs=8, shuffle=False, validation_data=(x[:20], y[:20]), verbose=0)
    es, kes = callbacks.EarlyStopping(**kwargs), keras.callbacks.EarlyStopping(**kwargs)
    h = m.fit(x, y, callbacks=[es], **args)
    kh = km.fit(x, y, callbacks=[kes], **args)
    _assert_histories(h, kh)
    assert (es.stopped_epoch, es.best_epoch) == (kes.stopped_epoch, kes.best_epoch)
    _assert_weights(m, km)


@pytest.mark.keras
def test_learning_rate_callbacks_and_csv_logger_match_keras(rng, tmp_path):
    import keras
    x, y = _data(rng)
    m, km = _compiled("sparse_categorical_crossentropy", ["accuracy"])

    def schedule(epoch, lr):
        return lr * 0.5 if epoch >= 1 else lr

    runs = []
    for model, mod, path in ((m, callbacks, tmp_path / "m.csv"), (km, keras.callbacks, tmp_path / "k.csv")):
        cbs = [mod.LearningRateScheduler(schedule), mod.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5,
                                                                          min_delta=10.0),
               mod.CSVLogger(str(path))]
        runs.append(model.fit(x, y, batch_size=10, epochs=3, shuffle=False, callbacks=cbs, verbose=0))
    _assert_histories(*runs)
    _assert_weights(m, km)
    assert float(m.optimizer.learning_rate) == pytest.approx(float(km.optimizer.learning_rate), rel=1e-6)
    mine, theirs = (list(csv.reader(open(tmp_path / f))) for f in ("m.csv", "k.csv"))
    assert mine[0] == theirs[0] and len(mine) == len(theirs) == 4
    for a, b in zip(mine[1:], theirs[1:]):
        assert [v == "NA" for v in a] == [v == "NA" for v in b]
        np.testing.assert_allclose([float(v) for v in a if v != "NA"], [float(v) for v in b if v != "NA"],
                                   rtol=2e-5)


def test_terminate_on_nan_and_stop_training(rng):
    x, y = _data(rng)
    m, _ = _models()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

    class Poison(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.layers[-1].bias[...] = np.nan

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        h = m.fit(x, y, batch_size=10, epochs=3, callbacks=[Poison(), callbacks.TerminateOnNaN()], verbose=0)
    assert "Batch 2: Invalid loss, terminating training" in out.getvalue()
    assert h.epoch == [0] and m.optimizer.iterations == 3  # stopped after the third batch
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        m.fit(x, y, batch_size=10, callbacks=[callbacks.TerminateOnNaN(raise_error=True)], verbose=0)
    seen = []
    lam = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, sorted(logs))))
    m2, _ = _models()
    m2.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m2.fit(x, y, batch_size=25, epochs=2, callbacks=lam, verbose=0)
    assert seen == [(0, ["accuracy", "loss"]), (1, ["accuracy", "loss"])]


# ---- printed progress ---------------------------------------------------------------------------

def _printed(fn):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn()
    return out.getvalue()


@pytest.mark.keras
def test_verbose_2_prints_keras_lines(rng):
    x, y = _data(rng)
    m, km = _compiled("sparse_categorical_crossentropy", ["acc"])
    args = dict(batch_size=10, epochs=2, shuffle=False, validation_data=(x[:20], y[:20]), verbose=2)
    times = re.compile(r"\d+(\.\d+)?(ms|us|s)")
    mine, theirs = (_printed(lambda: model.fit(x, y, **args)) for model in (m, km))
    assert times.sub("T", mine) == times.sub("T", theirs)
    assert mine.startswith("Epoch 1/2\n5/5 - ") and "- acc: " in mine and "- val_loss: " in mine


def test_verbose_1_off_a_terminal_prints_each_finished_bar_once(rng):
    x, y = _data(rng)
    m, _ = _models()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    out = _printed(lambda: m.fit(x, y, batch_size=10, epochs=2, verbose=1))
    lines = out.splitlines()
    assert len(lines) == 4 and lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert re.fullmatch(r"\x1b\[1m5/5\x1b\[0m \x1b\[32m━{20}\x1b\[0m\x1b\[37m\x1b\[0m \x1b\[1m\d+s\x1b\[0m "
                        r"\d+(ms|us|s)/step - accuracy: \d\.\d{4} - loss: \d\.\d{4}", lines[1]), lines[1]
    assert _printed(lambda: m.fit(x, y, batch_size=10, verbose=0)) == ""
    assert "5/5" in _printed(lambda: m.evaluate(x, y, batch_size=10))
    assert _printed(lambda: m.predict(x, verbose=0)) == ""


def test_progbar_redraws_in_place_on_a_terminal(monkeypatch):
    from fastlstm.utils.progbar import Progbar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    monkeypatch.setattr("sys.stdout", out)
    bar = Progbar(3, interval=0)
    for step in (1, 2, 3):
        bar.update(step, [("loss", 0.5 * step)])
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    frames = text.split("\r")
    assert "loss: 0.7500" in frames[2]  # the mean over the steps so far, as Keras
    assert "loss: 1.5000" in frames[3]  # the final update is shown as given


# ---- summary ------------------------------------------------------------------------------------

@pytest.mark.keras
def test_summary_is_laid_out_as_keras(rng):
    import keras
    m, km = _models()
    m.layers[0].trainable = km.layers[0].trainable = False
    for a, b in zip(m.layers, km.layers):
        a.name = b.name
    m.name = km.name
    mine, theirs = [], []
    m.summary(line_length=80, print_fn=mine.append)
    km.summary(line_length=80, print_fn=lambda line, **kw: theirs.append(line))
    assert "\n".join(mine).splitlines() == "\n".join(theirs).splitlines()
    empty, kempty = [], []
    Sequential(name="e").summary(line_length=70, print_fn=empty.append)
    keras.Sequential(name="e").summary(line_length=70, print_fn=lambda line, **kw: kempty.append(line))
    assert "\n".join(empty).splitlines() == "\n".join(kempty).splitlines()
    assert "Total params: 0 (0.00 B)" in empty[0]
    # a built optimizer's variables count in the total and get their own line, as Keras's
    x, y = rng.integers(0, 30, (8, 9)), rng.integers(0, 3, 8)
    for model in (m, km):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.train_on_batch(x, y)
    mine, theirs = [], []
    m.summary(line_length=80, print_fn=mine.append)
    km.summary(line_length=80, print_fn=lambda line, **kw: theirs.append(line))
    assert "Optimizer params" in "\n".join(theirs)
    assert "\n".join(mine).splitlines()[-5:] == "\n".join(theirs).splitlines()[-5:]


def test_crossentropy_loss_is_chosen_by_the_label_shapes(rng):
    """loss='crossentropy' (or 'ce'): binary for one output unit, sparse for integer labels,
    categorical for one-hot, as Keras resolves it on the first batch."""
    x, y = _data(rng)
    for head, labels, want in ((1, (y % 2).astype(np.float32), losses.BinaryCrossentropy),
                               (3, y, losses.SparseCategoricalCrossentropy),
                               (3, np.eye(3)[y], losses.CategoricalCrossentropy)):
        m = Sequential([Embedding(30, 4), LSTM(3), Dense(head, activation="sigmoid" if head == 1 else "softmax")])
        m.compile(optimizer="adam", loss="ce" if head == 1 else "crossentropy")
        m.train_on_batch(x, labels)
        assert [type(fn) for fn in m._output_losses] == [want]


@pytest.mark.keras
def test_model_checkpoint_saves_the_epochs_keras_saves(rng, tmp_path):
    import keras
    x, y = _data(rng)
    m, km = _compiled("sparse_categorical_crossentropy", ["accuracy"])
    for model, mod, folder in ((m, callbacks, tmp_path / "m"), (km, keras.callbacks, tmp_path / "k")):
        cbs = [mod.ModelCheckpoint(str(folder / "e{epoch:02d}-{val_loss:.3f}.keras"), save_best_only=True,
                                   monitor="val_accuracy"),
               mod.ModelCheckpoint(str(folder / "w.weights.h5"), save_weights_only=True, save_freq=3)]
        model.fit(x, y, batch_size=10, epochs=4, shuffle=False, validation_data=(x[:20], y[:20]), callbacks=cbs,
                  verbose=0)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(p.name for p in (tmp_path / "k").iterdir())
    last = sorted((tmp_path / "m").glob("*.keras"))[-1]
    np.testing.assert_allclose(keras.models.load_model(last).predict(x, verbose=0),
                               fastlstm.models.load_model(last).predict(x, verbose=0), atol=3e-6)
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        callbacks.ModelCheckpoint("w.keras", save_weights_only=True)


@pytest.mark.keras
def test_compile_config_goes_both_ways_through_keras_files(rng, tmp_path):
    """compile's arguments as written (an optimizer's options, loss and metric objects, 'acc')
    are in the .keras file, and Keras's own file compiles fastlstm's model alike."""
    import keras
    x, _ = _data(rng)
    y = (rng.random(len(x)) > 0.5).astype(np.float32)
    m, km = _models(head=1, activation="sigmoid")
    m.compile(optimizer=fastlstm.optimizers.RMSprop(0.01, momentum=0.5),
              loss=losses.BinaryCrossentropy(label_smoothing=0.1), metrics=["acc", fastlstm.metrics.AUC()])
    m.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer).__name__ == "RMSprop" and float(loaded.optimizer.momentum) == 0.5
    assert type(loaded.loss).__name__ == "BinaryCrossentropy" and loaded.loss.label_smoothing == 0.1
    km.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
               loss=keras.losses.BinaryCrossentropy(from_logits=False), metrics=["acc"])
    km.train_on_batch(x, y)
    km.save(tmp_path / "k.keras")
    back = fastlstm.models.load_model(tmp_path / "k.keras")
    assert type(back.optimizer) is fastlstm.optimizers.SGD and back.optimizer.nesterov
    for _ in range(2):
        np.testing.assert_allclose(back.train_on_batch(x, y), km.train_on_batch(x, y), rtol=2e-5)
    _assert_weights(back, km)
    assert list(back.evaluate(x, y, return_dict=True, verbose=0)) == ["acc", "loss"]


# ---- review findings: each failed before its fix ------------------------------------------------

def _masked_sequence_models():
    import keras
    km = keras.Sequential([keras.Input((6,)), keras.layers.Embedding(20, 4, mask_zero=True),
                           keras.layers.LSTM(3, return_sequences=True), keras.layers.Dense(3, activation="softmax")])
    m = Sequential([fastlstm.Input((6,)), Embedding(20, 4, mask_zero=True), LSTM(3, return_sequences=True),
                    Dense(3, activation="softmax")])
    m.set_weights(km.get_weights())
    return m, km


@pytest.mark.keras
def test_masked_outputs_reduce_and_score_as_keras(rng):
    """A masked sequence output: every reduction folds the mask in as Keras's apply_mask (only
    the means rescale by total/valid), and unweighted metrics see the mask too."""
    import keras
    x = rng.integers(1, 20, (8, 6))
    x[:, 4:] = 0
    x[0, 2:] = 0
    y = rng.integers(0, 3, (8, 6))
    m, km = _masked_sequence_models()
    for reduction in ("sum_over_batch_size", "sum", "mean_with_sample_weight"):
        km.compile(loss=keras.losses.SparseCategoricalCrossentropy(reduction=reduction), metrics=["accuracy"],
                   weighted_metrics=["acc"])
        m.compile(loss=losses.SparseCategoricalCrossentropy(reduction=reduction), metrics=["accuracy"],
                  weighted_metrics=["acc"])
        # (with sample weights as well, Keras's own masked reduction fails: a shape error in torch)
        np.testing.assert_allclose(m.evaluate(x, y, batch_size=8, verbose=0),
                                   km.evaluate(x, y, batch_size=8, verbose=0), rtol=2e-6, err_msg=reduction)


def test_training_and_evaluation_take_the_loss_the_same_way(rng):
    """A saturated wrong prediction: train_on_batch, test_on_batch and evaluate agree."""
    m = Sequential([Embedding(30, 4), LSTM(3), Dense(3, activation="softmax")])
    m.build((None, 9))
    m.layers[-1].kernel[...] = 0
    m.layers[-1].bias[...] = [200, 0, 0]
    m.compile(optimizer=fastlstm.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    x, y = rng.integers(1, 30, (4, 9)), np.ones(4, int)
    assert m.test_on_batch(x, y) == m.evaluate(x, y, verbose=0) == pytest.approx(m.train_on_batch(x, y), rel=1e-6)


def test_evaluate_beside_a_training_thread_is_unaffected(rng):
    import threading
    x, y = rng.integers(1, 20, (256, 5)), rng.integers(0, 2, 256)
    m = Sequential([Embedding(20, 4), LSTM(3), Dense(2, activation="softmax")])
    m.compile(optimizer=fastlstm.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    want = m.evaluate(x[:64], 1 - y[:64], batch_size=8, verbose=0)
    fitted = {}
    t = threading.Thread(target=lambda: fitted.update(h=m.fit(x, y, epochs=15, batch_size=8, verbose=0)))
    t.start()
    seen = set()
    while t.is_alive():
        seen.add(tuple(m.evaluate(x[:64], 1 - y[:64], batch_size=8, verbose=0)))
    t.join()
    assert seen <= {tuple(want)}
    # lr 0: every epoch's loss the same, but for the order the shuffled batches are summed in
    losses_seen = fitted["h"].history["loss"]
    np.testing.assert_allclose(losses_seen, losses_seen[0], rtol=1e-6)


def test_sequence_labels_without_a_declared_length(rng):
    """Embedding first and no Input: the output is (None, None, k); (n, T) labels still fit,
    loss='crossentropy' resolves and an empty predict is an empty array."""
    m = Sequential([Embedding(20, 4), LSTM(3, return_sequences=True), Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="crossentropy", metrics=["accuracy"])
    x, y = rng.integers(1, 20, (8, 6)), rng.integers(0, 3, (8, 6))
    m.fit(x, y, verbose=0)
    assert m.predict(np.zeros((0, 6), int), verbose=0).shape[0] == 0
    with pytest.raises(ValueError, match="labels"):
        m.fit(x, y[:, :5], verbose=0)


def test_ctrl_c_in_a_last_epoch_end_hook_is_not_lost(rng):
    import os
    import signal
    x, y = _data(rng, 20)
    m = Sequential([Embedding(30, 4), LSTM(3), Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    ctrl_c = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        m.fit(x, y, epochs=1, callbacks=[ctrl_c], verbose=0)


def test_a_metric_that_cannot_take_the_batch_fails_before_the_step(rng):
    """As Keras (its metrics are built before the optimizer step): the error leaves the
    weights as they were."""
    class Broken(fastlstm.metrics.Metric):
        def update_state(self, y_true, y_pred, sample_weight=None):
            raise ValueError("broken metric")

        def result(self):
            return 0.0

    m = Sequential([Embedding(30, 4), LSTM(3), Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=[Broken(name="broken")])
    x, y = _data(rng)
    m.build((None, 9))
    before = m.get_weights()
    with pytest.raises(ValueError, match="broken metric"):
        m.train_on_batch(x, y)
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_batch_logs_are_computed_only_for_callbacks_that_read_them(rng, monkeypatch):
    """verbose=0 or 2 and no batch hook: no batch's logs are made (a cost per batch); a
    callback with a batch hook gets every batch's logs."""
    m = Sequential([Embedding(30, 4), LSTM(3), Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = _data(rng, n=40)
    calls = []
    real = type(m)._logs
    monkeypatch.setattr(type(m), "_logs", lambda self, state=None: calls.append(1) or real(self, state))
    m.fit(x, y, batch_size=5, epochs=2, verbose=2, validation_data=(x, y))
    assert len(calls) == 4  # each epoch's training and validation logs

    class Seen(fastlstm.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.logs = []

        def on_train_batch_end(self, batch, logs=None):
            self.logs.append(dict(logs))

    seen, calls[:] = Seen(), []
    m.fit(x, y, batch_size=5, epochs=1, verbose=0, callbacks=[seen])
    assert len(seen.logs) == 8 and all(set(logs) == {"loss", "accuracy"} for logs in seen.logs)
