"""fastlstm vs Keras (TensorFlow backend) vs PyTorch on Keras Reuters RNN classifiers.

    python bench/compare.py --workload seed --epochs 3 --out /tmp/b [--threads 2] [--full]
                            [--systems fastlstm,keras,pytorch]

A system `fastlstm@LEVEL` runs fastlstm at that ISA level (FASTLSTM_ISA=LEVEL), e.g.
--systems fastlstm@avx512,fastlstm@avx2,fastlstm@baseline,pytorch; ratios are to the first
fastlstm system listed.

Workloads (--workload, all on the real Reuters data, num_words=1000, Dense(46, softmax),
Adam, categorical cross-entropy, validation on the test split):
  seed     Embedding(1000,100) -> LSTM(100), maxlen 100, batch 100 (the Keras example)
  gru      Embedding(1000,100) -> GRU(100), maxlen 100, batch 100
  bilstm   Embedding(1000,64) -> Bidirectional(LSTM(64)), maxlen 200, batch 64
  mask     the seed model with Embedding(mask_zero=True), maxlen 200
  nomask   the same without the mask (mask's baseline), maxlen 200
  dropout  the seed model with LSTM(100, dropout=0.2, recurrent_dropout=0.2)
PyTorch's nearest equivalents: nn.GRU; nn.LSTM(bidirectional=True); for the mask,
pack_padded_sequence over the rows moved to post-padding (what PyTorch needs for Keras's
masking); for dropout, nn.Dropout on the embeddings (per element) and no recurrent dropout
(nn.LSTM has none).

Each system trains in its own worker process. The controller drives the workers one epoch
at a time, interleaved (A B C A B C ...), so machine drift hits all alike. Writes
DIR/results.json, DIR/results.md and DIR/seconds_per_epoch.png (and DIR/val_accuracy.png
with --full).
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

SYSTEMS = ("fastlstm", "keras", "pytorch")
INSTALL = {
    "fastlstm": "pip install .",
    "keras": "pip install '.[bench]'  (keras + tensorflow-cpu)",
    "pytorch": "pip install torch==2.13.0",
}
NUM_WORDS, CLASSES = 1000, 46
# name: (recurrent layer, maxlen, embedding dim, units, batch, mask_zero, dropout, recurrent_dropout)
WORKLOADS = {
    "seed": ("lstm", 100, 100, 100, 100, False, 0.0, 0.0),
    "gru": ("gru", 100, 100, 100, 100, False, 0.0, 0.0),
    "bilstm": ("bilstm", 200, 64, 64, 64, False, 0.0, 0.0),
    "mask": ("lstm", 200, 100, 100, 100, True, 0.0, 0.0),
    "nomask": ("lstm", 200, 100, 100, 100, False, 0.0, 0.0),
    "dropout": ("lstm", 100, 100, 100, 100, False, 0.2, 0.2),
}
W = {}  # the workload's settings, set in each process: kind, maxlen, embed, units, batch, mask, dropout, rec_dropout


def set_workload(name):
    kind, maxlen, embed, units, batch, mask, dropout, rec = WORKLOADS[name]
    W.update(name=name, kind=kind, maxlen=maxlen, embed=embed, units=units, batch=batch, mask=mask,
             dropout=dropout, rec_dropout=rec)


def gflop_per_epoch(x_train, executed):
    """GFLOP of an epoch's recurrent layer, training (backward counted twice the forward).
    Plain (executed=False): what a plain implementation does, every position of every row
    projected and stepped: 3 * 2*(E+H)*G*H per position and direction. Executed: what
    fastlstm does: the step products (3 * 2*H*G*H) only from each row's first real token in
    the forward direction (the padding before it is skipped; not under dropout, where each
    row's padding is its own), at every position in the backward one of a Bidirectional (its
    padding trails); the input projection of each row's distinct tokens under input dropout
    (else a table of the batch's distinct tokens, a small cost not counted)."""
    G = {"lstm": 4, "gru": 3, "bilstm": 4}[W["kind"]]
    E, H, T = W["embed"], W["units"], W["maxlen"]
    n, positions = len(x_train), x_train.size
    if not executed:
        return 3 * 2 * (E + H) * G * H * positions * (2 if W["kind"] == "bilstm" else 1) / 1e9
    first = np.where((x_train != 0).any(1), (x_train != 0).argmax(1), T)  # each row's first real token
    forward = positions if W["dropout"] or W["rec_dropout"] else n * T - first.sum()
    stepped = forward + (positions if W["kind"] == "bilstm" else 0)
    sorted_rows = np.sort(x_train, axis=1)
    distinct = n + int((sorted_rows[:, 1:] != sorted_rows[:, :-1]).sum())  # (row, token) pairs
    projected = distinct if W["dropout"] else 0
    return 3 * 2 * (H * G * H * stepped + E * G * H * projected) / 1e9
# ---------------------------------------------------------------------------------------
# Workers: one per system, in a subprocess; commands on stdin, one JSON reply per line.

def reuters_arrays():
    from fastlstm.datasets import reuters
    from fastlstm.preprocessing import pad_sequences, to_categorical

    (x_train, y_train), (x_test, y_test) = reuters.load_data(num_words=NUM_WORDS)
    m = W["maxlen"]
    return (pad_sequences(x_train, maxlen=m), to_categorical(y_train, CLASSES).astype(np.float32),
            pad_sequences(x_test, maxlen=m), to_categorical(y_test, CLASSES).astype(np.float32))


def median_ms(fn, repeats=7):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


class FastLSTMWorker:
    def __init__(self, threads, data):
        import fastlstm
        from fastlstm.layers import GRU, LSTM, Bidirectional, Dense, Embedding

        fastlstm.set_num_threads(threads)
        fastlstm.utils.set_random_seed(0)
        self.x, self.y, self.xt, self.yt = data
        H = W["units"]
        rnn = {"lstm": lambda: LSTM(H, dropout=W["dropout"], recurrent_dropout=W["rec_dropout"]),
               "gru": lambda: GRU(H), "bilstm": lambda: Bidirectional(LSTM(H))}[W["kind"]]()
        self.model = fastlstm.Sequential([Embedding(NUM_WORDS, W["embed"], mask_zero=W["mask"]), rnn,
                                          Dense(CLASSES, activation="softmax")])
        self.model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

    def epoch(self):
        h = self.model.fit(self.x, self.y, batch_size=W["batch"], epochs=1, verbose=0,
                           validation_data=(self.xt, self.yt))
        return h.history["val_loss"][0], h.history["val_accuracy"][0]

    def rnn_ms(self):
        emb, rnn = self.model.layers[0], self.model.layers[1]
        ids = self.x[:W["batch"]]
        dh = np.ones(rnn.output_shape((len(ids), W["maxlen"], W["embed"])), np.float32)

        def step():
            rnn.call(emb.call(ids), training=True, mask=emb.compute_mask(ids))
            rnn.backward(dh)
        return median_ms(step)

    def predict(self):
        return self.model.predict(self.xt, batch_size=W["batch"])

    def peak_gflops(self, threads):
        from fastlstm import _core

        return _core.fma_peak_gflops(threads)

    def isa(self):
        import fastlstm

        return fastlstm.cpu_info()["active"]


class KerasWorker:
    def __init__(self, threads, data):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        import keras

        keras.utils.set_random_seed(0)
        self.tf, self.keras = tf, keras
        self.x, self.y, self.xt, self.yt = data
        L, H = keras.layers, W["units"]
        rnn = {"lstm": lambda: L.LSTM(H, dropout=W["dropout"], recurrent_dropout=W["rec_dropout"]),
               "gru": lambda: L.GRU(H), "bilstm": lambda: L.Bidirectional(L.LSTM(H))}[W["kind"]]()
        self.model = keras.Sequential([keras.Input(shape=(W["maxlen"],), dtype="int32"),
                                       L.Embedding(NUM_WORDS, W["embed"], mask_zero=W["mask"]), rnn,
                                       L.Dense(CLASSES, activation="softmax")])
        self.model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

    def epoch(self):
        h = self.model.fit(self.x, self.y, batch_size=W["batch"], epochs=1, verbose=0,
                           validation_data=(self.xt, self.yt))
        return h.history["val_loss"][0], h.history["val_accuracy"][0]

    def rnn_ms(self):
        tf = self.tf
        emb, rnn = self.model.layers[0], self.model.layers[1]
        ids = self.x[:W["batch"]]
        xe = tf.constant(emb(ids).numpy())
        mask = tf.constant(ids != 0) if W["mask"] else None

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(xe)
                out = tf.reduce_sum(rnn(xe, training=True, mask=mask))
            return tape.gradient(out, [xe] + rnn.trainable_variables)

        return median_ms(lambda: [g.numpy() for g in step()])

    def predict(self):
        return self.model.predict(self.xt, batch_size=W["batch"], verbose=0)


class TorchWorker:
    def __init__(self, threads, data):
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        x, y, xt, yt = data
        self.x, self.y = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.argmax(1))
        self.xt, self.yt = torch.from_numpy(xt.astype(np.int64)), torch.from_numpy(yt.argmax(1))
        E, H, kind = W["embed"], W["units"], W["kind"]

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(NUM_WORDS, E)
                self.drop = torch.nn.Dropout(W["dropout"])
                rnn = torch.nn.GRU if kind == "gru" else torch.nn.LSTM
                self.rnn = rnn(E, H, batch_first=True, bidirectional=kind == "bilstm")
                self.dense = torch.nn.Linear(2 * H if kind == "bilstm" else H, CLASSES)

            def forward(self, ids):
                e = self.drop(self.emb(ids))
                if W["mask"]:  # Keras's masking: pack the real tokens (pre-padding moved to the end)
                    lengths = (ids != 0).sum(1)
                    shift = ids.shape[1] - lengths
                    cols = (torch.arange(ids.shape[1])[None, :] + shift[:, None]) % ids.shape[1]
                    e = torch.gather(e, 1, cols[:, :, None].expand(-1, -1, e.shape[2]))
                    e = torch.nn.utils.rnn.pack_padded_sequence(e, lengths.clamp(min=1), batch_first=True,
                                                                enforce_sorted=False)
                _, h = self.rnn(e)
                h = h[0] if isinstance(h, tuple) else h  # LSTM: (h, c)
                h = torch.cat([h[-2], h[-1]], 1) if kind == "bilstm" else h[-1]
                return self.dense(h)  # logits; the loss applies log-softmax

        self.model = Net()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
        self.loss = torch.nn.CrossEntropyLoss()

    def epoch(self):
        torch, B = self.torch, W["batch"]
        self.model.train()
        order = torch.randperm(len(self.x))
        for s in range(0, len(self.x), B):
            idx = order[s:s + B]
            self.opt.zero_grad()
            self.loss(self.model(self.x[idx]), self.y[idx]).backward()
            self.opt.step()
        self.model.eval()
        with torch.no_grad():
            logits = torch.cat([self.model(self.xt[s:s + B]) for s in range(0, len(self.xt), B)])
            return float(self.loss(logits, self.yt)), float((logits.argmax(1) == self.yt).float().mean())

    def rnn_ms(self):
        xe = self.model.emb(self.x[:W["batch"]]).detach().requires_grad_(True)

        def step():
            out, _ = self.model.rnn(xe)
            out[:, -1].sum().backward()
        return median_ms(step)

    def predict(self):
        B = W["batch"]
        with self.torch.no_grad():
            logits = self.torch.cat([self.model(self.xt[s:s + B]) for s in range(0, len(self.xt), B)])
            return self.torch.softmax(logits, 1).numpy()


WORKERS = {"fastlstm": FastLSTMWorker, "keras": KerasWorker, "pytorch": TorchWorker}


def base_system(system):
    """fastlstm@avx2 -> fastlstm."""
    return system.split("@", 1)[0]


def worker_main(system, threads, workload):
    set_workload(workload)
    if system == "keras":
        os.environ["KERAS_BACKEND"] = "tensorflow"
    try:
        worker = WORKERS[base_system(system)](threads, reuters_arrays())
    except ImportError as e:
        print(json.dumps({"error": f"not installed: {INSTALL[base_system(system)]} ({e})"}), flush=True)
        return
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "epoch":
            t0 = time.perf_counter()
            val_loss, val_acc = worker.epoch()
            reply = {"seconds": time.perf_counter() - t0, "val_loss": val_loss, "val_accuracy": val_acc}
        elif cmd == "rnn":
            reply = {"rnn_ms": worker.rnn_ms()}
        elif cmd == "peak":
            reply = {"peak_gflops": worker.peak_gflops(threads), "isa": worker.isa()} if hasattr(worker, "isa") else {}
        elif cmd == "predict":
            worker.predict()
            t0 = time.perf_counter()
            worker.predict()
            reply = {"predict_rows_per_s": len(worker.xt) / (time.perf_counter() - t0)}
        elif cmd == "quit":
            reply = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        else:
            reply = {"error": f"unknown command {cmd}"}
        print(json.dumps(reply), flush=True)
        if cmd == "quit":
            return


# ---------------------------------------------------------------------------------------
# Controller

class Worker:
    def __init__(self, system, threads, workload):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   TF_CPP_MIN_LOG_LEVEL="2")
        if "@" in system:  # fastlstm@LEVEL
            env["FASTLSTM_ISA"] = system.split("@", 1)[1]
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", system, "--threads", str(threads),
                                      "--workload", workload],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.hello = self._read()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        return {"error": f"worker exited with code {self.proc.wait()}"}

    def ask(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def run(args):
    os.makedirs(args.out, exist_ok=True)
    set_workload(args.workload)
    systems = args.systems.split(",")
    for s in systems:
        if base_system(s) not in SYSTEMS:
            raise SystemExit(f"--systems: {s!r} is not one of {', '.join(SYSTEMS)} (or fastlstm@LEVEL)")
    workers = {}
    results = {"machine": machine(), "workload": args.workload, "settings": dict(W), "epochs": args.epochs,
               "threads": args.threads, "systems": {}}
    for s in systems:
        w = Worker(s, args.threads, args.workload)
        if "error" in w.hello:
            print(f"{s}: {w.hello['error']}")
            results["systems"][s] = {"error": w.hello["error"]}
        else:
            workers[s] = w
    epochs = {s: [] for s in workers}
    for e in range(args.epochs):
        for s, w in workers.items():  # interleaved: A B C A B C ...
            r = w.ask("epoch")
            epochs[s].append(r)
            print(f"epoch {e + 1}/{args.epochs} {s:9s} {r['seconds']:.2f}s val_accuracy {r['val_accuracy']:.4f}", flush=True)
    extra = {s: {} for s in workers}
    for cmd in ("rnn", "predict", "peak", "quit"):
        for s, w in workers.items():
            extra[s].update(w.ask(cmd))
    peak = next((extra[s]["peak_gflops"] for s in workers if "peak_gflops" in extra[s]), None)  # the first fastlstm's
    x_train = reuters_arrays()[0]
    plain, executed = gflop_per_epoch(x_train, False), gflop_per_epoch(x_train, True)
    results.update(fma_peak_gflops=peak, plain_gflop_per_epoch=plain, fastlstm_executed_gflop_per_epoch=executed)
    for s in workers:
        secs = [r["seconds"] for r in epochs[s]]
        timed = secs[1:] or secs
        med = statistics.median(timed)
        results["systems"][s] = {
            "s_per_epoch_median": med, "s_per_epoch_min": min(timed),
            "s_per_epoch_max": max(timed), "first_epoch_s": secs[0],
            "rnn_fwd_bwd_ms": extra[s]["rnn_ms"], "predict_rows_per_s": extra[s]["predict_rows_per_s"],
            "test_accuracy": epochs[s][-1]["val_accuracy"], "test_loss": epochs[s][-1]["val_loss"],
            "peak_rss_mb": extra[s]["peak_rss_mb"], "val_accuracy_per_epoch": [r["val_accuracy"] for r in epochs[s]],
        }
        results["systems"][s]["plain_gflops"] = plain / med
        if "peak_gflops" in extra[s]:  # a fastlstm system: against its own ISA level's peak
            own = extra[s]["peak_gflops"]
            results["systems"][s].update(executed_gflops=executed / med, fraction_of_peak=executed / med / own,
                                         isa=extra[s]["isa"], fma_peak_gflops=own)
    base = next((r["s_per_epoch_median"] for s, r in results["systems"].items()
                 if base_system(s) == "fastlstm" and "s_per_epoch_median" in r), None)
    for r in results["systems"].values():
        if base and "s_per_epoch_median" in r:
            r["ratio_to_fastlstm"] = r["s_per_epoch_median"] / base
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = markdown(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    print(table)
    plot(results, args.out, args.full)


def markdown(results):
    m = results["machine"]
    peak = results.get("fma_peak_gflops")
    lines = [f"workload {results['workload']}: {m['cpu']}, {m['cores']} cores; {results['threads']} threads each; "
             f"{results['epochs']} epochs; s/epoch excludes the first epoch"
             + (f"; FMA peak {peak:.0f} GFLOP/s at fastlstm's ISA level" if peak else "") + ". GFLOP/s: the plain count "
             f"({results['plain_gflop_per_epoch']:.0f} GFLOP/epoch) per second; for fastlstm also what it executes "
             f"({results['fastlstm_executed_gflop_per_epoch']:.0f} GFLOP/epoch) per second, and that against the peak.",
             "", "| system | s/epoch median (min-max) | x fastlstm | GFLOP/s plain | executed (of peak) | "
             "RNN fwd+bwd, 1 batch | predict rows/s | test accuracy | peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s, r in results["systems"].items():
        if "error" in r:
            lines.append(f"| {s} | {r['error']} | | | | | | | |")
            continue
        ex = (f"{r['executed_gflops']:.0f} ({100 * r['fraction_of_peak']:.0f}% of {r['isa']}'s "
              f"{r['fma_peak_gflops']:.0f})") if "executed_gflops" in r else ""
        lines.append(f"| {s} | {r['s_per_epoch_median']:.2f} ({r['s_per_epoch_min']:.2f}-{r['s_per_epoch_max']:.2f}) | "
                     f"{r.get('ratio_to_fastlstm', float('nan')):.2f} | {r['plain_gflops']:.0f} | {ex} | "
                     f"{r['rnn_fwd_bwd_ms']:.1f} ms | "
                     f"{r['predict_rows_per_s']:,.0f} | {r['test_accuracy']:.4f} | {r['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines) + "\n"


def plot(results, out, full):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("not installed: pip install matplotlib (no PNG written)")
        return
    ok = {s: r for s, r in results["systems"].items() if "error" not in r}
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(list(ok), [r["s_per_epoch_median"] for r in ok.values()],
           yerr=[[r["s_per_epoch_median"] - r["s_per_epoch_min"] for r in ok.values()],
                 [r["s_per_epoch_max"] - r["s_per_epoch_median"] for r in ok.values()]], capsize=4)
    ax.set_ylabel("seconds per epoch (median, min-max)")
    ax.set_title(f"Reuters {results['workload']}, {results['threads']} threads")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "seconds_per_epoch.png"))
    plt.close(fig)
    if full:
        fig, ax = plt.subplots(figsize=(6, 4))
        for s, r in ok.items():
            ax.plot(range(1, len(r["val_accuracy_per_epoch"]) + 1), r["val_accuracy_per_epoch"], marker="o", label=s)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation (test split) accuracy")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "val_accuracy.png"))
        plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default="bench-results")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--full", action="store_true", help="20 epochs and the accuracy-curve PNG")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="seed")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_main(args.worker, args.threads, args.workload)
    else:
        if args.full:
            args.epochs = 20
        run(args)


if __name__ == "__main__":
    main()
