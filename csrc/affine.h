// Affine maps on the product kernel: the recurrent layers' input projection and the Dense
// layer, and their backward. Work is split in row pieces fixed by the shapes, never by the
// thread count, so results are bitwise the same for any number of threads.
#pragma once

#include <cstdint>

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

// Input dropout (Keras's: a keep-mask per sample for every step, one per gate): sample b
// owns rows [lo[b], lo[b+1]) of x (N,E) (its steps, or its distinct tokens), and z's rows
// there are x_b @ (kernel ⊙ mask_b) + bias, where column block g (M/G columns) of kernel is
// scaled row-wise by mask[b,g] (E): the same as (x ⊙ mask[b,g]) @ kernel_g, in one product
// per sample over all M columns. lo (B+1) nondecreasing from 0 to N; mask (B,G,E), G divides M.
void affine_masked(const float* x, const int32_t* lo, const float* kernel, const float* bias,
                   const float* mask, int B, int E, int M, int G, float* z);

// Its backward, given dz (N,M): dx_b = dz_b @ (kernel ⊙ mask_b)^T (dx may be null);
// dkernel = sum_b mask_b ⊙ (x_b^T @ dz_b); dbias = sum of dz's rows.
void affine_masked_backward(const float* x, const int32_t* lo, const float* kernel, const float* mask,
                            const float* dz, int B, int E, int M, int G, float* dx, float* dkernel,
                            float* dbias);

// The Embedding's backward (its output is one-hot(ids) @ table): out (V,E), zeroed by the
// caller, gets out[ids[n]] += values[n] for n = 0..N-1, every entry summed in n order (the
// sums of numpy's np.add.at on float32); threads split the columns, so any thread count
// gives the same. ids (N) in [0, V), out's rows, checked by the caller.
void add_rows_at(const int32_t* ids, const float* values, int N, int E, float* out);

}  // namespace fastlstm
