"""Keras 3's optimizers: Adam, AdamW, RMSprop, SGD, Adagrad, by Keras's names, defaults and
update formulas (in the operation order Keras computes on the torch backend), float32.

One step (`apply`), as Keras's base optimizer takes it: clip the gradients (clipnorm,
global_clipnorm or clipvalue; numpy float32, as Keras's ops), then, in one C++ pass per
array (csrc/optimizers.cpp), weight decay w *= 1 - weight_decay * lr and the update, each
operation rounded to float32 as numpy does; then iterations += 1.
"""
import collections
import math
import numbers
import re
import warnings

import numpy as np

from fastlstm import _core
from fastlstm.optimizers import schedules
from fastlstm.optimizers.schedules import LearningRateSchedule

f32 = np.float32
MODULE = "keras.optimizers"  # where Keras finds these classes in a saved config
# Keras arguments fastlstm does not implement, with the values that leave them off.
UNSUPPORTED = {"use_ema": False, "loss_scale_factor": None, "gradient_accumulation_steps": None}
# Keras's optimizers fastlstm does not have (a clear error instead of "unknown").
KERAS_ONLY = ("adadelta", "adafactor", "adamax", "ftrl", "lion", "lossscaleoptimizer", "muon",
              "nadam", "schedulefreeadamw")

_name_counts = collections.Counter()  # Keras's automatic names: 'adam', 'adam_1', ...


def _auto_name(class_name):
    snake = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)).lower()
    k = _name_counts[snake]
    _name_counts[snake] += 1
    return f"{snake}_{k}" if k else snake


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _hyper(name, value, low=0.0, high=math.inf, bounds="[]"):
    """A hyperparameter: a finite real number within low..high (bounds "[]", "[)", "(]": which
    ends are included), as a float; otherwise ValueError naming it."""
    ok = _is_real(value) and math.isfinite(value)
    if ok:
        value = float(value)
        ok = (low <= value if bounds[0] == "[" else low < value) and \
             (value <= high if bounds[1] == "]" else value < high)
    if not ok:
        where = ("" if low == -math.inf else f" {'>=' if bounds[0] == '[' else '>'} {low:g}") if high == math.inf \
            else f" in {bounds[0]}{low:g}, {high:g}{bounds[1]}"
        raise ValueError(f"Argument `{name}` must be a finite number{where}. Received: {name}={value!r}")
    return value


def _optional(name, value, low=0.0):
    return None if value is None else _hyper(name, value, low)


class Optimizer:
    """Keras's optimizer base. learning_rate: a float, a LearningRateSchedule (called with
    the step) or a callable of no arguments (Keras calls it so each step). The state (numpy
    arrays, one set per weight) is created by the first `apply`; it pickles and deep-copies
    with the optimizer."""

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 loss_scale_factor=None, gradient_accumulation_steps=None, name=None, **kwargs):
        if kwargs.pop("decay", None) is not None:
            warnings.warn("Argument `decay` is no longer supported and will be ignored.")
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        given = {"use_ema": use_ema, "loss_scale_factor": loss_scale_factor,
                 "gradient_accumulation_steps": gradient_accumulation_steps}
        for arg, off in UNSUPPORTED.items():
            if given[arg] != off:
                raise ValueError(f"fastlstm's optimizers do not support Keras's `{arg}` (got "
                                 f"{arg}={given[arg]!r}); leave it at {off!r}")
        clips = {"clipnorm": clipnorm, "clipvalue": clipvalue, "global_clipnorm": global_clipnorm}
        if sum(v is not None for v in clips.values()) > 1:
            raise ValueError("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                             f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                             f"global_clipnorm={global_clipnorm}")
        # Keras clips only with a value > 0 and ignores the others.
        self.clipnorm, self.clipvalue, self.global_clipnorm = (
            _optional(k, v, low=-math.inf) for k, v in clips.items())
        self.weight_decay = _optional("weight_decay", weight_decay)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        self.name = name or _auto_name(type(self).__name__)
        self.use_ema, self.ema_momentum, self.ema_overwrite_frequency = use_ema, ema_momentum, ema_overwrite_frequency
        self.loss_scale_factor, self.gradient_accumulation_steps = loss_scale_factor, gradient_accumulation_steps
        if not isinstance(learning_rate, (float, LearningRateSchedule)) and not callable(learning_rate):
            raise ValueError("Argument `learning_rate` should be float, or an instance of "
                             "LearningRateSchedule, or a callable (that takes in the current iteration "
                             "value and returns the corresponding learning rate value). Received "
                             f"instead: learning_rate={learning_rate}")
        self._learning_rate = learning_rate if callable(learning_rate) else _float_learning_rate(learning_rate)
        self._iterations = 0
        self._shapes = None  # the weights' shapes, from the first apply (or build)
        self._state = {}  # slot name -> one float32 array per weight

    # ---- learning rate and step count ---------------------------------------------------------
    @property
    def iterations(self):
        """Steps taken."""
        return self._iterations

    @property
    def learning_rate(self):
        """The learning rate of the next step, a float (float32's value, as Keras holds it)."""
        return float(self._current_learning_rate())

    @learning_rate.setter
    def learning_rate(self, value):
        if callable(value):  # a schedule or a function
            self._learning_rate = value
        elif isinstance(self._learning_rate, LearningRateSchedule):
            raise TypeError("This optimizer was created with a `LearningRateSchedule` object as its "
                            "`learning_rate` constructor argument, hence its learning rate is not "
                            "settable. If you need the learning rate to be settable, you should "
                            "instantiate the optimizer with a float `learning_rate` argument.")
        elif callable(self._learning_rate):
            raise TypeError("This optimizer was created with a callable `learning_rate`, hence its "
                            "learning rate is not settable to a number; instantiate the optimizer "
                            "with a float `learning_rate` argument.")
        else:
            self._learning_rate = _float_learning_rate(value)

    def _current_learning_rate(self):
        lr = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            return f32(lr(self._iterations))
        return f32(lr()) if callable(lr) else lr

    # ---- state ---------------------------------------------------------------------------------
    def _slot_groups(self):
        """The state per weight, as Keras lays out `variables`: groups of slot names, each
        group interleaved weight by weight."""
        raise NotImplementedError

    def _slot_initial_value(self, slot):
        return 0.0

    def build(self, weights):
        """Creates the state for `weights` (the arrays `apply` will update); the first `apply`
        does it."""
        if self._shapes is not None:
            return
        shapes = [np.shape(w) for w in weights]
        self._state = {slot: [np.full(s, self._slot_initial_value(slot), np.float32) for s in shapes]
                       for group in self._slot_groups() for slot in group}
        self._shapes = shapes

    @property
    def built(self):
        return self._shapes is not None

    @property
    def variables(self):
        """Keras's `optimizer.variables` as numpy arrays, in its order: iteration, learning_rate
        (a float learning rate only), then the state, group by group (see _slot_groups). The
        state arrays are the optimizer's own."""
        head = [np.array(self._iterations, np.int64)]
        if not callable(self._learning_rate):
            head.append(np.array(self._learning_rate, np.float32))
        if self._shapes is None:
            return head
        return head + [self._state[slot][k] for group in self._slot_groups()
                       for k in range(len(self._shapes)) for slot in group]

    def set_weights(self, weights):
        """Sets `variables` (Keras's order and shapes) from arrays, e.g. a saved optimizer's."""
        if self._shapes is None:
            raise ValueError("You are calling `set_weights()` on an optimizer that has not yet been "
                             "built. Please call `optimizer.build(trainable_variables)` to create the "
                             "optimizer weights before calling `set_weights()`.")
        mine = self.variables
        if len(weights) != len(mine):
            raise ValueError(f"{self.name} has {len(mine)} variables, got {len(weights)} arrays")
        for k, (have, new) in enumerate(zip(mine, weights)):
            if np.shape(new) != have.shape:
                raise ValueError(f"Optimizer variable {k} has shape {have.shape} not compatible with "
                                 f"provided weight shape {np.shape(new)}.")
        state_start = 1
        if not callable(self._learning_rate):  # a float learning rate is variable 1
            self._learning_rate, state_start = _float_learning_rate(weights[1]), 2
        self._iterations = int(weights[0])
        for have, new in zip(mine[state_start:], weights[state_start:]):
            have[...] = new

    # ---- one step ------------------------------------------------------------------------------
    def apply(self, grads, weights):
        """One step: updates each float32 C-contiguous array in `weights` in place from `grads`
        (same order; a None gradient leaves its weight alone) and counts it in `iterations`."""
        grads, weights = list(grads), list(weights)
        if len(grads) != len(weights):
            raise ValueError(f"apply got {len(grads)} gradients for {len(weights)} weights")
        if not grads:  # Keras: no gradients, no step
            return
        self.build(weights)
        grads = self._checked(grads, weights)
        grads = self._clip_gradients(grads)
        lr = self._current_learning_rate()
        decay = f32(1) if self.weight_decay is None else f32(1) - f32(self.weight_decay) * lr
        for k, (g, w) in enumerate(zip(grads, weights)):
            if g is not None:
                self._update_step(k, g, w, lr, decay)
        self._iterations += 1

    def _checked(self, grads, weights):
        """grads as float32 C-contiguous arrays, after every check (nothing moves on a bad call)."""
        if len(weights) != len(self._shapes):
            raise ValueError(f"{self.name} was built for {len(self._shapes)} weights and got {len(weights)}: "
                             "an optimizer updates the weights it was built with; make a new one for others")
        if all(g is None for g in grads):
            raise ValueError("No gradients provided for any variable.")
        out = []
        for k, (g, w, shape) in enumerate(zip(grads, weights, self._shapes)):
            if not (isinstance(w, np.ndarray) and w.dtype == np.float32 and w.flags.c_contiguous
                    and w.flags.writeable):
                raise ValueError(f"weight {k} must be a writeable C-contiguous float32 numpy array "
                                 "(updated in place)")
            if w.shape != shape:
                raise ValueError(f"weight {k} has shape {w.shape}, but {self.name} was built for {shape}")
            if g is not None:
                g = np.ascontiguousarray(g, dtype=np.float32)
                if g.shape != shape:
                    raise ValueError(f"gradient {k} has shape {g.shape}, its weight {shape}")
            out.append(g)
        return out

    def _clip_gradients(self, grads):
        """Keras's clipping (base_optimizer._clip_gradients), in float32 as its ops."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.clipnorm and self.clipnorm > 0:
                c = f32(self.clipnorm)
                return [None if g is None else (g * c) / np.maximum(_l2_norm(g), c) for g in grads]
            if self.global_clipnorm and self.global_clipnorm > 0:
                norm = np.sqrt(np.sum(np.array([np.sum(np.square(g)) for g in grads if g is not None])))
                c = f32(self.global_clipnorm)
                # c * min(1/norm, 1/c) (not exactly 1 below the norm), NaN when norm is not finite
                scale = c * np.minimum(f32(1) / norm, f32(1.0 / self.global_clipnorm)) + (norm - norm)
                return [None if g is None else g * scale for g in grads]
            if self.clipvalue and self.clipvalue > 0:
                v = f32(self.clipvalue)
                return [None if g is None else np.clip(g, -v, v) for g in grads]
        return grads

    def _update_step(self, k, g, w, lr, decay):
        """Updates weight k (w, in place) from its gradient g in one C++ pass."""
        raise NotImplementedError

    # ---- config --------------------------------------------------------------------------------
    def get_config(self):
        """Keras's keys and values (the learning rate as float32's value, a schedule serialised)."""
        return {"name": self.name, "learning_rate": _learning_rate_config(self._learning_rate),
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue,
                "use_ema": self.use_ema, "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency,
                "loss_scale_factor": self.loss_scale_factor,
                "gradient_accumulation_steps": self.gradient_accumulation_steps}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = _learning_rate_from_config(config["learning_rate"], custom_objects)
        return cls(**config)


def _float_learning_rate(value):
    """A float learning rate as Keras holds it: float32."""
    if not _is_real(value) and not (isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "fiu"):
        raise ValueError(f"Argument `learning_rate` must be a number. Received: learning_rate={value!r}")
    return f32(_hyper("learning_rate", float(value)))


def _l2_norm(g):
    """Keras's _clip_by_norm norm: sqrt(sum(g^2)), left at sum(g^2) unless that is > 0."""
    l2sum = np.sum(np.square(g))
    return np.sqrt(l2sum) if l2sum > 0 else l2sum


def _learning_rate_config(lr):
    if isinstance(lr, LearningRateSchedule):
        return schedules.serialize(lr)
    if callable(lr):  # Keras saves a named function by name (and loads it from custom_objects)
        name = getattr(lr, "__name__", None)
        if name is None or name == "<lambda>":
            raise ValueError(f"cannot serialise the learning rate {lr!r}: use a named function or a "
                             "LearningRateSchedule")
        return {"module": "builtins", "class_name": "function", "config": name, "registered_name": "function"}
    return float(lr)


def _learning_rate_from_config(config, custom_objects):
    if config.get("class_name") == "function":
        fn = (custom_objects or {}).get(config.get("config"))
        if fn is None:
            raise ValueError(f"the learning rate is the function {config.get('config')!r}: pass it in "
                             "custom_objects")
        return fn
    return schedules.deserialize(config, custom_objects)


class Adam(Optimizer):
    """Keras's Adam: m = m b1 + g (1 - b1); v = v b2 + g^2 (1 - b2); amsgrad: v = max(v_hat, v);
    w -= (m alpha) / (sqrt(v) + epsilon) with alpha = lr sqrt(1 - b2^t) / (1 - b1^t)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, **kwargs)
        self.beta_1 = _hyper("beta_1", beta_1, 0.0, 1.0, "[)")
        self.beta_2 = _hyper("beta_2", beta_2, 0.0, 1.0, "[)")
        self.epsilon = _hyper("epsilon", epsilon, bounds="(]")
        self.amsgrad = bool(amsgrad)

    def _slot_groups(self):
        return [("momentum", "velocity")] + ([("velocity_hat",)] if self.amsgrad else [])

    def _update_step(self, k, g, w, lr, decay):
        t = f32(self._iterations + 1)
        b1, b2 = f32(self.beta_1), f32(self.beta_2)
        alpha = lr * np.sqrt(f32(1) - b2 ** t) / (f32(1) - b1 ** t)
        s = self._state
        _core.adam_update(w, g, s["momentum"][k], s["velocity"][k], s["velocity_hat"][k] if self.amsgrad else None,
                          decay, alpha, b1, f32(1 - self.beta_1), b2, f32(1 - self.beta_2), f32(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras's default 0.004): w *= 1 - weight_decay * lr,
    then the Adam step."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue,
                         global_clipnorm, **kwargs)
        if self.weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")


class RMSprop(Optimizer):
    """Keras's RMSprop: v = v rho + g^2 (1 - rho); d = v + epsilon, centered: a = a rho +
    g (1 - rho), d -= a^2; step = g lr / sqrt(d); momentum: mom = mom momentum + step, step =
    mom; w -= step."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, **kwargs)
        self.rho = _hyper("rho", rho, 0.0, 1.0)
        self.momentum = _hyper("momentum", momentum, 0.0, 1.0)
        self.epsilon = _hyper("epsilon", epsilon, bounds="(]")
        self.centered = bool(centered)

    def _slot_groups(self):
        return ([("velocity",)] + ([("momentum",)] if self.momentum > 0 else [])
                + ([("average_gradient",)] if self.centered else []))

    def _update_step(self, k, g, w, lr, decay):
        s = self._state
        _core.rmsprop_update(w, g, s["velocity"][k], s["average_gradient"][k] if self.centered else None,
                             s["momentum"][k] if self.momentum > 0 else None, decay, lr, f32(self.rho),
                             f32(1 - self.rho), f32(self.epsilon), f32(self.momentum))

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class SGD(Optimizer):
    """Keras's SGD: w -= g lr; with momentum: mom = mom momentum - g lr, w += mom, or with
    nesterov w = (w - g lr) + mom momentum."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, **kwargs)
        if not isinstance(momentum, float) or not 0 <= momentum <= 1:
            raise ValueError("`momentum` must be a float between [0, 1].")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _slot_groups(self):
        return [("momentum",)] if self.momentum != 0 else []

    def _update_step(self, k, g, w, lr, decay):
        mom = self._state["momentum"][k] if self.momentum != 0 else None
        _core.sgd_update(w, g, mom, decay, lr, f32(self.momentum), self.nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adagrad(Optimizer):
    """Keras's Adagrad: acc = acc + g^2 (acc starts at initial_accumulator_value);
    w -= g lr / sqrt(acc + epsilon)."""

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, **kwargs)
        self.initial_accumulator_value = _hyper("initial_accumulator_value", initial_accumulator_value)
        self.epsilon = _hyper("epsilon", epsilon, bounds="(]")

    def _slot_groups(self):
        return [("accumulator",)]

    def _slot_initial_value(self, slot):
        return self.initial_accumulator_value

    def _update_step(self, k, g, w, lr, decay):
        _core.adagrad_update(w, g, self._state["accumulator"][k], decay, lr, f32(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


ALL_OBJECTS = {cls.__name__.lower(): cls for cls in (Adam, AdamW, RMSprop, SGD, Adagrad)}


def serialize(optimizer):
    """Keras's form: {'module': 'keras.optimizers', 'class_name', 'config', 'registered_name'}."""
    return {"module": MODULE, "class_name": type(optimizer).__name__, "config": optimizer.get_config(),
            "registered_name": None}


def deserialize(config, custom_objects=None):
    """An optimizer from serialize()'s dict or Keras's ({'class_name', 'config'}); class names
    as Keras's, case-insensitive."""
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"Could not interpret optimizer identifier: {config}")
    name = config["class_name"]
    cls = (custom_objects or {}).get(name) or ALL_OBJECTS.get(name.lower())
    if cls is None:
        have = "'" + "', '".join(ALL_OBJECTS) + "'"
        if name.lower() in KERAS_ONLY:
            raise ValueError(f"Keras's optimizer {name!r} is not in fastlstm; it has {have}")
        raise ValueError(f"Could not interpret optimizer identifier: {name!r} (fastlstm has {have})")
    return cls.from_config(config.get("config", {}), custom_objects=custom_objects)


def get(identifier):
    """Keras's optimizers.get: None, a name ('adam', 'RMSprop', ...), a config dict or an
    optimizer (returned as is)."""
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        return deserialize({"class_name": identifier, "config": {}})
    if isinstance(identifier, Optimizer):
        return identifier
    raise ValueError(f"Could not interpret optimizer identifier: {identifier}")


__all__ = ["Optimizer", "Adam", "AdamW", "RMSprop", "SGD", "Adagrad", "schedules", "serialize",
           "deserialize", "get"]
