// Fused LSTM forward/backward through time. See lstm.h for the math and the layouts.
#include "lstm.h"

#include <omp.h>

#include <Eigen/Dense>
#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>

namespace fastlstm {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatMap = Eigen::Map<RowMat>;
using ConstMatMap = Eigen::Map<const RowMat>;
using VecMap = Eigen::Map<Eigen::ArrayXf>;
using ConstVecMap = Eigen::Map<const Eigen::ArrayXf>;

static std::atomic<int> g_num_threads{0};  // 0: not set, use all cores

void set_num_threads(int n) { g_num_threads = n; }

int get_num_threads() {
  int n = g_num_threads;
  return n > 0 ? n : omp_get_num_procs();
}

template <class V>
static void grow(V& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// Work is split into pieces (chunks of batch rows, row panels or k panels of a GEMM) fixed
// by the problem size only, never by the thread count: each piece is computed the same way
// whichever thread takes it, so results are bitwise identical for any number of threads.
static int batch_chunks(int B) { return std::max(1, std::min(B, std::max(2, (B + 63) / 64))); }
constexpr int kGemmPanels = 4;

// C (m,n) = A^T @ B for A (k,m), B (k,n) with long k (a weight gradient summed over all
// rows): k is split into kGemmPanels parts, each packed once, and their products are added
// in panel order.
static void gemm_at_b(const float* a, const float* b, Eigen::Index k, Eigen::Index m,
                      Eigen::Index n, float* c) {
  MatMap C(c, m, n);
  std::vector<RowMat> part(kGemmPanels);
#pragma omp parallel for schedule(static, 1) num_threads(get_num_threads())
  for (int p = 0; p < kGemmPanels; ++p) {
    const Eigen::Index r0 = k * p / kGemmPanels, r1 = k * (p + 1) / kGemmPanels;
    part[p].setZero(m, n);
    if (r1 > r0) {
      part[p].noalias() += ConstMatMap(a + r0 * m, r1 - r0, m).transpose() *
                           ConstMatMap(b + r0 * n, r1 - r0, n);
    }
  }
  C = part[0];
  for (int p = 1; p < kGemmPanels; ++p) C += part[p];
}

// sum (n) += the rows of A (m,n), in row order.
static void add_rows(const float* A, int m, int n, float* sum) {
  VecMap S(sum, n);
  for (int r = 0; r < m; ++r) S += ConstVecMap(A + size_t(r) * n, n);
}

// C (m,n) = A (m,k) @ B (k,n), or C += A @ B, split into kGemmPanels row panels.
template <class MA, class MB>
static void gemm_rows(const MA& A, const MB& Bm, MatMap C, bool accumulate) {
  if (A.cols() == 0) {
    if (!accumulate) C.setZero();
    return;
  }
  const Eigen::Index m = C.rows();
#pragma omp parallel for schedule(static, 1) num_threads(get_num_threads())
  for (int p = 0; p < kGemmPanels; ++p) {
    const Eigen::Index a = m * p / kGemmPanels, b = m * (p + 1) / kGemmPanels;
    if (a == b) continue;
    auto Cp = C.middleRows(a, b - a);
    if (accumulate) Cp.noalias() += A.middleRows(a, b - a) * Bm;
    else Cp.noalias() = A.middleRows(a, b - a) * Bm;
  }
}


// ---------------------------------------------------------------------------------------
// The per-step recurrent products h @ R and dz @ R^T: a small register-blocked kernel over
// a matrix packed once per call (Eigen's GEMM would repack it at every step). Each output
// is C0 + sum_k A[i][k] * B[k][j] accumulated in k order, whatever the row count or the
// blocking, so results do not depend on how rows are split.

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
// 6 rows x 16 columns of C in 12 vector registers, +2 for the panel row, +1 broadcast:
// FMA-bound on AVX2 (8 loads per 12 FMAs).
constexpr int kPanel = 16;  // packed column panel width: 2 vectors of 8
constexpr int kRows = 6;

// B (K,N) row-major, or given transposed as (N,K) -> panels (ceil(N/16), K, 16), zero-padded.
// `out` holds at least panel_floats(K, N).
static size_t panel_floats(int K, int N) { return size_t((N + kPanel - 1) / kPanel) * K * kPanel; }

// With ldk > 0 the panels hold ldk rows each and these K rows go to rows k_off.. of them.
static void pack_panels(const float* b, int K, int N, bool transposed, float* out, int ldk = 0,
                        int k_off = 0) {
  const int panels = (N + kPanel - 1) / kPanel;
  if (ldk <= 0) ldk = K;
  for (int p = 0; p < panels; ++p) {
    const int j0 = p * kPanel, w = std::min(kPanel, N - j0);
    for (int k = 0; k < K; ++k) {
      float* dst = out + (size_t(p) * ldk + k_off + k) * kPanel;
      for (int j = 0; j < w; ++j) dst[j] = transposed ? b[size_t(j0 + j) * K + k] : b[size_t(k) * N + j0 + j];
      std::fill(dst + w, dst + kPanel, 0.f);
    }
  }
}

// Rows x (V*8) block of C (+)= A (Rows,K) @ one packed panel (K,16); `cols` valid columns.
// A[r][k] is a[r * ars + k * aks], so A can be read transposed.
template <int Rows, int V>
static inline void panel_kernel(const float* a, size_t ars, size_t aks, const float* bp, int K,
                                float* c, int ldc, bool accumulate, int cols) {
  v8 acc[Rows][V];
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < V; ++v) {
      acc[r][v] = v8{};
      if (!accumulate) continue;
      if (cols >= 8 * (v + 1)) {
        acc[r][v] = *reinterpret_cast<const v8u*>(c + size_t(r) * ldc + 8 * v);
      } else {
        for (int j = 8 * v; j < cols; ++j) acc[r][v][j - 8 * v] = c[size_t(r) * ldc + j];
      }
    }
  }
  for (int k = 0; k < K; ++k) {
    v8 b[V];  // the panel row, held in registers
    for (int v = 0; v < V; ++v) b[v] = reinterpret_cast<const v8*>(bp + size_t(k) * kPanel)[v];
    for (int r = 0; r < Rows; ++r) {
      const float x = a[r * ars + k * aks];
      for (int v = 0; v < V; ++v) acc[r][v] += x * b[v];
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < V; ++v) {
      if (cols >= 8 * (v + 1)) {
        *reinterpret_cast<v8u*>(c + size_t(r) * ldc + 8 * v) = acc[r][v];
      } else {
        for (int j = 8 * v; j < cols; ++j) c[size_t(r) * ldc + j] = acc[r][v][j - 8 * v];
      }
    }
  }
}

template <int Rows>
static inline void panel_rows(const float* a, size_t ars, size_t aks, const float* bp, int K,
                              float* c, int ldc, bool accumulate, int cols) {
  if (cols > 8) panel_kernel<Rows, 2>(a, ars, aks, bp, K, c, ldc, accumulate, cols);
  else panel_kernel<Rows, 1>(a, ars, aks, bp, K, c, ldc, accumulate, cols);
}

// C (n,N) = A (n,K) @ B, or C += A @ B, with B packed by pack_panels and A[r][k] at
// a[r * ars + k * aks] (ars = K, aks = 1 for a row-major A; ars = 1, aks = n for A^T).
// K is taken in blocks of kKBlock so that a panel block (kKBlock,16) stays in L1.
constexpr int kKBlock = 128;
constexpr int kDrecSteps = 4;  // time steps per drecurrent product

static void gemm_packed(const float* a, size_t ars, size_t aks, int n, int K, const float* bp,
                        int N, float* c, bool accumulate, int ldk = 0) {
  const int panels = (N + kPanel - 1) / kPanel;
  if (ldk <= 0) ldk = K;
  for (int k0 = 0; k0 < K; k0 += kKBlock) {
    const int kb = std::min(kKBlock, K - k0);
    const bool acc = accumulate || k0 > 0;
    const float* ak = a + k0 * aks;
    for (int p = 0; p < panels; ++p) {
      const float* panel = bp + (size_t(p) * ldk + k0) * kPanel;
      const int cols = std::min(kPanel, N - p * kPanel);
      float* cp = c + p * kPanel;
      int r = 0;
      for (; r + kRows <= n; r += kRows) {
        panel_rows<kRows>(ak + r * ars, ars, aks, panel, kb, cp + size_t(r) * N, N, acc, cols);
      }
      const float* ar = ak + r * ars;
      float* cr = cp + size_t(r) * N;
      switch (n - r) {  // the last rows
        case 5: panel_rows<5>(ar, ars, aks, panel, kb, cr, N, acc, cols); break;
        case 4: panel_rows<4>(ar, ars, aks, panel, kb, cr, N, acc, cols); break;
        case 3: panel_rows<3>(ar, ars, aks, panel, kb, cr, N, acc, cols); break;
        case 2: panel_rows<2>(ar, ars, aks, panel, kb, cr, N, acc, cols); break;
        case 1: panel_rows<1>(ar, ars, aks, panel, kb, cr, N, acc, cols); break;
        default: break;
      }
    }
  }
  if (K == 0 && !accumulate) {
    for (int r = 0; r < n; ++r) std::fill_n(c + size_t(r) * N, N, 0.f);
  }
}

// ---------------------------------------------------------------------------------------
// Affine map x @ kernel + bias: the LSTM input projection (one GEMM outside the time loop)
// and the Dense layer

void affine(const float* x, const float* kernel, const float* bias, int N, int E, int M,
            float* z) {
  // x (N,E), kernel (E,M), bias (M) -> z (N,M)
  ConstMatMap X(x, N, E), K(kernel, E, M);
  MatMap Z(z, N, M);
  Z.rowwise() = Eigen::Map<const Eigen::RowVectorXf>(bias, M);
  gemm_rows(X, K, Z, true);
}

void affine_backward(const float* x, const float* kernel, const float* dz, int N, int E, int M,
                     float* dx, float* dkernel, float* dbias) {
  // forward: z = x @ kernel + bias
  gemm_at_b(x, dz, N, E, M, dkernel);
  std::fill_n(dbias, M, 0.f);
  add_rows(dz, N, M, dbias);
  if (dx) gemm_rows(ConstMatMap(dz, N, M), ConstMatMap(kernel, E, M).transpose(), MatMap(dx, N, E), false);
}

// ---------------------------------------------------------------------------------------
// One LSTM cell, one row: the gate math on data still in cache.

// z (4H) in: pre-activations, out: activated gates i,f,g,o. c_prev (H) -> c (H), h (H).
static inline void cell_forward(float* z, const float* c_prev, float* c, float* h, int H) {
  VecMap zi(z, H), zf(z + H, H), zg(z + 2 * H, H), zo(z + 3 * H, H);
  zi = zi.logistic();
  zf = zf.logistic();
  zg = zg.tanh();
  zo = zo.logistic();
  VecMap cc(c, H), hh(h, H);
  cc = zf * ConstVecMap(c_prev, H) + zi * zg;
  hh = zo * cc.tanh();
}

// a (4H) activated gates; c_prev, c (H); dh (H) = dL/dh_t; dc (H) in: dL/dc_t from step t+1,
// out: dL/dc_{t-1}; dz (4H) out: dL/dz_t. tc (H) scratch.
static inline void cell_backward(const float* a, const float* c_prev, const float* c,
                                 const float* dh, float* dc, float* dz, float* tc, int H) {
  ConstVecMap ai(a, H), af(a + H, H), ag(a + 2 * H, H), ao(a + 3 * H, H);
  ConstVecMap dH(dh, H), cp(c_prev, H);
  VecMap dC(dc, H), t(tc, H);
  VecMap dzi(dz, H), dzf(dz + H, H), dzg(dz + 2 * H, H), dzo(dz + 3 * H, H);
  t = ConstVecMap(c, H).tanh();
  dzo = dH * t * ao * (1.f - ao);             // h = o * tanh(c)
  dC += dH * ao * (1.f - t.square());
  dzi = dC * ag * ai * (1.f - ai);            // c = f * c_prev + i * g
  dzf = dC * cp * af * (1.f - af);
  dzg = dC * ai * (1.f - ag.square());
  dC *= af;
}

// ---------------------------------------------------------------------------------------
// Forward through time

void lstm_forward(Workspace& ws, const float* table, int U, const int32_t* ids, int pad_row,
                  const float* recurrent, int B, int T, int H, float* h_last, float* h_seq) {
  const int H4 = 4 * H;
  const size_t BH = size_t(B) * H, BH4 = size_t(B) * H4;
  const int nchunks = batch_chunks(B);

  ws.B = B, ws.T = T, ws.H = H, ws.U = U, ws.E = 0;
  ws.token_input = ids != nullptr;
  ws.pad_row = ids ? pad_row : -1;
  if (ids) {
    ws.ids.assign(ids, ids + size_t(B) * T);
  }
  grow(ws.slot_of_row, B), grow(ws.row_of_slot, B), grow(ws.start, B);
  grow(ws.gates, size_t(T) * BH4);
  grow(ws.hs, size_t(T + 1) * BH), grow(ws.cs, size_t(T + 1) * BH);

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
  ws.S = B ? *std::max_element(row_start.begin(), row_start.end()) : 0;

  // Slots: rows sorted by start, dealt round-robin to chunks, so each chunk is a
  // contiguous slot range whose active rows at step t are a prefix and work is balanced.
  std::vector<int> order(B);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return row_start[a] < row_start[b]; });
  ws.chunk_lo.assign(nchunks + 1, 0);
  {
    int slot = 0;
    for (int j = 0; j < nchunks; ++j) {
      ws.chunk_lo[j] = slot;
      for (int k = j; k < B; k += nchunks) {
        ws.row_of_slot[slot] = order[k];
        ws.slot_of_row[order[k]] = slot;
        ws.start[slot] = row_start[order[k]];
        ++slot;
      }
    }
    ws.chunk_lo[nchunks] = slot;
  }

  // The shared padding trajectory: one row fed pad_row for S steps from the zero state.
  const int S = ws.S;
  grow(ws.rec_packed, panel_floats(H, H4));
  pack_panels(recurrent, H, H4, false, ws.rec_packed.data());
  grow(ws.traj_gates, size_t(S) * H4);
  grow(ws.traj_h, size_t(S + 1) * H), grow(ws.traj_c, size_t(S + 1) * H);
  std::fill_n(ws.traj_h.begin(), H, 0.f);
  std::fill_n(ws.traj_c.begin(), H, 0.f);
  for (int t = 0; t < S; ++t) {
    float* z = &ws.traj_gates[size_t(t) * H4];
    std::memcpy(z, table + size_t(pad_row) * H4, H4 * sizeof(float));
    gemm_packed(&ws.traj_h[size_t(t) * H], H, 1, 1, H, ws.rec_packed.data(), H4, z, true);
    cell_forward(z, &ws.traj_c[size_t(t) * H], &ws.traj_c[size_t(t + 1) * H],
                 &ws.traj_h[size_t(t + 1) * H], H);
  }

  float* gates = ws.gates.data();
  float* hs = ws.hs.data();
  float* cs = ws.cs.data();
  std::fill_n(hs, BH, 0.f);  // zero initial state
  std::fill_n(cs, BH, 0.f);

  // A thread owns a chunk of slots [lo,hi) for all time steps: no barrier per step.
#pragma omp parallel for schedule(static, 1) num_threads(get_num_threads())
  for (int j = 0; j < nchunks; ++j) {
    const int lo = ws.chunk_lo[j], hi = ws.chunk_lo[j + 1];
    int active = lo;  // slots [lo,active) are past their leading padding at step t
    for (int t = 0; t < T; ++t) {
      float* hprev = hs + size_t(t) * BH;
      float* cprev = cs + size_t(t) * BH;
      const int first_new = active;
      while (active < hi && ws.start[active] <= t) ++active;
      // Rows starting now continue from the shared trajectory's state h_{t-1}, c_{t-1}.
      for (int s = first_new; s < active; ++s) {
        std::memcpy(hprev + size_t(s) * H, &ws.traj_h[size_t(t) * H], H * sizeof(float));
        std::memcpy(cprev + size_t(s) * H, &ws.traj_c[size_t(t) * H], H * sizeof(float));
      }
      const int n = active - lo;
      if (n == 0) continue;
      float* z = gates + size_t(t) * BH4 + size_t(lo) * H4;  // (n,4H)
      for (int s = lo; s < active; ++s) {
        const int b = ws.row_of_slot[s];
        const size_t row = ids ? size_t(ids[size_t(b) * T + t]) : size_t(b) * T + t;
        std::memcpy(z + size_t(s - lo) * H4, table + row * H4, H4 * sizeof(float));
      }
      gemm_packed(hprev + size_t(lo) * H, H, 1, n, H, ws.rec_packed.data(), H4, z, true);
      float* cnext = cs + size_t(t + 1) * BH;
      float* hnext = hs + size_t(t + 1) * BH;
      for (int s = lo; s < active; ++s) {
        cell_forward(z + size_t(s - lo) * H4, cprev + size_t(s) * H, cnext + size_t(s) * H,
                     hnext + size_t(s) * H, H);
      }
    }
  }

  // Outputs in row order; all-padding positions take the shared trajectory's state.
  for (int b = 0; b < B; ++b) {
    const int slot = ws.slot_of_row[b], s0 = ws.start[slot];
    const float* src = s0 < T ? hs + size_t(T) * BH + size_t(slot) * H
                              : &ws.traj_h[size_t(T) * H];
    std::memcpy(h_last + size_t(b) * H, src, H * sizeof(float));
    if (h_seq) {
      for (int t = 0; t < T; ++t) {
        const float* st = t >= s0 ? hs + size_t(t + 1) * BH + size_t(slot) * H
                                  : &ws.traj_h[size_t(t + 1) * H];
        std::memcpy(h_seq + (size_t(b) * T + t) * H, st, H * sizeof(float));
      }
    }
  }
  ws.has_forward = true;
}

// ---------------------------------------------------------------------------------------
// Backward through time

void lstm_backward(Workspace& ws, const float* recurrent, const float* dh_last,
                   const float* dh_seq, float* dtable, float* drecurrent) {
  const int B = ws.B, T = ws.T, H = ws.H, U = ws.U, S = ws.S, H4 = 4 * H;
  const size_t BH = size_t(B) * H, BH4 = size_t(B) * H4;
  const int nchunks = int(ws.chunk_lo.size()) - 1;
  const int nth = get_num_threads();
  MatMap dR(drecurrent, H, H4);
  MatMap dTable(dtable, U, H4);

  grow(ws.rect_packed, panel_floats(H4, H));
  pack_panels(recurrent, H4, H, true, ws.rect_packed.data());  // recurrent^T (4H,H)
  // drecurrent is accumulated over groups of kDrecSteps steps: (rows, h_{t-1}) and (rows, dz_t)
  // gathered per chunk so one product covers a long k.
  const int nchunk_rows = nchunks ? ws.chunk_lo[1] - ws.chunk_lo[0] : 0;  // the largest chunk
  const int kcap = kDrecSteps * nchunk_rows;
  grow(ws.dz_packed, size_t(nchunks) * panel_floats(kcap, H4));
  grow(ws.h_group, size_t(nchunks) * kcap * H);
  grow(ws.drec_chunk, size_t(nchunks) * H * H4);
  grow(ws.dgates, size_t(T) * BH4);
  grow(ws.dh, BH), grow(ws.dc, BH), grow(ws.dh0, BH), grow(ws.dc0, BH);
  float* dgates = ws.dgates.data();
  const float* gates = ws.gates.data();
  const float* hs = ws.hs.data();
  const float* cs = ws.cs.data();

  for (int b = 0; b < B; ++b) {
    const int slot = ws.slot_of_row[b];
    std::memcpy(&ws.dh[size_t(slot) * H], dh_last + size_t(b) * H, H * sizeof(float));
  }
  std::fill_n(ws.dc.begin(), BH, 0.f);
  std::fill_n(ws.dh0.begin(), BH, 0.f);
  std::fill_n(ws.dc0.begin(), BH, 0.f);

#pragma omp parallel for schedule(static, 1) num_threads(nth)
  for (int j = 0; j < nchunks; ++j) {
    const int lo = ws.chunk_lo[j], hi = ws.chunk_lo[j + 1];
    FloatBuf tanh_c(H);  // scratch, allocated once per chunk
    // data() + offset, not &v[offset]: with B = 0 the group buffers are empty
    float* drec = ws.drec_chunk.data() + size_t(j) * H * H4;
    std::fill_n(drec, size_t(H) * H4, 0.f);
    float* dzp = ws.dz_packed.data() + size_t(j) * panel_floats(kcap, H4);
    float* hgroup = ws.h_group.data() + size_t(j) * kcap * H;
    int kk = 0;  // rows gathered in the current group
    int active = hi;
    while (active > lo && ws.start[active - 1] >= T) --active;
    for (int t = T - 1; t >= 0; --t) {
      while (active > lo && ws.start[active - 1] > t) --active;
      float* dz = dgates + size_t(t) * BH4;
      const int n = active - lo;
      if (n == 0) continue;
      for (int s = lo; s < active; ++s) {
        float* dh = &ws.dh[size_t(s) * H];
        if (dh_seq) {
          const int b = ws.row_of_slot[s];
          VecMap(dh, H) += ConstVecMap(dh_seq + (size_t(b) * T + t) * H, H);
        }
        cell_backward(gates + size_t(t) * BH4 + size_t(s) * H4, cs + size_t(t) * BH + size_t(s) * H,
                      cs + size_t(t + 1) * BH + size_t(s) * H, dh, &ws.dc[size_t(s) * H],
                      dz + size_t(s) * H4, tanh_c.data(), H);
      }
      // dL/dh_{t-1} = dz_t @ recurrent^T       (from z_t = ... + h_{t-1} @ recurrent)
      gemm_packed(dz + size_t(lo) * H4, H4, 1, n, H4, ws.rect_packed.data(), H,
                  &ws.dh[size_t(lo) * H], false);
      // drecurrent += h_{t-1}^T @ dz_t over this chunk's active rows (same z_t line)
      if (kk + n > kcap) {
        gemm_packed(hgroup, 1, H, H, kk, dzp, H4, drec, true, kcap);
        kk = 0;
      }
      std::memcpy(hgroup + size_t(kk) * H, hs + size_t(t) * BH + size_t(lo) * H, size_t(n) * H * sizeof(float));
      pack_panels(dz + size_t(lo) * H4, n, H4, false, dzp, kcap, kk);
      kk += n;
      // Rows that started at t > 0 hand their state gradient to the shared trajectory.
      for (int s = active - 1; t > 0 && s >= lo && ws.start[s] == t; --s) {
        std::memcpy(&ws.dh0[size_t(s) * H], &ws.dh[size_t(s) * H], H * sizeof(float));
        std::memcpy(&ws.dc0[size_t(s) * H], &ws.dc[size_t(s) * H], H * sizeof(float));
      }
    }
    if (kk > 0) gemm_packed(hgroup, 1, H, H, kk, dzp, H4, drec, true, kcap);
  }

  // drecurrent: the chunks' partial sums, added in chunk order
  dR.setZero();
  for (int j = 0; j < nchunks; ++j) dR += ConstMatMap(&ws.drec_chunk[size_t(j) * H * H4], H, H4);

  // dtable: scatter-add dz of every active position into its table row. Threads own
  // column ranges, so there is no write conflict and the sum order is fixed.
  dTable.setZero();
#pragma omp parallel num_threads(nth)
  {
    const int j = omp_get_thread_num(), nj = omp_get_num_threads();
    const int c0 = int(int64_t(H4) * j / nj), c1 = int(int64_t(H4) * (j + 1) / nj);
    for (int b = 0; b < B; ++b) {
      const int slot = ws.slot_of_row[b];
      for (int t = ws.start[slot]; t < T; ++t) {
        const size_t row = ws.token_input ? size_t(ws.ids[size_t(b) * T + t]) : size_t(b) * T + t;
        float* dst = dtable + row * H4;
        const float* src = dgates + size_t(t) * BH4 + size_t(slot) * H4;
        for (int c = c0; c < c1; ++c) dst[c] += src[c];
      }
    }
  }

  // Backward through the shared padding trajectory. Gradient reaches its state at step
  // t-1 from every row starting at t, from all-padding rows, and from h_seq positions.
  if (S > 0) {
    RowMat dtraj_h = RowMat::Zero(S, H), dtraj_c = RowMat::Zero(S, H);
    for (int b = 0; b < B; ++b) {
      const int slot = ws.slot_of_row[b], s0 = ws.start[slot];
      if (s0 > 0 && s0 < T) {
        dtraj_h.row(s0 - 1) += Eigen::Map<const Eigen::RowVectorXf>(&ws.dh0[size_t(slot) * H], H);
        dtraj_c.row(s0 - 1) += Eigen::Map<const Eigen::RowVectorXf>(&ws.dc0[size_t(slot) * H], H);
      } else if (s0 == T) {
        dtraj_h.row(T - 1) += Eigen::Map<const Eigen::RowVectorXf>(dh_last + size_t(b) * H, H);
      }
      if (dh_seq) {
        for (int t = 0; t < s0; ++t) {
          dtraj_h.row(t) += Eigen::Map<const Eigen::RowVectorXf>(dh_seq + (size_t(b) * T + t) * H, H);
        }
      }
    }
    RowMat dz_traj(S, H4);
    Eigen::RowVectorXf dh = Eigen::RowVectorXf::Zero(H), dc = Eigen::RowVectorXf::Zero(H);
    FloatBuf tanh_c(H);
    for (int t = S - 1; t >= 0; --t) {
      dh += dtraj_h.row(t);
      dc += dtraj_c.row(t);
      cell_backward(&ws.traj_gates[size_t(t) * H4], &ws.traj_c[size_t(t) * H],
                    &ws.traj_c[size_t(t + 1) * H], dh.data(), dc.data(), dz_traj.row(t).data(),
                    tanh_c.data(), H);
      gemm_packed(dz_traj.row(t).data(), H4, 1, 1, H4, ws.rect_packed.data(), H, dh.data(), false);
    }
    dR.noalias() += ConstMatMap(ws.traj_h.data(), S, H).transpose() * dz_traj;
    add_rows(dz_traj.data(), S, H4, dtable + size_t(ws.pad_row) * H4);
  }
}

// ---------------------------------------------------------------------------------------
// The layer on dense input

void lstm_forward_dense(Workspace& ws, const float* x, const float* kernel,
                        const float* recurrent, const float* bias, int B, int T, int E, int H,
                        float* h_last, float* h_seq) {
  const size_t N = size_t(B) * T;
  grow(ws.table, N * 4 * H);
  affine(x, kernel, bias, int(N), E, 4 * H, ws.table.data());
  lstm_forward(ws, ws.table.data(), int(N), nullptr, -1, recurrent, B, T, H, h_last, h_seq);
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
#pragma omp parallel num_threads(threads) reduction(+ : sink)
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
  const double flop = 2.0 * 8 * kChains * double(kIters) * threads;
  static volatile float keep;
  keep = sink;  // the chains' results are used
  return flop / seconds / 1e9;
}

}  // namespace fastlstm
