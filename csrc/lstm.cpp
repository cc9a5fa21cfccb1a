// The LSTM layer on dense input. See lstm.h.
#include "lstm.h"

#include "affine.h"

namespace fastlstm {

void lstm_forward_dense(Workspace& ws, const float* x, const float* kernel,
                        const float* recurrent, const float* bias, int B, int T, int E, int H,
                        float* h_last, float* h_seq, float* c_last, bool training) {
  const size_t N = size_t(B) * T;
  grow(ws.table, N * 4 * H);
  affine(x, kernel, bias, int(N), E, 4 * H, ws.table.data());
  lstm_forward(ws, ws.table.data(), int(N), false, -1, recurrent, B, T, H, h_last, h_seq,
               c_last, training);
  ws.E = E;
}

void lstm_backward_dense(Workspace& ws, const float* x, const float* kernel,
                         const float* recurrent, const float* dh_last, const float* dh_seq,
                         const float* dc_last, float* dx, float* dkernel, float* drecurrent, float* dbias) {
  const size_t N = size_t(ws.B) * ws.T;
  grow(ws.dtable, N * 4 * ws.H);
  lstm_backward(ws, recurrent, dh_last, dh_seq, dc_last, ws.dtable.data(), drecurrent);
  affine_backward(x, kernel, ws.dtable.data(), int(N), ws.E, 4 * ws.H, dx, dkernel,
                            dbias);
}

}  // namespace fastlstm
