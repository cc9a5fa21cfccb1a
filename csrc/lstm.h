// The LSTM layer on dense input x (B,T,E): the input projection (affine), then the engine's
// time loops. Token input goes to the engine directly (engine.h); the cell is lstm_cell.h.
#pragma once

#include "engine.h"

namespace fastlstm {

// The whole layer on dense input x (B,T,E): affine, then lstm_forward.
//   kernel (E,4H), recurrent (H,4H), bias (4H); h_last (B,H) out; h_seq (B,T,H) and
//   c_last (B,H) out or null.
void lstm_forward_dense(Workspace& ws, const float* x, const float* kernel,
                        const float* recurrent, const float* bias, int B, int T, int E, int H,
                        float* h_last, float* h_seq, float* c_last, bool training);

// Its backward (pass the same x, kernel, recurrent; dh_seq, dc_last may be null): dx (B,T,E),
// dkernel (E,4H), drecurrent (H,4H), dbias (4H) out.
void lstm_backward_dense(Workspace& ws, const float* x, const float* kernel,
                         const float* recurrent, const float* dh_last, const float* dh_seq,
                         const float* dc_last, float* dx, float* dkernel, float* drecurrent,
                         float* dbias);

}  // namespace fastlstm
