// Affine maps on the product kernel: the recurrent layers' input projection and the Dense
// layer, and their backward. Work is split in row pieces fixed by the shapes, never by the
// thread count, so results are bitwise the same for any number of threads.
#pragma once

namespace fastlstm {

// z (N,M) = x (N,E) @ kernel (E,M) + bias (M): the LSTM's input projection (M = 4H), and
// the Dense layer.
void affine(const float* x, const float* kernel, const float* bias, int N, int E,
                      int M, float* z);

// Backward of affine, given dz (N,M):
//   dx (N,E) = dz @ kernel^T ; dkernel (E,M) = x^T @ dz ; dbias (M) = sum_n dz.
// dx may be null (not needed).
void affine_backward(const float* x, const float* kernel, const float* dz, int N,
                               int E, int M, float* dx, float* dkernel, float* dbias);

}  // namespace fastlstm
