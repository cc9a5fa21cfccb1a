// The product kernel: packing and the register-blocked micro-kernel. See gemm.h.
#include "gemm.h"

#include <omp.h>
#ifdef __AVX__
#include <immintrin.h>  // masked loads and stores; FMA where the CPU has it
#endif

#include <algorithm>

#include "threads.h"

namespace fastlstm {

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));

// acc + x * b, rounded once: an explicit FMA where the CPU has one, so that every tile shape
// rounds alike (left to the compiler, a 1-row tile was seen compiled without contraction).
static inline v8 fmadd(float x, v8 b, v8 acc) {
#ifdef __FMA__
  return _mm256_fmadd_ps(_mm256_set1_ps(x), b, acc);
#else
  return x * b + acc;  // no FMA instruction: never contracted
#endif
}


void pack_panels(const float* b, int K, int N, bool transposed, float* out, int ldb) {
  if (ldb <= 0) ldb = transposed ? K : N;
#pragma omp for schedule(static)
  for (int p = 0; p < panel_count(N); ++p) {
    const int j0 = p * kPanel, w = std::min(kPanel, N - j0);
    for (int k = 0; k < K; ++k) {
      float* dst = out + (size_t(p) * K + k) * kPanel;
      for (int j = 0; j < w; ++j) dst[j] = transposed ? b[size_t(j0 + j) * ldb + k] : b[size_t(k) * ldb + j0 + j];
      std::fill(dst + w, dst + kPanel, 0.f);
    }
  }
}


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

constexpr int kKBlock = 256;

void gemm_packed(const float* a, size_t ars, size_t aks, int n, int K, PanelB B, int N,
                 float* c, bool accumulate, int ldc) {
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
