"""fastlstm.optimizers: each optimizer and option bit for bit against an independent float32
numpy formula (in the operation order Keras computes on the torch backend), and against Keras 3
(torch backend) itself from the same weights and gradients; schedules, clipping, the settable
learning rate, configs, errors, and models compiled with each optimizer."""
import copy
import pickle

import numpy as np
import pytest

import fastlstm
from fastlstm import Sequential, _core, optimizers
from fastlstm.layers import LSTM, Dense, Embedding
from fastlstm.optimizers import schedules
from test_protocol import assert_trains_like_keras

F = np.float32
SHAPES = [(7, 5), (5,), (40_000,)]  # the last spans several of the kernels' parallel pieces

CASES = [
    ("Adam", {}),
    ("Adam", {"amsgrad": True, "learning_rate": 0.01}),
    ("Adam", {"weight_decay": 0.1, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5}),
    ("AdamW", {}),
    ("AdamW", {"weight_decay": 0.05, "amsgrad": True}),
    ("RMSprop", {}),
    ("RMSprop", {"centered": True}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"momentum": 0.5, "centered": True, "rho": 0.8, "weight_decay": 0.01}),
    ("SGD", {}),
    ("SGD", {"momentum": 0.9}),
    ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adagrad", {}),
    ("Adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.5, "epsilon": 1e-3}),
    ("Adam", {"clipnorm": 1.0}),  # every gradient here has a norm > 1: all clipped
    ("Adagrad", {"clipnorm": 1000.0}),  # none clipped
    ("SGD", {"global_clipnorm": 1.0}),
    ("SGD", {"global_clipnorm": 1000.0}),  # scaled by c * (1/c), not exactly 1
    ("RMSprop", {"clipvalue": 0.5}),
]
CASE_IDS = [f"{kind}-{'-'.join(f'{k}={v}' for k, v in cfg.items()) or 'defaults'}" for kind, cfg in CASES]

# Keras's defaults, written out again: the reference does not read fastlstm's.
DEFAULTS = {
    "Adam": dict(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, weight_decay=None),
    "AdamW": dict(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, weight_decay=0.004),
    "RMSprop": dict(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, weight_decay=None),
    "SGD": dict(learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None),
    "Adagrad": dict(learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None),
}


def problem(rng, steps=6, shapes=SHAPES):
    w0 = [rng.normal(size=s).astype(F) for s in shapes]
    return w0, [[rng.normal(size=s).astype(F) for s in shapes] for _ in range(steps)]


def numpy_clip(c, grads):
    """Keras's base-optimizer clipping, float32."""
    if c.get("clipnorm"):
        n, out = F(c["clipnorm"]), []
        for g in grads:
            sq = np.sum(g * g)
            out.append((g * n) / np.maximum(np.sqrt(sq) if sq > 0 else sq, n))
        return out
    if c.get("global_clipnorm"):
        n = F(c["global_clipnorm"])
        norm = np.sqrt(np.sum(np.array([np.sum(g * g) for g in grads])))
        scale = n * np.minimum(F(1) / norm, F(1 / c["global_clipnorm"])) + (norm - norm)
        return [g * scale for g in grads]
    if c.get("clipvalue"):
        return [np.clip(g, F(-c["clipvalue"]), F(c["clipvalue"])) for g in grads]
    return grads


def numpy_steps(kind, cfg, w0, grads, lrs=None):
    """The weights after one step per entry of `grads`, float32 numpy, one operation at a time
    in Keras-on-torch's order: clip, weight decay w * (1 - wd lr), the update. lrs: each step's
    learning rate (default: cfg's)."""
    c = {**DEFAULTS[kind], **cfg}
    ws, state = [w.copy() for w in w0], [{} for _ in w0]
    for t, gs in enumerate(grads):
        lr = F(c["learning_rate"] if lrs is None else lrs[t])
        decay = F(1) if c["weight_decay"] is None else F(1) - F(c["weight_decay"]) * lr
        for k, g in enumerate(numpy_clip(c, gs)):
            s, w, zero = state[k], ws[k] * decay, np.zeros_like(g)
            if kind in ("Adam", "AdamW"):
                b1, b2, step = F(c["beta_1"]), F(c["beta_2"]), F(t + 1)
                alpha = lr * np.sqrt(F(1) - b2 ** step) / (F(1) - b1 ** step)
                s["m"] = s.get("m", zero) * b1 + g * F(1 - c["beta_1"])
                v = s["v"] = s.get("v", zero) * b2 + (g * g) * F(1 - c["beta_2"])
                if c["amsgrad"]:
                    v = s["v_hat"] = np.maximum(s.get("v_hat", zero), v)
                w = w - (s["m"] * alpha) / (np.sqrt(v) + F(c["epsilon"]))
            elif kind == "RMSprop":
                rho, one_rho = F(c["rho"]), F(1 - c["rho"])
                s["v"] = s.get("v", zero) * rho + (g * g) * one_rho
                d = s["v"] + F(c["epsilon"])
                if c["centered"]:
                    s["a"] = s.get("a", zero) * rho + g * one_rho
                    d = d - s["a"] * s["a"]
                step = (g * lr) / np.sqrt(d)
                if c["momentum"] > 0:
                    step = s["mom"] = s.get("mom", zero) * F(c["momentum"]) + step
                w = w - step
            elif kind == "SGD":
                if c["momentum"]:
                    mu = F(c["momentum"])
                    s["mom"] = s.get("mom", zero) * mu - g * lr
                    w = (w - g * lr) + s["mom"] * mu if c["nesterov"] else w + s["mom"]
                else:
                    w = w - g * lr
            else:
                s["acc"] = s.get("acc", np.full_like(g, F(c["initial_accumulator_value"]))) + g * g
                w = w - (g * lr) / np.sqrt(s["acc"] + F(c["epsilon"]))
            ws[k] = w
    return ws


def fastlstm_steps(opt, w0, grads):
    ws = [w.copy() for w in w0]
    for gs in grads:
        opt.apply(gs, ws)
    return ws


@pytest.mark.parametrize("kind,cfg", CASES, ids=CASE_IDS)
def test_each_optimizer_equals_its_numpy_float32_formula_bit_for_bit(rng, threads, kind, cfg):
    w0, grads = problem(rng)
    want = numpy_steps(kind, cfg, w0, grads)
    for n in (1, 2):  # fixed pieces: the same bits on any thread count
        fastlstm.set_num_threads(n)
        opt = getattr(optimizers, kind)(**cfg)
        got = fastlstm_steps(opt, w0, grads)
        assert opt.iterations == len(grads)
        for g, w in zip(got, want):
            assert np.array_equal(g, w)
    assert not np.array_equal(got[0], w0[0])


def keras_steps(kopt, w0, grads):
    import keras

    vs = [keras.Variable(w.copy()) for w in w0]
    for gs in grads:
        kopt.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in gs], vs))
    return [v.numpy() for v in vs]


def assert_close_to_keras(got, want):
    """Within ~1e-6 of Keras (torch fuses some multiply-adds and sums in another order; seen:
    at most 5e-7 on weights of size ~1, most elements equal)."""
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.keras
@pytest.mark.parametrize("kind,cfg", CASES, ids=CASE_IDS)
def test_each_optimizer_steps_like_keras(rng, kind, cfg):
    import keras

    w0, grads = problem(rng, shapes=[(7, 5), (5,), (3000,)])
    kopt = getattr(keras.optimizers, kind)(name="opt", **cfg)
    opt = getattr(optimizers, kind)(name="opt", **cfg)
    got, want = fastlstm_steps(opt, w0, grads), keras_steps(kopt, w0, grads)
    assert_close_to_keras(got, want)
    assert max(np.abs(g - w).max() for g, w in zip(got, w0)) > 1e-3  # the steps moved the weights
    assert opt.get_config() == kopt.get_config()
    # Keras's optimizer.variables: the same order, shapes and values
    assert len(opt.variables) == len(kopt.variables)
    for mine, theirs in zip(opt.variables, kopt.variables):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-5, atol=1e-7)


def lr_schedules(lib):
    s = lib.optimizers.schedules
    return [s.ExponentialDecay(0.1, 3, 0.5), s.ExponentialDecay(0.05, 2, 0.7, staircase=True),
            s.PiecewiseConstantDecay([1, 3], [0.1, 0.01, 0.001]),
            s.CosineDecay(0.02, 4, alpha=0.1), s.CosineDecay(0.0, 4, alpha=0.1, warmup_target=0.05, warmup_steps=2)]


@pytest.mark.keras
@pytest.mark.parametrize("k", range(5))
@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
def test_optimizers_with_schedules_step_like_keras(rng, kind, k):
    import keras

    w0, grads = problem(rng, shapes=[(6, 4), (300,)])
    kopt = getattr(keras.optimizers, kind)(learning_rate=lr_schedules(keras)[k], name="opt")
    opt = getattr(optimizers, kind)(learning_rate=lr_schedules(fastlstm)[k], name="opt")
    assert_close_to_keras(fastlstm_steps(opt, w0, grads), keras_steps(kopt, w0, grads))
    assert opt.get_config() == kopt.get_config()  # the schedule serialised as Keras does
    assert opt.learning_rate == pytest.approx(float(kopt.learning_rate), rel=1e-6)


@pytest.mark.keras
def test_a_callable_learning_rate_is_called_each_step_as_keras_calls_it(rng):
    import keras

    w0, grads = problem(rng, shapes=[(9,)])
    rates = iter([0.1, 0.05, 0.02, 0.01, 0.01, 0.01] * 2)
    lr = lambda: next(rates)  # Keras calls it with no arguments, once per step
    kopt = keras.optimizers.SGD(learning_rate=lr)
    want = keras_steps(kopt, w0, grads)
    rates = iter([0.1, 0.05, 0.02, 0.01, 0.01, 0.01] * 2)
    got = fastlstm_steps(optimizers.SGD(learning_rate=lr), w0, grads)
    assert_close_to_keras(got, want)
    np.testing.assert_array_equal(got[0], numpy_steps("SGD", {}, w0, grads, lrs=[0.1, 0.05, 0.02, 0.01, 0.01, 0.01])[0])


@pytest.mark.keras
@pytest.mark.parametrize("k", range(5))
def test_schedules_give_keras_values_at_every_step(k):
    import keras

    mine, theirs = lr_schedules(fastlstm)[k], lr_schedules(keras)[k]
    steps = range(0, 40)
    got = np.array([mine(s) for s in steps])
    want = np.array([float(keras.ops.convert_to_numpy(theirs(keras.ops.convert_to_tensor(s, dtype="int32"))))
                     for s in steps], F)
    assert got.dtype == F
    np.testing.assert_allclose(got, want, rtol=1e-6)  # seen: equal, or cos's last bit
    assert schedules.serialize(mine) == keras.optimizers.schedules.serialize(theirs)
    again = schedules.deserialize(schedules.serialize(mine))
    assert type(again) is type(mine) and again.get_config() == mine.get_config()


@pytest.mark.keras
def test_long_schedules_against_keras():
    import keras

    pairs = [("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=7, decay_rate=0.93)),
             ("PiecewiseConstantDecay", dict(boundaries=[10, 50, 120], values=[0.1, 0.05, 0.01, 0.003])),
             ("CosineDecay", dict(initial_learning_rate=0.0, decay_steps=100, warmup_target=0.1,
                                  warmup_steps=30, alpha=0.05))]
    for name, cfg in pairs:
        mine, theirs = getattr(schedules, name)(**cfg), getattr(keras.optimizers.schedules, name)(**cfg)
        steps = range(0, 300, 3)
        want = [float(keras.ops.convert_to_numpy(theirs(keras.ops.convert_to_tensor(s, dtype="int32"))))
                for s in steps]
        np.testing.assert_allclose([mine(s) for s in steps], want, rtol=1e-6, atol=1e-12)


def test_schedule_values_against_float64_formulas():
    steps = np.arange(0, 300)
    exp = schedules.ExponentialDecay(0.1, 7, 0.93, staircase=True)
    np.testing.assert_allclose([exp(s) for s in steps], 0.1 * 0.93 ** np.floor(steps / 7), rtol=2e-6)
    pw = schedules.PiecewiseConstantDecay([10, 50], [0.1, 0.05, 0.01])
    assert [pw(s) for s in (0, 10, 11, 50, 51, 299)] == [F(0.1), F(0.1), F(0.05), F(0.05), F(0.01), F(0.01)]
    cos = schedules.CosineDecay(0.01, 100, alpha=0.2, warmup_target=0.1, warmup_steps=40)
    s = np.minimum(steps, 140).astype(float)
    want = np.where(s < 40, 0.01 + (0.1 - 0.01) * s / 40,
                    0.1 * (0.8 * 0.5 * (1 + np.cos(np.pi * (s - 40) / 100)) + 0.2))
    np.testing.assert_allclose([cos(x) for x in steps], want, rtol=2e-6)


def test_the_learning_rate_is_settable_and_used_from_the_next_step(rng):
    w0, grads = problem(rng, steps=3, shapes=[(4, 3)])
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.5)
    assert opt.learning_rate == float(F(0.1))
    ws = [w.copy() for w in w0]
    opt.apply(grads[0], ws)
    opt.learning_rate = 0.02
    assert opt.learning_rate == float(F(0.02)) and opt.get_config()["learning_rate"] == float(F(0.02))
    opt.apply(grads[1], ws)
    opt.learning_rate = np.float64(1)  # any real number, as Keras's assign takes it
    opt.apply(grads[2], ws)
    want = numpy_steps("SGD", {"momentum": 0.5}, w0, grads, lrs=[0.1, 0.02, 1.0])
    assert np.array_equal(ws[0], want[0])
    opt.learning_rate = schedules.ExponentialDecay(0.1, 1, 0.5)  # a schedule replaces a float
    assert opt.learning_rate == float(F(0.1) * F(0.5) ** F(3))
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.1
    for bad in (float("nan"), -0.1, "0.1", None):
        with pytest.raises(ValueError, match="learning_rate"):
            optimizers.Adam().learning_rate = bad


@pytest.mark.keras
def test_the_learning_rate_reads_as_keras_holds_it():
    import keras

    opt, kopt = optimizers.RMSprop(learning_rate=0.1), keras.optimizers.RMSprop(learning_rate=0.1)
    opt.learning_rate = kopt.learning_rate = 0.003
    assert opt.learning_rate == float(kopt.learning_rate.numpy())  # float32's value


@pytest.mark.keras
@pytest.mark.parametrize("kind,cfg", CASES[:14:3], ids=CASE_IDS[:14:3])
def test_configs_round_trip_and_load_into_keras(rng, kind, cfg):
    import keras

    opt = getattr(optimizers, kind)(**cfg)
    again = type(opt).from_config(opt.get_config())
    assert again.get_config() == opt.get_config()
    w0, grads = problem(rng, steps=3, shapes=[(5, 3)])
    assert np.array_equal(fastlstm_steps(opt, w0, grads)[0], fastlstm_steps(again, w0, grads)[0])
    theirs = keras.optimizers.deserialize(optimizers.serialize(opt))
    assert type(theirs).__name__ == kind and theirs.get_config() == opt.get_config()
    mine = optimizers.deserialize(keras.optimizers.serialize(theirs))  # Keras's own form
    assert type(mine) is type(opt) and mine.get_config() == opt.get_config()


def test_a_schedule_config_round_trips_through_the_optimizer():
    opt = optimizers.Adam(learning_rate=schedules.CosineDecay(0.01, 10, warmup_target=0.1, warmup_steps=3))
    config = opt.get_config()
    assert config["learning_rate"]["module"] == "keras.optimizers.schedules"
    assert config["learning_rate"]["class_name"] == "CosineDecay"
    again = optimizers.Adam.from_config(config)
    assert again.get_config() == config and isinstance(again._learning_rate, schedules.CosineDecay)

    def my_rate():
        return 0.01

    cfg = optimizers.SGD(learning_rate=my_rate).get_config()
    assert optimizers.SGD.from_config(cfg, custom_objects={"my_rate": my_rate}).learning_rate == float(F(0.01))
    with pytest.raises(ValueError, match="custom_objects"):
        optimizers.SGD.from_config(cfg)
    with pytest.raises(ValueError, match="named function"):
        optimizers.SGD(learning_rate=lambda: 0.1).get_config()
    with pytest.raises(ValueError, match="PolynomialDecay"):
        schedules.deserialize({"class_name": "PolynomialDecay", "config": {}})


def test_get_takes_keras_names_configs_and_instances():
    for name, cls in (("adam", optimizers.Adam), ("ADAM", optimizers.Adam), ("AdamW", optimizers.AdamW),
                      ("rmsprop", optimizers.RMSprop), ("RMSprop", optimizers.RMSprop),
                      ("sgd", optimizers.SGD), ("Adagrad", optimizers.Adagrad)):
        assert type(optimizers.get(name)) is cls
    opt = optimizers.SGD()
    assert optimizers.get(opt) is opt and optimizers.get(None) is None
    sgd = optimizers.get({"class_name": "SGD", "config": {"learning_rate": 0.5, "momentum": 0.9}})
    assert type(sgd) is optimizers.SGD and sgd.learning_rate == 0.5 and sgd.momentum == 0.9
    with pytest.raises(ValueError, match="Could not interpret optimizer identifier: 'nope'"):
        optimizers.get("nope")
    with pytest.raises(ValueError, match="'nadam' is not in fastlstm"):
        optimizers.get("nadam")
    with pytest.raises(ValueError, match="Could not interpret optimizer identifier"):
        optimizers.get(42)


def test_keras_names_defaults_and_automatic_names():
    assert optimizers.Adam().get_config()["learning_rate"] == float(F(0.001))
    assert optimizers.SGD().get_config()["learning_rate"] == float(F(0.01))
    assert optimizers.AdamW().weight_decay == 0.004
    assert optimizers.Adagrad().initial_accumulator_value == 0.1
    names = [optimizers.RMSprop().name for _ in range(2)]
    assert names[0].startswith("rm_sprop") and names[1] != names[0]  # Keras's snake case, uniquified
    assert optimizers.AdamW(name="mine").name == "mine"


@pytest.mark.parametrize("make,error,match", [
    (lambda: optimizers.Adam(use_ema=True), ValueError, "use_ema"),
    (lambda: optimizers.SGD(loss_scale_factor=128.0), ValueError, "loss_scale_factor"),
    (lambda: optimizers.RMSprop(gradient_accumulation_steps=4), ValueError, "gradient_accumulation_steps"),
    (lambda: optimizers.Adam(foo=1), ValueError, r"Argument\(s\) not recognized: \{'foo': 1\}"),
    (lambda: optimizers.Adam(lr=0.1), ValueError, "not recognized"),  # Keras 3 has no `lr`
    (lambda: optimizers.Adam(learning_rate=1), ValueError, "should be float"),  # as Keras
    (lambda: optimizers.Adam(learning_rate="fast"), ValueError, "should be float"),
    (lambda: optimizers.Adam(learning_rate=float("inf")), ValueError, "learning_rate"),
    (lambda: optimizers.Adam(clipnorm=1.0, clipvalue=1.0), ValueError, "Only one of"),
    (lambda: optimizers.SGD(clipnorm=float("nan")), ValueError, "clipnorm"),
    (lambda: optimizers.AdamW(weight_decay=None), ValueError, "weight_decay"),
    (lambda: optimizers.SGD(momentum=1), ValueError, "must be a float between"),  # as Keras
    (lambda: optimizers.SGD(momentum=1.5), ValueError, "must be a float between"),
    (lambda: optimizers.Adam(beta_1=1.0), ValueError, "beta_1"),
    (lambda: optimizers.Adam(beta_2=-0.1), ValueError, "beta_2"),
    (lambda: optimizers.Adam(epsilon=0.0), ValueError, "epsilon"),
    (lambda: optimizers.RMSprop(rho=1.5), ValueError, "rho"),
    (lambda: optimizers.RMSprop(momentum=-0.5), ValueError, "momentum"),
    (lambda: optimizers.Adagrad(initial_accumulator_value=-1.0), ValueError, "initial_accumulator_value"),
    (lambda: optimizers.Adam(weight_decay="0.1"), ValueError, "weight_decay"),
    (lambda: optimizers.Adam(name=3), TypeError, "name"),
    (lambda: schedules.ExponentialDecay(0.1, 0, 0.9), ValueError, "decay_steps"),
    (lambda: schedules.CosineDecay(0.1, -5), ValueError, "decay_steps"),
    (lambda: schedules.PiecewiseConstantDecay([1, 2], [0.1, 0.2]), ValueError, "1 less than"),
    (lambda: schedules.PiecewiseConstantDecay([], [0.1]), ValueError, "at least one boundary"),
])
def test_bad_arguments_are_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_decay_is_ignored_with_keras_warning():
    with pytest.warns(UserWarning, match="`decay` is no longer supported"):
        optimizers.Adam(decay=0.1)


def test_bad_apply_calls_are_clear_errors_and_change_nothing(rng):
    w0, grads = problem(rng, steps=2, shapes=[(4, 3), (3,)])
    opt = optimizers.Adam(learning_rate=0.1)
    ws = [w.copy() for w in w0]
    opt.apply(grads[0], ws)
    before = [w.copy() for w in ws] + [v.copy() for v in opt.variables]
    bad_calls = [
        ((grads[1][:1], ws[:1]), "built for 2 weights and got 1"),
        ((grads[1], ws[:1]), "2 gradients for 1 weights"),
        (([grads[1][0], grads[1][1][:2]], ws), "gradient 1 has shape"),
        ((grads[1], [ws[0], np.zeros(4, F)]), r"weight 1 has shape \(4,\), but .* built for \(3,\)"),
        ((grads[1], [ws[0], ws[1].astype(np.float64)]), "writeable C-contiguous float32"),
        ((grads[1], [np.asfortranarray(ws[0]), ws[1]]), "writeable C-contiguous float32"),
        (([None, None], ws), "No gradients provided"),
    ]
    for args, match in bad_calls:
        with pytest.raises(ValueError, match=match):
            opt.apply(*args)
    after = [w.copy() for w in ws] + [v.copy() for v in opt.variables]
    assert opt.iterations == 1 and all(np.array_equal(a, b) for a, b in zip(before, after))
    opt.apply([], [])  # Keras: no gradients, no step
    assert opt.iterations == 1
    opt.apply([None, grads[1][1]], ws)  # a None gradient leaves its weight alone
    assert np.array_equal(ws[0], before[0]) and not np.array_equal(ws[1], before[1])


@pytest.mark.parametrize("clone", [lambda o: pickle.loads(pickle.dumps(o)), copy.deepcopy])
def test_state_pickles_and_deep_copies(rng, clone):
    w0, grads = problem(rng, steps=3, shapes=[(6, 2), (2,)])
    opt = optimizers.RMSprop(momentum=0.5, centered=True, learning_rate=schedules.ExponentialDecay(0.1, 2, 0.5))
    ws = [w.copy() for w in w0]
    for gs in grads[:2]:
        opt.apply(gs, ws)
    other, ws2 = clone(opt), [w.copy() for w in ws]
    assert other.iterations == 2
    opt.apply(grads[2], ws)
    other.apply(grads[2], ws2)
    for a, b in zip(ws + opt.variables, ws2 + other.variables):
        assert not np.shares_memory(a, b) and np.array_equal(a, b)


def test_set_weights_restores_the_state_in_keras_order(rng):
    w0, grads = problem(rng, steps=3, shapes=[(6, 2), (2,)])
    opt = optimizers.Adam(amsgrad=True, learning_rate=0.05)
    ws = fastlstm_steps(opt, w0, grads[:2])
    assert [v.shape for v in opt.variables] == [(), ()] + [(6, 2), (6, 2), (2,), (2,), (6, 2), (2,)]
    fresh = optimizers.Adam(amsgrad=True)
    with pytest.raises(ValueError, match="not yet been built"):
        fresh.set_weights(opt.variables)
    fresh.build(ws)
    with pytest.raises(ValueError, match="has shape"):
        fresh.set_weights(opt.variables[:2] + [v.T for v in opt.variables[2:]])
    fresh.set_weights(opt.variables)
    assert fresh.iterations == 2 and fresh.learning_rate == opt.learning_rate
    ws2 = [w.copy() for w in ws]
    opt.apply(grads[2], ws)
    fresh.apply(grads[2], ws2)
    assert all(np.array_equal(a, b) for a, b in zip(ws, ws2))


# ---- the kernels ----------------------------------------------------------------------------------

def kernel_calls(w, g, s):
    return [lambda: _core.adam_update(w, g, s, s, None, 1.0, 0.1, 0.9, 0.1, 0.99, 0.01, 1e-7),
            lambda: _core.rmsprop_update(w, g, s, None, None, 1.0, 0.1, 0.9, 0.1, 1e-7, 0.0),
            lambda: _core.sgd_update(w, g, s, 1.0, 0.1, 0.9, False),
            lambda: _core.adagrad_update(w, g, s, 1.0, 0.1, 1e-7)]


@pytest.mark.parametrize("k", range(4))
def test_the_kernels_refuse_arrays_they_cannot_update_in_place(k):
    ok = np.zeros(4, F)
    frozen = np.zeros(4, F)
    frozen.flags.writeable = False
    for w, g, s, match in [(np.zeros(4), ok, ok.copy(), "writeable C-contiguous float32"),
                           (np.zeros(8, F)[::2], ok, ok.copy(), "writeable C-contiguous float32"),
                           ([0.0] * 4, ok, ok.copy(), "writeable C-contiguous float32"),
                           (ok.copy(), ok, frozen, "writeable"),
                           (ok.copy(), np.zeros(5, F), ok.copy(), "g must have shape"),
                           (ok.copy(), ok, np.zeros(3, F), "as many elements as w")]:
        with pytest.raises(ValueError, match=match):
            kernel_calls(w, g, s)[k]()


# ---- models compiled with each optimizer ---------------------------------------------------------

MODEL_CASES = [("rmsprop", None), ("Adam", {"amsgrad": True}), ("AdamW", {"weight_decay": 0.1}),
               ("RMSprop", {"momentum": 0.5, "centered": True}),
               ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
               ("Adagrad", {"learning_rate": 0.05, "clipnorm": 0.05}),
               ("Adam", {"learning_rate": "schedule", "global_clipnorm": 0.1})]


@pytest.mark.keras
@pytest.mark.parametrize("kind,cfg", MODEL_CASES)
def test_models_compiled_with_each_optimizer_train_like_keras(rng, kind, cfg):
    """Embedding -> LSTM -> Dense(softmax): compile(optimizer=...), then train_on_batch steps
    give Keras's losses and weights."""
    import keras

    def make(lib):
        if cfg is None:
            return kind  # by name
        c = dict(cfg)
        if c.get("learning_rate") == "schedule":
            c["learning_rate"] = lib.optimizers.schedules.ExponentialDecay(0.01, 1, 0.8)
        return getattr(lib.optimizers, kind)(**c)

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6),
                           keras.layers.LSTM(5), keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=make(keras))
    m = Sequential([Embedding(30, 6), LSTM(5), Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer=make(fastlstm))
    assert type(m.optimizer).__name__ == type(km.optimizer).__name__
    assert_trains_like_keras(rng, m, km, padding=3)
    assert m.optimizer.iterations == 3
