// The optimizers' updates. See optimizers.h.
//
// CMakeLists.txt compiles this file with -ffp-contract=off: the rest of the build contracts
// a*b+c into one FMA (faster, differently rounded); here every operation is rounded on its own,
// so each update equals numpy's float32 formula bit for bit.
#include "optimizers.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "threads.h"

namespace fastlstm {
namespace {

// Runs update(lo, hi) over [0, n) in fixed pieces shared among the threads. Each element is
// computed alone, so the results never depend on the thread count.
template <class Update>
void in_pieces(size_t n, Update update) {
  constexpr size_t kPiece = 16384;  // elements per parallel piece
  const long pieces = long((n + kPiece - 1) / kPiece);
#pragma omp parallel for schedule(static) num_threads(team_threads()) if (pieces > 1)
  for (long p = 0; p < pieces; ++p) {
    const size_t lo = size_t(p) * kPiece;
    update(lo, std::min(n, lo + kPiece));
  }
}

// torch.maximum's (and np.maximum's): a NaN in either wins.
inline float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }

template <bool kAmsgrad>
void adam_pass(float* w, const float* g, float* m, float* v, float* v_hat, size_t n, float decay,
               float alpha, float beta_1, float one_minus_beta_1, float beta_2,
               float one_minus_beta_2, float epsilon) {
  in_pieces(n, [=](size_t lo, size_t hi) {
#pragma omp simd
    for (size_t i = lo; i < hi; ++i) {
      const float gi = g[i];
      const float mi = m[i] * beta_1 + gi * one_minus_beta_1;
      float vi = v[i] * beta_2 + (gi * gi) * one_minus_beta_2;
      m[i] = mi;
      v[i] = vi;
      if (kAmsgrad) {
        vi = max_nan(v_hat[i], vi);
        v_hat[i] = vi;
      }
      w[i] = w[i] * decay - (mi * alpha) / (std::sqrt(vi) + epsilon);
    }
  });
}

template <bool kCentered, bool kMomentum>
void rmsprop_pass(float* w, const float* g, float* v, float* average_grad, float* mom, size_t n,
                  float decay, float lr, float rho, float one_minus_rho, float epsilon,
                  float momentum) {
  in_pieces(n, [=](size_t lo, size_t hi) {
#pragma omp simd
    for (size_t i = lo; i < hi; ++i) {
      const float gi = g[i];
      const float vi = v[i] * rho + (gi * gi) * one_minus_rho;
      v[i] = vi;
      float d = vi + epsilon;
      if (kCentered) {
        const float ai = average_grad[i] * rho + gi * one_minus_rho;
        average_grad[i] = ai;
        d = d - ai * ai;
      }
      float step = (gi * lr) / std::sqrt(d);
      if (kMomentum) {
        step = mom[i] * momentum + step;
        mom[i] = step;
      }
      w[i] = w[i] * decay - step;
    }
  });
}

template <bool kMomentum, bool kNesterov>
void sgd_pass(float* w, const float* g, float* mom, size_t n, float decay, float lr,
              float momentum) {
  in_pieces(n, [=](size_t lo, size_t hi) {
#pragma omp simd
    for (size_t i = lo; i < hi; ++i) {
      const float step = g[i] * lr;
      const float wi = w[i] * decay;
      if (!kMomentum) {
        w[i] = wi - step;
      } else {
        const float mi = mom[i] * momentum - step;
        mom[i] = mi;
        w[i] = kNesterov ? (wi - step) + mi * momentum : wi + mi;
      }
    }
  });
}

}  // namespace

void adam_update(float* w, const float* g, float* m, float* v, float* v_hat, size_t n, float decay,
                 float alpha, float beta_1, float one_minus_beta_1, float beta_2,
                 float one_minus_beta_2, float epsilon) {
  (v_hat ? adam_pass<true> : adam_pass<false>)(w, g, m, v, v_hat, n, decay, alpha, beta_1,
                                               one_minus_beta_1, beta_2, one_minus_beta_2, epsilon);
}

void rmsprop_update(float* w, const float* g, float* v, float* average_grad, float* mom, size_t n,
                    float decay, float lr, float rho, float one_minus_rho, float epsilon,
                    float momentum) {
  auto pass = average_grad ? (mom ? rmsprop_pass<true, true> : rmsprop_pass<true, false>)
                           : (mom ? rmsprop_pass<false, true> : rmsprop_pass<false, false>);
  pass(w, g, v, average_grad, mom, n, decay, lr, rho, one_minus_rho, epsilon, momentum);
}

void sgd_update(float* w, const float* g, float* mom, size_t n, float decay, float lr,
                float momentum, bool nesterov) {
  auto pass = !mom ? sgd_pass<false, false> : nesterov ? sgd_pass<true, true> : sgd_pass<true, false>;
  pass(w, g, mom, n, decay, lr, momentum);
}

void adagrad_update(float* w, const float* g, float* acc, size_t n, float decay, float lr,
                    float epsilon) {
  in_pieces(n, [=](size_t lo, size_t hi) {
#pragma omp simd
    for (size_t i = lo; i < hi; ++i) {
      const float gi = g[i];
      const float ai = acc[i] + gi * gi;
      acc[i] = ai;
      w[i] = w[i] * decay - (gi * lr) / std::sqrt(ai + epsilon);
    }
  });
}

}  // namespace fastlstm
