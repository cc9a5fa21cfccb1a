"""Command line: `fastlstm train-reuters [options]`, `fastlstm info` (or `python -m fastlstm ...`)."""
import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastlstm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train-reuters", help="train the Keras Reuters LSTM example and report test accuracy")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=100)
    t.add_argument("--num-words", type=int, default=1000)
    t.add_argument("--maxlen", type=int, default=100)
    t.add_argument("--embedding-dim", type=int, default=100)
    t.add_argument("--units", type=int, default=100)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    t.add_argument("--data-dir", default=None, help="folder holding reuters.npz (default: $FASTLSTM_DATA_DIR, caches, download)")
    t.add_argument("--plot", metavar="PNG", default=None, help="write training curves (needs matplotlib)")
    t.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    sub.add_parser("info", help="print the kernels' ISA levels (compiled, supported, active) and threads")
    args = parser.parse_args(argv)

    import fastlstm

    if args.command == "info":
        info = fastlstm.cpu_info()
        print(f"fastlstm {fastlstm.__version__}")
        print(f"ISA levels compiled:  {', '.join(info['compiled'])}")
        print(f"supported by the CPU: {', '.join(info['supported'])}")
        forced = os.environ.get("FASTLSTM_ISA")
        print(f"active:               {info['active']} ({info['vector_floats']} floats per vector; "
              + (f"FASTLSTM_ISA={forced})" if forced else "the best of both; FASTLSTM_ISA forces one)"))
        print(f"threads:              {info['threads']}")
        return 0

    if args.threads is not None:
        fastlstm.set_num_threads(args.threads)
    if args.plot:
        _require_matplotlib()
    result = fastlstm.train_reuters(num_words=args.num_words, maxlen=args.maxlen,
                                    embedding_dim=args.embedding_dim, units=args.units,
                                    epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                    verbose=0 if args.quiet else 1, data_dir=args.data_dir)
    epochs = max(len(result.history.epoch), 1)
    print(f"test loss {result.test_loss:.4f} - test accuracy {result.test_accuracy:.4f} - "
          f"{result.seconds:.1f}s training ({result.seconds / epochs:.2f}s/epoch, "
          f"{fastlstm.get_num_threads()} threads)")
    if args.plot:
        plot_history(result.history, args.plot)
        print(f"training curves written to {args.plot}")
    return 0


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("--plot needs matplotlib: pip install 'fastlstm[plot]'")


def plot_history(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [e + 1 for e in history.epoch]
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix in ("", "val_"):
            if prefix + key in history.history:
                ax.plot(epochs, history.history[prefix + key], marker="o", label=prefix + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
