"""Independent float64 numpy LSTM (Keras semantics, gates i,f,c,o) used as the reference."""
import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_forward(x, kernel, recurrent, bias):
    """x (B,T,E) -> h_seq (B,T,H) and a cache for lstm_backward. All float64."""
    x, kernel, recurrent, bias = (np.asarray(a, np.float64) for a in (x, kernel, recurrent, bias))
    B, T, _ = x.shape
    H = recurrent.shape[0]
    h, c = np.zeros((B, H)), np.zeros((B, H))
    hs, cs, gates = [h], [c], []
    for t in range(T):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h), cs.append(c), gates.append((i, f, g, o))
    h_seq = np.stack(hs[1:], axis=1) if T else np.zeros((B, 0, H))
    return h_seq, (x, kernel, recurrent, hs, cs, gates)


def lstm_backward(cache, dh_last, dh_seq=None, dc_last=None):
    """Gradients of L given dL/dh_last (B,H) and optionally dL/dh_seq (B,T,H) and
    dL/dc_last (B,H) (the final cell state's).

    Returns dx (B,T,E), dkernel, drecurrent, dbias and dz (B,T,4H) = dL/d(pre-activations).
    """
    x, kernel, recurrent, hs, cs, gates = cache
    B, T, _ = x.shape
    dh = np.array(dh_last, np.float64)
    dc = np.zeros_like(dh) if dc_last is None else np.array(dc_last, np.float64)
    dz = np.zeros((B, T, recurrent.shape[1]))
    for t in reversed(range(T)):
        if dh_seq is not None:
            dh = dh + dh_seq[:, t]
        i, f, g, o = gates[t]
        tc = np.tanh(cs[t + 1])
        do = dh * tc
        dc = dc + dh * o * (1 - tc ** 2)
        di, df, dg = dc * g, dc * cs[t], dc * i
        dz[:, t] = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
        dc = dc * f
        dh = dz[:, t] @ recurrent.T
    h_prev = np.stack(hs[:-1], axis=1)  # (B,T,H)
    dx = dz @ kernel.T
    dkernel = np.einsum("bte,btg->eg", x, dz)
    drecurrent = np.einsum("bth,btg->hg", h_prev, dz)
    dbias = dz.sum(axis=(0, 1))
    return dx, dkernel, drecurrent, dbias, dz
