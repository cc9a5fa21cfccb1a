// Packets for the cells' gate math (Eigen's packet math: its sigmoid and tanh, vectorised
// for this CPU). A row's last, partial packet is loaded and stored under a lane mask (zero
// lanes past the row), so every unit is computed by the same packet code, whatever the row's
// length or alignment (Eigen's own loops peel to scalar code).
#pragma once

#include <Eigen/Core>
#include <algorithm>

namespace fastlstm {

namespace ei = Eigen::internal;
using Packet = ei::packet_traits<float>::type;
constexpr int kP = ei::packet_traits<float>::size;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"  // __m256 as a template argument
constexpr bool kMasked = bool(ei::unpacket_traits<Packet>::masked_load_available) &&
                         bool(ei::unpacket_traits<Packet>::masked_store_available);
#pragma GCC diagnostic pop

static inline Packet sigmoid(const Packet& x) { return ei::scalar_logistic_op<float>().packetOp(x); }

// The first m (1..kP) floats at p as a packet, zeros past them; and the reverse. (Templates
// only so that the masked branch is not compiled where the packet type has no masks.)
template <class P = Packet>
static inline P load(const float* p, int m) {
  if (m == kP) return ei::ploadu<P>(p);
  if constexpr (kMasked) {
    return ei::ploadu<P>(p, typename ei::unpacket_traits<P>::mask_t((1u << m) - 1));
  } else {  // no masked loads (SSE): through a zero-padded copy
    alignas(64) float t[kP] = {};
    std::copy_n(p, m, t);
    return ei::pload<P>(t);
  }
}
template <class P = Packet>
static inline void store(float* p, const P& x, int m) {
  if (m == kP) return ei::pstoreu(p, x);
  if constexpr (kMasked) {
    ei::pstoreu(p, x, typename ei::unpacket_traits<P>::mask_t((1u << m) - 1));
  } else {
    alignas(64) float t[kP];
    ei::pstore(t, x);
    std::copy_n(t, m, p);
  }
}

// Runs f(j, m) over a row of H units in packets: units j..j+m-1, m = kP but for the last.
template <class F>
static inline void for_packets(int H, F&& f) {
  for (int j = 0; j < H; j += kP) f(j, std::min(kP, H - j));
}

}  // namespace fastlstm
