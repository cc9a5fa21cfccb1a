"""Micro-benchmark of the LSTM kernels: forward and forward+backward time, GFLOP/s, 1 -> 2 threads.

    python bench/kernel.py [--repeats 7]          (FASTLSTM_ISA=avx2 ... for another ISA level)

For a grid of (B, T, E, H), with 1 and 2 threads, on dense input (fastlstm._core.rnn_forward
/ rnn_backward). FLOP counted as a plain LSTM does them: 2*B*T*(E+H)*4H forward, twice that
backward. The reference, measured here per thread count: the fp32 FMA peak
(`_core.fma_peak_gflops`: register-only FMA chains; its 1 -> 2 thread ratio is what the cores
themselves scale by).
"""
import argparse
import statistics
import time

import numpy as np

import fastlstm
from fastlstm import _core

GRID = [(100, 100, 100, 100), (32, 100, 100, 100), (100, 100, 100, 256), (256, 50, 128, 128), (1, 100, 100, 100)]


def median_s(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    peak = {threads: max(_core.fma_peak_gflops(threads) for _ in range(3)) for threads in (1, 2)}
    info = fastlstm.cpu_info()
    print(f"ISA level {info['active']} ({info['vector_floats']} floats per vector; compiled {info['compiled']})")
    print(f"FMA peak: 1 thread {peak[1]:.0f}, 2 threads {peak[2]:.0f} GFLOP/s (x{peak[2] / peak[1]:.2f})\n")
    # The product kernel alone: the input projection of a batch, (B*T, E) @ (E, 4H), B=100, T=100, E=H=100
    x2 = rng.normal(size=(10000, 100)).astype(np.float32)
    k2 = rng.normal(size=(100, 400)).astype(np.float32)
    b2 = np.zeros(400, np.float32)
    for threads in (1, 2):
        fastlstm.set_num_threads(threads)
        rate = 2 * 10000 * 100 * 400 / median_s(lambda: _core.affine(x2, k2, b2), args.repeats) / 1e9
        print(f"product kernel (10000,100) @ (100,400), {threads} thread(s): {rate:.0f} GFLOP/s, "
              f"{100 * rate / peak[threads]:.0f}% of peak")
    print()
    print("| B | T | E | H | threads | forward ms | fwd+bwd ms | GFLOP/s | % of FMA peak | 1 -> 2 threads |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for B, T, E, H in GRID:
        x = rng.normal(size=(B, T, E)).astype(np.float32)
        K = (rng.normal(size=(E, 4 * H)) * 0.1).astype(np.float32)
        R = (rng.normal(size=(H, 4 * H)) * 0.1).astype(np.float32)
        b = np.zeros(4 * H, np.float32)
        dh = np.ones((B, H), np.float32)
        ws = _core.Workspace()
        flop = 3 * 2 * B * T * (E + H) * 4 * H
        total = {}
        for threads in (1, 2):
            fastlstm.set_num_threads(threads)
            fwd = median_s(lambda: _core.rnn_forward(x, K, R, b, workspace=ws), args.repeats)

            def both():
                _core.rnn_forward(x, K, R, b, workspace=ws)
                _core.rnn_backward(ws, x, K, R, dh)
            total[threads] = median_s(both, args.repeats)
            rate = flop / total[threads] / 1e9
            speedup = f"x{total[1] / total[2]:.2f}" if threads == 2 else ""
            print(f"| {B} | {T} | {E} | {H} | {threads} | {1000 * fwd:.1f} | {1000 * total[threads]:.1f} | "
                  f"{rate:.1f} | {100 * rate / peak[threads]:.0f}% | {speedup} |")


if __name__ == "__main__":
    main()
