"""`model.summary()` laid out as Keras 3's: a box-drawn table of layers, output shapes and
parameter counts, then the total, trainable and non-trainable parameters with their sizes."""
import shutil

import numpy as np


def readable_memory_size(size):
    """Bytes as Keras shows them: '3.05 KB' (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            break
        size /= 1024
    return f"{size:.2f} {unit}"


def _table(rows, line_length, positions=(0.45, 0.80, 1.0)):
    """Rows of cells in a box; the third column is right-aligned; a cell wider than its
    column wraps at its spaces (an over-long word is cut with '…'), as Keras's (rich's)."""
    # Keras asks rich for columns of int(position * line_length) - previous, each plus its
    # padding; rich takes the excess over the line (less its borders) off in equal shares.
    edges = [int(p * line_length) for p in positions]
    widths = [b - a + 2 for a, b in zip([0] + edges[:-1], edges)]
    excess = sum(widths) - (line_length - len(positions) - 1)
    for k in range(len(widths)):
        if excess <= 0:
            break
        share = min(widths[k], round(excess / (len(widths) - k)))
        widths[k] -= share
        excess -= share

    def line(left, fill, mid, right):
        return left + mid.join(fill * w for w in widths) + right

    def wrap(text, width):  # rich's folding of a cell into lines of at most `width`
        lines, current = [], ""
        for word in str(text).split(" "):
            if len(word) > width:
                word = word[:width - 1] + "…"
            if current and len(current) + 1 + len(word) > width:
                lines.append(current)
                current = word
            else:
                current = f"{current} {word}" if current else word
        return lines + [current]

    def row(cells, bar):
        wrapped = [wrap(c, w - 2) for c, w in zip(cells, widths)]
        out = []
        for k in range(max(len(w) for w in wrapped)):
            parts = [(w[k] if k < len(w) else "") for w in wrapped]
            padded = [f" {c:>{w - 2}} " if j == 2 else f" {c:<{w - 2}} " for j, (c, w) in enumerate(zip(parts, widths))]
            out.append(bar + bar.join(padded) + bar)
        return out

    out = [line("┏", "━", "┳", "┓"), *row(rows[0], "┃"), line("┡", "━", "╇", "┩")]
    for k, r in enumerate(rows[1:]):
        if k:
            out.append(line("├", "─", "┼", "┤"))
        out += row(r, "│")
    out.append(line("└", "─", "┴", "┘"))
    return out


def _shape_text(shape):
    """(None, 6), or [(None, None, 6), (None, 6)] for several outputs (as Keras prints them)."""
    return str(shape).replace("'", "") if isinstance(shape, list) else str(tuple(shape))


def _rows(model):
    """(header, rows, whether the graph is a chain) of the model's layers."""
    nodes = getattr(model, "_nodes", None)
    header = ("Layer (type)", "Output Shape", "Param #")
    if nodes is None:  # a Sequential: each layer's output from the one before
        rows = []
        shape = getattr(model, "_input_shape", None) or (None, None)  # what the model was built for
        for layer in model.layers:
            if layer.built:
                shape = layer.output_shape(shape)
                rows.append((f"{layer.name} ({type(layer).__name__})", _shape_text(shape), f"{layer.count_params():,}"))
            else:
                rows.append((f"{layer.name} ({type(layer).__name__})", "?", "0 (unbuilt)"))
        return header, rows, True
    # a functional model: Keras's table has a "Connected to" column unless the graph is a chain
    node_of = {node.layer: node for node in nodes}
    chain = all(len(node.input_tensors) == 1 for node in nodes) and \
        len({id(t) for node in nodes for t in node.input_tensors}) == len(nodes) and len(model.outputs) == 1
    rows = []
    for layer in model.layers:
        node = node_of.get(layer)
        if node is None:  # an InputLayer
            shape, inbound = layer.batch_shape, "-"
        else:
            outs = node.output_tensors
            shape = [t.shape for t in outs] if isinstance(node.outputs, list) else outs[0].shape
            inbound = ", ".join(f"{t._keras_history[0].name}[{t._keras_history[1]}][{t._keras_history[2]}]"
                                for t in node.input_tensors)
        row = (f"{layer.name} ({type(layer).__name__})", _shape_text(shape), f"{layer.count_params():,}")
        rows.append(row if chain else row + (inbound,))
    return (header if chain else header + ("Connected to",)), rows, chain


def print_summary(model, line_length=None, print_fn=None):
    header, rows, chain = _rows(model)
    default, positions = (88, (0.45, 0.80, 1.0)) if chain else (108, (0.3, 0.56, 0.74, 1.0))
    line_length = line_length or min(default, shutil.get_terminal_size().columns - 4)
    trainable = sum(w.size for w in model.trainable_weights)
    frozen = sum(w.size for w in model.non_trainable_weights)
    optimizer = getattr(model, "optimizer", None)
    # Keras counts a built optimizer's variables (iterations, learning rate, slots) in the total
    optimizer_params = sum(int(np.size(v)) for v in optimizer.variables) \
        if getattr(model, "compiled", False) and optimizer is not None and getattr(optimizer, "built", False) else None
    out = [f'Model: "{model.name}"'] + _table([header] + rows, line_length, positions)
    counts = [("Total", trainable + frozen + (optimizer_params or 0)), ("Trainable", trainable),
              ("Non-trainable", frozen)] + ([("Optimizer", optimizer_params)] if optimizer_params is not None else [])
    for what, n in counts:
        out.append(f" {what} params: {n:,} ({readable_memory_size(4 * n)})")
    (print_fn or print)("\n".join(out))
