// Adam in Keras's form, float32, one pass over each parameter array.
#pragma once

#include <cstddef>

namespace fastlstm {

// In place, elementwise, with each operation rounded to float32 as numpy/Keras do it
// (no fused multiply-add):
//   m += (g - m) * one_minus_beta_1;  v += (g * g - v) * one_minus_beta_2;
//   w -= (m * alpha) / (sqrt(v) + epsilon)
// with alpha = learning_rate * sqrt(1 - beta_2^t) / (1 - beta_1^t) computed by the caller.
void adam_update(float* w, const float* g, float* m, float* v, size_t n, float alpha,
                 float one_minus_beta_1, float one_minus_beta_2, float epsilon);

}  // namespace fastlstm
