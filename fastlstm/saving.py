"""Keras 3's files, both ways: `.keras` archives (a zip of config.json, metadata.json and
model.weights.h5), `.weights.h5` weights in Keras's HDF5 layout, and fastlstm's `.npz`
weights; and Keras's config dicts ({"module", "class_name", "config", ...}) of layers,
models and the compile settings.

Keras's HDF5 layout (keras/src/saving/saving_lib.py): a group per saveable object holding a
`vars` group of datasets "0", "1", ... (its variables in order) and a `name` attribute;
a model's layers sit under layers/<snake_case class name>, numbered per class (lstm,
lstm_1, ...: never the layers' own names); a recurrent layer's weights are in its cell
(layers/lstm/cell/vars), a Bidirectional's under forward_layer/ and backward_layer/; the
optimizer's variables under optimizer/vars: [iterations, learning_rate, slots...].

h5py is imported only by the functions that read or write HDF5.
"""
import contextlib
import contextvars
import datetime
import io
import json
import os
import re
import secrets
import stat
import warnings
import zipfile

import numpy as np

KERAS_VERSION = "3.15.1"  # the Keras whose format these files follow (written in metadata.json)
_CONFIG, _METADATA, _WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
_MEMBER_LIMIT = 1 << 32  # a zip member claiming more than 4 GiB and 100x its stored size is refused

_custom_objects = contextvars.ContextVar("custom_objects", default={})


# ---- config dicts ---------------------------------------------------------------------------

def _snake(name):
    """Keras's snake_case of a class name: SimpleRNN -> simple_rnn, GlobalMaxPooling1D ->
    global_max_pooling1d (a word starts at a capital followed by lower case, or at a capital
    after a lower-case letter)."""
    name = re.sub(r"(?<=.)(?=[A-Z][a-z])", "_", re.sub(r"\W", "", name))
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


def _keras_module(cls):
    """The Keras module that exports a fastlstm class's namesake: keras.layers for
    fastlstm.layers.LSTM, keras.initializers, ..., and keras for the models."""
    parts = [p for p in cls.__module__.split(".")[1:] if not p.startswith("_")]
    return "keras" if parts[:1] == ["models"] else ".".join(["keras"] + parts)


def serialize_keras_object(obj, where="config"):
    """A config value as Keras writes it: None, numbers, strings, lists and dicts as they
    are; a fastlstm object with get_config() (a layer, an initializer, ...) as
    {"module": "keras.<kind>", "class_name", "config", "registered_name": None}, a user's
    class with get_config() as Keras writes a custom object (its module, registered_name =
    the class name: load_model's custom_objects finds it). Anything else (a plain callable)
    has no Keras form: a TypeError naming where it is."""
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (list, tuple)):
        return [serialize_keras_object(v, f"{where}[{k}]") for k, v in enumerate(obj)]
    if isinstance(obj, dict):
        return {k: serialize_keras_object(v, f"{where}.{k}") for k, v in obj.items()}
    if callable(getattr(obj, "get_config", None)):
        cls = type(obj)
        config = serialize_keras_object(obj.get_config(), f"{where}.{cls.__name__}")
        if cls.__module__.startswith("fastlstm."):
            return {"module": _keras_module(cls), "class_name": cls.__name__, "config": config, "registered_name": None}
        return {"module": cls.__module__, "class_name": cls.__name__, "config": config, "registered_name": cls.__name__}
    raise TypeError(f"{where} = {obj!r} cannot be written in Keras's format, which holds names, numbers "
                    "and objects with get_config() (a custom initializer of a layer not built yet? build the "
                    "model first: a built layer's custom initializer is written as null, its weights are saved)")


@contextlib.contextmanager
def _custom_object_scope(custom_objects):
    token = _custom_objects.set({**_custom_objects.get(), **(custom_objects or {})})
    try:
        yield
    finally:
        _custom_objects.reset(token)


def _registered_class(module, base, config, kind):
    """The class a Keras config names: `custom_objects` first (by class or registered name),
    then the public subclass of `base` of that name in `module` (fastlstm.layers for a
    layer): the registry is the module itself, so every class added there plugs in."""
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"a {kind} config must be a dict with a 'class_name', got {config!r}")
    def fits(cls):  # a class of `module` (not one it imports), with from_config
        return (isinstance(cls, type) and issubclass(cls, base) and cls is not base
                and cls.__module__.startswith(module.__name__) and callable(getattr(cls, "from_config", None)))

    name = config["class_name"]
    custom = _custom_objects.get()
    cls = custom.get(config.get("registered_name") or name, custom.get(name))
    if cls is not None:
        return cls
    cls = getattr(module, name, None) if not name.startswith("_") else None
    if not fits(cls):
        known = sorted(k for k, v in vars(module).items() if not k.startswith("_") and fits(v))
        raise TypeError(f"fastlstm has no {kind} {name!r} (Keras's {config.get('module', 'keras')}.{name}); "
                        f"the {kind}s it has: {known}")
    return cls


def deserialize_layer(config):
    """A new fastlstm layer from Keras's config dict of a layer ({"class_name": "LSTM",
    "config": {...}, ...}), by the class of that name in fastlstm.layers. An unknown layer,
    or an option the layer does not have, is a TypeError naming it."""
    from fastlstm import layers

    cls = _registered_class(layers, layers.Layer, config, "layer")
    inner = config.get("config") or {}
    try:
        return cls.from_config(inner)
    except TypeError as e:
        raise TypeError(f"layer {inner.get('name', '?')!r} ({config['class_name']}) of the config cannot be "
                        f"made in fastlstm: {e}") from None


def _model_from_config(config):
    from fastlstm import functional, models

    if isinstance(config, dict) and config.get("class_name") in ("Functional", "Model"):
        return functional.Functional.from_config(config.get("config") or {})
    cls = _registered_class(models, object, config, "model")
    return cls.from_config(config.get("config") or {})


# ---- functional models ------------------------------------------------------------------

def _tensor_config(t):
    """A KerasTensor as Keras's node arguments hold it (node indices count within the model:
    0, since each layer is called once)."""
    layer, _, k = t._keras_history
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(t.shape), "dtype": t.dtype, "keras_history": [layer.name, 0, k]}}


def _structure_config(structure, triple):
    if isinstance(structure, dict):
        return {k: triple(v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return [triple(v) for v in structure]
    return triple(structure)


def functional_config(model):
    """Keras's Functional config: each layer's config with its name and inbound_nodes
    ({"args": [tensor or [tensors]], "kwargs": {}}), then input_layers and output_layers in
    the structure the model was made with."""
    node_of = {node.layer: node for node in model._nodes}
    entries = []
    for k, layer in enumerate(model.layers):
        entry = serialize_keras_object(layer, f"layers[{k}]")
        node = node_of.get(layer)
        args = [] if node is None else [[_tensor_config(t) for t in node.inputs] if isinstance(node.inputs, list)
                                        else _tensor_config(node.inputs)]
        entry["name"] = layer.name
        entry["inbound_nodes"] = [] if node is None else [{"args": args, "kwargs": {}}]
        entries.append(entry)

    def triple(t):
        layer, _, k = t._keras_history
        return [layer.name, 0, k]

    return {"name": model.name, "trainable": True, "layers": entries,
            "input_layers": _structure_config(model._inputs_struct, triple),
            "output_layers": _structure_config(model._outputs_struct, triple)}


def functional_from_config(config, custom_objects=None):
    """A Functional model from Keras's config (Keras's file or functional_config): every
    layer made from its config, then called on its inbound tensors in dependency order.
    The mask ops Keras writes into its graph (NotEqual of an Embedding(mask_zero=True)'s
    ids) are dropped: fastlstm's layers hand masks on themselves."""
    from fastlstm import functional, layers

    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError(f"A functional model configuration must be a dictionary with a 'layers' list. "
                         f"Received: config={config!r}")
    made, pending, mask_ops, tensors = {}, [], set(), {}
    with _custom_object_scope(custom_objects):
        for entry in config["layers"]:
            name = entry.get("name") or (entry.get("config") or {}).get("name")
            if str(entry.get("module", "")).startswith("keras.src.ops"):
                if entry.get("class_name") != "NotEqual":
                    raise TypeError(f"the model applies Keras's op {entry.get('class_name')!r} ({name}) between its "
                                    "layers, which fastlstm does not have")
                mask_ops.add(name)
                continue
            layer = deserialize_layer(entry)
            made[name] = layer
            nodes = entry.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise ValueError(f"layer {name!r} is called {len(nodes)} times in the model (a shared layer), which "
                                 "fastlstm does not support")
            if isinstance(layer, layers.InputLayer):
                tensors[(name, 0, 0)] = layer.output
            elif nodes:
                pending.append((layer, nodes[0]))

    def tensor(v):
        history = (v.get("config") or {}).get("keras_history") if isinstance(v, dict) else None
        if not history or len(history) != 3:
            raise ValueError(f"a node argument of the model's config is not a tensor: {v!r}")
        if history[0] in mask_ops:
            raise TypeError(f"the model reads the mask op {history[0]!r} as data, which fastlstm does not support")
        return tensors.get(tuple(history))

    def from_mask_op(v):  # a node's mask argument made by one of Keras's mask ops (dropped)
        history = (v.get("config") or {}).get("keras_history") if isinstance(v, dict) else None
        return bool(history) and history[0] in mask_ops

    while pending:
        progress = False
        for item in list(pending):
            layer, node = item
            args, kwargs = node.get("args") or [], dict(node.get("kwargs") or {})
            kwargs.pop("training", None)
            mask = kwargs.pop("mask", None)
            if kwargs or len(args) != 1 or (mask is not None and not from_mask_op(mask)):
                raise ValueError(f"layer {layer.name!r} is called with arguments fastlstm does not support: "
                                 f"{node!r}")
            inputs = [tensor(v) for v in args[0]] if isinstance(args[0], list) else tensor(args[0])
            if any(t is None for t in (inputs if isinstance(inputs, list) else [inputs])):
                continue  # an input not made yet
            outputs = layer(inputs)
            for k, t in enumerate(outputs if isinstance(outputs, list) else [outputs]):
                tensors[(layer.name, 0, k)] = t
            pending.remove(item)
            progress = True
        if not progress:
            raise ValueError(f"the model's config has layers whose inputs are never made: "
                             f"{[layer.name for layer, _ in pending]}")

    def from_triple(v):
        if not isinstance(v, (list, tuple)) or len(v) != 3 or tuple(v) not in tensors:
            raise ValueError(f"the model's config names an unknown tensor {v!r}")
        return tensors[tuple(v)]

    def structure(v):
        if isinstance(v, dict):
            return {k: from_triple(t) for k, t in v.items()}
        if isinstance(v, list) and v and isinstance(v[0], (list, tuple)):
            return [from_triple(t) for t in v]
        return from_triple(v)

    for key in ("trainable", "dtype"):
        if key in config and not layers._changes_nothing(key, config[key]):
            raise ValueError(f"a functional model with {key}={config[key]!r} is not supported by fastlstm")
    return functional.Functional(structure(config.get("input_layers")), structure(config.get("output_layers")),
                                 name=config.get("name"))



def _compile_config(model):
    """Keras's compile_config of a model: what compile() was given ({} when not compiled)."""
    return model.get_compile_config() if getattr(model, "compiled", False) else {}


def _compile_object(module, value):
    """A loss or metric of a compile_config: names stay names (compile resolves them), a
    serialised object goes to `module`.get, which takes Keras's dicts; lists and per-output
    dicts entry by entry."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_compile_object(module, v) for v in value]
    if isinstance(value, dict) and "class_name" in value:
        return module.get(value)
    if isinstance(value, dict):
        return {k: _compile_object(module, v) for k, v in value.items()}
    raise ValueError(f"unexpected entry {value!r} in the file's compile_config")


def _compile_from_config(model, config):
    """model.compile(...) from Keras's compile_config, as Keras's load_model(compile=True)."""
    from fastlstm import losses, metrics, optimizers
    kwargs = {"optimizer": optimizers.get(config["optimizer"]),
              "loss": _compile_object(losses, config.get("loss")),
              "loss_weights": config.get("loss_weights"),
              "metrics": _compile_object(metrics, config.get("metrics")),
              "weighted_metrics": _compile_object(metrics, config.get("weighted_metrics"))}
    for key in ("run_eagerly", "steps_per_execution", "jit_compile"):  # execution settings: the same numbers
        if key in config:
            kwargs[key] = config[key]
    try:
        model.compile(**kwargs)
    except (ValueError, TypeError) as e:
        raise type(e)(f"the file's compile_config cannot be applied: {e}; load_model(..., compile=False) "
                      "loads the model uncompiled") from e


# ---- the HDF5 layout ------------------------------------------------------------------------

def _keras_layers(model):
    """The layers whose groups Keras's file has: a functional model's all (its InputLayers
    too), a Sequential's but an InputLayer."""
    if hasattr(model, "_nodes"):
        return list(model.layers)
    return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]


def _layer_groups(layer, path):
    """(path, name, arrays) of a layer and the objects in it, as Keras's HDF5 layout has them."""
    from fastlstm import layers

    if isinstance(layer, layers.Bidirectional):
        yield path, layer.name, []
        for part in ("forward_layer", "backward_layer"):
            yield from _layer_groups(getattr(layer, part), f"{path}/{part}")
    elif isinstance(layer, layers._Recurrent):  # Keras's RNN layers hold their weights in a cell
        yield path, layer.name, []
        yield f"{path}/cell", _snake(type(layer).__name__) + "_cell", layer.weights
    else:
        yield path, layer.name, layer.weights


def _model_groups(model):
    """(path, name, arrays) of the model and each of its layers, in order."""
    yield "", model.name, []
    counts = {}
    for layer in _keras_layers(model):
        key = _snake(type(layer).__name__)
        counts[key] = counts.get(key, -1) + 1
        yield from _layer_groups(layer, "layers/" + (key if counts[key] == 0 else f"{key}_{counts[key]}"))


def _trainable_weights(model):
    return model.trainable_weights if hasattr(model, "trainable_weights") else model.weights


def _load_optimizer_variables(optimizer, arrays, weights, build):
    """Set the optimizer's state from Keras's optimizer variables. As Keras, a count or shape
    that does not fit (a file of an optimizer not built, or built for other weights) is a
    warning and the state is left as it is. `build`: create the slots first (Keras's
    load_model builds the optimizer it compiles), so a trained optimizer's state fits."""
    if build:
        optimizer.build(weights)
    mine = optimizer.variables
    if len(arrays) != len(mine) or any(a.shape != m.shape for a, m in zip(arrays, mine)):
        warnings.warn(f"Skipping variable loading for optimizer '{optimizer.name}', because it has {len(mine)} "
                      f"variables whereas the saved optimizer has {len(arrays)} variables.", stacklevel=3)
        return
    if optimizer.built:
        optimizer.set_weights(arrays)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("h5py is needed for Keras's .keras and .weights.h5 files: pip install h5py") from None
    return h5py


def _write_h5(model, f):
    """Write the model's (and its optimizer's) variables into the open h5py.File `f`: a copy
    taken between two optimizer steps (under the model's read lock, as get_weights)."""
    lock = getattr(model, "_weights_lock", None)
    with lock.reading() if lock is not None else contextlib.nullcontext():
        groups = [(path, name, [np.array(a) for a in arrays]) for path, name, arrays in _model_groups(model)]
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            groups.append(("optimizer", getattr(optimizer, "name", _snake(type(optimizer).__name__)),
                           [np.array(a) for a in optimizer.variables]))
    for path, name, arrays in groups:
        vars_ = f.require_group(f"{path}/vars" if path else "vars")
        vars_.attrs["name"] = name
        for k, a in enumerate(arrays):
            vars_.create_dataset(str(k), data=np.asarray(a))


def _h5_vars(f, path):
    """The datasets of `path`/vars as a list (empty when the group is absent), refusing
    links, external and virtual datasets (Keras's checks) and numbering gaps."""
    h5py = _h5py()
    node = f
    for part in (f"{path}/vars" if path else "vars").split("/"):
        if part not in node:
            return []
        if not isinstance(node.get(part, getlink=True), h5py.HardLink):
            raise ValueError(f"Not allowed: H5 file with a link at {path}/vars")
        node = node[part]
        if not isinstance(node, h5py.Group):
            raise ValueError(f"Invalid H5 file: {path}/vars is not a group")
    names = sorted(node.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    if names != [str(k) for k in range(len(names))]:
        raise ValueError(f"Invalid H5 file: the variables of {path or 'the model'} are {names}, not 0..n-1")
    out = []
    for k in names:
        if not isinstance(node.get(k, getlink=True), h5py.HardLink) or not isinstance(node[k], h5py.Dataset):
            raise ValueError(f"Not allowed: {path}/vars/{k} is not a plain dataset")
        ds = node[k]
        if ds.external or ds.is_virtual:
            raise ValueError(f"Not allowed: H5 file with an external or virtual dataset ({path}/vars/{k})")
        out.append(ds)
    return out


def _read_h5(model, f, skip_mismatch=False, build_optimizer=False):
    """Set the model's weights (all at once, after every check) and, when it has an
    optimizer, the optimizer's state from the open h5py.File `f`, in Keras's layout."""
    if not model.built:
        raise ValueError("You are loading weights into a model that has not yet been built. Try building the "
                         "model first by calling it on some data or by using `build()`.")
    new = []
    for path, name, arrays in _model_groups(model):
        stored = _h5_vars(f, path)
        shapes_fit = len(stored) == len(arrays) and all(d.shape == a.shape for d, a in zip(stored, arrays))
        if not shapes_fit:
            if len(stored) != len(arrays):
                msg = (f"Layer {name!r} expected {len(arrays)} variables, but received {len(stored)} variables "
                       f"during loading (at {path}/vars)")
            else:
                msg = (f"Layer {name!r}: the file's variables at {path}/vars have shapes "
                       f"{[d.shape for d in stored]}, the layer's {[a.shape for a in arrays]}")
            if not skip_mismatch:
                raise ValueError(msg)
            warnings.warn(msg + "; skipped (skip_mismatch=True)", stacklevel=3)
            new += [a.copy() for a in arrays]
            continue
        for d in stored:
            if d.dtype.kind not in "fiu":
                raise ValueError(f"{path}/vars holds a non-numeric dataset ({d.dtype})")
        new += [d[()] for d in stored]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and "optimizer" in f:
        optimizer_arrays = [np.asarray(d[()]) for d in _h5_vars(f, "optimizer")]
    else:
        optimizer, optimizer_arrays = None, None
    # one change between two training steps (the model's step lock, re-entrant): no step runs
    # on the file's weights with the old optimizer state
    with getattr(model, "_lock", contextlib.nullcontext()):
        model.set_weights(new)
        if optimizer is not None:
            _load_optimizer_variables(optimizer, optimizer_arrays, _trainable_weights(model), build_optimizer)


@contextlib.contextmanager
def _open_h5(source, filepath):
    """h5py.File of a path or bytes; a file that is not HDF5 (or is cut short) is a ValueError."""
    h5py = _h5py()
    try:
        f = h5py.File(io.BytesIO(source) if isinstance(source, bytes) else source, "r")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"{filepath!r} holds no readable HDF5 weights (corrupt or truncated?): {e}") from None
    try:
        yield f
    except (OSError, KeyError) as e:
        raise ValueError(f"{filepath!r}: the HDF5 weights cannot be read (corrupt or truncated?): {e}") from None
    finally:
        f.close()


# ---- files ------------------------------------------------------------------------------------

def _atomic_write(filepath, write):
    """write(f) into a temporary file beside `filepath`, then rename it over: a failed save
    leaves the old file intact. A new file's mode follows the umask; an existing file keeps
    its mode (as np.savez)."""
    folder, name = os.path.split(os.path.abspath(filepath))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask
    try:
        if os.path.exists(filepath):
            os.chmod(fd, stat.S_IMODE(os.stat(filepath).st_mode))
        with os.fdopen(fd, "w+b") as f:
            write(f)
        os.replace(tmp, filepath)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_overwrite(filepath, overwrite):
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath!r} exists and overwrite=False")


def _h5_bytes(model):
    bio = io.BytesIO()
    with _h5py().File(bio, "w") as f:
        _write_h5(model, f)
    return bio.getvalue()


def save_model(model, filepath, overwrite=True, zipped=None, **kwargs):
    """Keras 3's `.keras` file of the model: config.json (the model's config, with its
    compile_config), metadata.json and model.weights.h5 (weights and optimizer state),
    written atomically. keras.models.load_model reads it."""
    kwargs.pop("include_optimizer", None)  # Keras's: only for its legacy .h5 files
    if kwargs:
        raise ValueError(f"The following argument(s) are not supported: {list(kwargs)}")
    filepath = os.fspath(filepath)
    if zipped is False:
        raise ValueError("zipped=False (a folder in place of the .keras zip) is not supported by fastlstm")
    if not filepath.endswith(".keras"):
        raise ValueError("Invalid filepath extension for saving. fastlstm writes Keras's native format: add a "
                         f"`.keras` extension (Keras's legacy .h5 model files are not written). Received: "
                         f"filepath={filepath}.")
    _check_overwrite(filepath, overwrite)
    names = [layer.name for layer in model.layers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"Keras's Sequential needs unique layer names, and these appear more than once: {twice}; "
                         "give the layers distinct names (name=...)")
    if not model.built:
        warnings.warn("You are saving a model that has not yet been built. It might not contain any weights yet.",
                      stacklevel=2)
    config = {"module": "keras", "class_name": type(model).__name__, "config": model.get_config(),
              "registered_name": None}
    if hasattr(model, "_nodes"):  # as Keras writes a functional model
        config.update({"module": "keras.src.models.functional", "registered_name": "Functional"})
    shape = config["config"].get("build_input_shape")
    if shape is not None:
        config["build_config"] = {"input_shape": shape}
    config["compile_config"] = _compile_config(model)
    config_json = json.dumps(serialize_keras_object(config))
    from fastlstm import __version__

    metadata = json.dumps({"keras_version": KERAS_VERSION, "fastlstm_version": __version__,
                           "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")})
    weights = _h5_bytes(model)

    def write(f):
        with zipfile.ZipFile(f, "w") as zf:  # stored, not compressed: as Keras
            zf.writestr(_METADATA, metadata)
            zf.writestr(_CONFIG, config_json)
            zf.writestr(_WEIGHTS, weights)

    _atomic_write(filepath, write)


def _read_member(zf, name, filepath):
    """The bytes of a zip member; a missing, oversized or damaged member is a ValueError."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"{filepath!r} is not a Keras model file: it has no {name}") from None
    if info.file_size > _MEMBER_LIMIT and info.file_size > 100 * info.compress_size:
        raise ValueError(f"Not allowed: {filepath!r}'s {name} declares {info.file_size} bytes but stores "
                         f"{info.compress_size} (a decompression bomb?)")
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{filepath!r} is damaged: its {name} cannot be read ({e})") from None


@contextlib.contextmanager
def _open_archive(filepath):
    try:
        zf = zipfile.ZipFile(filepath, "r")
    except zipfile.BadZipFile as e:
        raise ValueError(f"{filepath!r} is not a .keras file (a zip archive): {e}; corrupt or truncated?") from None
    with zf:
        yield zf


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """A fastlstm model from Keras 3's `.keras` file (Keras's or fastlstm's): the model from
    config.json, its weights, and, with compile=True (Keras's default) and a compiled
    model in the file, compiled as it was, with the optimizer's state. Layer classes are
    looked up by Keras's class_name in fastlstm.layers (and `custom_objects`): a layer or
    option fastlstm does not have is a TypeError naming it. fastlstm never runs code from a
    file, so `safe_mode` changes nothing."""
    filepath = os.fspath(filepath)
    if not filepath.endswith(".keras"):
        if filepath.lower().endswith((".h5", ".hdf5")):
            raise ValueError(f"{filepath!r}: Keras's legacy HDF5 model files are not read by fastlstm; "
                             "save the model as .keras with Keras 3")
        raise ValueError(f"Invalid filename: expected a `.keras` extension. Received: filepath={filepath}")
    with _open_archive(filepath) as zf:
        try:
            config = json.loads(_read_member(zf, _CONFIG, filepath))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{filepath!r}: config.json is not valid JSON ({e})") from None
        if "model.weights.npz" in zf.namelist() and _WEIGHTS not in zf.namelist():
            raise ValueError(f"{filepath!r} holds its weights as model.weights.npz (Keras's weights_format='npz'), "
                             "which fastlstm does not read; save with Keras's default h5 weights")
        weights = _read_member(zf, _WEIGHTS, filepath)
    if not isinstance(config, dict):
        raise ValueError(f"{filepath!r}: config.json holds no model config")
    with _custom_object_scope(custom_objects):
        model = _model_from_config(config)
    compile_config = config.get("compile_config") if compile else None
    if compile_config:
        _compile_from_config(model, compile_config)
    with _open_h5(weights, filepath) as f:
        _read_h5(model, f, build_optimizer=bool(compile_config))
    return model


def _npz_path(filepath):
    """filepath for a numpy weights file; Keras's other formats are a clear error."""
    if filepath.lower().endswith((".h5", ".hdf5", ".keras")):
        raise ValueError(f"{filepath!r}: weights files are Keras's .weights.h5 or numpy's .npz; Keras's legacy "
                         ".h5/.hdf5 files are not read or written, and a .keras file holds a whole model "
                         "(model.save / load_model; load_weights also reads one)")
    return filepath


def save_weights(model, filepath, overwrite=True, max_shard_size=None):
    """The model's weights, atomically: Keras's layout for a name ending in .weights.h5
    (with the optimizer's state, as Keras), else numpy's .npz (the arrays in order)."""
    filepath = os.fspath(filepath)
    if max_shard_size is not None:
        raise ValueError("max_shard_size (sharded weights) is not supported by fastlstm")
    if filepath.endswith(".weights.h5"):
        if not model.built:
            raise ValueError("You are saving a model that has not yet been built. Try building the model first "
                             "by calling it on some data or by using `build()`.")
        _check_overwrite(filepath, overwrite)
        data = _h5_bytes(model)
        _atomic_write(filepath, lambda f: f.write(data))
        return
    _npz_path(filepath)
    _check_overwrite(filepath, overwrite)
    arrays = model.get_weights()
    _atomic_write(filepath, lambda f: np.savez(f, *arrays))


def load_weights(model, filepath, skip_mismatch=False):
    """Weights written by save_weights or by Keras: a .weights.h5 file or a .keras file's
    weights (Keras's layout: the optimizer's state too, when it fits, as Keras), else an
    .npz file. Counts and shapes are checked before any weight changes."""
    filepath = os.fspath(filepath)
    if filepath.endswith(".weights.h5"):
        with _open_h5(filepath, filepath) as f:
            _read_h5(model, f, skip_mismatch)
        return
    if filepath.endswith(".keras"):
        with _open_archive(filepath) as zf:
            data = _read_member(zf, _WEIGHTS, filepath)
        with _open_h5(data, filepath) as f:
            _read_h5(model, f, skip_mismatch)
        return
    with np.load(_npz_path(filepath), allow_pickle=False) as f:
        arrays = [f[f"arr_{k}"] for k in range(len(f.files))]
    model.set_weights(arrays)
