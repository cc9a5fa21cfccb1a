"""Independent float64 numpy GRU (reset_after=True) and SimpleRNN (Keras semantics), written
from Keras's cell equations, used as references (numpy_lstm.py has the LSTM's)."""
import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def gru_forward(x, kernel, recurrent, bias):
    """x (B,T,E), kernel (E,3H), recurrent (H,3H), bias (2,3H) or None -> h_seq (B,T,H), cache."""
    x, kernel, recurrent = (np.asarray(a, np.float64) for a in (x, kernel, recurrent))
    B, T, _ = x.shape
    H = recurrent.shape[0]
    b_in, b_rec = (np.zeros(3 * H), np.zeros(3 * H)) if bias is None else np.asarray(bias, np.float64)
    h = np.zeros((B, H))
    hs, steps = [h], []
    for t in range(T):
        xp = x[:, t] @ kernel + b_in
        q = h @ recurrent + b_rec
        z = sigmoid(xp[:, :H] + q[:, :H])
        r = sigmoid(xp[:, H:2 * H] + q[:, H:2 * H])
        hh = np.tanh(xp[:, 2 * H:] + r * q[:, 2 * H:])
        h = z * h + (1 - z) * hh
        hs.append(h), steps.append((z, r, hh, q[:, 2 * H:]))
    h_seq = np.stack(hs[1:], axis=1) if T else np.zeros((B, 0, H))
    return h_seq, (x, kernel, recurrent, hs, steps)


def gru_backward(cache, dh_last, dh_seq=None):
    """-> dx (B,T,E), dkernel (E,3H), drecurrent (H,3H), dbias (2,3H)."""
    x, kernel, recurrent, hs, steps = cache
    B, T, _ = x.shape
    H = recurrent.shape[0]
    dh = np.array(dh_last, np.float64)
    dxp = np.zeros((B, T, 3 * H))   # dL/d(x @ kernel + b_in)
    dq = np.zeros((B, T, 3 * H))    # dL/d(h_prev @ recurrent + b_rec)
    for t in reversed(range(T)):
        if dh_seq is not None:
            dh = dh + dh_seq[:, t]
        z, r, hh, qh = steps[t]
        hp = hs[t]
        da_h = dh * (1 - z) * (1 - hh ** 2)
        da_z = dh * (hp - hh) * z * (1 - z)
        da_r = da_h * qh * r * (1 - r)
        dxp[:, t] = np.concatenate([da_z, da_r, da_h], axis=1)
        dq[:, t] = np.concatenate([da_z, da_r, da_h * r], axis=1)
        dh = dh * z + dq[:, t] @ recurrent.T
    h_prev = np.stack(hs[:-1], axis=1)
    dx = dxp @ kernel.T
    dkernel = np.einsum("bte,btg->eg", x, dxp)
    drecurrent = np.einsum("bth,btg->hg", h_prev, dq)
    dbias = np.stack([dxp.sum(axis=(0, 1)), dq.sum(axis=(0, 1))])
    return dx, dkernel, drecurrent, dbias


def simple_rnn_forward(x, kernel, recurrent, bias):
    """x (B,T,E), kernel (E,H), recurrent (H,H), bias (H) or None -> h_seq (B,T,H), cache."""
    x, kernel, recurrent = (np.asarray(a, np.float64) for a in (x, kernel, recurrent))
    B, T, _ = x.shape
    H = recurrent.shape[0]
    b = np.zeros(H) if bias is None else np.asarray(bias, np.float64)
    h = np.zeros((B, H))
    hs = [h]
    for t in range(T):
        h = np.tanh(x[:, t] @ kernel + b + h @ recurrent)
        hs.append(h)
    h_seq = np.stack(hs[1:], axis=1) if T else np.zeros((B, 0, H))
    return h_seq, (x, kernel, recurrent, hs)


def simple_rnn_backward(cache, dh_last, dh_seq=None):
    """-> dx (B,T,E), dkernel (E,H), drecurrent (H,H), dbias (H)."""
    x, kernel, recurrent, hs = cache
    B, T, _ = x.shape
    dh = np.array(dh_last, np.float64)
    dz = np.zeros((B, T, recurrent.shape[0]))
    for t in reversed(range(T)):
        if dh_seq is not None:
            dh = dh + dh_seq[:, t]
        dz[:, t] = dh * (1 - hs[t + 1] ** 2)
        dh = dz[:, t] @ recurrent.T
    h_prev = np.stack(hs[:-1], axis=1)
    return (dz @ kernel.T, np.einsum("bte,btg->eg", x, dz), np.einsum("bth,btg->hg", h_prev, dz),
            dz.sum(axis=(0, 1)))


REFERENCES = {"gru": (gru_forward, gru_backward), "simple_rnn": (simple_rnn_forward, simple_rnn_backward)}
