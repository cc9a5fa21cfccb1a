// Fused LSTM forward/backward through time. See lstm.h for the math and the layouts.
#include "lstm.h"
#include "threads.h"

#include <omp.h>
#ifdef __AVX__
#include <immintrin.h>  // masked loads and stores; FMA where the CPU has it
#endif

#include <Eigen/Dense>
#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>

namespace fastlstm {

using VecMap = Eigen::Map<Eigen::ArrayXf>;
using ConstVecMap = Eigen::Map<const Eigen::ArrayXf>;

template <class V>
static void grow(V& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// Work is split into pieces (chunks of batch rows, row panels or k panels of a GEMM) fixed
// by the problem size only, never by the thread count: each piece is computed the same way
// whichever thread takes it, so results are bitwise identical for any number of threads.
static int batch_chunks(int B) { return std::max(1, std::min(B, std::max(2, (B + 63) / 64))); }

// ---------------------------------------------------------------------------------------
// All products: the per-step recurrent ones (h @ R, dz @ R^T, h^T @ dz), the input
// projection and the Dense layer. A small register-blocked kernel over a matrix packed once
// per call (a general GEMM would repack R at every step). Each output is
// C0 + sum_k A[i][k] * B[k][j] accumulated in k order, whatever the row count or the
// blocking, so results do not depend on how rows are split.

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
// 6 rows x 16 columns of C in 12 vector registers, +2 for the panel row, +1 broadcast:
// FMA-bound on AVX2 (8 loads per 12 FMAs).
constexpr int kPanel = 16;  // packed column panel width: 2 vectors of 8
constexpr int kRows = 6;

// acc + x * b, rounded once: an explicit FMA where the CPU has one, so that every tile shape
// rounds alike (left to the compiler, a 1-row tile was seen compiled without contraction).
static inline v8 fmadd(float x, v8 b, v8 acc) {
#ifdef __FMA__
  return _mm256_fmadd_ps(_mm256_set1_ps(x), b, acc);
#else
  return x * b + acc;  // no FMA instruction: never contracted
#endif
}

// B (K,N) row-major, or given transposed as (N,K) -> panels (ceil(N/16), K, 16), zero-padded.
// `out` holds at least panel_floats(K, N).
static int round_up(int n, int m) { return (n + m - 1) / m * m; }
static int panel_count(int N) { return (N + kPanel - 1) / kPanel; }
static size_t panel_floats(int K, int N) { return size_t(panel_count(N)) * kPanel * K; }

// Called inside a parallel region, the team shares the panels (an orphaned `omp for`: every
// thread of the team must call it); outside one, the caller packs them all.
static void pack_panels(const float* b, int K, int N, bool transposed, float* out) {
#pragma omp for schedule(static)
  for (int p = 0; p < panel_count(N); ++p) {
    const int j0 = p * kPanel, w = std::min(kPanel, N - j0);
    for (int k = 0; k < K; ++k) {
      float* dst = out + (size_t(p) * K + k) * kPanel;
      for (int j = 0; j < w; ++j) dst[j] = transposed ? b[size_t(j0 + j) * K + k] : b[size_t(k) * N + j0 + j];
      std::fill(dst + w, dst + kPanel, 0.f);
    }
  }
}

// B operand of gemm_packed: row k of column panel p (16 columns) at b + p * panel_stride +
// k * row_stride. Packed panels (pack_panels) or a row-major matrix whose row stride is a
// multiple of 16 (read in place, no packing; columns past N are read but not used).
struct PanelB {
  const float* b;
  size_t panel_stride, row_stride;
};
static PanelB packed_b(const float* bp, int ldk) { return {bp, size_t(ldk) * kPanel, kPanel}; }
static PanelB rowmajor_b(const float* b, int ldb) { return {b, kPanel, size_t(ldb)}; }

// The first m (1..8) floats at p, zeros past them; and the reverse. Masked (AVX), so a tile's
// accumulators stay in registers whatever its width.
static inline v8 load_cols(const float* p, int m) {
  if (m == 8) return *reinterpret_cast<const v8u*>(p);
#ifdef __AVX__
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return (v8)_mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(m), lanes));
#else
  v8 x{};
  for (int j = 0; j < m; ++j) x[j] = p[j];
  return x;
#endif
}
static inline void store_cols(float* p, v8 x, int m) {
  if (m == 8) {
    *reinterpret_cast<v8u*>(p) = x;
    return;
  }
#ifdef __AVX__
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(m), lanes), (__m256)x);
#else
  for (int j = 0; j < m; ++j) p[j] = x[j];
#endif
}

// Rows x (V*8) block of C (+)= A (Rows,K) @ one panel (K,16), panel rows brs floats apart;
// the last of the V vectors holds `last` (1..8) valid columns. A[r][k] is a[r * ars + k * aks],
// so A can be read transposed.
template <int Rows, int V>
static inline void panel_kernel(const float* a, size_t ars, size_t aks, const float* bp,
                                size_t brs, int K, float* c, int ldc, bool accumulate, int last) {
  v8 acc[Rows][V];
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < V; ++v) {
      const float* cv = c + size_t(r) * ldc + 8 * v;
      acc[r][v] = !accumulate ? v8{} : v + 1 < V ? *reinterpret_cast<const v8u*>(cv) : load_cols(cv, last);
    }
  }
  for (int k = 0; k < K; ++k) {
    v8 b[V];  // the panel row, held in registers
    for (int v = 0; v < V; ++v) b[v] = *reinterpret_cast<const v8u*>(bp + size_t(k) * brs + 8 * v);
    for (int r = 0; r < Rows; ++r) {
      const float x = a[r * ars + k * aks];
      for (int v = 0; v < V; ++v) acc[r][v] = fmadd(x, b[v], acc[r][v]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v + 1 < V; ++v) *reinterpret_cast<v8u*>(c + size_t(r) * ldc + 8 * v) = acc[r][v];
    store_cols(c + size_t(r) * ldc + 8 * (V - 1), acc[r][V - 1], last);
  }
}

template <int Rows>
static inline void panel_rows(const float* a, size_t ars, size_t aks, const float* bp, size_t brs,
                              int K, float* c, int ldc, bool accumulate, int cols) {
  if (cols > 8) panel_kernel<Rows, 2>(a, ars, aks, bp, brs, K, c, ldc, accumulate, cols - 8);
  else panel_kernel<Rows, 1>(a, ars, aks, bp, brs, K, c, ldc, accumulate, cols);
}

// Rows of the next row tile when m rows are left: 6, but for the last 7-9 or 13 rows, which
// go as 4+3, 4+4, 5+4 and 5+4+4 rather than leave a tile of 1-3 rows (too few independent
// accumulators to keep both FMA units busy).
static int tile_rows(int m) {
  switch (m) {
    case 7: case 8: return 4;
    case 9: case 13: return 5;
    default: return std::min(m, kRows);
  }
}

// C (n,N) = A (n,K) @ B (K,N), or C += A @ B, with A[r][k] at a[r * ars + k * aks]
// (ars = K, aks = 1 for a row-major A; ars = 1, aks = n for A^T) and B as PanelB.
// K is taken in even blocks of at most kKBlock so that a panel block (kKBlock,16) and the
// rows of A it meets stay in L1.
constexpr int kKBlock = 256;

static void gemm_packed(const float* a, size_t ars, size_t aks, int n, int K, PanelB B, int N,
                        float* c, bool accumulate, int ldc = 0) {
  if (ldc <= 0) ldc = N;
  const int panels = panel_count(N);
  const int kblocks = std::max(1, (K + kKBlock - 1) / kKBlock);
  const int kblock = (K + kblocks - 1) / kblocks;
  for (int k0 = 0; k0 < K; k0 += kblock) {
    const int kb = std::min(kblock, K - k0);
    const bool acc = accumulate || k0 > 0;
    const float* ak = a + k0 * aks;
    for (int p = 0; p < panels; ++p) {
      const float* panel = B.b + p * B.panel_stride + k0 * B.row_stride;
      const size_t brs = B.row_stride;
      const int cols = std::min(kPanel, N - p * kPanel);
      float* cp = c + p * kPanel;
      int r = 0;
      if (cols <= 8) {  // a narrow last panel: 12 rows of one vector (6 would wait on the FMA latency)
        for (; r + 12 <= n; r += 12) {
          panel_kernel<12, 1>(ak + r * ars, ars, aks, panel, brs, kb, cp + size_t(r) * ldc, ldc, acc, cols);
        }
      }
      for (int rows; r < n; r += rows) {
        rows = tile_rows(n - r);
        const float* ar = ak + r * ars;
        float* cr = cp + size_t(r) * ldc;
        switch (rows) {
          case 6: panel_rows<6>(ar, ars, aks, panel, brs, kb, cr, ldc, acc, cols); break;
          case 5: panel_rows<5>(ar, ars, aks, panel, brs, kb, cr, ldc, acc, cols); break;
          case 4: panel_rows<4>(ar, ars, aks, panel, brs, kb, cr, ldc, acc, cols); break;
          case 3: panel_rows<3>(ar, ars, aks, panel, brs, kb, cr, ldc, acc, cols); break;
          case 2: panel_rows<2>(ar, ars, aks, panel, brs, kb, cr, ldc, acc, cols); break;
          default: panel_rows<1>(ar, ars, aks, panel, brs, kb, cr, ldc, acc, cols); break;
        }
      }
    }
  }
  if (K == 0 && !accumulate) {
    for (int r = 0; r < n; ++r) std::fill_n(c + size_t(r) * ldc, N, 0.f);
  }
}

// ---------------------------------------------------------------------------------------
// Affine map x @ kernel + bias: the LSTM input projection (one GEMM outside the time loop)
// and the Dense layer. The same kernel as the recurrent products, over pieces of rows fixed
// by the shapes (see batch_chunks).

constexpr int kRowPiece = 8 * kRows;  // rows of x per parallel piece (about: see even_pieces)

// An even number of row pieces of about `rows` rows each (even: two threads get equal shares);
// piece p holds rows [N p / pieces, N (p+1) / pieces).
static int even_pieces(int N, int rows) { return N > 0 ? 2 * ((N + 2 * rows - 1) / (2 * rows)) : 0; }
static int piece_row(int N, int pieces, int p) { return int(int64_t(N) * p / pieces); }

// Scratch that lives as long as the calling thread, grown, never shrunk (no allocation, no
// zeroing per call; concurrent callers, e.g. predict from several threads, each have their own).
static float* scratch(int slot, size_t floats) {
  thread_local FloatBuf bufs[2];
  grow(bufs[slot], floats);
  return bufs[slot].data();
}

void affine(const float* x, const float* kernel, const float* bias, int N, int E, int M,
            float* z) {
  // x (N,E), kernel (E,M), bias (M) -> z (N,M)
  float* kp = scratch(0, panel_floats(E, M));
  const int pieces = even_pieces(N, kRowPiece);
#pragma omp parallel num_threads(get_num_threads())
  {
    pack_panels(kernel, E, M, false, kp);  // by the whole team
#pragma omp for schedule(static)
    for (int p = 0; p < pieces; ++p) {
      const int r0 = piece_row(N, pieces, p), n = piece_row(N, pieces, p + 1) - r0;
      for (int r = r0; r < r0 + n; ++r) std::copy_n(bias, M, z + size_t(r) * M);
      gemm_packed(x + size_t(r0) * E, E, 1, n, E, packed_b(kp, E), M, z + size_t(r0) * M, true);
    }
  }
}

void affine_backward(const float* x, const float* kernel, const float* dz, int N, int E, int M,
                     float* dx, float* dkernel, float* dbias) {
  // forward: z = x @ kernel + bias
  // dkernel (E,M) = x^T @ dz and dbias = sum of dz's rows: a sum over N, taken in an even
  // number of row pieces (at most 512 rows: x's piece stays in cache), each into its own
  // partial sum, then the partials added in piece order.
  const int pieces = even_pieces(N, 512);
  const int ldp = round_up(M, kPanel);  // partial rows padded to whole panels
  FloatBuf dzp;  // dz in panels when its rows are not whole panels
  PanelB dzb = rowmajor_b(dz, M);
  if (M % kPanel != 0) {
    dzp.resize(panel_floats(N, M));
    pack_panels(dz, N, M, false, dzp.data());
    dzb = packed_b(dzp.data(), N);
  }
  float* part = scratch(0, size_t(pieces) * (E + 1) * ldp);  // per piece: dkernel (E,M), dbias (M)
  float* ktp = dx ? scratch(1, panel_floats(M, E)) : nullptr;  // kernel^T (M,E) in panels
  const int row_pieces = dx ? even_pieces(N, kRowPiece) : 0;
#pragma omp parallel num_threads(get_num_threads())
  {
    if (dx) pack_panels(kernel, M, E, true, ktp);  // by the whole team
#pragma omp for schedule(static) nowait
    for (int p = 0; p < pieces; ++p) {
      const int r0 = piece_row(N, pieces, p), r1 = piece_row(N, pieces, p + 1);
      float* dk = part + size_t(p) * (E + 1) * ldp;
      PanelB rows = dzb;
      rows.b += size_t(r0) * dzb.row_stride;
      gemm_packed(x + size_t(r0) * E, 1, E, E, r1 - r0, rows, M, dk, false, ldp);
      float* db = dk + size_t(E) * ldp;
      std::fill_n(db, M, 0.f);
      for (int r = r0; r < r1; ++r) VecMap(db, M) += ConstVecMap(dz + size_t(r) * M, M);
    }
#pragma omp for schedule(static)
    for (int p = 0; p < row_pieces; ++p) {
      const int r0 = piece_row(N, row_pieces, p), n = piece_row(N, row_pieces, p + 1) - r0;
      gemm_packed(dz + size_t(r0) * M, M, 1, n, M, packed_b(ktp, M), E, dx + size_t(r0) * E, false);
    }
#pragma omp for schedule(static)
    for (int e = 0; e <= E; ++e) {  // row e of dkernel, or dbias
      float* out = e < E ? dkernel + size_t(e) * M : dbias;
      std::fill_n(out, M, 0.f);
      for (int p = 0; p < pieces; ++p) VecMap(out, M) += ConstVecMap(part + (size_t(p) * (E + 1) + e) * ldp, M);
    }
  }
}

// ---------------------------------------------------------------------------------------
// One LSTM cell, one row: the gate math on data still in cache, in one pass over packets of
// kP units (Eigen's packet math: its sigmoid and tanh, vectorised for this CPU). A row's
// last, partial packet is loaded and stored under a lane mask (zero lanes past the row), so
// every unit is computed by the same packet code, whatever the row's length or alignment
// (Eigen's own loops peel to scalar code).

namespace ei = Eigen::internal;
using Packet = ei::packet_traits<float>::type;
constexpr int kP = ei::packet_traits<float>::size;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"  // __m256 as a template argument
constexpr bool kMasked = ei::unpacket_traits<Packet>::masked_load_available &&
                         ei::unpacket_traits<Packet>::masked_store_available;
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

// ---------------------------------------------------------------------------------------
// Forward through time

// The table row slot s reads at step t: the padding row for a trajectory slot, else its
// row's token id (token input, ids (B,T)) or its position b*T + t (dense input, ids null).
static size_t table_row(const Workspace& ws, const int32_t* ids, int pad_row, int s, int t) {
  const int b = ws.row_of_slot[s];
  return b < 0 ? size_t(pad_row) : ids ? size_t(ids[size_t(b) * ws.T + t]) : size_t(b) * ws.T + t;
}

void lstm_forward(Workspace& ws, const float* table, int U, const int32_t* ids, int pad_row,
                  const float* recurrent, int B, int T, int H, float* h_last, float* h_seq,
                  bool training) {
  const int H4 = 4 * H;
  // Training with token input: chunks 1.. keep their own (U,4H) table gradient, so bound
  // their number to keep that memory within the activations' (B*T rows of 4H).
  int nchunks = batch_chunks(B);
  if (training && ids) nchunks = std::min(nchunks, std::max(2, int(1 + int64_t(B) * T / std::max(U, 1))));
  nchunks = std::max(1, std::min(nchunks, B));
  const int nslots = B + nchunks;
  const size_t SH = size_t(nslots) * H, SH4 = size_t(nslots) * H4;

  ws.has_forward = false;
  ws.B = B, ws.T = T, ws.H = H, ws.U = U, ws.E = 0, ws.nslots = nslots;
  ws.token_input = ids != nullptr;
  ws.pad_row = ids ? pad_row : -1;
  if (ids && training) ws.ids.assign(ids, ids + size_t(B) * T);
  grow(ws.row_of_slot, nslots), grow(ws.start, nslots);
  // Training keeps gates and c of every step for backward; inference only the last ones.
  // h is never kept: backward recomputes h_{t-1} = o_{t-1} * tanh(c_{t-1}) (less memory
  // traffic, and the tanh is needed there anyway).
  auto gate_block = [&](int t) { return training ? t : 0; };
  auto c_block = [&](int t) { return training ? t : t % 2; };
  grow(ws.gates, size_t(training ? T : 1) * SH4);
  grow(ws.cs, size_t(training ? T + 1 : 2) * SH);
  grow(ws.hs, 2 * SH);

  // Start step of each row: the length of its leading run of padding (T: all padding).
  std::vector<int> row_start(B, 0);
  if (ids && pad_row >= 0) {
    for (int b = 0; b < B; ++b) {
      const int32_t* r = ids + size_t(b) * T;
      int s = 0;
      while (s < T && r[s] == pad_row) ++s;
      row_start[b] = s;
    }
  }

  // Slots: rows sorted by start, dealt to chunks back and forth (0 1 1 0 0 1 ...: balanced
  // work); each chunk's slot range is its trajectory slot, then its rows in start order.
  std::vector<int> order(B);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return row_start[a] < row_start[b]; });
  std::vector<std::vector<int>> chunk_rows(nchunks);
  for (int k = 0; k < B; ++k) {
    const int i = k % nchunks, j = (k / nchunks) % 2 ? nchunks - 1 - i : i;
    chunk_rows[j].push_back(order[k]);
  }
  ws.chunk_lo.assign(nchunks + 1, 0);
  ws.traj_end.assign(nchunks, 0);
  ws.max_chunk = 0;
  {
    int slot = 0;
    for (int j = 0; j < nchunks; ++j) {
      ws.chunk_lo[j] = slot;
      ws.row_of_slot[slot] = -1;
      ws.start[slot] = 0;
      ++slot;
      for (int b : chunk_rows[j]) {
        ws.row_of_slot[slot] = b;
        ws.start[slot] = row_start[b];
        ws.traj_end[j] = row_start[b];  // sorted: the last is the largest
        ++slot;
      }
      ws.max_chunk = std::max(ws.max_chunk, slot - ws.chunk_lo[j]);
    }
    ws.chunk_lo[nchunks] = slot;
  }

  grow(ws.rec_packed, panel_floats(H, H4));
  const PanelB rec = packed_b(ws.rec_packed.data(), H);
  float* gates = ws.gates.data();
  float* hs = ws.hs.data();  // (2,nslots,H): block t % 2 = h_{t-1}
  float* cs = ws.cs.data();
  auto input = [&](int s, int t) { return table + table_row(ws, ids, pad_row, s, t) * H4; };
  // Zero initial state. Step 0 has no product, so h_{-1} is read only as the output when
  // T = 0 (it must not be a previous call's).
  std::fill_n(cs, SH, 0.f);
  std::fill_n(hs, SH, 0.f);

#pragma omp parallel num_threads(get_num_threads())
  {
  pack_panels(recurrent, H, H4, false, ws.rec_packed.data());  // by the whole team
  // A thread owns a chunk for all time steps: no barrier per step. Chunks go to whichever
  // thread is free (a chunk's results do not depend on which thread computes it).
#pragma omp for schedule(dynamic, 1)
  for (int j = 0; j < nchunks; ++j) {
    const int traj = ws.chunk_lo[j], hi = ws.chunk_lo[j + 1], S = ws.traj_end[j];
    int active = traj + 1;  // row slots [traj+1, active) are past their leading padding
    for (int t = 0; t < T; ++t) {
      float* hprev = hs + size_t(t % 2) * SH;
      float* hnext = hs + size_t((t + 1) % 2) * SH;
      float* cprev = cs + size_t(c_block(t)) * SH;
      float* cnext = cs + size_t(c_block(t + 1)) * SH;
      const int first_new = active;
      while (active < hi && ws.start[active] <= t) ++active;
      // Rows starting now continue from the trajectory's state h_{t-1}, c_{t-1}.
      for (int s = first_new; t > 0 && s < active; ++s) {
        std::memcpy(hprev + size_t(s) * H, hprev + size_t(traj) * H, H * sizeof(float));
        std::memcpy(cprev + size_t(s) * H, cprev + size_t(traj) * H, H * sizeof(float));
      }
      const int w0 = t < S ? traj : traj + 1;  // the trajectory runs while rows wait for it
      const int n = active - w0;
      if (n > 0) {
        float* z = gates + size_t(gate_block(t)) * SH4 + size_t(w0) * H4;  // (n,4H)
        for (int s = w0; s < active; ++s) {
          std::memcpy(z + size_t(s - w0) * H4, input(s, t), H4 * sizeof(float));
        }
        if (t > 0) gemm_packed(hprev + size_t(w0) * H, H, 1, n, H, rec, H4, z, true);  // h_{-1} = 0
        for (int s = w0; s < active; ++s) {
          // Fetch what step t+1 copies in for this slot (its table row; in training, its
          // fresh gates row, far beyond the caches) while step t computes.
          if (t + 1 < T) {
            const float* src = input(s, t + 1);
            for (int c = 0; c < H4; c += 16) __builtin_prefetch(src + c);
            if (training) {
              float* dst = gates + size_t(t + 1) * SH4 + size_t(s) * H4;
              for (int c = 0; c < H4; c += 16) __builtin_prefetch(dst + c, 1);
            }
          }
          cell_forward(z + size_t(s - w0) * H4, cprev + size_t(s) * H, cnext + size_t(s) * H,
                       hnext + size_t(s) * H, H);
        }
      }
      // Outputs; a position still in the leading padding takes the trajectory's state.
      for (int s = traj + 1; h_seq && s < hi; ++s) {
        const float* h = hnext + size_t(s < active ? s : traj) * H;
        std::memcpy(h_seq + (size_t(ws.row_of_slot[s]) * T + t) * H, h, H * sizeof(float));
      }
    }
    const float* hT = hs + size_t(T % 2) * SH;
    for (int s = traj + 1; s < hi; ++s) {
      const float* h = hT + size_t(ws.start[s] < T ? s : traj) * H;
      std::memcpy(h_last + size_t(ws.row_of_slot[s]) * H, h, H * sizeof(float));
    }
  }
  }
  ws.has_forward = training;
}

// ---------------------------------------------------------------------------------------
// Backward through time

constexpr int kGroupSteps = 2;  // time steps per drecurrent product and dtable scatter

void lstm_backward(Workspace& ws, const float* recurrent, const float* dh_last,
                   const float* dh_seq, float* dtable, float* drecurrent) {
  const int T = ws.T, H = ws.H, U = ws.U, H4 = 4 * H, nslots = ws.nslots;
  const size_t SH = size_t(nslots) * H, SH4 = size_t(nslots) * H4;
  const int nchunks = int(ws.chunk_lo.size()) - 1;
  const int nth = get_num_threads();
  const bool private_dtable = ws.token_input && nchunks > 1;  // tokens repeat across chunks

  grow(ws.rect_packed, panel_floats(H4, H));
  const PanelB rect = packed_b(ws.rect_packed.data(), H4);
  // Per chunk, a group of up to kGroupSteps steps: dz rows (row stride ldz, so drecurrent
  // reads them in place), the h_{t-1} rows and the table rows they belong to.
  const int ldz = round_up(H4, kPanel);
  const int cap = kGroupSteps * ws.max_chunk;
  grow(ws.dz_group, size_t(nchunks) * cap * ldz);
  grow(ws.h_group, size_t(nchunks) * cap * H);
  grow(ws.row_group, size_t(nchunks) * cap);
  grow(ws.drec_chunk, size_t(nchunks) * H * H4);
  if (private_dtable) grow(ws.dtable_chunk, size_t(nchunks - 1) * U * H4);
  grow(ws.dh, SH), grow(ws.dc, SH), grow(ws.tanh_c, SH), grow(ws.tanh_step, nslots);
  const float* gates = ws.gates.data();
  const float* cs = ws.cs.data();
  const int32_t* ids = ws.token_input ? ws.ids.data() : nullptr;
  float* dH = ws.dh.data();
  float* dC = ws.dc.data();

  // Initial state gradients: dh_last for each row; an all-padding row's goes to its
  // chunk's trajectory (its output was the trajectory's h_T).
  std::fill_n(dH, SH, 0.f);
  std::fill_n(dC, SH, 0.f);
  for (int j = 0; j < nchunks; ++j) {
    const int traj = ws.chunk_lo[j];
    for (int s = traj + 1; s < ws.chunk_lo[j + 1]; ++s) {
      const float* g = dh_last + size_t(ws.row_of_slot[s]) * H;
      float* dst = dH + size_t(ws.start[s] < T ? s : traj) * H;
      VecMap(dst, H) += ConstVecMap(g, H);
    }
  }

#pragma omp parallel num_threads(nth)
  {
  pack_panels(recurrent, H4, H, true, ws.rect_packed.data());  // recurrent^T, by the whole team
#pragma omp for schedule(dynamic, 1)
  for (int j = 0; j < nchunks; ++j) {
    const int traj = ws.chunk_lo[j], hi = ws.chunk_lo[j + 1], S = ws.traj_end[j];
    // data() + offset, not &v[offset]: with B = 0 the group buffers are empty
    float* drec = ws.drec_chunk.data() + size_t(j) * H * H4;
    float* dzg = ws.dz_group.data() + size_t(j) * cap * ldz;
    float* hg = ws.h_group.data() + size_t(j) * cap * H;
    int32_t* rowg = ws.row_group.data() + size_t(j) * cap;
    // Token input: chunk 0 scatters into dtable, the others into their own copies. Dense
    // input: every position is its own row, so chunks share dtable (each zeroes its rows).
    float* dtab = private_dtable && j > 0 ? ws.dtable_chunk.data() + size_t(j - 1) * U * H4 : dtable;
    if (ws.token_input) {
      if (j == 0 || private_dtable) std::fill_n(dtab, size_t(U) * H4, 0.f);
    } else {
      for (int s = traj + 1; s < hi; ++s) {
        std::fill_n(dtable + size_t(ws.row_of_slot[s]) * T * H4, size_t(T) * H4, 0.f);
      }
    }
    std::fill_n(drec, size_t(H) * H4, 0.f);
    int kk = 0;  // rows in the current group
    // drecurrent += h_{t-1}^T @ dz_t and dtable[row] += dz_t over the group's rows
    auto flush = [&] {
      gemm_packed(hg, 1, H, H, kk, rowmajor_b(dzg, ldz), H4, drec, true);
      for (int r = 0; r < kk; ++r) {
        VecMap(dtab + size_t(rowg[r]) * H4, H4) += ConstVecMap(dzg + size_t(r) * ldz, H4);
      }
      kk = 0;
    };
    // tanh(c_t) of slot s, computed at step t+1 (for h_t) and used again at step t.
    float* tanh_c = ws.tanh_c.data();
    int* tanh_step = ws.tanh_step.data() + traj;  // which step's tanh(c) each slot holds
    std::fill_n(tanh_step, hi - traj, -1);
    auto tanh_of = [&](int s, int t) {         // tanh(c_t) of slot s
      float* tc = tanh_c + size_t(s) * H;
      if (tanh_step[s - traj] != t) {
        tanh_row(cs + size_t(t + 1) * SH + size_t(s) * H, tc, H);
        tanh_step[s - traj] = t;
      }
      return tc;
    };

    int active = hi;  // row slots [traj+1, active) are past their leading padding at step t
    for (int t = T - 1; t >= 0; --t) {
      while (active > traj + 1 && ws.start[active - 1] > t) --active;
      const int w0 = t < S ? traj : traj + 1;
      const int n = active - w0;
      if (dh_seq) {
        for (int s = traj + 1; s < hi; ++s) {  // a padding position's output is the trajectory's
          const int b = ws.row_of_slot[s];
          float* dst = dH + size_t(s < active ? s : traj) * H;
          VecMap(dst, H) += ConstVecMap(dh_seq + (size_t(b) * T + t) * H, H);
        }
      }
      if (n == 0) continue;
      if (kk + n > cap) flush();
      float* dz = dzg + size_t(kk) * ldz;  // (n,4H), row stride ldz
      for (int s = w0; s < active; ++s) {
        // The activations (T,nslots,...) are far bigger than the caches: fetch what step t-1
        // reads of this row (gates, c_{t-2}) while step t computes.
        if (t > 0) {
          const float* g = gates + size_t(t - 1) * SH4 + size_t(s) * H4;
          for (int c = 0; c < H4; c += 16) __builtin_prefetch(g + c);
          const float* cp = cs + size_t(t - 1) * SH + size_t(s) * H;
          for (int c = 0; c < H; c += 16) __builtin_prefetch(cp + c);
        }
        cell_backward(gates + size_t(t) * SH4 + size_t(s) * H4, cs + size_t(t) * SH + size_t(s) * H,
                      tanh_of(s, t), dH + size_t(s) * H, dC + size_t(s) * H,
                      dz + size_t(s - w0) * ldz, H);
        rowg[kk + s - w0] = int32_t(table_row(ws, ids, ws.pad_row, s, t));
        // h_{t-1} = o_{t-1} * tanh(c_{t-1}); a row starting now took the trajectory's
        float* h = hg + size_t(kk + s - w0) * H;
        if (t == 0) {
          std::fill_n(h, H, 0.f);
        } else {
          const int src = s > traj && ws.start[s] == t ? traj : s;
          const float* o = gates + size_t(t - 1) * SH4 + size_t(src) * H4 + 3 * H;
          VecMap(h, H) = ConstVecMap(o, H) * ConstVecMap(tanh_of(src, t - 1), H);
        }
      }
      kk += n;
      if (t == 0) break;  // h_{-1} is the zero state: no gradient to pass on
      // dL/dh_{t-1} = dz_t @ recurrent^T       (from z_t = ... + h_{t-1} @ recurrent)
      gemm_packed(dz, ldz, 1, n, H4, rect, H, dH + size_t(w0) * H, false);
      // Rows that started at t took the trajectory's state h_{t-1}, c_{t-1}: add their
      // gradients to the trajectory's (its own, if it ran at t, came from the product above).
      for (int s = active - 1; s > traj && ws.start[s] == t; --s) {
        VecMap(dH + size_t(traj) * H, H) += ConstVecMap(dH + size_t(s) * H, H);
        VecMap(dC + size_t(traj) * H, H) += ConstVecMap(dC + size_t(s) * H, H);
      }
    }
    if (kk > 0) flush();
  }

  // drecurrent and dtable: the chunks' partial sums, added in chunk order, by row blocks.
  constexpr int kBlocks = 16;
#pragma omp for schedule(static)
  for (int p = 0; p < kBlocks; ++p) {
    const size_t r0 = size_t(H) * p / kBlocks, r1 = size_t(H) * (p + 1) / kBlocks;
    VecMap dR(drecurrent + r0 * H4, (r1 - r0) * H4);
    dR = ConstVecMap(ws.drec_chunk.data() + r0 * H4, (r1 - r0) * H4);
    for (int j = 1; j < nchunks; ++j) dR += ConstVecMap(ws.drec_chunk.data() + (j * size_t(H) + r0) * H4, (r1 - r0) * H4);
    const size_t u0 = size_t(U) * p / kBlocks, u1 = size_t(U) * (p + 1) / kBlocks;
    for (int j = 1; private_dtable && j < nchunks; ++j) {
      const float* part = ws.dtable_chunk.data() + size_t(j - 1) * U * H4;
      VecMap(dtable + u0 * H4, (u1 - u0) * H4) += ConstVecMap(part + u0 * H4, (u1 - u0) * H4);
    }
  }
  }
}

// ---------------------------------------------------------------------------------------
// The layer on dense input

void lstm_forward_dense(Workspace& ws, const float* x, const float* kernel,
                        const float* recurrent, const float* bias, int B, int T, int E, int H,
                        float* h_last, float* h_seq, bool training) {
  const size_t N = size_t(B) * T;
  grow(ws.table, N * 4 * H);
  affine(x, kernel, bias, int(N), E, 4 * H, ws.table.data());
  lstm_forward(ws, ws.table.data(), int(N), nullptr, -1, recurrent, B, T, H, h_last, h_seq,
               training);
  ws.E = E;
}

void lstm_backward_dense(Workspace& ws, const float* x, const float* kernel,
                         const float* recurrent, const float* dh_last, const float* dh_seq,
                         float* dx, float* dkernel, float* drecurrent, float* dbias) {
  const size_t N = size_t(ws.B) * ws.T;
  grow(ws.dtable, N * 4 * ws.H);
  lstm_backward(ws, recurrent, dh_last, dh_seq, ws.dtable.data(), drecurrent);
  affine_backward(x, kernel, ws.dtable.data(), int(N), ws.E, 4 * ws.H, dx, dkernel,
                            dbias);
}

// ---------------------------------------------------------------------------------------
// The machine's fp32 peak, measured: each thread runs 12 independent vector FMA chains in
// registers (the micro-kernel's accumulator count), so nothing but the FMA units is timed.

double fma_peak_gflops(int threads) {
  constexpr long kIters = 20000000;
  constexpr int kChains = 12;
  float sink = 0.f;
  const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(team_size(threads)) reduction(+ : sink)
  {
    static volatile float opaque_mul = 0.999f, opaque_add = 1e-3f;  // unknown at compile time
    const v8 mul = v8{} + opaque_mul, add = v8{} + opaque_add;
    v8 acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = v8{} + (opaque_add * i + omp_get_thread_num());
    for (long it = 0; it < kIters; ++it) {
      for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * mul + add;
    }
    for (int i = 0; i < kChains; ++i) sink += acc[i][0];
  }
  const double seconds = omp_get_wtime() - t0;
  const double flop = 2.0 * 8 * kChains * double(kIters) * team_size(threads);
  static volatile float keep;
  keep = sink;  // the chains' results are used
  return flop / seconds / 1e9;
}

}  // namespace fastlstm
