"""Keras's word-id pipeline, shared by the Reuters and IMDB loaders (same steps, same order)."""
import numpy as np


def prepare(splits, num_words, skip_top, maxlen, seed, start_char, oov_char, index_from):
    """Keras's dataset steps over `splits`, a list of (sequences, labels) array pairs.

    Each split is shuffled in turn by one `RandomState(seed)`; every sequence gets
    `start_char` (unless None) and its ids + `index_from`; with `maxlen`, sequences of
    `maxlen` or more ids are dropped (a split left empty is an error); ids outside
    [skip_top, num_words) become `oov_char`, or are removed when it is None. Without
    `num_words` it is the largest id of all splits (Keras's rule: that id itself becomes
    `oov_char`). Returns [(list of id lists, labels array), ...] in the same order.
    """
    rng = np.random.RandomState(seed)
    head = [] if start_char is None else [start_char]
    shifted = []
    for xs, labels in splits:
        order = np.arange(len(xs))
        rng.shuffle(order)
        xs, labels = xs[order], np.asarray(labels)[order]
        xs = [head + [w + index_from for w in x] for x in xs]
        if maxlen:
            kept = [k for k, x in enumerate(xs) if len(x) < maxlen]
            if not kept:
                raise ValueError(f"After filtering for sequences shorter than maxlen={maxlen}, "
                                 "no sequence was kept. Increase maxlen.")
            xs, labels = [xs[k] for k in kept], labels[kept]
        shifted.append((xs, labels))
    if not num_words:
        num_words = max((max(x) for xs, _ in shifted for x in xs if x), default=0)

    def limit(x):
        if oov_char is None:
            return [w for w in x if skip_top <= w < num_words]
        return [w if skip_top <= w < num_words else oov_char for w in x]

    return [([limit(x) for x in xs], labels) for xs, labels in shifted]
