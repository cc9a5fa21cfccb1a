// A recurrent layer on dense input. See dense_input.h.
#include "dense_input.h"

#include "affine.h"

namespace fastlstm {

template <class Cell>
void rnn_forward_dense(Workspace& ws, const float* x, const float* kernel, const float* recurrent,
                       const float* bias, const float* recurrent_bias, bool masked, bool rec_dropout,
                       int B, int T, int E, int H, float* h_last, float* h_seq, float* c_last,
                       bool training) {
  const size_t N = size_t(B) * T;
  const int GH = Cell::kGates * H;
  grow(ws.table, N * GH);
  affine(x, kernel, bias, int(N), E, GH, ws.table.data());
  rnn_forward<Cell>(ws, ws.table.data(), int(N), false, -1, masked, rec_dropout, recurrent,
                    recurrent_bias, B, T, H, h_last, h_seq, c_last, training);
  ws.E = E, ws.dense_input = true;
}

template <class Cell>
void rnn_backward_dense(Workspace& ws, const float* x, const float* kernel, const float* recurrent,
                        const float* dh_last, const float* dh_seq, const float* dc_last, float* dx,
                        float* dkernel, float* drecurrent, float* dbias, float* drecurrent_bias) {
  const size_t N = size_t(ws.B) * ws.T;
  const int GH = Cell::kGates * ws.H;
  grow(ws.dtable, N * GH);
  rnn_backward<Cell>(ws, recurrent, dh_last, dh_seq, dc_last, ws.dtable.data(), drecurrent,
                     drecurrent_bias);
  affine_backward(x, kernel, ws.dtable.data(), int(N), ws.E, GH, dx, dkernel, dbias);
}

#define FASTLSTM_DENSE_INPUT(Cell)                                                               \
  template void rnn_forward_dense<Cell>(Workspace&, const float*, const float*, const float*,    \
                                        const float*, const float*, bool, bool, int, int, int,   \
                                        int, float*, float*, float*, bool);                      \
  template void rnn_backward_dense<Cell>(Workspace&, const float*, const float*, const float*,   \
                                         const float*, const float*, const float*, float*,       \
                                         float*, float*, float*, float*);
FASTLSTM_FOR_EACH_CELL(FASTLSTM_DENSE_INPUT)

}  // namespace fastlstm
