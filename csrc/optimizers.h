// The optimizers' updates in Keras 3's forms (the operation order Keras computes on the torch
// backend), float32, one pass over each parameter array.
#pragma once

#include <cstddef>

namespace fastlstm {

// Every update is in place and elementwise over n floats, each operation rounded to float32 on
// its own as numpy does (this file is compiled without fused multiply-add), and starts with
// Keras's weight decay w = w * decay (decay = 1 - weight_decay * lr from the caller; 1 without
// weight decay: exact). A null state array: that option is off.

// Adam / AdamW: m = m * beta_1 + g * one_minus_beta_1;  v = v * beta_2 + (g * g) * one_minus_beta_2;
// amsgrad (v_hat given): v_hat = max(v_hat, v), used for v;  w = w - (m * alpha) / (sqrt(v) + epsilon)
// with alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) from the caller.
void adam_update(float* w, const float* g, float* m, float* v, float* v_hat, size_t n, float decay,
                 float alpha, float beta_1, float one_minus_beta_1, float beta_2,
                 float one_minus_beta_2, float epsilon);

// RMSprop: v = v * rho + (g * g) * one_minus_rho;  d = v + epsilon;
// centered (average_grad given): a = a * rho + g * one_minus_rho;  d = d - a * a;
// step = (g * lr) / sqrt(d);  with momentum (mom given): mom = mom * momentum + step, step = mom;
// w = w - step.
void rmsprop_update(float* w, const float* g, float* v, float* average_grad, float* mom, size_t n,
                    float decay, float lr, float rho, float one_minus_rho, float epsilon,
                    float momentum);

// SGD: without mom, w = w - g * lr; with: mom = mom * momentum - g * lr, then w = w + mom, or
// with nesterov w = (w - g * lr) + mom * momentum.
void sgd_update(float* w, const float* g, float* mom, size_t n, float decay, float lr,
                float momentum, bool nesterov);

// Adagrad: acc = acc + g * g;  w = w - (g * lr) / sqrt(acc + epsilon).
void adagrad_update(float* w, const float* g, float* acc, size_t n, float decay, float lr,
                    float epsilon);

}  // namespace fastlstm
