// The cells, one row at a time, on data still in cache (Keras semantics, float32). A cell is
// the engine's plug-in (engine.h): sizes, and a forward/backward pair over one slot's step.
//
//   kName     its name in the bindings ("lstm", "gru", "simple_rnn")
//   kGates    projected inputs per unit: table rows and the recurrent kernel are (., kGates*H)
//   kKept     floats per unit a step keeps for backward (its "work" row, kKept*H)
//   kSeparateProduct  false: h_{t-1} @ recurrent is added to the work row in place (z = x@W + b
//             + h@R); true: the engine hands it over apart (GRU's reset gate multiplies it)
//   kCellState  true: the kept state is c and h is recomputed in backward (LSTM); false: the
//             kept state is h itself
//   kDirectDh   backward leaves a direct part of dL/dh_{t-1} in dh, to which the engine adds
//             dz_rec @ recurrent^T (else the product overwrites dh)
//
//   forward(work, product, rec_bias, state_prev, state, h, H)
//     work (kKept*H) in: x_t @ kernel + bias [+ h_{t-1} @ recurrent], out: what backward keeps;
//     product (kGates*H) h_{t-1} @ recurrent (separate-product cells), rec_bias (kGates*H) or
//     null; state_prev (H) -> state (H); h (H) out (the same array as state where h is the state).
//   backward(work, state_prev, aux, dh, dstate, dz_in, dz_rec, H)
//     aux (H) tanh(c_t) (cell-state cells); dh (H) in: dL/dh_t; dstate (H) in: dL/dc_t, out:
//     dL/dc_{t-1} (cell-state cells); dz_in (kGates*H) out: dL/d(x_t @ kernel + bias), the table
//     row's gradient; dz_rec (kGates*H) out: dL/d(h_{t-1} @ recurrent) (the same array as dz_in
//     unless kSeparateProduct).
#pragma once

#include "packet.h"

namespace fastlstm {

// LSTM. Gates [i | f | c | o] along the 4H axis, as in Keras:
//   z = x @ kernel + h_prev @ recurrent_kernel + bias        (4H)
//   i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_c)
//   c = f * c_prev + i * g;            h = o * tanh(c)         zero initial state.
// Keeps the activated gates i, f, g, o (4H) and c.
struct LstmCell {
  static constexpr const char* kName = "lstm";
  static constexpr int kGates = 4, kKept = 4;
  static constexpr bool kSeparateProduct = false, kCellState = true, kDirectDh = false;

  static inline void forward(float* z, const float*, const float*, const float* c_prev, float* c,
                             float* h, int H) {
    for_packets(H, [&](int j, int m) {
      const Packet i = sigmoid(load(z + j, m)), f = sigmoid(load(z + H + j, m));
      const Packet g = ei::ptanh(load(z + 2 * H + j, m)), o = sigmoid(load(z + 3 * H + j, m));
      const Packet cn = ei::padd(ei::pmul(f, load(c_prev + j, m)), ei::pmul(i, g));
      store(z + j, i, m), store(z + H + j, f, m), store(z + 2 * H + j, g, m), store(z + 3 * H + j, o, m);
      store(c + j, cn, m);
      store(h + j, ei::pmul(o, ei::ptanh(cn)), m);  // h = o * tanh(c), as hidden() recomputes it
    });
  }

  // tanh_c (H) = tanh(c (H)), bitwise what forward computed for h = o * tanh(c).
  static inline void aux(const float* c, float* tanh_c, int H) {
    for_packets(H, [&](int j, int m) { store(tanh_c + j, ei::ptanh(load(c + j, m)), m); });
  }
  // h (H) = o * tanh(c) of a step, from its kept gates (4H) and aux(c).
  static inline void hidden(const float* a, const float* tanh_c, float* h, int H) {
    for_packets(H, [&](int j, int m) {
      store(h + j, ei::pmul(load(a + 3 * H + j, m), load(tanh_c + j, m)), m);
    });
  }

  static inline void backward(const float* a, const float* c_prev, const float* tanh_c,
                              float* dh, float* dc, float* dz, float*, int H) {
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
};

// GRU with reset_after=True (Keras's default). Gates [z | r | h] along the 3H axis:
//   x = x_t @ kernel + input_bias;  q = h_prev @ recurrent_kernel + recurrent_bias   (3H each)
//   z = sigmoid(x_z + q_z);  r = sigmoid(x_r + q_r);  hh = tanh(x_h + r * q_h)
//   h = z * h_prev + (1 - z) * hh                                       zero initial state.
// Keeps z, r, hh and q_h (4H); the kept state is h.
struct GruCell {
  static constexpr const char* kName = "gru";
  static constexpr int kGates = 3, kKept = 4;
  static constexpr bool kSeparateProduct = true, kCellState = false, kDirectDh = true;

  static inline void forward(float* w, const float* p, const float* rb, const float* h_prev,
                             float*, float* h, int H) {
    const Packet one = ei::pset1<Packet>(1.f);
    for_packets(H, [&](int j, int m) {
      Packet qz = load(p + j, m), qr = load(p + H + j, m), qh = load(p + 2 * H + j, m);
      if (rb) {
        qz = ei::padd(qz, load(rb + j, m)), qr = ei::padd(qr, load(rb + H + j, m));
        qh = ei::padd(qh, load(rb + 2 * H + j, m));
      }
      const Packet z = sigmoid(ei::padd(load(w + j, m), qz));
      const Packet r = sigmoid(ei::padd(load(w + H + j, m), qr));
      const Packet hh = ei::ptanh(ei::padd(load(w + 2 * H + j, m), ei::pmul(r, qh)));
      const Packet hp = load(h_prev + j, m);
      store(w + j, z, m), store(w + H + j, r, m), store(w + 2 * H + j, hh, m), store(w + 3 * H + j, qh, m);
      store(h + j, ei::padd(ei::pmul(z, hp), ei::pmul(ei::psub(one, z), hh)), m);
    });
  }

  static inline void backward(const float* w, const float* h_prev, const float*, float* dh, float*,
                              float* dz_in, float* dz_rec, int H) {
    const Packet one = ei::pset1<Packet>(1.f);
    for_packets(H, [&](int j, int m) {
      const Packet z = load(w + j, m), r = load(w + H + j, m), hh = load(w + 2 * H + j, m);
      const Packet qh = load(w + 3 * H + j, m), hp = load(h_prev + j, m), dH = load(dh + j, m);
      // h = z * h_prev + (1 - z) * hh
      const Packet dzz = ei::pmul(ei::pmul(ei::pmul(dH, ei::psub(hp, hh)), z), ei::psub(one, z));
      // hh = tanh(x_h + r * q_h)
      const Packet dxh = ei::pmul(ei::pmul(dH, ei::psub(one, z)), ei::psub(one, ei::pmul(hh, hh)));
      // r = sigmoid(x_r + q_r)
      const Packet dzr = ei::pmul(ei::pmul(ei::pmul(dxh, qh), r), ei::psub(one, r));
      store(dh + j, ei::pmul(dH, z), m);  // the direct part of dL/dh_prev
      store(dz_in + j, dzz, m), store(dz_in + H + j, dzr, m), store(dz_in + 2 * H + j, dxh, m);
      store(dz_rec + j, dzz, m), store(dz_rec + H + j, dzr, m), store(dz_rec + 2 * H + j, ei::pmul(dxh, r), m);
    });
  }
};

// SimpleRNN:  h = tanh(x_t @ kernel + bias + h_prev @ recurrent_kernel)     (H)
// Keeps h (H); the kept state is h.
struct SimpleRnnCell {
  static constexpr const char* kName = "simple_rnn";
  static constexpr int kGates = 1, kKept = 1;
  static constexpr bool kSeparateProduct = false, kCellState = false, kDirectDh = false;

  static inline void forward(float* z, const float*, const float*, const float*, float*, float* h,
                             int H) {
    for_packets(H, [&](int j, int m) {
      const Packet a = ei::ptanh(load(z + j, m));
      store(z + j, a, m), store(h + j, a, m);
    });
  }

  static inline void backward(const float* a, const float*, const float*, float* dh, float*,
                              float* dz, float*, int H) {
    const Packet one = ei::pset1<Packet>(1.f);
    for_packets(H, [&](int j, int m) {
      const Packet y = load(a + j, m);
      // h = tanh(z)
      store(dz + j, ei::pmul(load(dh + j, m), ei::psub(one, ei::pmul(y, y))), m);
    });
  }
};

}  // namespace fastlstm
