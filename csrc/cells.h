// The cells, one row at a time, on data still in cache (Keras semantics, float32). A cell is
// the engine's plug-in (engine.h): sizes, and a forward/backward pair over one slot's step.
//
//   kName     its name in the bindings ("lstm", "gru", "simple_rnn"); Act, RecAct its activations
//   kGates    projected inputs per unit: table rows and the recurrent kernel are (., kGates*H)
//   kKept     floats per unit a step keeps for backward (its "work" row, kKept*H)
//   kSeparateProduct  false: h_{t-1} @ recurrent is added to the work row in place (z = x@W + b
//             + h@R); true: the engine hands it over apart (GRU's reset gate multiplies it)
//   kCellState  true: the kept state is c and h is recomputed in backward (LSTM); false: the
//             kept state is h itself
//   kDirectDh   backward leaves a direct part of dL/dh_{t-1} in dh, to which the engine adds
//             dz_rec @ recurrent^T (else the product overwrites dh)
//   kResetBefore  the last gate's product reads r * h_{t-1} (GRU reset_after=False): the
//             engine runs forward_reset (z, r and r * h_{t-1}) before that gate's product and,
//             in backward, backward_reset once dL/d(r * h_{t-1}) is known
//
//   Every function runs units [0, n) of the arrays it is given, whose gates lie H apart (a
//   work row's gate g at g*H): the engine passes n = H for a whole row, or a block of units
//   (the arrays offset by its first unit) when a team of threads shares a step (engine.cpp).
//
//   forward(work, product, rec_bias, state_prev, state, h, n, H)
//     work (kKept*H) in: x_t @ kernel + bias [+ h_{t-1} @ recurrent], out: what backward keeps;
//     product (kGates*H) h_{t-1} @ recurrent (separate-product cells), rec_bias (kGates*H) or
//     null; state_prev (H) -> state (H); h (H) out (the same array as state where h is the state).
//   backward(work, state_prev, aux, dh, dstate, dz_in, dz_rec, n, H)
//     aux (H) tanh(c_t) (cell-state cells); dh (H) in: dL/dh_t; dstate (H) in: dL/dc_t, out:
//     dL/dc_{t-1} (cell-state cells); dz_in (kGates*H) out: dL/d(x_t @ kernel + bias), the table
//     row's gradient; dz_rec (kGates*H) out: dL/d(h_{t-1} @ recurrent) (the same array as dz_in
//     unless kSeparateProduct).
#pragma once

#include "packet.h"

namespace fastlstm {

// Activations, Keras's (keras/src/activations): f(x), and chain(g, y) = g * f'(x) written
// from the output y = f(x) (each cell's backward has only the outputs).
struct Tanh {
  static constexpr const char* kName = "tanh";
  static inline Packet f(const Packet& x) { return ei::ptanh(x); }
  static inline Packet chain(const Packet& g, const Packet& y) {
    return ei::pmul(g, ei::psub(ei::pset1<Packet>(1.f), ei::pmul(y, y)));
  }
};
struct Sigmoid {
  static constexpr const char* kName = "sigmoid";
  static inline Packet f(const Packet& x) { return sigmoid(x); }
  static inline Packet chain(const Packet& g, const Packet& y) {
    return ei::pmul(ei::pmul(g, y), ei::psub(ei::pset1<Packet>(1.f), y));
  }
};
struct Relu {
  static constexpr const char* kName = "relu";
  static inline Packet f(const Packet& x) { return ei::pmax(x, ei::pzero(x)); }
  static inline Packet chain(const Packet& g, const Packet& y) {  // f'(x) = 1 for x > 0 (y > 0), else 0
    return ei::pand(g, ei::pcmp_lt(ei::pzero(y), y));
  }
};
struct Linear {
  static constexpr const char* kName = "linear";
  static inline Packet f(const Packet& x) { return x; }
  static inline Packet chain(const Packet& g, const Packet&) { return g; }
};
// Keras 3's hard_sigmoid: relu6(x + 3) / 6, i.e. 0 below -3, 1 above 3 (Keras 2's was 0.2x + 0.5).
struct HardSigmoid {
  static constexpr const char* kName = "hard_sigmoid";
  static inline Packet f(const Packet& x) {
    const Packet six = ei::pset1<Packet>(6.f);
    return ei::pdiv(ei::pmin(ei::pmax(ei::padd(x, ei::pset1<Packet>(3.f)), ei::pzero(x)), six), six);
  }
  static inline Packet chain(const Packet& g, const Packet& y) {  // f'(x) = 1/6 for -3 < x < 3 (0 < y < 1)
    const Packet inside = ei::pand(ei::pcmp_lt(ei::pzero(y), y), ei::pcmp_lt(y, ei::pset1<Packet>(1.f)));
    return ei::pand(ei::pdiv(g, ei::pset1<Packet>(6.f)), inside);
  }
};

// LSTM. Gates [i | f | c | o] along the 4H axis, as in Keras (A = activation, tanh by
// default; R = recurrent_activation, sigmoid by default):
//   z = x @ kernel + h_prev @ recurrent_kernel + bias        (4H)
//   i, f, o = R(z_i, z_f, z_o);  g = A(z_c)
//   c = f * c_prev + i * g;      h = o * A(c)                zero initial state.
// Keeps the activated gates i, f, g, o (4H) and c.
template <class A = Tanh, class R = Sigmoid>
struct LstmCell {
  static constexpr const char* kName = "lstm";
  using Act = A;
  using RecAct = R;
  static constexpr int kGates = 4, kKept = 4;
  static constexpr bool kSeparateProduct = false, kCellState = true, kDirectDh = false, kResetBefore = false;

  static inline void forward(float* z, const float*, const float*, const float* c_prev, float* c,
                             float* h, int n, int H) {
    for_packets(n, [&](int j, int m) {
      const Packet i = R::f(load(z + j, m)), f = R::f(load(z + H + j, m));
      const Packet g = A::f(load(z + 2 * H + j, m)), o = R::f(load(z + 3 * H + j, m));
      const Packet cn = ei::padd(ei::pmul(f, load(c_prev + j, m)), ei::pmul(i, g));
      store(z + j, i, m), store(z + H + j, f, m), store(z + 2 * H + j, g, m), store(z + 3 * H + j, o, m);
      store(c + j, cn, m);
      store(h + j, ei::pmul(o, A::f(cn)), m);  // h = o * A(c), as hidden() recomputes it
    });
  }

  // ac (H) = A(c (H)), bitwise what forward computed for h = o * A(c).
  static inline void aux(const float* c, float* ac, int n, int) {
    for_packets(n, [&](int j, int m) { store(ac + j, A::f(load(c + j, m)), m); });
  }
  // h (H) = o * A(c) of a step, from its kept gates (4H) and aux(c).
  static inline void hidden(const float* a, const float* ac, float* h, int n, int H) {
    for_packets(n, [&](int j, int m) {
      store(h + j, ei::pmul(load(a + 3 * H + j, m), load(ac + j, m)), m);
    });
  }

  static inline void backward(const float* a, const float* c_prev, const float* ac,
                              float* dh, float* dc, float* dz, float*, int n, int H) {
    for_packets(n, [&](int j, int m) {
      const Packet i = load(a + j, m), f = load(a + H + j, m), g = load(a + 2 * H + j, m);
      const Packet o = load(a + 3 * H + j, m);
      const Packet cp = load(c_prev + j, m), t = load(ac + j, m), dH = load(dh + j, m);
      // h = o * A(c)
      const Packet dzo = R::chain(ei::pmul(dH, t), o);
      const Packet dC = ei::padd(load(dc + j, m), A::chain(ei::pmul(dH, o), t));
      // c = f * c_prev + i * g
      const Packet dzi = R::chain(ei::pmul(dC, g), i);
      const Packet dzf = R::chain(ei::pmul(dC, cp), f);
      const Packet dzg = A::chain(ei::pmul(dC, i), g);
      store(dc + j, ei::pmul(dC, f), m);
      store(dz + j, dzi, m), store(dz + H + j, dzf, m), store(dz + 2 * H + j, dzg, m), store(dz + 3 * H + j, dzo, m);
    });
  }
};

// GRU with reset_after=True (Keras's default). Gates [z | r | h] along the 3H axis (A, R as
// for the LSTM):
//   x = x_t @ kernel + input_bias;  q = h_prev @ recurrent_kernel + recurrent_bias   (3H each)
//   z = R(x_z + q_z);  r = R(x_r + q_r);  hh = A(x_h + r * q_h)
//   h = z * h_prev + (1 - z) * hh                                       zero initial state.
// Keeps z, r, hh and q_h (4H); the kept state is h.
template <class A = Tanh, class R = Sigmoid>
struct GruCell {
  static constexpr const char* kName = "gru";
  using Act = A;
  using RecAct = R;
  static constexpr int kGates = 3, kKept = 4;
  static constexpr bool kSeparateProduct = true, kCellState = false, kDirectDh = true, kResetBefore = false;

  static inline void forward(float* w, const float* p, const float* rb, const float* h_prev,
                             float*, float* h, int n, int H) {
    const Packet one = ei::pset1<Packet>(1.f);
    for_packets(n, [&](int j, int m) {
      Packet qz = load(p + j, m), qr = load(p + H + j, m), qh = load(p + 2 * H + j, m);
      if (rb) {
        qz = ei::padd(qz, load(rb + j, m)), qr = ei::padd(qr, load(rb + H + j, m));
        qh = ei::padd(qh, load(rb + 2 * H + j, m));
      }
      const Packet z = R::f(ei::padd(load(w + j, m), qz));
      const Packet r = R::f(ei::padd(load(w + H + j, m), qr));
      const Packet hh = A::f(ei::padd(load(w + 2 * H + j, m), ei::pmul(r, qh)));
      const Packet hp = load(h_prev + j, m);
      store(w + j, z, m), store(w + H + j, r, m), store(w + 2 * H + j, hh, m), store(w + 3 * H + j, qh, m);
      store(h + j, ei::padd(ei::pmul(z, hp), ei::pmul(ei::psub(one, z), hh)), m);
    });
  }

  static inline void backward(const float* w, const float* h_prev, const float*, float* dh, float*,
                              float* dz_in, float* dz_rec, int n, int H) {
    const Packet one = ei::pset1<Packet>(1.f);
    for_packets(n, [&](int j, int m) {
      const Packet z = load(w + j, m), r = load(w + H + j, m), hh = load(w + 2 * H + j, m);
      const Packet qh = load(w + 3 * H + j, m), hp = load(h_prev + j, m), dH = load(dh + j, m);
      // h = z * h_prev + (1 - z) * hh
      const Packet dzz = R::chain(ei::pmul(dH, ei::psub(hp, hh)), z);
      // hh = A(x_h + r * q_h)
      const Packet dxh = A::chain(ei::pmul(dH, ei::psub(one, z)), hh);
      // r = R(x_r + q_r)
      const Packet dzr = R::chain(ei::pmul(dxh, qh), r);
      store(dh + j, ei::pmul(dH, z), m);  // the direct part of dL/dh_prev
      store(dz_in + j, dzz, m), store(dz_in + H + j, dzr, m), store(dz_in + 2 * H + j, dxh, m);
      store(dz_rec + j, dzz, m), store(dz_rec + H + j, dzr, m), store(dz_rec + 2 * H + j, ei::pmul(dxh, r), m);
    });
  }
};

// GRU with reset_after=False. Gates [z | r | h] along the 3H axis, one (input) bias:
//   x = x_t @ kernel + bias                                              (3H)
//   z = R(x_z + h_prev @ U_z);  r = R(x_r + h_prev @ U_r)
//   hh = A(x_h + (r * h_prev) @ U_h);  h = z * h_prev + (1 - z) * hh        zero initial state.
// Keeps z, r, hh (3H); the kept state is h. U_g = recurrent_kernel[:, gH:(g+1)H].
template <class A = Tanh, class R = Sigmoid>
struct GruResetBeforeCell {
  static constexpr const char* kName = "gru_reset_before";
  using Act = A;
  using RecAct = R;
  static constexpr int kGates = 3, kKept = 3;
  static constexpr bool kSeparateProduct = true, kCellState = false, kDirectDh = true, kResetBefore = true;

  // w (3H) in: x, out: z, r (and x_h); p (3H) the products of the z and r gates; rh (H) out.
  static inline void forward_reset(float* w, const float* p, const float* h_prev, float* rh, int n, int H) {
    for_packets(n, [&](int j, int m) {
      const Packet z = R::f(ei::padd(load(w + j, m), load(p + j, m)));
      const Packet r = R::f(ei::padd(load(w + H + j, m), load(p + H + j, m)));
      store(w + j, z, m), store(w + H + j, r, m);
      store(rh + j, ei::pmul(r, load(h_prev + j, m)), m);
    });
  }
  // w (3H) z, r, x_h -> z, r, hh; p[2H:3H] = (r * h_prev) @ U_h; h (H) out.
  static inline void forward(float* w, const float* p, const float*, const float* h_prev, float*,
                             float* h, int n, int H) {
    const Packet one = ei::pset1<Packet>(1.f);
    for_packets(n, [&](int j, int m) {
      const Packet z = load(w + j, m), hp = load(h_prev + j, m);
      const Packet hh = A::f(ei::padd(load(w + 2 * H + j, m), load(p + 2 * H + j, m)));
      store(w + 2 * H + j, hh, m);
      store(h + j, ei::padd(ei::pmul(z, hp), ei::pmul(ei::psub(one, z), hh)), m);
    });
  }
  // The z and h gates' gradients; dh in: dL/dh_t, out: the direct part dL/dh_t * z.
  static inline void backward(const float* w, const float* h_prev, const float*, float* dh, float*,
                              float* dz_in, float* dz_rec, int n, int H) {
    const Packet one = ei::pset1<Packet>(1.f);
    for_packets(n, [&](int j, int m) {
      const Packet z = load(w + j, m), hh = load(w + 2 * H + j, m);
      const Packet hp = load(h_prev + j, m), dH = load(dh + j, m);
      // h = z * h_prev + (1 - z) * hh
      const Packet dzz = R::chain(ei::pmul(dH, ei::psub(hp, hh)), z);
      // hh = A(x_h + (r * h_prev) @ U_h)
      const Packet dxh = A::chain(ei::pmul(dH, ei::psub(one, z)), hh);
      store(dh + j, ei::pmul(dH, z), m);
      store(dz_in + j, dzz, m), store(dz_in + 2 * H + j, dxh, m);
      store(dz_rec + j, dzz, m), store(dz_rec + 2 * H + j, dxh, m);
    });
  }
  // The r gate's, given d_rh (H) = dL/d(r * h_prev) = dxh @ U_h^T; dh (+)= d_rh * r.
  static inline void backward_reset(const float* w, const float* h_prev, const float* d_rh, float* dh,
                                    float* dz_in, float* dz_rec, int n, int H) {
    for_packets(n, [&](int j, int m) {
      const Packet r = load(w + H + j, m), d = load(d_rh + j, m);
      // rh = r * h_prev;  r = R(x_r + h_prev @ U_r)
      const Packet dzr = R::chain(ei::pmul(d, load(h_prev + j, m)), r);
      store(dh + j, ei::padd(load(dh + j, m), ei::pmul(d, r)), m);
      store(dz_in + H + j, dzr, m), store(dz_rec + H + j, dzr, m);
    });
  }
};

// SimpleRNN:  h = A(x_t @ kernel + bias + h_prev @ recurrent_kernel)     (H; A tanh by default)
// Keeps h (H); the kept state is h.
template <class A = Tanh>
struct SimpleRnnCell {
  static constexpr const char* kName = "simple_rnn";
  using Act = A;
  using RecAct = Sigmoid;  // unused: no gates
  static constexpr int kGates = 1, kKept = 1;
  static constexpr bool kSeparateProduct = false, kCellState = false, kDirectDh = false, kResetBefore = false;

  static inline void forward(float* z, const float*, const float*, const float*, float*, float* h,
                             int n, int) {
    for_packets(n, [&](int j, int m) {
      const Packet a = A::f(load(z + j, m));
      store(z + j, a, m), store(h + j, a, m);
    });
  }

  static inline void backward(const float* a, const float*, const float*, float* dh, float*,
                              float* dz, float*, int n, int) {
    // h = A(z)
    for_packets(n, [&](int j, int m) { store(dz + j, A::chain(load(dh + j, m), load(a + j, m)), m); });
  }
};

// X(cell type) for every cell and activation pair the bindings offer (activation tanh, relu
// or linear; recurrent_activation sigmoid or hard_sigmoid): the engine's instantiations.
#define FASTLSTM_COMMA ,
#define FASTLSTM_CELLS_WITH(X, A)                                                   \
  X(LstmCell<A FASTLSTM_COMMA Sigmoid>) X(LstmCell<A FASTLSTM_COMMA HardSigmoid>)   \
  X(GruCell<A FASTLSTM_COMMA Sigmoid>) X(GruCell<A FASTLSTM_COMMA HardSigmoid>)     \
  X(GruResetBeforeCell<A FASTLSTM_COMMA Sigmoid>)                                   \
  X(GruResetBeforeCell<A FASTLSTM_COMMA HardSigmoid>)                               \
  X(SimpleRnnCell<A>)
#define FASTLSTM_FOR_EACH_CELL(X) \
  FASTLSTM_CELLS_WITH(X, Tanh) FASTLSTM_CELLS_WITH(X, Relu) FASTLSTM_CELLS_WITH(X, Linear)

}  // namespace fastlstm
