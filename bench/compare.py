"""fastlstm vs Keras (TensorFlow backend) vs PyTorch on the Keras Reuters LSTM example.

    python bench/compare.py --epochs 3 --out /tmp/b [--threads 2] [--full] [--systems fastlstm,keras,pytorch]

Each system trains in its own worker process. The controller drives the workers one epoch
at a time, interleaved (A B C A B C ...), so machine drift hits all alike. Every worker
uses the same data (num_words=1000, maxlen=100, batch 100, validation on the test split),
the same model (Embedding(1000,100) -> LSTM(100) -> Dense(46, softmax), Adam, categorical
cross-entropy) and the same thread count. Writes DIR/results.json, DIR/results.md and
DIR/seconds_per_epoch.png (and DIR/val_accuracy.png with --full).
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
NUM_WORDS, MAXLEN, EMBED, UNITS, CLASSES, BATCH = 1000, 100, 100, 100, 46, 100


# ---------------------------------------------------------------------------------------
# Workers: one per system, in a subprocess; commands on stdin, one JSON reply per line.

def reuters_arrays():
    from fastlstm.datasets import reuters
    from fastlstm.preprocessing import pad_sequences, to_categorical

    (x_train, y_train), (x_test, y_test) = reuters.load_data(num_words=NUM_WORDS)
    return (pad_sequences(x_train, maxlen=MAXLEN), to_categorical(y_train, CLASSES).astype(np.float32),
            pad_sequences(x_test, maxlen=MAXLEN), to_categorical(y_test, CLASSES).astype(np.float32))


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

        fastlstm.set_num_threads(threads)
        fastlstm.utils.set_random_seed(0)
        self.x, self.y, self.xt, self.yt = data
        self.model = fastlstm.reuters_model(NUM_WORDS, EMBED, UNITS, CLASSES)

    def epoch(self):
        h = self.model.fit(self.x, self.y, batch_size=BATCH, epochs=1, verbose=0,
                           validation_data=(self.xt, self.yt))
        return h.history["val_loss"][0], h.history["val_accuracy"][0]

    def lstm_ms(self):
        emb, lstm = self.model.layers[0], self.model.layers[1]
        dh = np.ones((BATCH, UNITS), np.float32)

        def step():
            lstm.call(emb.call(self.x[:BATCH]), training=True)
            lstm.backward(dh)
        return median_ms(step)

    def predict(self):
        return self.model.predict(self.xt, batch_size=BATCH)


class KerasWorker:
    def __init__(self, threads, data):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        import keras

        keras.utils.set_random_seed(0)
        self.tf, self.keras = tf, keras
        self.x, self.y, self.xt, self.yt = data
        self.model = keras.Sequential([keras.Input(shape=(MAXLEN,), dtype="int32"),
                                       keras.layers.Embedding(NUM_WORDS, EMBED),
                                       keras.layers.LSTM(UNITS, activation="tanh"),
                                       keras.layers.Dense(CLASSES, activation="softmax")])
        self.model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

    def epoch(self):
        h = self.model.fit(self.x, self.y, batch_size=BATCH, epochs=1, verbose=0,
                           validation_data=(self.xt, self.yt))
        return h.history["val_loss"][0], h.history["val_accuracy"][0]

    def lstm_ms(self):
        tf = self.tf
        lstm = self.model.layers[1]
        xe = tf.constant(self.model.layers[0](self.x[:BATCH]).numpy())

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(xe)
                out = tf.reduce_sum(lstm(xe, training=True))
            return tape.gradient(out, [xe] + lstm.trainable_variables)

        return median_ms(lambda: [g.numpy() for g in step()])

    def predict(self):
        return self.model.predict(self.xt, batch_size=BATCH, verbose=0)


class TorchWorker:
    def __init__(self, threads, data):
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        x, y, xt, yt = data
        self.x, self.y = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.argmax(1))
        self.xt, self.yt = torch.from_numpy(xt.astype(np.int64)), torch.from_numpy(yt.argmax(1))

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(NUM_WORDS, EMBED)
                self.lstm = torch.nn.LSTM(EMBED, UNITS, batch_first=True)
                self.dense = torch.nn.Linear(UNITS, CLASSES)

            def forward(self, ids):
                _, (h, _) = self.lstm(self.emb(ids))
                return self.dense(h[-1])  # logits; the loss applies log-softmax

        self.model = Net()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
        self.loss = torch.nn.CrossEntropyLoss()

    def epoch(self):
        torch = self.torch
        self.model.train()
        order = torch.randperm(len(self.x))
        for s in range(0, len(self.x), BATCH):
            idx = order[s:s + BATCH]
            self.opt.zero_grad()
            self.loss(self.model(self.x[idx]), self.y[idx]).backward()
            self.opt.step()
        self.model.eval()
        with torch.no_grad():
            logits = torch.cat([self.model(self.xt[s:s + BATCH]) for s in range(0, len(self.xt), BATCH)])
            return float(self.loss(logits, self.yt)), float((logits.argmax(1) == self.yt).float().mean())

    def lstm_ms(self):
        xe = self.model.emb(self.x[:BATCH]).detach().requires_grad_(True)

        def step():
            out, _ = self.model.lstm(xe)
            out[:, -1].sum().backward()
        return median_ms(step)

    def predict(self):
        with self.torch.no_grad():
            logits = self.torch.cat([self.model(self.xt[s:s + BATCH]) for s in range(0, len(self.xt), BATCH)])
            return self.torch.softmax(logits, 1).numpy()


WORKERS = {"fastlstm": FastLSTMWorker, "keras": KerasWorker, "pytorch": TorchWorker}


def worker_main(system, threads):
    if system == "keras":
        os.environ["KERAS_BACKEND"] = "tensorflow"
    try:
        worker = WORKERS[system](threads, reuters_arrays())
    except ImportError as e:
        print(json.dumps({"error": f"not installed: {INSTALL[system]} ({e})"}), flush=True)
        return
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "epoch":
            t0 = time.perf_counter()
            val_loss, val_acc = worker.epoch()
            reply = {"seconds": time.perf_counter() - t0, "val_loss": val_loss, "val_accuracy": val_acc}
        elif cmd == "lstm":
            reply = {"lstm_ms": worker.lstm_ms()}
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
    def __init__(self, system, threads):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", system, "--threads", str(threads)],
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
    systems = args.systems.split(",")
    workers, results = {}, {"machine": machine(), "epochs": args.epochs, "threads": args.threads, "systems": {}}
    for s in systems:
        w = Worker(s, args.threads)
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
    for cmd in ("lstm", "predict", "quit"):
        for s, w in workers.items():
            extra[s].update(w.ask(cmd))
    for s in workers:
        secs = [r["seconds"] for r in epochs[s]]
        timed = secs[1:] or secs
        results["systems"][s] = {
            "s_per_epoch_median": statistics.median(timed), "s_per_epoch_min": min(timed),
            "s_per_epoch_max": max(timed), "first_epoch_s": secs[0],
            "lstm_fwd_bwd_ms": extra[s]["lstm_ms"], "predict_rows_per_s": extra[s]["predict_rows_per_s"],
            "test_accuracy": epochs[s][-1]["val_accuracy"], "test_loss": epochs[s][-1]["val_loss"],
            "peak_rss_mb": extra[s]["peak_rss_mb"], "val_accuracy_per_epoch": [r["val_accuracy"] for r in epochs[s]],
        }
    base = results["systems"].get("fastlstm", {}).get("s_per_epoch_median")
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
    lines = [f"{m['cpu']}, {m['cores']} cores; {results['threads']} threads each; {results['epochs']} epochs; "
             "s/epoch excludes the first epoch.", "",
             "| system | s/epoch median (min-max) | x fastlstm | LSTM fwd+bwd, 1 batch | predict rows/s | test accuracy | peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for s, r in results["systems"].items():
        if "error" in r:
            lines.append(f"| {s} | {r['error']} | | | | | |")
            continue
        lines.append(f"| {s} | {r['s_per_epoch_median']:.2f} ({r['s_per_epoch_min']:.2f}-{r['s_per_epoch_max']:.2f}) | "
                     f"{r.get('ratio_to_fastlstm', float('nan')):.2f} | {r['lstm_fwd_bwd_ms']:.1f} ms | "
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
    ax.set_title(f"Reuters LSTM, {results['threads']} threads")
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
    p.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_main(args.worker, args.threads)
    else:
        if args.full:
            args.epochs = 20
        run(args)


if __name__ == "__main__":
    main()
