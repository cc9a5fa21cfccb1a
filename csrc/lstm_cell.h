// The LSTM cell, one row at a time, on data still in cache (Keras semantics, float32).
//
// Gates are laid out [i | f | c | o] along the 4H axis, as in Keras:
//   z  = x @ kernel + h_prev @ recurrent_kernel + bias        (4H)
//   i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_c)
//   c = f * c_prev + i * g;            h = o * tanh(c)         zero initial state.
#pragma once

#include "packet.h"

namespace fastlstm {

// z (4H) in: pre-activations, out: activated gates i,f,g,o. c_prev (H) -> c (H), h (H).
static inline void cell_forward(float* z, const float* c_prev, float* c, float* h, int H) {
  for_packets(H, [&](int j, int m) {
    const Packet i = sigmoid(load(z + j, m)), f = sigmoid(load(z + H + j, m));
    const Packet g = ei::ptanh(load(z + 2 * H + j, m)), o = sigmoid(load(z + 3 * H + j, m));
    const Packet cn = ei::padd(ei::pmul(f, load(c_prev + j, m)), ei::pmul(i, g));
    store(z + j, i, m), store(z + H + j, f, m), store(z + 2 * H + j, g, m), store(z + 3 * H + j, o, m);
    store(c + j, cn, m);
    store(h + j, ei::pmul(o, ei::ptanh(cn)), m);  // h = o * tanh(c), as backward recomputes it
  });
}

// tanh_c (H) = tanh(c (H)), bitwise what cell_forward computed for h = o * tanh(c).
static inline void tanh_row(const float* c, float* tanh_c, int H) {
  for_packets(H, [&](int j, int m) { store(tanh_c + j, ei::ptanh(load(c + j, m)), m); });
}

// a (4H) activated gates; c_prev, tanh(c) (H); dh (H) = dL/dh_t; dc (H) in: dL/dc_t from
// step t+1, out: dL/dc_{t-1}; dz (4H) out: dL/dz_t.
static inline void cell_backward(const float* a, const float* c_prev, const float* tanh_c,
                                 const float* dh, float* dc, float* dz, int H) {
  const Packet one = ei::pset1<Packet>(1.f);
  for_packets(H, [&](int j, int m) {
    const Packet i = load(a + j, m), f = load(a + H + j, m), g = load(a + 2 * H + j, m);
    const Packet o = load(a + 3 * H + j, m);
    const Packet cp = load(c_prev + j, m), t = load(tanh_c + j, m), dH = load(dh + j, m);
    // h = o * tanh(c)
    const Packet dzo = ei::pmul(ei::pmul(ei::pmul(dH, t), o), ei::psub(one, o));
    const Packet dC = ei::padd(load(dc + j, m),
                               ei::pmul(ei::pmul(dH, o), ei::psub(one, ei::pmul(t, t))));
    // c = f * c_prev + i * g
    const Packet dzi = ei::pmul(ei::pmul(ei::pmul(dC, g), i), ei::psub(one, i));
    const Packet dzf = ei::pmul(ei::pmul(ei::pmul(dC, cp), f), ei::psub(one, f));
    const Packet dzg = ei::pmul(ei::pmul(dC, i), ei::psub(one, ei::pmul(g, g)));
    store(dc + j, ei::pmul(dC, f), m);
    store(dz + j, dzi, m), store(dz + H + j, dzf, m), store(dz + 2 * H + j, dzg, m), store(dz + 3 * H + j, dzo, m);
  });
}

}  // namespace fastlstm
