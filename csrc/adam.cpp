// Adam update. See adam.h.
#include "adam.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "threads.h"

namespace fastlstm {

// The build contracts a*b+c into one FMA elsewhere (faster, differently rounded); here every
// operation is rounded on its own, so the update equals numpy's float32 one bit for bit.
__attribute__((optimize("fp-contract=off")))
void adam_update(float* w, const float* g, float* m, float* v, size_t n, float alpha,
                 float one_minus_beta_1, float one_minus_beta_2, float epsilon) {
  constexpr size_t kPiece = 16384;  // elements per parallel piece
  const long pieces = long((n + kPiece - 1) / kPiece);
#pragma omp parallel for schedule(static) num_threads(team_threads())
  for (long p = 0; p < pieces; ++p) {
    const size_t lo = size_t(p) * kPiece, hi = std::min(n, lo + kPiece);
#pragma omp simd
    for (size_t i = lo; i < hi; ++i) {
      const float gi = g[i];
      const float mi = m[i] + (gi - m[i]) * one_minus_beta_1;
      const float vi = v[i] + (gi * gi - v[i]) * one_minus_beta_2;
      m[i] = mi;
      v[i] = vi;
      w[i] = w[i] - (mi * alpha) / (std::sqrt(vi) + epsilon);
    }
  }
}

}  // namespace fastlstm
