"""1 -> 2 threads on the seed workload: train_on_batch of the Reuters model (Embedding(1000,100)
-> LSTM(100) -> Dense(46)) at 1 and at 2 threads on the same batches, split by C++ call.

    python bench/threads.py [--steps 200] [--block 10]   (FASTLSTM_DATA_DIR or the Keras cache)

The thread counts alternate by blocks of `--block` batches, each block run at 1 thread and then
at 2 on the same batches (a block's first step, which absorbs the switch of thread count, is
not counted), as training at a fixed thread count does; `--block 1` alternates batch by batch
(then OpenMP's idle worker has gone to sleep before each 2-thread step). Each row: median
milliseconds at 1 and at 2 threads, and the median of the per-batch ratios (1-thread time /
2-thread time of the same batch: a batch's leading padding sets its work). The FMA peak probe's
1 -> 2 ratio, measured in the same run, is what the cores themselves scale by; "python and
the rest" (the time outside the C++ calls) runs on one thread either way.
"""
import argparse
import collections
import statistics
import time

import fastlstm
from fastlstm import _core
from fastlstm.datasets import reuters
from fastlstm.preprocessing import pad_sequences, to_categorical
from fastlstm.train import reuters_model

CALLS = {"rnn_forward_tokens": "LSTM forward", "rnn_backward_table": "LSTM backward",
         "affine": "embedding projection + Dense", "affine_backward": "their backward", "adam_update": "Adam"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="batches, each at 1 and at 2 threads")
    p.add_argument("--block", type=int, default=10, help="batches per block at one thread count")
    args = p.parse_args()
    (x, y), _ = reuters.load_data(num_words=1000, test_split=0.2)
    x, y = pad_sequences(x, maxlen=100), to_categorical(y, 46)
    batches = len(x) // 100

    spent = collections.defaultdict(float)  # seconds per C++ call during one step
    for name in CALLS:
        def timed(*a, _f=getattr(_core, name), _name=name, **k):
            t0 = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                spent[_name] += time.perf_counter() - t0
        setattr(_core, name, timed)  # the layers call fastlstm._core.<name>

    fastlstm.utils.set_random_seed(1)
    model = reuters_model()
    for b in range(5):  # warm up
        model.train_on_batch(x[b * 100:(b + 1) * 100], y[b * 100:(b + 1) * 100])
    ms = {1: collections.defaultdict(list), 2: collections.defaultdict(list)}
    peak = {1: [], 2: []}
    block = max(1, args.block)
    if args.steps < (2 if block > 1 else 1):
        p.error("--steps must leave a counted step (a block's first is not counted)")

    def run(threads, steps):  # one block at `threads`
        fastlstm.set_num_threads(threads)
        for step in steps:
            b = (step * 7) % batches
            spent.clear()
            t0 = time.perf_counter()
            model.train_on_batch(x[b * 100:(b + 1) * 100], y[b * 100:(b + 1) * 100])
            total = time.perf_counter() - t0
            if block > 1 and step == steps[0]:
                continue
            for name, label in CALLS.items():
                ms[threads][label].append(spent[name] * 1e3)
            lstm = spent["rnn_forward_tokens"] + spent["rnn_backward_table"]
            ms[threads]["LSTM forward + backward"].append(lstm * 1e3)
            ms[threads]["python and the rest"].append((total - sum(spent.values())) * 1e3)
            ms[threads]["training step"].append(total * 1e3)
        peak[threads].append(_core.fma_peak_gflops(threads))

    for first in range(0, args.steps, block):
        steps = range(first, min(first + block, args.steps))
        run(1, steps)
        run(2, steps)
    fastlstm.set_num_threads(2)

    info = fastlstm.cpu_info()
    print(f"ISA level {info['active']}, {len(ms[1]['training step'])} counted batches of 100 rows, each at 1 and "
          f"2 threads, in blocks of {block}")
    print("| part | 1 thread ms | 2 threads ms | 1 -> 2 (median of per-batch ratios) |")
    print("| --- | --- | --- | --- |")
    for label in ms[1]:
        one, two = ms[1][label], ms[2][label]
        ratio = statistics.median(a / b for a, b in zip(one, two) if b > 0)
        print(f"| {label} | {statistics.median(one):.2f} | {statistics.median(two):.2f} | x{ratio:.2f} |")
    p1, p2 = statistics.median(peak[1]), statistics.median(peak[2])
    print(f"FMA peak probe: 1 thread {p1:.0f}, 2 threads {p2:.0f} GFLOP/s (x{p2 / p1:.2f})")


if __name__ == "__main__":
    main()
