// Affine maps and their backward. See affine.h.
#include "affine.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "buffers.h"
#include "gemm.h"
#include "threads.h"

namespace fastlstm {

// Affine map x @ kernel + bias: the LSTM input projection (one GEMM outside the time loop)
// and the Dense layer. The same kernel as the recurrent products, over pieces of rows fixed
// by the shapes (see affine.h).

constexpr int kRowPiece = 48;  // rows of x per parallel piece (about: see even_pieces)

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
#pragma omp parallel num_threads(team_threads())
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
#pragma omp parallel num_threads(team_threads())
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

// Sample b's kernel ⊙ mask_b in panels, from the kernel's own panels kp (pack_panels of
// kernel (E,M)): entry (p, e, j) is kernel[e][m] * mask_b[m / Hg][e], m = 16 p + j, the same one
// product per entry as masking first and packing after. scale: round_up(M, 16) floats.
static void mask_panels(const float* kp, const float* mask_b, int E, int M, int G, float* out,
                        float* scale) {
  const int Hg = M / G, panels = panel_count(M);
  std::fill(scale + M, scale + size_t(panels) * kPanel, 0.f);  // padding columns: kp holds 0 there
  for (int e = 0; e < E; ++e) {
    for (int g = 0; g < G; ++g) std::fill_n(scale + g * Hg, Hg, mask_b[size_t(g) * E + e]);
    for (int p = 0; p < panels; ++p) {
      const float* src = kp + (size_t(p) * E + e) * kPanel;
      const float* s = scale + p * kPanel;
      float* dst = out + (size_t(p) * E + e) * kPanel;
#pragma omp simd
      for (int j = 0; j < kPanel; ++j) dst[j] = src[j] * s[j];
    }
  }
}

// The same for (kernel ⊙ mask_b)^T (M,E), from ktp (pack_panels of kernel^T): entry (p, m, j)
// is kernel[e][m] * mask_b[m / Hg][e], e = 16 p + j. scale: G * round_up(E, 16) floats.
static void mask_panels_transposed(const float* ktp, const float* mask_b, int E, int M, int G,
                                   float* out, float* scale) {
  const int Hg = M / G, panels = panel_count(E), ld = panels * kPanel;
  for (int g = 0; g < G; ++g) {  // mask_b's rows, zero-padded to whole panels
    std::copy_n(mask_b + size_t(g) * E, E, scale + size_t(g) * ld);
    std::fill(scale + size_t(g) * ld + E, scale + size_t(g + 1) * ld, 0.f);
  }
  for (int p = 0; p < panels; ++p) {
    for (int m = 0; m < M; ++m) {
      const float* src = ktp + (size_t(p) * M + m) * kPanel;
      const float* s = scale + size_t(m / Hg) * ld + p * kPanel;
      float* dst = out + (size_t(p) * M + m) * kPanel;
#pragma omp simd
      for (int j = 0; j < kPanel; ++j) dst[j] = src[j] * s[j];
    }
  }
}

void affine_masked(const float* x, const int32_t* lo, const float* kernel, const float* bias,
                   const float* mask, int B, int E, int M, int G, float* z) {
  // Samples are independent: any thread computes any of them the same way. The team packs the
  // kernel once; each thread masks it for its samples in its own part of the scratch (grown
  // before the region).
  const int nth = team_threads();
  const size_t per = panel_floats(E, M) + round_up(M, kPanel);  // kernel ⊙ mask_b, a scale row
  float* kp = scratch(0, panel_floats(E, M));
  float* bufs = scratch(1, nth * per);
#pragma omp parallel num_threads(nth)
  {
    pack_panels(kernel, E, M, false, kp);  // by the whole team
    float* kpb = bufs + omp_get_thread_num() * per;
#pragma omp for schedule(static)
    for (int b = 0; b < B; ++b) {
      const int r0 = lo[b], n = lo[b + 1] - r0;
      if (n == 0) continue;
      mask_panels(kp, mask + size_t(b) * G * E, E, M, G, kpb, kpb + panel_floats(E, M));
      float* zb = z + size_t(r0) * M;
      for (int r = 0; r < n; ++r) std::copy_n(bias, M, zb + size_t(r) * M);
      gemm_packed(x + size_t(r0) * E, E, 1, n, E, packed_b(kpb, E), M, zb, true);
    }
  }
}

void affine_masked_backward(const float* x, const int32_t* lo, const float* kernel, const float* mask,
                            const float* dz, int B, int E, int M, int G, float* dx, float* dkernel,
                            float* dbias) {
  // dkernel and dbias: sums over samples, taken in an even number of sample pieces fixed by
  // B, each into its own partial sum, then the partials added in piece order.
  const int Hg = M / G;
  const int pieces = even_pieces(B, 8);
  const int ldp = round_up(M, kPanel);
  int rows = 0;  // the most rows of one sample
  for (int b = 0; b < B; ++b) rows = std::max(rows, lo[b + 1] - lo[b]);
  FloatBuf part(size_t(pieces) * (E + 1) * ldp);  // per piece: dkernel (E,M), dbias (M)
  // Per thread (grown before the region): (kernel ⊙ mask_b)^T in panels, x_b^T @ dz_b (E,M),
  // dz_b in panels, mask_b's scale rows; kernel^T in panels is the team's.
  const int nth = team_threads();
  const size_t per = panel_floats(M, E) + size_t(E) * ldp + panel_floats(rows, M) + size_t(G) * round_up(E, kPanel);
  float* bufs = scratch(0, nth * per);
  float* ktp = dx ? scratch(1, panel_floats(M, E)) : nullptr;
#pragma omp parallel num_threads(nth)
  {
    if (dx) pack_panels(kernel, M, E, true, ktp);  // by the whole team
    float* kt = bufs + omp_get_thread_num() * per;
    float* xdz = kt + panel_floats(M, E);
    float* dzp = xdz + size_t(E) * ldp;
    float* scale = dzp + panel_floats(rows, M);
#pragma omp for schedule(static)
    for (int p = 0; p < pieces; ++p) {
      float* dk = part.data() + size_t(p) * (E + 1) * ldp;
      float* db = dk + size_t(E) * ldp;
      std::fill_n(dk, size_t(E + 1) * ldp, 0.f);
      for (int b = piece_row(B, pieces, p); b < piece_row(B, pieces, p + 1); ++b) {
        const int r0 = lo[b], n = lo[b + 1] - r0;
        if (n == 0) continue;
        const float* xb = x + size_t(r0) * E;
        const float* dzb = dz + size_t(r0) * M;
        const float* mb = mask + size_t(b) * G * E;
        if (dx) {
          mask_panels_transposed(ktp, mb, E, M, G, kt, scale);
          gemm_packed(dzb, M, 1, n, M, packed_b(kt, M), E, dx + size_t(r0) * E, false);
        }
        for (int q = 0; q < panel_count(M); ++q) {  // dz_b (n,M) in panels
          const int j0 = q * kPanel, w = std::min(kPanel, M - j0);
          for (int r = 0; r < n; ++r) {
            float* dst = dzp + (size_t(q) * n + r) * kPanel;
            std::copy_n(dzb + size_t(r) * M + j0, w, dst);
            std::fill(dst + w, dst + kPanel, 0.f);
          }
        }
        gemm_packed(xb, 1, E, E, n, packed_b(dzp, n), M, xdz, false, ldp);
        for (int e = 0; e < E; ++e) {
          for (int g = 0; g < G; ++g) {
            VecMap(dk + size_t(e) * ldp + g * Hg, Hg) += ConstVecMap(xdz + size_t(e) * ldp + g * Hg, Hg) * mb[size_t(g) * E + e];
          }
        }
        for (int r = 0; r < n; ++r) VecMap(db, M) += ConstVecMap(dzb + size_t(r) * M, M);
      }
    }
#pragma omp for schedule(static)
    for (int e = 0; e <= E; ++e) {  // row e of dkernel, or dbias
      float* out = e < E ? dkernel + size_t(e) * M : dbias;
      std::fill_n(out, M, 0.f);
      for (int p = 0; p < pieces; ++p) VecMap(out, M) += ConstVecMap(part.data() + (size_t(p) * (E + 1) + e) * ldp, M);
    }
  }
}

void add_rows_at(const int32_t* ids, const float* values, int N, int E, float* out) {
  // Each thread adds every row's columns [c0, c1): whole 16-float blocks, split evenly; a
  // team only where there are 65536 values per thread.
  const int64_t blocks = (int64_t(E) + kPanel - 1) / kPanel;
  const int nth = team_size(int(std::max<int64_t>(1, std::min({int64_t(get_num_threads()), blocks, int64_t(N) * E / 65536}))));
  auto add_columns = [&](int64_t me, int64_t team) {
    const int c0 = int(std::min<int64_t>(E, blocks * me / team * kPanel));
    const int c1 = int(std::min<int64_t>(E, blocks * (me + 1) / team * kPanel));
    for (int n = 0; n < N; ++n) {
      float* o = out + size_t(ids[n]) * E;
      const float* v = values + size_t(n) * E;
#pragma omp simd
      for (int c = c0; c < c1; ++c) o[c] += v[c];
    }
  };
  // One thread: no OpenMP call at all. Even a serialized region enters the runtime, and a
  // fork() while this runs in another thread could leave the child a runtime lock held
  // (libomp's: the child's first region then waited for ever).
  if (nth == 1) return add_columns(0, 1);
#pragma omp parallel num_threads(nth)
  add_columns(omp_get_thread_num(), omp_get_num_threads());
}

}  // namespace fastlstm
