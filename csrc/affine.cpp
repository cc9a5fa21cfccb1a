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

// (kernel ⊙ mask_b) (E,M), or its transpose (M,E), packed into panels (as pack_panels), by
// one thread: mask_b (G,E) scales row e of column block g.
static void pack_masked(const float* kernel, const float* mask_b, int E, int M, int G, bool transposed,
                        float* out) {
  const int Hg = M / G;
  const int K = transposed ? M : E, N = transposed ? E : M;
  for (int p = 0; p < panel_count(N); ++p) {
    const int j0 = p * kPanel, w = std::min(kPanel, N - j0);
    for (int k = 0; k < K; ++k) {
      float* dst = out + (size_t(p) * K + k) * kPanel;
      for (int j = 0; j < w; ++j) {
        const int e = transposed ? j0 + j : k, m = transposed ? k : j0 + j;
        dst[j] = kernel[size_t(e) * M + m] * mask_b[size_t(m / Hg) * E + e];
      }
      std::fill(dst + w, dst + kPanel, 0.f);
    }
  }
}

void affine_masked(const float* x, const float* kernel, const float* bias, const float* mask,
                   int B, int T, int E, int M, int G, float* z) {
  // Samples are independent: any thread computes any of them the same way. Each thread packs
  // its kernel ⊙ mask_b into its own part of the scratch (grown before the region).
  const int nth = team_threads();
  const size_t per = panel_floats(E, M);
  float* kps = scratch(0, nth * per);
#pragma omp parallel num_threads(nth)
  {
    float* kp = kps + omp_get_thread_num() * per;
#pragma omp for schedule(static)
    for (int b = 0; b < B; ++b) {
      pack_masked(kernel, mask + size_t(b) * G * E, E, M, G, false, kp);
      float* zb = z + size_t(b) * T * M;
      for (int t = 0; t < T; ++t) std::copy_n(bias, M, zb + size_t(t) * M);
      gemm_packed(x + size_t(b) * T * E, E, 1, T, E, packed_b(kp, E), M, zb, true);
    }
  }
}

void affine_masked_backward(const float* x, const float* kernel, const float* mask, const float* dz,
                            int B, int T, int E, int M, int G, float* dx, float* dkernel,
                            float* dbias) {
  // dkernel and dbias: sums over samples, taken in an even number of sample pieces fixed by
  // B, each into its own partial sum, then the partials added in piece order.
  const int Hg = M / G;
  const int pieces = even_pieces(B, 8);
  const int ldp = round_up(M, kPanel);
  FloatBuf part(size_t(pieces) * (E + 1) * ldp);  // per piece: dkernel (E,M), dbias (M)
  // Per thread (grown before the region): (kernel ⊙ mask_b)^T in panels, x_b^T @ dz_b (E,M),
  // dz_b in panels.
  const int nth = team_threads();
  const size_t per = panel_floats(M, E) + size_t(E) * ldp + panel_floats(T, M);
  float* bufs = scratch(0, nth * per);
#pragma omp parallel num_threads(nth)
  {
    float* kt = bufs + omp_get_thread_num() * per;
    float* xdz = kt + panel_floats(M, E);
    float* dzp = xdz + size_t(E) * ldp;
#pragma omp for schedule(static)
    for (int p = 0; p < pieces; ++p) {
      float* dk = part.data() + size_t(p) * (E + 1) * ldp;
      float* db = dk + size_t(E) * ldp;
      std::fill_n(dk, size_t(E + 1) * ldp, 0.f);
      for (int b = piece_row(B, pieces, p); b < piece_row(B, pieces, p + 1); ++b) {
        const float* xb = x + size_t(b) * T * E;
        const float* dzb = dz + size_t(b) * T * M;
        const float* mb = mask + size_t(b) * G * E;
        if (dx) {
          pack_masked(kernel, mb, E, M, G, true, kt);
          gemm_packed(dzb, M, 1, T, M, packed_b(kt, M), E, dx + size_t(b) * T * E, false);
        }
        for (int q = 0; q < panel_count(M); ++q) {  // dz_b (T,M) in panels
          const int j0 = q * kPanel, w = std::min(kPanel, M - j0);
          for (int t = 0; t < T; ++t) {
            float* dst = dzp + (size_t(q) * T + t) * kPanel;
            std::copy_n(dzb + size_t(t) * M + j0, w, dst);
            std::fill(dst + w, dst + kPanel, 0.f);
          }
        }
        gemm_packed(xb, 1, E, E, T, packed_b(dzp, T), M, xdz, false, ldp);
        for (int e = 0; e < E; ++e) {
          for (int g = 0; g < G; ++g) {
            VecMap(dk + size_t(e) * ldp + g * Hg, Hg) += ConstVecMap(xdz + size_t(e) * ldp + g * Hg, Hg) * mb[size_t(g) * E + e];
          }
        }
        for (int t = 0; t < T; ++t) VecMap(db, M) += ConstVecMap(dzb + size_t(t) * M, M);
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

}  // namespace fastlstm
