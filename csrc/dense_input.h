// A recurrent layer on dense input x (B,T,E): the input projection (affine), then the
// engine's time loops. Token input goes to the engine directly (engine.h). G = Cell::kGates.
#pragma once

#include "engine.h"

namespace fastlstm {

// The whole layer on dense input x (B,T,E): affine, then rnn_forward<Cell>.
//   kernel (E,G*H), recurrent (H,G*H), bias (G*H); recurrent_bias (G*H) or null (GRU's);
//   masked, rec_dropout: ws.valid (B,T), ws.rec_keep (B,G,H) hold a mask, dropout's keep-masks
//   (engine.h);
//   h_last (B,H) out; h_seq (B,T,H) and c_last (B,H) out or null.
template <class Cell>
void rnn_forward_dense(Workspace& ws, const float* x, const float* kernel, const float* recurrent,
                       const float* bias, const float* recurrent_bias, bool masked, bool rec_dropout,
                       int B, int T, int E, int H, float* h_last, float* h_seq, float* c_last,
                       bool training);

// Its backward (pass the same x, kernel, recurrent; dh_seq, dc_last may be null): dx (B,T,E),
// dkernel (E,G*H), drecurrent (H,G*H), dbias (G*H) out; drecurrent_bias (G*H) out or null.
template <class Cell>
void rnn_backward_dense(Workspace& ws, const float* x, const float* kernel, const float* recurrent,
                        const float* dh_last, const float* dh_seq, const float* dc_last, float* dx,
                        float* dkernel, float* drecurrent, float* dbias, float* drecurrent_bias);

}  // namespace fastlstm
