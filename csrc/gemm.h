// All products: the per-step recurrent ones (h @ R, dz @ R^T, h^T @ dz), the input
// projection and the Dense layer. A small register-blocked kernel over a matrix packed once
// per call (a general GEMM would repack R at every step). Each output is
// C0 + sum_k A[i][k] * B[k][j] accumulated in k order, whatever the row count or the
// blocking, so results do not depend on how rows are split.
#pragma once

#include <cstddef>

namespace fastlstm {

// Packed column panel width, the same at every ISA level: a vector of 16 (AVX-512), 2 of 8
// (AVX2), 4 of 4 (SSE2, NEON). The micro-kernel's tile per level is in gemm.cpp.
constexpr int kPanel = 16;

// B (K,N) row-major, or given transposed as (N,K) -> panels (ceil(N/16), K, 16), zero-padded.
// `out` holds at least panel_floats(K, N). ldb: the source's row stride (0: N, or K transposed),
// so that a block of columns of a wider matrix packs in place.
inline int round_up(int n, int m) { return (n + m - 1) / m * m; }
inline int panel_count(int N) { return (N + kPanel - 1) / kPanel; }
inline size_t panel_floats(int K, int N) { return size_t(panel_count(N)) * kPanel * K; }

// Called inside a parallel region, the team shares the panels (an orphaned `omp for`: every
// thread of the team must call it); outside one, the caller packs them all.
void pack_panels(const float* b, int K, int N, bool transposed, float* out, int ldb = 0);

// B operand of gemm_packed: row k of column panel p (16 columns) at b + p * panel_stride +
// k * row_stride. Packed panels (pack_panels) or a row-major matrix whose row stride is a
// multiple of 16 (read in place, no packing; columns past N are read but not used).
struct PanelB {
  const float* b;
  size_t panel_stride, row_stride;
};
inline PanelB packed_b(const float* bp, int ldk) { return {bp, size_t(ldk) * kPanel, kPanel}; }
inline PanelB rowmajor_b(const float* b, int ldb) { return {b, kPanel, size_t(ldb)}; }

// C (n,N) = A (n,K) @ B (K,N), or C += A @ B, with A[r][k] at a[r * ars + k * aks]
// (ars = K, aks = 1 for a row-major A; ars = 1, aks = n for A^T) and B as PanelB.
// K is taken in even blocks of at most kKBlock so that a panel block (kKBlock,16) and the
// rows of A it meets stay in L1 (a 4-panel AVX-512 tile's block does not, but smaller
// blocks measured slower).
void gemm_packed(const float* a, size_t ars, size_t aks, int n, int K, PanelB B, int N,
                 float* c, bool accumulate, int ldc = 0);

// Floats per vector register in the products at this build's ISA level (16, 8 or 4).
int vector_floats();

// Measured fp32 FMA throughput of `threads` threads, GFLOP/s (for the kernel benchmark).
double fma_peak_gflops(int threads);

}  // namespace fastlstm
