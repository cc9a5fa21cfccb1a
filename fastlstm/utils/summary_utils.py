"""`model.summary()` laid out as Keras 3's: a box-drawn table of layers, output shapes and
parameter counts, then the total, trainable and non-trainable parameters with their sizes."""
import shutil


def readable_memory_size(size):
    """Bytes as Keras shows them: '3.05 KB' (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            break
        size /= 1024
    return f"{size:.2f} {unit}"


def _table(rows, line_length, positions=(0.45, 0.80, 1.0)):
    """Rows of 3 cells in a box; the last column is right-aligned."""
    inner = line_length - 4  # 4 border characters per line
    edges = [int(p * line_length) for p in positions]
    widths = [int((b - a) * inner / line_length) for a, b in zip([0] + edges[:-1], edges)]
    widths[0] += inner - sum(widths)

    def line(left, fill, mid, right):
        return left + mid.join(fill * w for w in widths) + right

    def row(cells, bar):
        padded = [f" {c:<{w - 2}} " if k < 2 else f" {c:>{w - 2}} " for k, (c, w) in enumerate(zip(cells, widths))]
        return bar + bar.join(p[:w] for p, w in zip(padded, widths)) + bar

    out = [line("┏", "━", "┳", "┓"), row(rows[0], "┃"), line("┡", "━", "╇", "┩")]
    for k, r in enumerate(rows[1:]):
        if k:
            out.append(line("├", "─", "┼", "┤"))
        out.append(row(r, "│"))
    out.append(line("└", "─", "┴", "┘"))
    return out


def print_summary(model, line_length=None, print_fn=None):
    line_length = line_length or min(88, shutil.get_terminal_size().columns - 4)
    rows = [("Layer (type)", "Output Shape", "Param #")]
    shape = getattr(model, "_input_shape", None) or (None, None)  # what the model was built for
    for layer in model.layers:
        if layer.built:
            shape = layer.output_shape(shape)
            rows.append((f"{layer.name} ({type(layer).__name__})", str(shape), f"{layer.count_params():,}"))
        else:
            rows.append((f"{layer.name} ({type(layer).__name__})", "?", "0 (unbuilt)"))
    trainable = sum(w.size for w in model.trainable_weights)
    frozen = sum(w.size for w in model.non_trainable_weights)
    out = [f'Model: "{model.name}"'] + _table(rows, line_length)
    for what, n in (("Total", trainable + frozen), ("Trainable", trainable), ("Non-trainable", frozen)):
        out.append(f" {what} params: {n:,} ({readable_memory_size(4 * n)})")
    (print_fn or print)("\n".join(out))
