// The time-loop engine: forward and backward through time over chunks of rows owned by
// threads for all steps, with the leading-padding skip (today for the LSTM cell).
//
// The input projection x @ kernel + bias is done outside the time loop (affine),
// so the recurrence reads each step's projected input as a row of a "table" (U,4H):
//   - dense input:  table = x @ kernel + bias for every (b,t), row index b*T + t;
//   - token input:  table = embeddings[unique tokens] @ kernel + bias, row index from ids (B,T).
// With token input, leading padding is skipped exactly: every row starts with a run of
// `pad_row` from the zero state, which follows one shared trajectory; each row starts at
// its first real token from the trajectory's state (and sends its gradient back through it).
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "buffers.h"

namespace fastlstm {

// Everything the forward pass keeps for backward, reused between calls (grown, never
// shrunk). Time-major: block t holds all slots of step t. The batch is split into chunks (a
// thread's unit of work); each chunk is a contiguous slot range: first its own copy of the
// padding trajectory (one row fed pad_row from the zero state, active for the first
// traj_end steps), then its rows sorted by start step, so the rows active at step t are a
// contiguous range. With a private trajectory per chunk, threads never wait for each other.
// Results never depend on where an array starts (tested): the kernels' packet loops run at
// fixed offsets, and Eigen's, which peel to alignment, only do elementwise adds and products.
struct Workspace {
  std::mutex busy;                 // one forward/backward at a time per workspace
  int B = 0, T = 0, H = 0, U = 0;  // shapes of the last forward
  int E = 0;                       // input width (dense input only)
  int nslots = 0;                  // B rows + one trajectory slot per chunk
  bool has_forward = false;
  bool token_input = false;
  int pad_row = -1;
  std::vector<int32_t> ids;        // (B,T) token ids of the last forward (token input)
  std::vector<int> row_of_slot;    // (nslots) batch row, -1 for a trajectory slot
  std::vector<int> start;          // (nslots) per row slot: first step that is not leading padding
  std::vector<int> chunk_lo;       // (nchunks+1) slot range of each chunk; chunk_lo[j] = its trajectory
  std::vector<int> traj_end;       // (nchunks) steps its trajectory runs: its rows' largest start
  int max_chunk = 0;               // slots in the largest chunk
  FloatBuf gates;        // (T,nslots,4H) activated gates i,f,g,o (inference: one block)
  FloatBuf cs;           // (T+1,nslots,H) block t = c_{t-1}; block 0 = zero state (inference: 2)
  FloatBuf hs;           // (2,nslots,H) block t % 2 = h_{t-1} (h is recomputed in backward)
  FloatBuf dh, dc;       // (nslots,H) running gradients wrt the state
  FloatBuf tanh_c;       // (nslots,H) backward: tanh(c) of a step, computed once, used twice
  std::vector<int> tanh_step;  // (nslots) backward: the step whose tanh(c) tanh_c holds
  FloatBuf rec_packed;   // recurrent (H,4H) in column panels, for h @ recurrent
  FloatBuf rect_packed;  // recurrent^T (4H,H) in column panels, for dz @ recurrent^T
  FloatBuf dz_group;     // per chunk: dL/dz rows of a few steps, row stride padded to 16
  FloatBuf h_group;      // per chunk: the matching h_{t-1} rows
  std::vector<int32_t> row_group;  // per chunk: the matching table rows
  FloatBuf drec_chunk;   // (nchunks,H,4H) per-chunk drecurrent partial sums
  FloatBuf dtable_chunk; // (nchunks-1,U,4H) token input: chunks 1.. scatter into their own
  FloatBuf table;        // (B*T,4H) dense input only: x @ kernel + bias
  FloatBuf dtable;       // (B*T,4H) dense input only: its gradient
};

// Forward through time.
//   table (U,4H): projected inputs. token_input: ws.ids (B,T) holds rows of table, checked by
//   the caller (who copies them there, so no other thread can change them); else dense
//   input, row b*T+t (U == B*T). pad_row: the table row of the padding token, or -1 for none.
//   recurrent (H,4H). h_last (B,H) out; h_seq (B,T,H) out, may be null; c_last (B,H) out
//   (the final cell state), may be null.
// With training, keeps in ws what backward needs; without, keeps only the current step.
void lstm_forward(Workspace& ws, const float* table, int U, bool token_input, int pad_row,
                  const float* recurrent, int B, int T, int H, float* h_last, float* h_seq,
                  float* c_last, bool training);

// Backward through time of the last lstm_forward on ws, a training one (pass the same
// recurrent).
//   dh_last (B,H); dh_seq (B,T,H) or null; dc_last (B,H) (gradient of c_last) or null.
//   dtable (U,4H) out (overwritten); drecurrent (H,4H) out (overwritten).
void lstm_backward(Workspace& ws, const float* recurrent, const float* dh_last,
                   const float* dh_seq, const float* dc_last, float* dtable, float* drecurrent);

}  // namespace fastlstm
