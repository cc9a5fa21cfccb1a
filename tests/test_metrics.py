"""fastlstm.metrics against Keras 3's own metrics (torch backend) fed the same batches (several
updates, with and without sample weights, then a reset), Keras's compile-time resolution and
errors; numpy formulas where Keras's answer depends on torch internals (top-k ties)."""
import collections
import copy

import numpy as np
import pytest

from fastlstm import metrics as M

RTOL, ATOL = 1e-6, 1e-7  # float32 round-off of sums taken in another order
N_CLASSES = 5


@pytest.fixture(scope="module")
def km():
    import keras
    return keras.metrics


def assert_close(ours, theirs, atol=ATOL):
    theirs = np.asarray(theirs, dtype=np.float64)
    if theirs.ndim == 0:
        assert isinstance(ours, float)
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64), theirs, rtol=RTOL, atol=atol)


def assert_tracks_keras(ours, theirs, batches):
    """The same result after every update_state, and after reset_state and one more batch."""
    for y_true, y_pred, weight in batches:
        ours.update_state(y_true, y_pred, sample_weight=weight)
        theirs.update_state(y_true, y_pred, sample_weight=weight)
        assert_close(ours.result(), theirs.result())
    ours.reset_state()
    theirs.reset_state()
    y_true, y_pred, weight = batches[0]
    ours.update_state(y_true, y_pred, sample_weight=weight)
    theirs.update_state(y_true, y_pred, sample_weight=weight)
    assert_close(ours.result(), theirs.result())


def grid(rng, shape):
    """Probabilities on a grid of eighths: ties, and values exactly 0, 0.5 and 1."""
    return (rng.integers(0, 9, size=shape) / 8).astype(np.float32)


def softmaxish(rng, n, k=N_CLASSES):
    """Rows of probabilities from small integer scores: tied classes within a row."""
    s = rng.integers(1, 5, size=(n, k)).astype(np.float32)
    return s / s.sum(axis=1, keepdims=True)


def batches(kind, rng, sizes=(16, 32, 7)):
    """Three (y_true, y_pred, sample_weight) batches of one kind, the second weighted."""
    out = []
    for i, n in enumerate(sizes):
        weight = rng.random(n).astype(np.float32) if i == 1 else None
        ids = rng.integers(0, N_CLASSES, size=n)
        bits = (rng.random(n) > 0.5).astype(np.float32)
        y_true, y_pred = {
            "onehot": lambda: (np.eye(N_CLASSES, dtype=np.float32)[ids], softmaxish(rng, n)),
            "sparse": lambda: (ids, softmaxish(rng, n)),
            "sparse_col": lambda: (ids[:, None].astype(np.float32), softmaxish(rng, n)),
            "binary": lambda: (bits, grid(rng, (n, 1))),
            "binary_col": lambda: (bits[:, None], grid(rng, (n, 1))),
            "binary_flat": lambda: (bits, grid(rng, n)),
            "multilabel": lambda: ((rng.random((n, 3)) > 0.5).astype(np.float32), grid(rng, (n, 3))),
            "ids": lambda: (ids[:, None], rng.integers(0, N_CLASSES, size=(n, 1))),
        }[kind]()
        out.append((y_true, y_pred, weight))
    return out


@pytest.mark.keras
@pytest.mark.parametrize("values_shape", [(12,), (12, 3), (12, 1)])
@pytest.mark.parametrize("weight_shape", [None, (12,), (12, 1), ()])
@pytest.mark.parametrize("cls", ["Mean", "Sum"])
def test_mean_and_sum_match_keras(km, rng, cls, values_shape, weight_shape):
    ours, theirs = getattr(M, cls)(), getattr(km, cls)()
    for _ in range(3):
        values = rng.normal(size=values_shape).astype(np.float32)
        weight = None if weight_shape is None else rng.random(weight_shape).astype(np.float32)
        ours.update_state(values, sample_weight=weight)
        theirs.update_state(values, sample_weight=weight)
        assert_close(ours.result(), theirs.result())
    ours.reset_state()
    theirs.reset_state()
    assert ours.result() == float(theirs.result()) == 0.0


MEAN_WRAPPERS = [
    ("Accuracy", {}, "ids"),
    ("BinaryAccuracy", {}, "binary"),
    ("BinaryAccuracy", {}, "binary_col"),
    ("BinaryAccuracy", {}, "binary_flat"),
    ("BinaryAccuracy", {"threshold": 0.25}, "multilabel"),
    ("CategoricalAccuracy", {}, "onehot"),
    ("SparseCategoricalAccuracy", {}, "sparse"),
    ("SparseCategoricalAccuracy", {}, "sparse_col"),
    ("TopKCategoricalAccuracy", {"k": 1}, "onehot"),
    ("TopKCategoricalAccuracy", {"k": 2}, "onehot"),
    ("TopKCategoricalAccuracy", {}, "onehot"),
    ("SparseTopKCategoricalAccuracy", {"k": 2}, "sparse"),
    ("SparseTopKCategoricalAccuracy", {"k": 3}, "sparse_col"),
    ("BinaryCrossentropy", {}, "binary_col"),
    ("BinaryCrossentropy", {"label_smoothing": 0.2}, "multilabel"),
    ("BinaryCrossentropy", {"from_logits": True}, "multilabel"),
    ("CategoricalCrossentropy", {}, "onehot"),
    ("CategoricalCrossentropy", {"label_smoothing": 0.1}, "onehot"),
    ("CategoricalCrossentropy", {"from_logits": True}, "onehot"),
    ("SparseCategoricalCrossentropy", {}, "sparse"),
    ("SparseCategoricalCrossentropy", {"from_logits": True}, "sparse_col"),
    ("SparseCategoricalCrossentropy", {"ignore_class": 2}, "sparse"),
    ("MeanSquaredError", {}, "binary"),
    ("MeanSquaredError", {}, "multilabel"),
    ("MeanAbsoluteError", {}, "binary"),
    ("MeanAbsoluteError", {}, "onehot"),
]


@pytest.mark.keras
@pytest.mark.parametrize("cls, kwargs, kind", MEAN_WRAPPERS)
def test_mean_metrics_match_keras(km, rng, cls, kwargs, kind):
    """Accuracy, cross-entropy and regression metrics on tied, edge-valued predictions."""
    ours, theirs = getattr(M, cls)(**kwargs), getattr(km, cls)(**kwargs)
    assert ours.name == theirs.name and ours.get_config() == theirs.get_config()
    assert_tracks_keras(ours, theirs, batches(kind, rng))


@pytest.mark.keras
def test_sparse_top_k_from_sorted_ids_matches_keras(km, rng):
    ours = M.SparseTopKCategoricalAccuracy(k=2, from_sorted_ids=True)
    theirs = km.SparseTopKCategoricalAccuracy(k=2, from_sorted_ids=True)
    assert ours.get_config() == theirs.get_config()
    data = [(rng.integers(0, 6, size=n), np.argsort(-rng.random((n, 4)), axis=1), w)
            for n, w in ((10, None), (9, rng.random(9)))]
    assert_tracks_keras(ours, theirs, data)


FUNCTIONS = [
    ("binary_accuracy", {}, "binary"), ("binary_accuracy", {"threshold": 0.625}, "multilabel"),
    ("categorical_accuracy", {}, "onehot"), ("sparse_categorical_accuracy", {}, "sparse_col"),
    ("top_k_categorical_accuracy", {"k": 2}, "onehot"), ("sparse_top_k_categorical_accuracy", {"k": 3}, "sparse"),
    ("binary_crossentropy", {}, "binary_col"), ("categorical_crossentropy", {}, "onehot"),
    ("sparse_categorical_crossentropy", {}, "sparse"), ("mean_squared_error", {}, "binary"),
    ("mean_absolute_error", {}, "multilabel"),
]


@pytest.mark.keras
@pytest.mark.parametrize("fn, kwargs, kind", FUNCTIONS)
def test_functions_give_keras_per_sample_values(km, rng, fn, kwargs, kind):
    for y_true, y_pred, _ in batches(kind, rng):
        want = np.asarray(getattr(km, fn)(y_true, y_pred, **kwargs))
        got = getattr(M, fn)(y_true, y_pred, **kwargs)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.keras
def test_top_k_ties_count_as_keras_in_top_k(km):
    """Every class tied with the k-th largest value is in the top k (torch backend's in_top_k)."""
    y_pred = np.array([[0.2, 0.3, 0.3, 0.2], [0.1, 0.3, 0.3, 0.3], [0.4, 0.2, 0.2, 0.2],
                       [0.25, 0.25, 0.25, 0.25]], np.float32)
    for k in (1, 2, 3):
        for label in range(4):
            ids = np.full(4, label)
            want = np.asarray(km.sparse_top_k_categorical_accuracy(ids, y_pred, k=k))
            np.testing.assert_array_equal(M.sparse_top_k_categorical_accuracy(ids, y_pred, k=k), want)
            onehot = np.eye(4, dtype=np.float32)[ids]
            np.testing.assert_array_equal(M.top_k_categorical_accuracy(onehot, y_pred, k=k), want)
    # the count rule itself: label 0 of row 0 (0.2) has two larger values
    assert M.sparse_top_k_categorical_accuracy([0], y_pred[:1], k=2)[0] == 0
    assert M.sparse_top_k_categorical_accuracy([0], y_pred[:1], k=3)[0] == 1


def test_top_k_beyond_the_classes_counts_every_class():
    y_pred = np.array([[0.1, 0.9], [0.5, 0.5]], np.float32)
    np.testing.assert_array_equal(M.sparse_top_k_categorical_accuracy([0, 1], y_pred, k=5), [1, 1])
    assert M.TopKCategoricalAccuracy()(np.eye(2)[[0, 1]], y_pred) == 1.0


def test_precision_top_k_keeps_the_lowest_index_of_ties():
    """Precision(top_k=2) on rows with a tie at the boundary, against a hand count."""
    y_pred = np.array([[0.5, 0.2, 0.2, 0.1], [0.1, 0.3, 0.3, 0.3]], np.float32)
    y_true = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    # kept: row 0 -> classes 0, 1 (1 of 2 correct); row 1 -> classes 1, 2 (0 of 2)
    assert M.Precision(top_k=2)(y_true, y_pred) == pytest.approx(1 / 4)
    # recall: of 3 positive labels, only row 0's class 0 is kept
    assert M.Recall(top_k=2)(y_true, y_pred) == pytest.approx(1 / 3)


CONFUSION = [
    ("TruePositives", {}), ("FalsePositives", {}), ("TrueNegatives", {}), ("FalseNegatives", {}),
    ("TruePositives", {"thresholds": [0.25, 0.5, 0.8]}), ("FalseNegatives", {"thresholds": [0.0, 0.5, 1.0]}),
    ("TrueNegatives", {"thresholds": 0.125}),
    ("Precision", {}), ("Recall", {}),
    ("Precision", {"thresholds": [0.0, 0.5, 1.0]}), ("Recall", {"thresholds": [0.0, 0.25, 0.5, 0.75, 1.0]}),
    ("Precision", {"thresholds": [0.3, 0.625]}), ("Recall", {"thresholds": 0.125}),
    ("Precision", {"class_id": 1}), ("Recall", {"class_id": 2, "thresholds": [0.25, 0.5]}),
]


@pytest.mark.keras
@pytest.mark.parametrize("cls, kwargs", CONFUSION)
@pytest.mark.parametrize("kind", ["binary", "binary_flat", "multilabel"])
def test_confusion_metrics_match_keras(km, rng, cls, kwargs, kind):
    """Thresholds exactly at grid predictions (0, 0.25, 0.5, 1): '>' decides, in both the
    evenly spaced (bucket) and the general path."""
    if "class_id" in kwargs and kind != "multilabel":
        return  # class_id needs (n, classes) predictions: checked in the errors test
    ours, theirs = getattr(M, cls)(**kwargs), getattr(km, cls)(**kwargs)
    assert ours.get_config() == {**theirs.get_config(), "name": ours.name}
    assert_tracks_keras(ours, theirs, batches(kind, rng))


@pytest.mark.keras
@pytest.mark.parametrize("kwargs", [{"top_k": 1}, {"top_k": 3, "thresholds": 0.1}, {"top_k": 2, "class_id": 3}])
@pytest.mark.parametrize("cls", ["Precision", "Recall"])
def test_precision_recall_top_k_match_keras(km, rng, cls, kwargs):
    """top_k on rows without ties (torch breaks exact ties its own way)."""
    data = []
    for n, weight in ((12, None), (20, rng.random(20).astype(np.float32))):
        scores = np.stack([rng.permutation(N_CLASSES) for _ in range(n)]).astype(np.float32)
        data.append(((rng.random((n, N_CLASSES)) > 0.6).astype(np.float32), scores / 8, weight))
    assert_tracks_keras(getattr(M, cls)(**kwargs), getattr(km, cls)(**kwargs), data)


def edge_batches(rng, num_thresholds):
    """Predictions exactly at the thresholds i/(T-1) (float32), one float32 step either side,
    0 and 1, and heavy ties; the second batch weighted."""
    at = np.float32(np.arange(num_thresholds) / (num_thresholds - 1))
    p = np.concatenate([at, np.nextafter(at, np.float32(2)), np.nextafter(at, np.float32(-1)),
                        np.zeros(5, np.float32), np.ones(5, np.float32), np.full(9, 0.5, np.float32)])
    p = np.clip(p, 0, 1)
    labels = (rng.random(len(p)) > 0.4).astype(np.float32)
    half = len(p) // 2
    return [(labels[:half], p[:half, None], None),
            (labels[half:], p[half:, None], rng.random(len(p) - half).astype(np.float32)),
            (labels, p[:, None], None)]


AUC_OPTIONS = [{}, {"num_thresholds": 3}, {"num_thresholds": 11}, {"thresholds": [0.1, 0.3, 0.35, 0.9]},
               {"thresholds": [0.25, 0.5, 0.75]}, {"from_logits": True}]


@pytest.mark.keras
@pytest.mark.parametrize("options", AUC_OPTIONS)
def test_auc_matches_keras_on_ties_and_edge_thresholds(km, rng, options):
    """Every curve and summation method. Keras's counts do not depend on them, so one Keras
    AUC is fed and its result() read under each (curve, summation_method) in turn."""
    from keras.src.metrics.metrics_utils import AUCCurve, AUCSummationMethod
    methods = [(c, s) for c in ("ROC", "PR", "PRGAIN") for s in ("interpolation", "minoring", "majoring")]
    ours = {(c, s): M.AUC(curve=c, summation_method=s, **options) for c, s in methods}
    theirs = km.AUC(**options)
    assert ours["ROC", "interpolation"].get_config() == {**theirs.get_config(), "name": ours["ROC", "interpolation"].name}
    assert ours["ROC", "interpolation"].thresholds == pytest.approx(theirs.thresholds, abs=1e-12)
    if options.get("from_logits"):
        data = [(y, (p - 0.5) * 8, w) for y, p, w in batches("binary", rng)]
    else:
        data = edge_batches(rng, options.get("num_thresholds", 200)) + batches("binary_col", rng)
    for i, (y_true, y_pred, weight) in enumerate(data + data[:1]):
        if i == len(data):
            theirs.reset_state()
            for m in ours.values():
                m.reset_state()
        theirs.update_state(y_true, y_pred, sample_weight=weight)
        for (curve, summation), m in ours.items():
            m.update_state(y_true, y_pred, sample_weight=weight)
            theirs.curve, theirs.summation_method = AUCCurve(curve), AUCSummationMethod(summation)
            # PR-gain sums terms of both signs to near 0: float32 round-off of the weighted
            # counts (summed in another order) shows as up to ~1.2e-7 absolute
            assert_close(m.result(), theirs.result(), atol=3e-7 if curve == "PRGAIN" else ATOL)


@pytest.mark.keras
@pytest.mark.parametrize("kwargs", [{"multi_label": True}, {"multi_label": True, "num_labels": 3},
                                    {"multi_label": True, "label_weights": [1.0, 2.0, 0.5]},
                                    {"label_weights": [1.0, 2.0, 0.5]},
                                    {"multi_label": True, "curve": "PR", "thresholds": [0.2, 0.45, 0.5]}])
@pytest.mark.parametrize("curve", ["ROC", "PR"])
def test_multi_label_auc_matches_keras(km, rng, kwargs, curve):
    kwargs = {"curve": curve, **kwargs}
    ours, theirs = M.AUC(**kwargs), km.AUC(**kwargs)
    assert_tracks_keras(ours, theirs, batches("multilabel", rng))


@pytest.mark.keras
def test_auc_of_perfect_and_constant_predictions(km):
    """Degenerate curves: all predictions tied, a single class, nothing seen."""
    for y_true, y_pred in [([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]), ([1, 1, 1], [0.2, 0.9, 0.4]),
                           ([0, 0], [0.3, 0.8]), ([0, 1], [0.0, 1.0])]:
        for curve in ("ROC", "PR"):
            ours, theirs = M.AUC(curve=curve), km.AUC(curve=curve)
            assert ours.result() == float(theirs.result()) == 0.0
            y_true, y_pred = np.array(y_true, np.float32), np.array(y_pred, np.float32)
            assert_close(ours(y_true, y_pred), theirs(y_true, y_pred))


@pytest.mark.keras
def test_get_resolves_names_as_keras(km):
    """Every name fastlstm knows gives Keras's class, default name (auto-numbered alike) and config."""
    from keras.src.utils import naming
    naming.reset_uids()
    M._name_uids.clear()
    for name in M.ALL_OBJECTS_DICT:
        if name in ("MeanMetricWrapper", "mean_metric_wrapper"):
            for get in (M.get, km.get):  # needs a function
                with pytest.raises(TypeError):
                    get(name)
            continue
        ours, theirs = M.get(name), km.get(name)
        assert type(ours).__name__ == type(theirs).__name__
        assert ours.name == theirs.name
        if not type(ours) is M.Metric:
            assert ours.get_config() == theirs.get_config()
    assert M.get(None) is km.get(None) is None
    auc = M.AUC(name="x")
    assert M.get(auc) is auc and M.get(M.mean_squared_error) is M.mean_squared_error
    config = {"class_name": "BinaryAccuracy", "config": {"threshold": 0.3, "name": "ba"}}
    assert M.get(config).get_config() == km.get(config).get_config()


@pytest.mark.keras
@pytest.mark.parametrize("identifier", ["foo", "ce", "crossentropy", "Mse", 3])
def test_unknown_names_raise_keras_value_error(km, identifier):
    with pytest.raises(ValueError) as want:
        km.get(identifier)
    with pytest.raises(ValueError) as got:
        M.get(identifier)
    assert str(got.value) == str(want.value)
    with pytest.raises(ValueError):
        M.check_metrics_argument([identifier])


def test_keras_metrics_not_in_fastlstm_say_so():
    for name in ("RootMeanSquaredError", "root_mean_squared_error", "F1Score", "mape"):
        with pytest.raises(ValueError, match="not supported by fastlstm yet"):
            M.get(name)


def camelCaseMetric(y_true, y_pred):
    return np.abs(np.asarray(y_true, np.float32) - np.asarray(y_pred, np.float32)[:, 0])


SHAPES = {"binary": ((8,), (8, 1)), "binary_col": ((8, 1), (8, 1)), "sparse": ((8,), (8, 6)),
          "sparse_col": ((8, 1), (8, 6)), "onehot": ((8, 6), (8, 6)), "flat": ((8,), (8,))}


@pytest.mark.keras
@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("identifier", ["accuracy", "acc", "ACC", "Accuracy", "auc", "mse", "AUC",
                                        "top_k_categorical_accuracy"])
def test_compile_time_resolution_matches_keras(km, rng, identifier, shapes):
    """compile_utils.get_metric's choice of class and name for each shape combination, and the
    same result on a first batch."""
    from keras.src.trainers import compile_utils
    t_shape, p_shape = SHAPES[shapes]
    y_pred = grid(rng, p_shape)
    y_true = rng.integers(0, 2 if shapes.startswith("binary") or shapes == "flat" else 6, size=t_shape)
    if shapes == "onehot":
        y_true = np.eye(6, dtype=np.float32)[rng.integers(0, 6, size=8)]
    assert M.is_binary_or_sparse_categorical(y_true, y_pred) == \
        tuple(compile_utils.is_binary_or_sparse_categorical(y_true, y_pred))
    theirs = compile_utils.get_metric(identifier, y_true, y_pred)
    ours = M.compile_metric(identifier, y_true, y_pred)
    assert type(ours).__name__ == type(theirs).__name__ and ours.name == theirs.name == identifier
    try:
        theirs.update_state(y_true, y_pred)
        keras_error = ""
    except Exception as e:  # Keras's error for a metric that does not fit these shapes
        keras_error = str(e) or type(e).__name__
    if "k out of range" in keras_error:  # torch's top-k of k=5 > 1 class; fastlstm: all are in the top k
        assert ours(y_true, y_pred) == 1.0
        return
    if keras_error or (identifier, shapes) in (("top_k_categorical_accuracy", "sparse_col"), ("mse", "sparse_col")):
        # (Keras silently reads (n, 1) labels as one-hot, or broadcasts them: a clear error here)
        with pytest.raises(ValueError):
            ours.update_state(y_true, y_pred)
        return
    ours.update_state(y_true, y_pred)
    assert_close(ours.result(), theirs.result())


@pytest.mark.keras
def test_compile_time_names_of_functions_and_objects_match_keras(km, rng):
    from keras.src.trainers import compile_utils
    y_true, y_pred = (rng.random(6) > 0.5).astype(np.float32), grid(rng, (6, 1))
    pairs = [(camelCaseMetric, camelCaseMetric), (lambda t, p: camelCaseMetric(t, p),) * 2,
             (M.AUC(name="my_auc"), km.AUC(name="my_auc")), (M.Precision, km.Precision),
             (M.binary_accuracy, km.binary_accuracy)]
    for ours_id, theirs_id in pairs:
        ours = M.compile_metric(ours_id, y_true, y_pred)
        theirs = compile_utils.get_metric(theirs_id, y_true, y_pred)
        assert type(ours).__name__ == type(theirs).__name__
        assert ours.name.split("_")[0] == theirs.name.split("_")[0]  # precision(_n): counters differ
        ours.update_state(y_true, y_pred)
        theirs.update_state(y_true, y_pred)
        assert_close(ours.result(), theirs.result())
    assert M.compile_metric(camelCaseMetric, y_true, y_pred).name == "camel_case_metric"
    assert M.compile_metric(lambda t, p: t, y_true, y_pred).name == "lambda"
    with pytest.raises(ValueError, match="Expected metric, received `None`"):
        M.compile_metric(None, y_true, y_pred)


@pytest.mark.keras
@pytest.mark.parametrize("metrics", ["accuracy", M.AUC(name="auc"), 3])
@pytest.mark.parametrize("argument", ["metrics", "weighted_metrics"])
def test_metrics_argument_that_is_not_a_list_is_keras_error(metrics, argument):
    from keras.src.trainers import compile_utils
    with pytest.raises(ValueError) as want:
        compile_utils.CompileMetrics(**{"metrics": None, "weighted_metrics": None, argument: metrics})
    with pytest.raises(ValueError) as got:
        M.check_metrics_argument(metrics, argument)
    assert str(got.value) == str(want.value)


def test_metrics_argument_entries_are_checked_at_compile_time():
    assert M.check_metrics_argument(None) == []
    assert M.check_metrics_argument(("acc", M.AUC)) == ["acc", M.AUC]
    assert M.check_metrics_argument({"b": "mse", "a": ["acc", "auc"]}) == ["acc", "auc", "mse"]
    with pytest.raises(ValueError, match="Expected metric, received `None`"):
        M.check_metrics_argument(["acc", None])
    with pytest.raises(ValueError, match="Could not interpret metric identifier: acuracy"):
        M.CompileMetrics(["acuracy"])


@pytest.mark.keras
def test_compile_metrics_logs_as_keras(km, rng):
    """Names as Keras's logs keys (repeats numbered, a weighted repeat prefixed), metrics
    unweighted and weighted_metrics weighted by sample_weight."""
    from keras.src.trainers import compile_utils
    metrics = ["acc", "acc", "auc", "AUC", "mse"]
    weighted = ["acc", "auc", "binary_crossentropy"]
    ours = M.CompileMetrics(metrics, weighted)
    theirs = compile_utils.CompileMetrics(metrics, weighted)
    data = batches("binary_col", rng)
    for y_true, y_pred, weight in data:
        weight = rng.random(len(y_true)).astype(np.float32)
        ours.update_state(y_true, y_pred, weight)
        theirs.update_state(y_true, y_pred, weight)
        got, want = ours.result(), theirs.result()
        assert list(got) == list(want)
        for key in want:
            assert_close(got[key], want[key])
    assert list(got) == ["acc", "acc_1", "auc", "AUC", "mse", "weighted_acc", "weighted_auc", "binary_crossentropy"]
    ours.reset_state()
    assert all(v == 0.0 for v in ours.result().values())


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's own, from torch tensors' __array__
def test_compiled_keras_model_logs_keys_and_values(km, rng):
    """A tiny compiled Keras model's evaluate logs are CompileMetrics' results (+ loss)."""
    import keras
    x, y = rng.random((8, 3)).astype(np.float32), rng.integers(0, 6, size=8)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(6, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy",
                  metrics=["acc", "sparse_top_k_categorical_accuracy", km.SparseTopKCategoricalAccuracy(2, "top2")])
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    ours = M.CompileMetrics(["acc", "sparse_top_k_categorical_accuracy", M.SparseTopKCategoricalAccuracy(2, "top2")])
    ours.update_state(y, model.predict(x, verbose=0))
    got = ours.result()
    assert sorted(got) == sorted(k for k in logs if k != "loss") == ["acc", "sparse_top_k_categorical_accuracy", "top2"]
    for key in got:
        assert_close(got[key], logs[key])


def test_config_round_trips():
    for metric in [M.AUC(num_thresholds=7, curve="PR", name="pr"), M.AUC(thresholds=[0.3, 0.1]),
                   M.Precision(thresholds=[0.2, 0.6], class_id=1), M.TopKCategoricalAccuracy(k=3),
                   M.BinaryAccuracy(threshold=0.7), M.MeanMetricWrapper(camelCaseMetric, name="w"),
                   M.SparseCategoricalCrossentropy(ignore_class=0), M.Mean(dtype="float64")]:
        config = metric.get_config()
        clone = type(metric).from_config(config)
        assert clone.get_config() == config and clone.name == metric.name
    assert M.AUC(thresholds=[0.3, 0.1]).get_config()["thresholds"] == [0.1, 0.3]
    assert M.Mean(dtype="float64").total.dtype == np.float64


def test_state_is_kept_in_float32():
    """1e8 + 1 is 1e8 in float32, as in Keras's float32 variables."""
    m = M.Sum()
    m.update_state([1e8])
    m.update_state([1.0])
    assert m.result() == 1e8
    assert M.Sum(dtype="float64")([1e8, 1.0]) == 1e8 + 1


def test_calls_copies_and_names(monkeypatch):
    m = M.BinaryAccuracy()
    assert m([1, 0], [0.9, 0.8]) == 0.5 and m([1], [0.7]) == pytest.approx(2 / 3)
    clone = copy.deepcopy(m)
    clone.update_state([0], [0.9])
    assert m.result() == pytest.approx(2 / 3) and clone.result() == 0.5
    assert repr(m) == "<BinaryAccuracy name=binary_accuracy>" and m.dtype == "float32"
    monkeypatch.setattr(M, "_name_uids", collections.defaultdict(int))
    assert [M.AUC().name, M.AUC().name, M.AUC(name="auc").name, M.Precision().name] == ["auc", "auc_1", "auc", "precision"]
    p = M.Precision(thresholds=[0.2, 0.5])
    p.update_state([1, 0, 1], [0.3, 0.6, 0.9])
    assert isinstance(p.result(), np.ndarray) and p.result().dtype == np.float32
    np.testing.assert_allclose(p.result(), [2 / 3, 1 / 2])


def test_bad_input_is_a_clear_error():
    onehot, probs = np.eye(3, dtype=np.float32), np.full((3, 3), 1 / 3, np.float32)
    cases = [
        (lambda: M.categorical_accuracy([0, 1, 2], probs), "sparse_categorical_accuracy"),
        (lambda: M.sparse_categorical_accuracy(onehot, probs), "categorical"),
        (lambda: M.sparse_categorical_crossentropy([0, 3, 1], probs), r"in \[0, 3\)"),
        (lambda: M.sparse_top_k_categorical_accuracy([-1, 0, 1], probs), r"in \[0, 3\)"),
        (lambda: M.sparse_top_k_categorical_accuracy([0, 1], probs), "labels"),
        (lambda: M.binary_crossentropy([0, 1, 1], probs[:, :1]), "same shape"),
        (lambda: M.categorical_crossentropy(onehot[:, :2], probs), "same shape"),
        (lambda: M.TopKCategoricalAccuracy(k=0), "positive integer"),
        (lambda: M.Precision(top_k=4)(onehot, probs), "larger than the 3 classes"),
        (lambda: M.Precision(class_id=0)([1, 0], [0.3, 0.4]), "y_pred must be a 2D array"),
        (lambda: M.Precision(class_id=3)(onehot, probs), "out of range"),
        (lambda: M.Recall(thresholds=[0.5, 1.5]), r"Threshold values must be in \[0, 1\]"),
        (lambda: M.TruePositives()(onehot, probs[:2]), "does not match"),
        (lambda: M.AUC(num_thresholds=1), "must be an integer > 1"),
        (lambda: M.AUC(curve="XY"), "Invalid AUC curve value"),
        (lambda: M.AUC(summation_method="mid"), "Invalid AUC summation method"),
        (lambda: M.AUC(num_labels=3), "needed only when `multi_label` is True"),
        (lambda: M.AUC(multi_label=True)([1, 0], [0.3, 0.4]), "must have rank 2"),
        (lambda: M.AUC(multi_label=True, num_labels=2)(onehot, probs), "built for 2 labels"),
        (lambda: M.Mean().update_state([1.0, 2.0], sample_weight=[1.0, 2.0, 3.0]), "sample_weight"),
        (lambda: M.Mean(dtype="int32"), "float dtype"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
