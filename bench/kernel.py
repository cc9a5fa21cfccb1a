"""Micro-benchmark of the LSTM kernels: forward and forward+backward time and GFLOP/s.

    python bench/kernel.py [--repeats 7]

For a grid of (B, T, E, H), with 1 and 2 threads, on dense input (fastlstm._core.lstm_forward
/ lstm_backward). FLOP counted as a plain LSTM does them: 2*B*T*(E+H)*4H forward, twice that
backward. References measured here: the fp32 FMA peak (`_core.fma_peak_gflops`: register-only
FMA chains) and a large sgemm through the same build's Eigen.
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


def sgemm_gflops(repeats):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2048, 1024)).astype(np.float32)
    k = rng.normal(size=(1024, 1024)).astype(np.float32)
    b = np.zeros(1024, np.float32)
    return 2 * 2048 * 1024 * 1024 / median_s(lambda: _core.affine(a, k, b), repeats) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print("| threads | B | T | E | H | forward ms | fwd+bwd ms | GFLOP/s | % of FMA peak | % of sgemm |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for threads in (1, 2):
        fastlstm.set_num_threads(threads)
        peak = max(_core.fma_peak_gflops(threads) for _ in range(3))
        sgemm = sgemm_gflops(args.repeats)
        for B, T, E, H in GRID:
            x = rng.normal(size=(B, T, E)).astype(np.float32)
            K = (rng.normal(size=(E, 4 * H)) * 0.1).astype(np.float32)
            R = (rng.normal(size=(H, 4 * H)) * 0.1).astype(np.float32)
            b = np.zeros(4 * H, np.float32)
            dh = np.ones((B, H), np.float32)
            ws = _core.Workspace()
            fwd = median_s(lambda: _core.lstm_forward(x, K, R, b, workspace=ws), args.repeats)

            def both():
                _core.lstm_forward(x, K, R, b, workspace=ws)
                _core.lstm_backward(ws, x, K, R, dh)
            total = median_s(both, args.repeats)
            flop = 3 * 2 * B * T * (E + H) * 4 * H
            rate = flop / total / 1e9
            print(f"| {threads} | {B} | {T} | {E} | {H} | {1000 * fwd:.1f} | {1000 * total:.1f} | "
                  f"{rate:.1f} | {100 * rate / peak:.0f}% of {peak:.0f} | {100 * rate / sgemm:.0f}% of {sgemm:.0f} |")


if __name__ == "__main__":
    main()
