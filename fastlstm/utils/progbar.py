"""Keras's progress bar: `Progbar(target).update(current, [(name, value), ...])`.

verbose=1 draws Keras's bar (step counter, bar, ETA or elapsed, time per step, the values); on
a terminal it is redrawn in place, elsewhere (a pipe, a log file) only the finished bar of each
run is printed. verbose=2 prints one line when the run finishes.
"""
import math
import sys
import time

import numpy as np


def _format_value(v):
    """Keras's display of a value: 4 decimals, or scientific below 1e-3."""
    v = float(np.mean(v))
    return f"{v:.4f}" if abs(v) > 1e-3 else f"{v:.4e}"


def _format_rate(seconds, unit_name):
    if seconds >= 1 or seconds == 0:
        return f" {seconds:.0f}s/{unit_name}"
    if seconds >= 1e-3:
        return f" {seconds * 1e3:.0f}ms/{unit_name}"
    return f" {seconds * 1e6:.0f}us/{unit_name}"


def _format_eta(eta):
    if eta > 3600:
        return "%d:%02d:%02d" % (eta // 3600, (eta % 3600) // 60, eta % 60)
    if eta > 60:
        return "%d:%02d" % (eta // 60, eta % 60)
    return "%ds" % eta


class Progbar:
    """Keras's Progbar. Values named in `stateful_metrics` (or, with `stateless_metrics`, not
    named there) are shown as given; the others are averaged over the steps."""

    def __init__(self, target, width=20, verbose=1, interval=0.05, stateful_metrics=None,
                 stateless_metrics=None, unit_name="step"):
        if stateful_metrics is not None and stateless_metrics is not None:
            raise ValueError("Only one of `stateful_metrics` or `stateless_metrics` can be provided.")
        self.target, self.width, self.verbose = target, width, verbose
        self.interval, self.unit_name = interval, unit_name
        self._averaged = ((lambda k: k not in set(stateful_metrics)) if stateful_metrics is not None
                          else (lambda k: k in set(stateless_metrics)) if stateless_metrics is not None
                          else (lambda k: True))
        self._dynamic = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
        self._values = {}  # name -> [sum of value * steps, steps]; insertion order is display order
        self._seen = 0
        self._start = time.time()
        self._last_update = 0.0
        self._after_first_step = None
        self._prev_width = 0

    def _step_time(self, current, now):
        """Seconds per step, leaving out the first (often slow) step once there are more."""
        if not current:
            return 0.0
        if self._after_first_step is not None and current > 1:
            per = (now - self._after_first_step) / (current - 1)
        else:
            per = (now - self._start) / current
        if current == 1:
            self._after_first_step = now
        return per

    def update(self, current, values=None, finalize=None):
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        for k, v in values or []:
            if self._averaged(k) and not finalize:
                steps = max(current - self._seen, 1)
                total, count = self._values.get(k, [0.0, 0])
                self._values[k] = [total + v * steps, count + steps]
            else:
                self._values[k] = [v, 1]
        self._seen = current
        now = time.time()
        per_step = self._step_time(current, now)
        shown = "".join(f" - {k}: {_format_value(total / max(1, count))}"
                        for k, (total, count) in self._values.items())
        if self.verbose == 1:
            if now - self._last_update < self.interval and not finalize:
                return
            self._last_update = now
            if not (self._dynamic or finalize):
                return  # not a terminal: the finished bar only
            if self.target:
                digits = int(math.log10(self.target)) + 1
                done = int(self.width * current / self.target)
                bar = (f"\x1b[1m{current:{digits}d}/{self.target}\x1b[0m "
                       + (f"\x1b[32m{'━' * done}\x1b[0m" if done > 0 else "")
                       + f"\x1b[37m{'━' * (self.width - done)}\x1b[0m")
                plain = len(f"{current:{digits}d}/{self.target} ") + self.width
            else:
                bar = "%7d/Unknown" % current
                plain = len(bar)
            if self.target and not finalize:
                info = f" \x1b[1m{_format_eta(per_step * (self.target - current))}\x1b[0m"
            else:
                info = f" \x1b[1m{now - self._start:.0f}s\x1b[0m"
            info += _format_rate(per_step, self.unit_name) + shown
            width = plain + len(info) - 8  # the 8 characters of escape codes around the time
            message = ("\b" * self._prev_width + "\r") if self._dynamic else ""
            message += bar + info + " " * max(0, self._prev_width - width)
            sys.stdout.write(message + ("\n" if finalize else ""))
            sys.stdout.flush()
            self._prev_width = width
        elif self.verbose == 2 and finalize and self.target:
            digits = int(math.log10(self.target)) + 1
            sys.stdout.write(f"{current:{digits}d}/{self.target} - {now - self._start:.0f}s -"
                             f"{_format_rate(per_step, self.unit_name)}{shown}\n")
            sys.stdout.flush()
            self._last_update = now

    def add(self, n, values=None):
        self.update(self._seen + n, values)
