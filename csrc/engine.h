// The time-loop engine, one for every cell (cells.h: the cell is a template parameter):
// forward and backward through time over chunks of rows owned by threads (or teams of
// threads, TimeLoopSplit) for all steps, with the leading-padding skip. G = Cell::kGates.
//
// The input projection x @ kernel + bias is done outside the time loop (affine),
// so the recurrence reads each step's projected input as a row of a "table" (U,G*H):
//   - dense input:  table = x @ kernel + bias for every (b,t), row index b*T + t;
//   - token input:  table = embeddings[unique tokens] @ kernel + bias, row index from ids (B,T)
//                   (input dropout: each sample's own distinct tokens, @ its masked kernel).
// With token input, leading padding is skipped exactly: every row starts with a run of
// `pad_row` from the zero state, which follows one shared trajectory; each row starts at
// its first real token from the trajectory's state (and sends its gradient back through it).
// With a mask (Keras's: a masked step keeps the state), each row starts at its first real
// step from the zero state, masked steps inside are copies, and a row's work ends at its
// last real step; no trajectory runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "buffers.h"
#include "cells.h"

namespace fastlstm {

// Everything the forward pass keeps for backward, reused between calls (grown, never
// shrunk). Time-major: block t holds all slots of step t. The batch is split into chunks (a
// thread's or a team's unit of work); each chunk is a contiguous slot range: first its own copy of the
// padding trajectory (one row fed pad_row from the zero state, active for the first
// traj_end steps), then its rows sorted by start step, so the rows active at step t are a
// contiguous range. With a private trajectory per chunk, chunks never wait for each other.
// Results never depend on where an array starts (tested): the kernels' packet loops run at
// fixed offsets, and Eigen's, which peel to alignment, only do elementwise adds and products.
struct Workspace {
  std::mutex busy;                 // one forward/backward at a time per workspace
  int B = 0, T = 0, H = 0, U = 0;  // shapes of the last forward
  const char* cell = nullptr;      // its cell's Cell::kName, Act::kName, RecAct::kName: a
  const char* activation = nullptr;            // backward runs the same cell
  const char* recurrent_activation = nullptr;
  int E = 0;                       // input width (dense input only)
  int nslots = 0;                  // B rows + one trajectory slot per chunk
  bool has_forward = false;
  bool token_input = false;
  bool shared_rows = false;        // token input whose table rows several batch rows read
                                   // (found in training forwards; set, unused, at inference)
  bool dense_input = false;        // the last forward was rnn_forward_dense (dense_input.h)
  bool masked = false;             // the last forward took a mask: `valid`
  bool rec_dropout = false;        // ... and recurrent dropout: `rec_keep`
  int pad_row = -1;
  std::vector<int32_t> ids;        // (B,T) token ids of the last forward (token input)
  std::vector<uint8_t> valid;      // (B,T) its mask, in the order steps are taken: 0 = a masked step
  FloatBuf rec_keep;               // (B,G,H) recurrent dropout: h_{t-1} of row b is scaled by
                                   // rec_keep[b,g] in gate g's product (0 or 1/(1-rate))
  FloatBuf rd_rows;                // recurrent dropout, per chunk: rows of scaled h or of dz @ R_g^T
  std::vector<int> row_of_slot;    // (nslots) batch row, -1 for a trajectory slot
  std::vector<int> start;          // (nslots) per row slot: first step that is not leading padding
  std::vector<int> chunk_lo;       // (nchunks+1) slot range of each chunk; chunk_lo[j] = its trajectory
  std::vector<int> traj_end;       // (nchunks) steps its trajectory runs: its rows' largest start
  int max_chunk = 0;               // slots in the largest chunk
  std::atomic<int> forward_team{1};   // threads per chunk in the last forward / backward (1: one
  std::atomic<int> backward_team{1};  // thread per chunk; more: a team splitting each step's units)
  FloatBuf work;         // (T,nslots,kKept*H) what each step keeps (inference: one block)
  FloatBuf states;       // (T+1,nslots,H) block t = kept state (c, or h) of step t-1; block 0 =
                         // zero state (inference: 2 blocks, t % 2)
  FloatBuf hs;           // cell-state cells: (2,nslots,H) block t % 2 = h_{t-1} (h is recomputed
                         // in backward); else h is the kept state
  FloatBuf product;      // separate-product cells: per chunk, rows h_{t-1} @ recurrent (G*H)
  FloatBuf dh, dc;       // (nslots,H) running gradients wrt h and c
  FloatBuf aux;          // (nslots,H) backward: Cell::aux (A(c)) of a step, computed once, used twice
  std::vector<int> aux_step;  // (team members,nslots) backward: the step whose aux each slot
                              // holds, a record per member (each computes its units' aux)
  FloatBuf rec_packed;   // recurrent (H,G*H) in column panels, for h @ recurrent (recurrent
                         // dropout: each gate's (H,H) block packed apart)
  FloatBuf rect_packed;  // recurrent^T (G*H,H) in column panels, for dz @ recurrent^T (idem)
  FloatBuf dz_group;     // per chunk: dL/d(h @ recurrent) rows of a few steps, stride padded to 16
  FloatBuf dzin_group;   // separate-product cells: the matching dL/d(table row) rows
  FloatBuf h_group;      // per chunk: the matching h_{t-1} rows (recurrent dropout: G*H wide,
                         // scaled per gate)
  std::vector<int32_t> row_group;  // per chunk: the matching table rows
  FloatBuf drec_chunk;   // (nchunks,H,G*H) per-chunk drecurrent partial sums
  FloatBuf drb_chunk;    // (nchunks,G*H) per-chunk drecurrent_bias partial sums
  FloatBuf dtable_chunk; // (nchunks-1,U,G*H) shared_rows: chunks 1.. scatter into their own
  FloatBuf table;        // (B*T,G*H) dense input only: x @ kernel + bias
  FloatBuf dtable;       // (B*T,G*H) dense input only: its gradient
};

// How the time loops use threads. Chunks of rows are the pieces the results are summed
// over (fixed by the problem size). A thread owns a chunk for all its steps; when there are
// more threads than chunks, a team of `team` threads takes each chunk (chunk j: team j % teams)
// and member m runs units [unit_lo[m], unit_lo[m+1]) of every step: whole 16-column panels of
// each gate's products and those units' cell math, the team meeting once per step (twice per
// group of backward steps). Every float is computed by the same operations in the same order
// whichever thread computes it, so results are bitwise the same for any thread count.
// A team is only as large as the work per step pays for (a barrier costs microseconds).
// Teams need gates whose products read only h_{t-1} (not gated: no recurrent dropout, not
// reset_after=False).
struct TimeLoopSplit {
  int team = 1, teams = 1, H = 0;
  int unit_lo(int m) const;  // m in [0, team]
};
// shared_rows: table rows read by several batch rows (tokens), whose gradient chunks sum apart.
int time_loop_chunks(int B, int T, int U, bool shared_rows, bool training);
// rows: the largest chunk's; G: gates per unit. A member gets at least kMemberFlops per step.
TimeLoopSplit time_loop_split(int nchunks, int rows, int H, int G, int threads, bool splittable);

// Forward through time.
//   table (U,G*H): projected inputs. token_input: ws.ids (B,T) holds rows of table, checked by
//   the caller (who copies them there, so no other thread can change them); else dense
//   input, row b*T+t (U == B*T). pad_row: the table row of the padding token, or -1 for none.
//   masked: ws.valid (B,T) holds the mask (set by the caller, like ids); pad_row is then unused.
//   rec_dropout: ws.rec_keep (B,G,H) holds recurrent dropout's scaled keep-masks (Keras's
//   implementation 1: a mask per gate); pad_row must be -1 (each row's padding differs).
//   recurrent (H,G*H); recurrent_bias (G*H) or null (separate-product cells only: GRU's).
//   h_last (B,H) out; h_seq (B,T,H) out, may be null; c_last (B,H) out (the final cell state,
//   cell-state cells), may be null.
// With training, keeps in ws what backward needs; without, keeps only the current step.
template <class Cell>
void rnn_forward(Workspace& ws, const float* table, int U, bool token_input, int pad_row,
                 bool masked, bool rec_dropout, const float* recurrent,
                 const float* recurrent_bias, int B, int T, int H, float* h_last, float* h_seq,
                 float* c_last, bool training);

// Backward through time of the last rnn_forward<Cell> on ws, a training one (pass the same
// recurrent).
//   dh_last (B,H); dh_seq (B,T,H) or null; dc_last (B,H) (gradient of c_last) or null.
//   dtable (U,G*H) out (overwritten); drecurrent (H,G*H) out (overwritten);
//   drecurrent_bias (G*H) out or null (overwritten).
template <class Cell>
void rnn_backward(Workspace& ws, const float* recurrent, const float* dh_last,
                  const float* dh_seq, const float* dc_last, float* dtable, float* drecurrent,
                  float* drecurrent_bias);

}  // namespace fastlstm
