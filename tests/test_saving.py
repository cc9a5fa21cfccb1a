"""Keras 3's files both ways (fastlstm/saving.py): .keras archives and .weights.h5 weights
written by fastlstm load in Keras 3 (torch backend) and predict and train the same, and
Keras's load in fastlstm; layer configs are Keras's own; bad files are clear errors."""
import json
import os
import zipfile

import numpy as np
import pytest

import fastlstm
from fastlstm import initializers, layers, models, saving
from fastlstm.preprocessing import to_categorical

V, T, F = 30, 9, 4  # vocabulary, time steps, features of the dense-input models

# Each model as (class name, arguments) per layer, built alike from keras.layers and
# fastlstm.layers; a nested tuple is a wrapped layer.
ARCHS = {
    "mask_zero_lstm": [("Embedding", dict(input_dim=V, output_dim=6, mask_zero=True)), ("LSTM", dict(units=5)),
                       ("Dense", dict(units=3, activation="softmax"))],
    "gru_reset_before": [("Embedding", dict(input_dim=V, output_dim=6)), ("GRU", dict(units=4, reset_after=False)),
                         ("Dense", dict(units=3, activation="softmax"))],
    "bidirectional_concat": [("Embedding", dict(input_dim=V, output_dim=6, mask_zero=True)),
                             ("Bidirectional", dict(layer=("LSTM", dict(units=4)))),
                             ("Dense", dict(units=3, activation="softmax"))],
    "bidirectional_sum": [("Embedding", dict(input_dim=V, output_dim=6)),
                          ("Bidirectional", dict(layer=("LSTM", dict(units=4, return_sequences=True)),
                                                 merge_mode="sum")),
                          ("LSTM", dict(units=3)), ("Dense", dict(units=3, activation="softmax"))],
    "stacked": [("Embedding", dict(input_dim=V, output_dim=6)), ("LSTM", dict(units=5, return_sequences=True)),
                ("GRU", dict(units=4, return_sequences=True)), ("SimpleRNN", dict(units=3, activation="relu")),
                ("Dense", dict(units=4, activation="relu", name="hidden")), ("Dense", dict(units=3, activation="softmax"))],
    "masking_dense_input": [("Masking", dict(mask_value=0.0)), ("LSTM", dict(units=4)),
                            ("Dense", dict(units=3, activation="softmax"))],
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Keras's tiny models run many times faster on one torch thread when the cores are
    shared (torch's threads spin against each other); the tolerances hold either way."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(lib, spec):
    name, kwargs = spec
    return getattr(lib, name)(**{k: build(lib, v) if isinstance(v, tuple) else v for k, v in kwargs.items()})


def data(rng, arch, n=16):
    """Pre-padded token ids (or, for a dense-input model, features with masked steps) and
    one-hot labels of 3 classes."""
    if ARCHS[arch][0][0] == "Embedding":
        x = rng.integers(1, V, size=(n, T))
        x[: n // 2, :3] = 0
    else:
        x = rng.normal(size=(n, T, F)).astype(np.float32)
        x[: n // 2, :3] = 0.0
    return x, to_categorical(rng.integers(0, 3, size=n), 3)


def keras_model(arch):
    import keras

    shape, dtype = ((None,), "int32") if ARCHS[arch][0][0] == "Embedding" else ((None, F), "float32")
    return keras.Sequential([keras.Input(shape=shape, dtype=dtype)] + [build(keras.layers, s) for s in ARCHS[arch]])


def fastlstm_model(arch):
    return fastlstm.Sequential([build(layers, s) for s in ARCHS[arch]])


def assert_same_weights(got, want, atol):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=atol)


def assert_trains_alike(m, km, x, y, steps=3):
    """`steps` train_on_batch steps on both: the same [loss, accuracy] and weights (2e-5)."""
    for _ in range(steps):
        got, want = m.train_on_batch(x, y), km.train_on_batch(x, y)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert_same_weights(m.get_weights(), [np.asarray(w) for w in km.get_weights()], 2e-5)


@pytest.mark.keras
@pytest.mark.parametrize("arch", list(ARCHS))
def test_model_files_go_both_ways_and_train_on_alike(rng, tmp_path, arch):
    """A Keras model after 2 Adam steps -> km.save -> fastlstm.models.load_model: the same
    layers, predictions (3e-6) and evaluation (loss, accuracy), Keras's optimizer variables
    1:1, and 2 more steps agree with Keras's (2e-5). Then fastlstm's model.save ->
    keras.models.load_model: the same predictions, compiled as it was, and the optimizer
    state restored (the next step agrees)."""
    import keras

    x, y = data(rng, arch)
    km = keras_model(arch)
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(learning_rate=0.01),
               metrics=["accuracy"])
    km.train_on_batch(x, y)
    km.train_on_batch(x, y)
    km.save(tmp_path / "k.keras")
    m = models.load_model(tmp_path / "k.keras")
    assert [type(layer).__name__ for layer in m.layers] == [name for name, _ in ARCHS[arch]]
    np.testing.assert_allclose(m.predict(x), km.predict(x, verbose=0), atol=3e-6)
    np.testing.assert_allclose(m.evaluate(x, y, verbose=0), km.evaluate(x, y, verbose=0), atol=1e-6)
    assert m.loss == "categorical_crossentropy" and m.optimizer.learning_rate == pytest.approx(0.01)
    assert_same_weights(m.optimizer.variables,
                        [np.asarray(v.numpy()) for v in km.optimizer.variables], 0)
    assert_trains_alike(m, km, x, y, steps=2)

    m.save(tmp_path / "m.keras")
    assert sorted(zipfile.ZipFile(tmp_path / "m.keras").namelist()) == ["config.json", "metadata.json",
                                                                       "model.weights.h5"]
    km = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(km.predict(x, verbose=0), m.predict(x), atol=3e-6)
    assert km.loss == "categorical_crossentropy" and int(km.optimizer.iterations.numpy()) == 4
    assert_trains_alike(m, km, x, y, steps=1)


@pytest.mark.keras
def test_a_model_made_in_fastlstm_loads_in_keras(rng, tmp_path):
    """fastlstm's own layers (Bidirectional's copies, GRU without reset_after, names,
    the input shape from the data) -> model.save -> keras.models.load_model: the same
    predictions and the next Adam step."""
    import keras

    x, y = data(rng, "mask_zero_lstm")
    m = fastlstm.Sequential([layers.Embedding(V, 6, mask_zero=True),
                             layers.Bidirectional(layers.LSTM(4, return_sequences=True), merge_mode="sum"),
                             layers.GRU(4, reset_after=False, return_sequences=True), layers.SimpleRNN(3),
                             layers.Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    m.train_on_batch(x, y)
    m.save(tmp_path / "m.keras")
    km = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(km.predict(x, verbose=0), m.predict(x), atol=3e-6)
    assert_trains_alike(m, km, x, y, steps=1)


def test_fastlstm_reads_back_its_own_file_exactly(rng, tmp_path):
    """save -> load_model in fastlstm: the same architecture, bitwise weights and
    optimizer state (the next step is bitwise the original's); compile=False loads it
    uncompiled; an uncompiled model's file loads uncompiled."""
    x, y = data(rng, "stacked")
    m = fastlstm_model("stacked")
    m.compile(loss="categorical_crossentropy", optimizer=fastlstm.optimizers.Adam(beta_1=0.8), metrics=["accuracy"])
    m.train_on_batch(x, y)
    m.save(tmp_path / "m.keras")
    again = models.load_model(tmp_path / "m.keras")
    assert again.get_config() == m.get_config()
    assert again.optimizer.beta_1 == 0.8 and again.optimizer.iterations == 1
    assert again.train_on_batch(x, y) == m.train_on_batch(x, y)
    for a, b in zip(again.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert models.load_model(tmp_path / "m.keras", compile=False).optimizer is None
    plain = fastlstm_model("stacked")
    plain.save(tmp_path / "plain.keras")
    assert json.loads(zipfile.ZipFile(tmp_path / "plain.keras").read("config.json"))["compile_config"] == {}
    loaded = models.load_model(tmp_path / "plain.keras")
    assert loaded.optimizer is None
    np.testing.assert_array_equal(loaded.predict(x), plain.predict(x))


@pytest.mark.keras
def test_weights_h5_files_go_both_ways(rng, tmp_path):
    """save_weights(".weights.h5") in Keras's layout: Keras's load_weights reads fastlstm's
    and fastlstm's reads Keras's (the same arrays), and load_weights reads a .keras file's."""
    import keras

    x, _ = data(rng, "bidirectional_sum")
    m, km = fastlstm_model("bidirectional_sum"), keras_model("bidirectional_sum")
    m.save_weights(tmp_path / "f.weights.h5")
    km.load_weights(tmp_path / "f.weights.h5")
    assert_same_weights([np.asarray(w) for w in km.get_weights()], m.get_weights(), 0)
    np.testing.assert_allclose(km.predict(x, verbose=0), m.predict(x), atol=3e-6)
    km2 = keras_model("bidirectional_sum")
    km2.save_weights(tmp_path / "k.weights.h5")
    km2.save(tmp_path / "k.keras")
    m.load_weights(tmp_path / "k.weights.h5")
    assert_same_weights(m.get_weights(), [np.asarray(w) for w in km2.get_weights()], 0)
    m2 = fastlstm_model("bidirectional_sum")
    m2.load_weights(tmp_path / "k.keras")
    assert_same_weights(m2.get_weights(), m.get_weights(), 0)
    assert keras.saving.load_model(tmp_path / "k.keras") is not None


@pytest.mark.keras
@pytest.mark.parametrize("spec", [
    ("Embedding", dict(input_dim=V, output_dim=6, mask_zero=True, embeddings_initializer="he_normal")),
    ("Dense", dict(units=3, activation="softmax", bias_initializer="ones")),
    ("Dense", dict(units=3, use_bias=False, kernel_initializer=("Orthogonal", dict(gain=2.0, seed=4)))),
    ("Masking", dict(mask_value=-1.0)),
    ("LSTM", dict(units=5, return_sequences=True, dropout=0.1, seed=3, unit_forget_bias=False)),
    ("GRU", dict(units=4, reset_after=False, go_backwards=True, recurrent_activation="hard_sigmoid")),
    ("SimpleRNN", dict(units=3, activation="relu", use_bias=False, return_state=True)),
    ("Bidirectional", dict(layer=("GRU", dict(units=5, name="g", return_sequences=True)), merge_mode="ave")),
], ids=lambda s: s[0])
def test_layer_configs_are_keras_own(spec):
    """get_config() gives what Keras's get_config() gives for the same arguments (JSON-equal),
    and from_config makes the layer back from Keras's config."""
    import keras

    name, kwargs = spec

    def made(lib, key, value):  # a nested spec: an initializer or a wrapped layer of `lib`
        if not isinstance(value, tuple):
            return value
        return getattr(lib.initializers, value[0])(**value[1]) if key.endswith("initializer") else build(lib.layers, value)

    mine = getattr(layers, name)(name="x", **{k: made(fastlstm, k, v) for k, v in kwargs.items()})
    theirs = getattr(keras.layers, name)(name="x", **{k: made(keras, k, v) for k, v in kwargs.items()})
    got, want = json.loads(json.dumps(mine.get_config())), json.loads(json.dumps(theirs.get_config()))
    assert got == want
    assert json.loads(json.dumps(getattr(layers, name).from_config(want).get_config())) == want


@pytest.mark.keras
def test_initializer_configs_are_keras_own():
    import keras

    for name in ("glorot_uniform", "glorot_normal", "he_uniform", "orthogonal", "uniform", "zeros", "ones",
                 "random_normal", "truncated_normal", "lecun_normal"):
        want = json.loads(json.dumps(keras.initializers.serialize(keras.initializers.get(name))))
        assert initializers.serialize(initializers.get(name)) == want
        assert initializers.serialize(initializers.get(want)) == want


def test_initializers_draw_keras_distributions():
    """Shapes, bounds and spread of the Keras-style initializers (float64 statistics)."""
    fastlstm.utils.set_random_seed(0)
    w = initializers.GlorotUniform()((400, 600))
    assert w.dtype == np.float32 and np.abs(w).max() <= np.sqrt(6 / 1000)
    np.testing.assert_allclose(w.std(), np.sqrt(2 / 1000), rtol=0.02)
    n = initializers.HeNormal()((500, 400)).astype(np.float64)
    assert np.abs(n).max() <= 2 * np.sqrt(2 / 500) / 0.87962566103423978
    np.testing.assert_allclose(n.std(), np.sqrt(2 / 500), rtol=0.03)  # the truncation's 0.8796 undone
    np.testing.assert_array_equal(initializers.Orthogonal(seed=1)((5, 7)), initializers.Orthogonal(seed=1)((5, 7)))
    q = initializers.Orthogonal(gain=2.0)((6, 4)).astype(np.float64)
    np.testing.assert_allclose(q.T @ q, 4 * np.eye(4), atol=1e-5)
    assert initializers.get(None) is None and initializers.get(initializers.Zeros).__class__ is initializers.Zeros
    with pytest.raises(ValueError, match="unknown initializer 'nope'"):
        initializers.get("nope")


@pytest.mark.keras
@pytest.mark.parametrize("layer, message", [
    ("Conv1D", r"fastlstm has no layer 'Conv1D'"),
    ("constraint", r"kernel_constraint"),
    ("float64", r"dtype"),
])
def test_an_unsupported_layer_or_option_is_a_clear_error(tmp_path, layer, message):
    import keras

    L = keras.layers
    extra = {"Conv1D": L.Conv1D(4, 3), "constraint": L.Dense(4, kernel_constraint=keras.constraints.NonNeg()),
             "float64": L.Dense(4, dtype="float64")}[layer]
    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), L.Embedding(V, 6), L.LSTM(5, return_sequences=True),
                           extra])
    km.save(tmp_path / "k.keras")
    with pytest.raises(TypeError, match=message):
        models.load_model(tmp_path / "k.keras")


def keras_file_with(tmp_path, replace):
    """A valid fastlstm .keras file with members replaced (None: left out)."""
    m = fastlstm_model("mask_zero_lstm")
    m.save(tmp_path / "good.keras")
    with zipfile.ZipFile(tmp_path / "good.keras") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    path = tmp_path / "bad.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in {**members, **replace}.items():
            if data is not None:
                zf.writestr(n, data)
    return path


def test_a_corrupt_or_truncated_file_is_a_clear_error(tmp_path):
    good = keras_file_with(tmp_path, {})
    raw = good.read_bytes()
    (tmp_path / "cut.keras").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.keras").write_bytes(b"not a zip at all")
    cases = {tmp_path / "cut.keras": "not a .keras file", tmp_path / "junk.keras": "not a .keras file",
             keras_file_with(tmp_path, {"config.json": b"{oops"}): "not valid JSON",
             keras_file_with(tmp_path, {"model.weights.h5": None}): "has no model.weights.h5",
             keras_file_with(tmp_path, {"model.weights.h5": b"\x89HDF junk"}): "no readable HDF5"}
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message):
            models.load_model(path)
    h5 = zipfile.ZipFile(good).read("model.weights.h5")
    (tmp_path / "cut.weights.h5").write_bytes(h5[: len(h5) // 2])
    m = fastlstm_model("mask_zero_lstm")
    before = m.get_weights()
    with pytest.raises(ValueError, match="corrupt or truncated"):
        m.load_weights(tmp_path / "cut.weights.h5")
    with pytest.raises(ValueError, match="expected a `.keras` extension"):
        models.load_model(tmp_path / "cut.zip")
    with pytest.raises(FileNotFoundError):
        models.load_model(tmp_path / "missing.keras")
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_weights_of_another_model_are_refused_before_any_change(tmp_path):
    m = fastlstm_model("stacked")
    m.save_weights(tmp_path / "w.weights.h5")
    other = fastlstm.Sequential([layers.Embedding(V, 6), layers.LSTM(5, return_sequences=True),
                                 layers.GRU(2, return_sequences=True), layers.SimpleRNN(3),
                                 layers.Dense(4, activation="relu"), layers.Dense(3, activation="softmax")])
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"Layer 'gru_cell': the file's variables at layers/gru/cell/vars have shapes"):
        other.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(other.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.warns(UserWarning, match="skip_mismatch"):
        other.load_weights(tmp_path / "w.weights.h5", skip_mismatch=True)
    np.testing.assert_array_equal(other.layers[0].embeddings, m.layers[0].embeddings)
    np.testing.assert_array_equal(other.layers[2].kernel, before[4])  # the GRU kept its own
    no_bias = fastlstm.Sequential([layers.Embedding(V, 6), layers.LSTM(5), layers.Dense(4, use_bias=False)])
    with pytest.raises(ValueError, match=r"Layer 'dense(_\d+)?' expected 1 variables, but received 2"):
        no_bias.load_weights(tmp_path / "w.weights.h5")
    fewer = fastlstm.Sequential([layers.Embedding(V, 6), layers.LSTM(5)])
    fewer.load_weights(tmp_path / "w.weights.h5")  # as Keras: the file's extra layers are not read
    np.testing.assert_array_equal(fewer.layers[1].kernel, m.layers[1].kernel)


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A save that fails half-way leaves the old file as it was and no temporary file; an
    existing file keeps its mode; overwrite=False refuses an existing file."""
    m = fastlstm_model("mask_zero_lstm")
    for name, save in (("m.keras", m.save), ("w.weights.h5", m.save_weights)):
        path = tmp_path / name
        save(path)
        os.chmod(path, 0o600)
        old = path.read_bytes()
        where = (zipfile.ZipFile, "writestr") if name.endswith(".keras") else (os, "replace")

        def fail(*args, **kwargs):
            raise OSError("disk full")

        with monkeypatch.context() as mp:
            mp.setattr(*where, fail)  # half-way through the zip; after the h5 file, before the rename
            with pytest.raises(OSError, match="disk full"):
                save(path)
        assert path.read_bytes() == old and path.stat().st_mode & 0o777 == 0o600
        with pytest.raises(FileExistsError):
            save(path, overwrite=False)
        save(path)
        assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "w.weights.h5"]


def test_file_names_follow_keras(tmp_path):
    m = fastlstm_model("mask_zero_lstm")
    with pytest.raises(ValueError, match="add a `.keras` extension"):
        m.save(tmp_path / "m.h5")
    with pytest.raises(ValueError, match="legacy"):
        models.load_model(tmp_path / "m.h5")
    with pytest.raises(ValueError, match="not supported"):
        m.save(tmp_path / "m.keras", save_traces=True)
    assert list(tmp_path.iterdir()) == []


def test_a_custom_initializer_is_saved_only_once_built(tmp_path, rng):
    """Keras's JSON cannot hold a Python callable: an unbuilt layer's is an error naming
    it; a built layer's weights are what the file holds, so its custom initializer is
    written as null (Keras's default) and the weights load back exactly."""
    table = rng.normal(size=(V, 6)).astype(np.float32)
    m = fastlstm.Sequential([layers.LSTM(4, kernel_initializer=lambda shape: np.ones(shape)), layers.Dense(3)])
    with pytest.raises(TypeError, match=r"layers\[0\]\.LSTM\.kernel_initializer"), \
            pytest.warns(UserWarning, match="not yet been built"):
        m.save(tmp_path / "m.keras")
    m = fastlstm.Sequential([layers.Embedding(V, 6, embeddings_initializer=lambda shape: table), layers.LSTM(4)])
    m.save(tmp_path / "m.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))
    assert config["config"]["layers"][0]["config"]["embeddings_initializer"] is None
    np.testing.assert_array_equal(models.load_model(tmp_path / "m.keras").layers[0].embeddings, table)


class Doubled(layers.Dense):
    """A user's layer class: found through load_model's custom_objects."""


def test_custom_layers_load_through_custom_objects(tmp_path, rng):
    x, _ = data(rng, "stacked")
    m = fastlstm.Sequential([layers.Embedding(V, 6), layers.LSTM(4), Doubled(3, name="mine")])
    m.save(tmp_path / "m.keras")
    with pytest.raises(TypeError, match=r"fastlstm has no layer 'Doubled'.*'Dense'"):
        models.load_model(tmp_path / "m.keras")
    loaded = models.load_model(tmp_path / "m.keras", custom_objects={"Doubled": Doubled})
    assert type(loaded.layers[-1]) is Doubled and loaded.layers[-1].name == "mine"
    np.testing.assert_array_equal(loaded.predict(x), m.predict(x))


def test_keras_files_need_unique_layer_names(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        fastlstm.Sequential([layers.Embedding(V, 6), layers.LSTM(4), layers.Dense(4, name="d"),
                             layers.Dense(3, name="d")]).save(tmp_path / "m.keras")
    assert list(tmp_path.iterdir()) == []


def test_load_weights_is_one_step_between_training_steps(rng, tmp_path):
    """load_weights sets the weights and the optimizer's state as one change: a training
    step on another thread waits until both are in (it never runs on the file's weights
    with the old optimizer state)."""
    import threading

    x, y = data(rng, "mask_zero_lstm")
    m = fastlstm_model("mask_zero_lstm")
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    m.train_on_batch(x, y)
    m.save_weights(tmp_path / "m.weights.h5")
    m.train_on_batch(x, y)
    in_optimizer, release = threading.Event(), threading.Event()
    set_optimizer_state = m.optimizer.set_weights

    def paused(arrays):  # the model's weights are in; the optimizer's are not yet
        in_optimizer.set()
        assert release.wait(30)
        set_optimizer_state(arrays)

    m.optimizer.set_weights = paused
    loader = threading.Thread(target=m.load_weights, args=(tmp_path / "m.weights.h5",))
    loader.start()
    assert in_optimizer.wait(30)
    trainer = threading.Thread(target=m.train_on_batch, args=(x, y))
    trainer.start()
    trainer.join(0.5)
    stepped_during_load = not trainer.is_alive()
    release.set()
    loader.join(30), trainer.join(30)
    assert not stepped_during_load
    assert m.optimizer.iterations == 2  # the file's 1, then the step that waited
