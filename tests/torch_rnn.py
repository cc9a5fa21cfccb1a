"""An independent float64 reference for every recurrent layer and option, on PyTorch's
autograd: Keras's cell equations (LSTM, GRU with reset_after True and False, SimpleRNN) and Keras's masking
(keras/src/backend/torch/rnn.py: a masked step keeps the states; the output there is the
previous output, or zero with zero_output_for_mask), go_backwards and dropout's masks
(keras/src/layers/rnn/{lstm,gru,simple_rnn}.py) included."""
import numpy as np
import torch


def _projections(x_t, h, kernel, recurrent, G, x_masks, h_masks):
    """x_t @ kernel and h @ recurrent, gate block by gate block with dropout's masks (Keras's
    implementation 1: gate g reads x_t * x_masks[:, g] and h * h_masks[:, g]; a single
    mask, (B,1,.), serves every gate)."""
    H = recurrent.shape[0]
    xs, hs = [], []
    for g in range(G):
        xg = x_t if x_masks is None else x_t * x_masks[:, min(g, x_masks.shape[1] - 1)]
        hg = h if h_masks is None else h * h_masks[:, min(g, h_masks.shape[1] - 1)]
        xs.append(xg @ kernel[:, g * H:(g + 1) * H])
        hs.append(hg @ recurrent[:, g * H:(g + 1) * H])
    return torch.cat(xs, 1), torch.cat(hs, 1)


ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "linear": lambda x: x, "sigmoid": torch.sigmoid,
               "hard_sigmoid": torch.nn.functional.hardsigmoid}  # Keras 3's: relu6(x + 3) / 6


def _cell_step(cell, x_t, states, kernel, recurrent, bias, x_masks=None, h_masks=None, activation="tanh",
               recurrent_activation="sigmoid"):
    H = recurrent.shape[0]
    act, rec = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]
    G = {"lstm": 4, "gru": 3, "gru_reset_before": 3, "simple_rnn": 1}[cell]
    xk, hr = _projections(x_t, states[0], kernel, recurrent, G, x_masks, h_masks)
    if cell == "gru_reset_before":  # Keras's reset_after=False: one bias; (r * h) @ U_h
        h = states[0]
        xp = xk + (0 if bias is None else bias)
        z = rec(xp[:, :H] + hr[:, :H])
        r = rec(xp[:, H:2 * H] + hr[:, H:2 * H])
        rh = r * h if h_masks is None else r * h * h_masks[:, min(2, h_masks.shape[1] - 1)]
        hh = act(xp[:, 2 * H:] + rh @ recurrent[:, 2 * H:])
        return [z * h + (1 - z) * hh]
    if cell == "lstm":
        c = states[1]
        z = xk + hr + (0 if bias is None else bias)
        i, f, o = rec(z[:, :H]), rec(z[:, H:2 * H]), rec(z[:, 3 * H:])
        c = f * c + i * act(z[:, 2 * H:3 * H])
        return [o * act(c), c]
    if cell == "gru":
        h = states[0]
        b_in, b_rec = (0, 0) if bias is None else (bias[0], bias[1])
        xp, q = xk + b_in, hr + b_rec
        z = rec(xp[:, :H] + q[:, :H])
        r = rec(xp[:, H:2 * H] + q[:, H:2 * H])
        hh = act(xp[:, 2 * H:] + r * q[:, 2 * H:])
        return [z * h + (1 - z) * hh]
    return [act(xk + (0 if bias is None else bias) + hr)]


def run(cell, x, weights, mask=None, go_backwards=False, zero_output_for_mask=False, x_masks=None,
        h_masks=None, activation="tanh", recurrent_activation="sigmoid"):
    """x (B,T,E) torch float64; weights [kernel, recurrent, bias or None] torch tensors ->
    (output sequence (B,T,H) in the order steps are taken, last output (B,H), final states).
    x_masks (B,Gd,E), h_masks (B,Gh,H): dropout's keep-masks, the same at every step."""
    B, T, _ = x.shape
    H = weights[1].shape[0]
    x_masks, h_masks = (None if m is None else torch.as_tensor(np.asarray(m, np.float64)) for m in (x_masks, h_masks))
    states = [x.new_zeros(B, H) for _ in range(2 if cell == "lstm" else 1)]
    steps = range(T - 1, -1, -1) if go_backwards else range(T)
    out, prev, outputs = None, x.new_zeros(B, H), []
    for t in steps:
        new = _cell_step(cell, x[:, t], states, *weights, x_masks=x_masks, h_masks=h_masks, activation=activation,
                         recurrent_activation=recurrent_activation)
        if mask is None:
            out, states = new[0], new
        else:
            m = torch.as_tensor(mask[:, t])[:, None]
            out = torch.where(m, new[0], x.new_zeros(B, H) if zero_output_for_mask else prev)
            states = [torch.where(m, n, s) for n, s in zip(new, states)]
        prev = out
        outputs.append(out)
    seq = torch.stack(outputs, 1) if outputs else x.new_zeros(B, 0, H)
    last = out if out is not None else x.new_zeros(B, H)
    return seq, last, states


def gradients(cell, x, weights, upstream, **options):
    """Outputs and gradients of sum(output * upstream) for upstream = {"seq": (B,T,H),
    "last": (B,H), "h": (B,H), "c": (B,H)} (any subset), all float64 numpy:
    (seq, last, states, d x, [d kernel, d recurrent, d bias])."""
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    wt = [None if w is None else torch.tensor(np.asarray(w, np.float64), requires_grad=True) for w in weights]
    seq, last, states = run(cell, xt, wt, **options)
    named = {"seq": seq, "last": last, "h": states[0], "c": states[-1]}
    loss = sum((named[k] * torch.as_tensor(np.array(v, np.float64))).sum() for k, v in upstream.items())
    params = [xt] + [w for w in wt if w is not None]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [np.zeros(p.shape) if g is None else g.numpy() for p, g in zip(params, grads)]
    npy = lambda a: a.detach().numpy()
    return npy(seq), npy(last), [npy(s) for s in states], grads[0], grads[1:]


def outputs(cell, x, weights, **options):
    """(seq, last, states) of run(), float64 numpy."""
    wt = [None if w is None else torch.tensor(np.asarray(w, np.float64)) for w in weights]
    seq, last, states = run(cell, torch.tensor(np.asarray(x, np.float64)), wt, **options)
    return seq.numpy(), last.numpy(), [s.numpy() for s in states]


def assert_gradients(grads, want_grads, d_in, dx, emb=None, ids=None):
    """A layer's weight gradients against the reference's, and its input gradient d_in
    against dx (B,T,E); through the Embedding's backward when the layer read one."""
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    if emb is not None:
        d_in = emb.backward(d_in)[1][0]
        want = np.zeros(emb.embeddings.shape)
        np.add.at(want, ids.reshape(-1), dx.reshape(-1, dx.shape[-1]))
        dx = want
    np.testing.assert_allclose(d_in, dx, rtol=1e-4, atol=2e-5)
