// The product kernel: packing and the register-blocked micro-kernel. See gemm.h.
#include "gemm.h"

#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // masked loads and stores; FMA where the level has it
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include <algorithm>

#include "threads.h"

namespace fastlstm {

// This file is compiled once per ISA level (CMakeLists.txt), and so is its vector width:
// kVec floats per register, 16 (AVX-512), 8 (AVX, AVX2) or 4 (SSE2, NEON).
// FASTLSTM_WIDE_EMULATION (a test build, tests/native): AVX-512's width and tiles at AVX2,
// each vector of 16 a pair of 8, so their blocking and tails are tested without AVX-512.
#if defined(FASTLSTM_WIDE_EMULATION) || defined(__AVX512F__)
constexpr int kVec = 16;
#elif defined(__AVX__)
constexpr int kVec = 8;
#else
constexpr int kVec = 4;
#endif
typedef float vec __attribute__((vector_size(4 * kVec)));
typedef float vecu __attribute__((vector_size(4 * kVec), aligned(4), may_alias));
static_assert(kPanel % kVec == 0, "a vector never straddles two panels");

// acc + x * b, rounded once: an explicit FMA where the ISA has one, so that every tile shape
// rounds alike (left to the compiler, a 1-row tile was seen compiled without contraction).
static inline vec fmadd(float x, vec b, vec acc) {
#if defined(FASTLSTM_WIDE_EMULATION)
  typedef float v8 __attribute__((vector_size(32)));
  union Halves { vec v; v8 h[2]; } bh{b}, out{acc};
  for (int i = 0; i < 2; ++i) out.h[i] = _mm256_fmadd_ps(_mm256_set1_ps(x), bh.h[i], out.h[i]);
  return out.v;
#elif defined(__AVX512F__)
  return _mm512_fmadd_ps(_mm512_set1_ps(x), b, acc);
#elif defined(__FMA__) && defined(__AVX__)
  return _mm256_fmadd_ps(_mm256_set1_ps(x), b, acc);
#elif defined(__ARM_NEON)
  return (vec)vfmaq_n_f32((float32x4_t)acc, (float32x4_t)b, x);
#else
  return x * b + acc;  // no FMA instruction (SSE2, AVX1): nothing to contract into
#endif
}

// Holds x in a register from here on: the compiler may not fold its load into each FMA that
// reads it (GCC did, in tiles of 1-4 rows: V+Rows loads per step of k became Rows*(V+1), and
// those tiles ran at a third of the FMA peak on load ports). Nothing else changes.
static inline void keep_in_register(vec& x) {
#if defined(__AVX__) && !defined(FASTLSTM_WIDE_EMULATION)
  asm("" : "+v"(x));  // any xmm/ymm/zmm register
#else
  (void)x;  // SSE2 cannot fold unaligned loads; NEON's FMA takes no memory operand
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


#if defined(__AVX__) && !defined(__AVX512F__) && !defined(FASTLSTM_WIDE_EMULATION)
// Lanes 0..m-1 set, for AVX's masked moves (loaded: AVX1 has no 256-bit integer compare).
static inline __m256i lane_mask(int m) {
  alignas(64) static const int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ones + 8 - m));
}
#endif

// The first m (1..kVec) floats at p, zeros past them; and the reverse. Masked where the ISA
// has masks, so a tile's accumulators stay in registers whatever its width.
static inline vec load_cols(const float* p, int m) {
  if (m == kVec) return *reinterpret_cast<const vecu*>(p);
#if defined(FASTLSTM_WIDE_EMULATION)
  vec x{};
  for (int j = 0; j < m; ++j) x[j] = p[j];
  return x;
#elif defined(__AVX512F__)
  return _mm512_maskz_loadu_ps(__mmask16((1u << m) - 1), p);
#elif defined(__AVX__)
  return _mm256_maskload_ps(p, lane_mask(m));
#else
  vec x{};
  for (int j = 0; j < m; ++j) x[j] = p[j];
  return x;
#endif
}
static inline void store_cols(float* p, vec x, int m) {
  if (m == kVec) {
    *reinterpret_cast<vecu*>(p) = x;
    return;
  }
#if defined(FASTLSTM_WIDE_EMULATION)
  for (int j = 0; j < m; ++j) p[j] = x[j];
#elif defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, __mmask16((1u << m) - 1), x);
#elif defined(__AVX__)
  _mm256_maskstore_ps(p, lane_mask(m), x);
#else
  for (int j = 0; j < m; ++j) p[j] = x[j];
#endif
}

// A tile of C: Rows x (V * kVec) columns, V <= kTileVecs, spanning up to kTilePanels
// panels: up to 4 zmm per row on AVX-512 (four panels), 2 ymm (one panel) on AVX2, 4 xmm
// (one panel) on SSE2/NEON. Accumulators: Rows * V registers, plus V for the panel row and
// one broadcast, within each ISA's register file (16 on AVX2 and SSE2, 32 on AVX-512 and NEON).
constexpr int kTilePanels = kVec == 16 ? 4 : 1;
constexpr int kTileVecs = kTilePanels * kPanel / kVec;
#if defined(__AVX__) || defined(__ARM_NEON)
constexpr int kTileRows = 6;  // up to 24 accumulators (AVX-512, NEON), 12 (AVX2)
#else
constexpr int kTileRows = 2;  // SSE2: 8 accumulators + 4 panel vectors + broadcast + product
#endif

// Rows x (V*kVec) block of C (+)= A (Rows,K) @ the tile's panels (K, V*kVec); vector v is
// in panel v / (kPanel/kVec) (bp + that * panel_stride), panel rows brs floats apart; the
// last of the V vectors holds `last` (1..kVec) valid columns. A[r][k] is a[r * ars + k * aks],
// so A can be read transposed.
template <int Rows, int V>
static inline void tile_kernel(const float* a, size_t ars, size_t aks, const float* bp,
                               size_t panel_stride, size_t brs, int K, float* c, int ldc,
                               bool accumulate, int last) {
  constexpr int kPerPanel = kPanel / kVec;
  const float* bv[V];
  for (int v = 0; v < V; ++v) bv[v] = bp + (v / kPerPanel) * panel_stride + (v % kPerPanel) * kVec;
  vec acc[Rows][V];
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < V; ++v) {
      const float* cv = c + size_t(r) * ldc + kVec * v;
      acc[r][v] = !accumulate ? vec{} : v + 1 < V ? *reinterpret_cast<const vecu*>(cv) : load_cols(cv, last);
    }
  }
  for (int k = 0; k < K; ++k) {
    vec b[V];  // the panel row, held in registers
    for (int v = 0; v < V; ++v) {
      b[v] = *reinterpret_cast<const vecu*>(bv[v] + size_t(k) * brs);
      if (V > 1) keep_in_register(b[v]);  // (V = 1: a tile of up to 12 rows, each A value folded as a broadcast)
    }
    for (int r = 0; r < Rows; ++r) {
      const float x = a[r * ars + k * aks];
      for (int v = 0; v < V; ++v) acc[r][v] = fmadd(x, b[v], acc[r][v]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v + 1 < V; ++v) *reinterpret_cast<vecu*>(c + size_t(r) * ldc + kVec * v) = acc[r][v];
    store_cols(c + size_t(r) * ldc + kVec * (V - 1), acc[r][V - 1], last);
  }
}

// Rows rows of a tile of `cols` (1..kTilePanels*kPanel) columns: V = the vectors they fill.
template <int Rows>
static inline void tile_rows_kernel(const float* a, size_t ars, size_t aks, const float* bp,
                                    size_t panel_stride, size_t brs, int K, float* c, int ldc,
                                    bool accumulate, int cols) {
  const int nvec = (cols + kVec - 1) / kVec, last = cols - (nvec - 1) * kVec;
  switch (nvec) {
#define FASTLSTM_TILE(V) \
    case V: return tile_kernel<Rows, (V <= kTileVecs ? V : 1)>(a, ars, aks, bp, panel_stride, brs, K, c, ldc, accumulate, last);
    FASTLSTM_TILE(4) FASTLSTM_TILE(3) FASTLSTM_TILE(2)
#undef FASTLSTM_TILE
    default: return tile_kernel<Rows, 1>(a, ars, aks, bp, panel_stride, brs, K, c, ldc, accumulate, last);
  }
}

// Rows of the next row tile when m rows are left: kTileRows (6), but for the last 7-9 or 13
// rows, which go as 4+3, 4+4, 5+4 and 5+4+4 rather than leave a tile of 1-3 rows (too few
// independent accumulators to keep both FMA units busy).
static int tile_rows(int m) {
  if (kTileRows != 6) return std::min(m, kTileRows);
  switch (m) {
    case 7: case 8: return 4;
    case 9: case 13: return 5;
    default: return std::min(m, kTileRows);
  }
}

constexpr int kKBlock = 256;

void gemm_packed(const float* a, size_t ars, size_t aks, int n, int K, PanelB B, int N,
                 float* c, bool accumulate, int ldc) {
  if (ldc <= 0) ldc = N;
  const int panels = panel_count(N);
  const int kblocks = std::max(1, (K + kKBlock - 1) / kKBlock);
  const int kblock = (K + kblocks - 1) / kblocks;
  const size_t ps = B.panel_stride, brs = B.row_stride;
  for (int k0 = 0; k0 < K; k0 += kblock) {
    const int kb = std::min(kblock, K - k0);
    const bool acc = accumulate || k0 > 0;
    const float* ak = a + k0 * aks;
    // Column tiles of up to kTilePanels panels, as even as they go (25 panels: 3 or 4 each,
    // never a tile of 1 panel beside tiles of 4: fewer broadcasts per FMA).
    const int tiles = (panels + kTilePanels - 1) / kTilePanels;
    for (int i = 0; i < tiles; ++i) {
      const int p = panels * i / tiles, np = panels * (i + 1) / tiles - p;
      const float* bp = B.b + p * ps + k0 * brs;
      const int cols = std::min(np * kPanel, N - p * kPanel);
      float* cp = c + p * kPanel;
      int r = 0;
      if (cols <= kVec) {  // one vector wide: 12 rows (fewer would wait on the FMA latency)
        for (; r + 12 <= n; r += 12) {
          tile_kernel<12, 1>(ak + r * ars, ars, aks, bp, ps, brs, kb, cp + size_t(r) * ldc, ldc, acc, cols);
        }
      }
      for (int rows; r < n; r += rows) {
        rows = tile_rows(n - r);
        const float* ar = ak + r * ars;
        float* cr = cp + size_t(r) * ldc;
        switch (rows) {
          case 6: tile_rows_kernel<6>(ar, ars, aks, bp, ps, brs, kb, cr, ldc, acc, cols); break;
          case 5: tile_rows_kernel<5>(ar, ars, aks, bp, ps, brs, kb, cr, ldc, acc, cols); break;
          case 4: tile_rows_kernel<4>(ar, ars, aks, bp, ps, brs, kb, cr, ldc, acc, cols); break;
          case 3: tile_rows_kernel<3>(ar, ars, aks, bp, ps, brs, kb, cr, ldc, acc, cols); break;
          case 2: tile_rows_kernel<2>(ar, ars, aks, bp, ps, brs, kb, cr, ldc, acc, cols); break;
          default: tile_rows_kernel<1>(ar, ars, aks, bp, ps, brs, kb, cr, ldc, acc, cols); break;
        }
      }
    }
  }
  if (K == 0 && !accumulate) {
    for (int r = 0; r < n; ++r) std::fill_n(c + size_t(r) * ldc, N, 0.f);
  }
}

int vector_floats() { return kVec; }

// ---------------------------------------------------------------------------------------
// The machine's fp32 peak at this level's width, measured: each thread runs 12 independent
// vector FMA chains in registers (the micro-kernel's accumulator count), so nothing but the
// FMA units is timed (SSE2: a multiply and an add, counted as the 2 flops of an FMA).

double fma_peak_gflops(int threads) {
  constexpr long kIters = 20000000;
  constexpr int kChains = 12;
  float sink = 0.f;
  const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(team_size(threads)) reduction(+ : sink)
  {
    static volatile float opaque_mul = 0.999f, opaque_add = 1e-3f;  // unknown at compile time
    const float mul = opaque_mul;
    const vec add = vec{} + opaque_add;
    vec acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = vec{} + (opaque_add * i + omp_get_thread_num());
    for (long it = 0; it < kIters; ++it) {
      for (int i = 0; i < kChains; ++i) acc[i] = fmadd(mul, acc[i], add);
    }
    for (int i = 0; i < kChains; ++i) sink += acc[i][0];
  }
  const double seconds = omp_get_wtime() - t0;
  const double flop = 2.0 * kVec * kChains * double(kIters) * team_size(threads);
  static volatile float keep;
  keep = sink;  // the chains' results are used
  return flop / seconds / 1e9;
}

}  // namespace fastlstm
