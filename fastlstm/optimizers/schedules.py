"""Keras 3's learning-rate schedules (`keras.optimizers.schedules`), computed in float32 the way
Keras computes them (its schedules run on float32 tensors): each returns a numpy float32."""
import math

import numpy as np

f32 = np.float32
MODULE = "keras.optimizers.schedules"  # where Keras finds the built-in schedules in a saved config


class LearningRateSchedule:
    """The base class: `schedule(step)` -> the learning rate at optimizer step `step` (an int).
    A subclass implements `__call__` and, to be serialisable, `get_config`."""

    def __call__(self, step):
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override "
                                  "`__call__(self, step)`.")

    def get_config(self):
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override "
                                  "`get_config()` in order to be serializable.")

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _positive_steps(name, value):
    if not value > 0:
        raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value}")


class ExponentialDecay(LearningRateSchedule):
    """initial_learning_rate * decay_rate ** (step / decay_steps); with `staircase` the exponent
    is floored."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="ExponentialDecay"):
        _positive_steps("decay_steps", decay_steps)
        self.initial_learning_rate, self.decay_steps, self.decay_rate = initial_learning_rate, decay_steps, decay_rate
        self.staircase, self.name = staircase, name

    def __call__(self, step):
        p = f32(step) / f32(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return f32(self.initial_learning_rate) * f32(self.decay_rate) ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[0] while step <= boundaries[0], values[i] while boundaries[i-1] < step <=
    boundaries[i], values[-1] after the last boundary (summed from Keras's interval indicators)."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1:
            raise ValueError("The length of boundaries should be 1 less than the length of values. "
                             f"Received: boundaries={boundaries} of length {len(boundaries)}, and "
                             f"values={values} of length {len(values)}.")
        if not boundaries:
            raise ValueError("PiecewiseConstantDecay needs at least one boundary (Keras's cannot be "
                             "called without one); for a constant rate pass a float learning_rate")
        self.boundaries, self.values, self.name = boundaries, values, name

    def __call__(self, step):
        b, v = self.boundaries, [f32(x) for x in self.values]
        lr = f32(step <= b[0]) * v[0] + f32(step > b[-1]) * v[-1]
        for low, high, value in zip(b[:-1], b[1:], v[1:-1]):
            lr = lr + f32(low < step <= high) * value
        return lr

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Without warmup: from initial_learning_rate down to initial_learning_rate * alpha over
    decay_steps, (1 - alpha) * 0.5 (1 + cos(pi step / decay_steps)) + alpha times the start.
    With a warmup_target: linear from initial_learning_rate to warmup_target over warmup_steps,
    then that cosine from warmup_target."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):
        _positive_steps("decay_steps", decay_steps)
        self.initial_learning_rate, self.decay_steps, self.alpha, self.name = initial_learning_rate, decay_steps, alpha, name
        self.warmup_target, self.warmup_steps = warmup_target, warmup_steps

    def _decay(self, step, decay_steps, decay_from):
        # cos correctly rounded to float32 (through float64): the same on every machine, where
        # numpy's float32 cos depends on the CPU's vector unit
        cosine = f32(0.5) * (f32(1.0) + f32(math.cos(f32(math.pi) * (step / decay_steps))))
        return decay_from * (f32(1 - self.alpha) * cosine + f32(self.alpha))

    def __call__(self, step):
        start, decay_steps, step = f32(self.initial_learning_rate), f32(self.decay_steps), f32(step)
        if self.warmup_target is None:
            return self._decay(np.minimum(step, decay_steps), decay_steps, start)
        target, warmup_steps = f32(self.warmup_target), f32(self.warmup_steps)
        step = np.minimum(step, decay_steps + warmup_steps)
        if step < warmup_steps:
            return (target - start) * (step / warmup_steps) + start
        return self._decay(step - warmup_steps, decay_steps, target)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


BUILT_IN = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, CosineDecay)}


def serialize(learning_rate_schedule):
    """Keras's form: {'module', 'class_name', 'config', 'registered_name'}."""
    cls = type(learning_rate_schedule)
    if BUILT_IN.get(cls.__name__) is cls:
        return {"module": MODULE, "class_name": cls.__name__,
                "config": learning_rate_schedule.get_config(), "registered_name": None}
    return {"module": cls.__module__, "class_name": cls.__name__,
            "config": learning_rate_schedule.get_config(), "registered_name": cls.__name__}


def deserialize(config, custom_objects=None):
    """A schedule from serialize()'s dict (or Keras's); a class of neither fastlstm nor
    `custom_objects` is a clear error."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"a serialized learning rate schedule is a dict with 'class_name' and "
                         f"'config', got {config!r}")
    name = config["class_name"]
    cls = (custom_objects or {}).get(name) or BUILT_IN.get(name)
    if cls is None:
        raise ValueError(f"Unknown learning rate schedule {name!r}: fastlstm has "
                         f"{', '.join(BUILT_IN)}; pass a custom class in custom_objects")
    return cls.from_config(config.get("config", {}))
