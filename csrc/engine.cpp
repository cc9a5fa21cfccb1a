// The time-loop engine. See engine.h.
#include "engine.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <numeric>
#include <thread>

#include "gemm.h"
#include "cells.h"
#include "threads.h"

namespace fastlstm {

// Work is split into pieces (chunks of batch rows, row panels or k panels of a GEMM) fixed
// by the problem size only, never by the thread count (a team's blocks of units, below, only
// choose who computes a float, not how): each piece is computed the same way
// whichever thread takes it, so results are bitwise identical for any number of threads.

// Chunks of rows: at least 2, one per 64 rows. Training on table rows shared between batch
// rows (tokens): chunks 1.. keep their own (U,G*H) table gradient, so their number is bounded
// to keep that memory within the activations' (B*T rows of G*H).
int time_loop_chunks(int B, int T, int U, bool shared_rows, bool training) {
  int nchunks = std::max(2, (B + 63) / 64);
  if (training && shared_rows) nchunks = std::min(nchunks, std::max(2, int(1 + int64_t(B) * T / std::max(U, 1))));
  return std::max(1, std::min(nchunks, B));
}

// A team member's least work per step, in the flops of the three products of a training step
// (h @ R, dz @ R^T, h^T @ dz): below it the barrier costs more than the split saves (measured
// on 2 cores, LSTM, one row: H = 128, 0.39 MFLOP per step, ran 0.9x at 2 threads; H = 256,
// 1.6 MFLOP, 1.6x).
constexpr double kMemberFlops = 4e5;

TimeLoopSplit time_loop_split(int nchunks, int rows, int H, int G, int threads, bool splittable) {
  TimeLoopSplit split;
  split.H = H;
  const double step_flops = 3.0 * 2 * rows * H * G * H;  // per chunk
  const int worth = int(std::min<double>(step_flops / kMemberFlops, threads));
  split.team = splittable ? std::max(1, std::min({panel_count(H), threads / std::max(nchunks, 1), worth})) : 1;
  split.teams = std::max(1, threads / split.team);
  return split;
}

int TimeLoopSplit::unit_lo(int m) const { return std::min(H, kPanel * (panel_count(H) * m / team)); }

// A team's meeting point, once per step. It spins (a step takes microseconds), yielding the
// CPU once it has waited long (more threads than free CPUs).
class alignas(64) TeamBarrier {  // a cache line each: the teams' counters never share one
 public:
  void init(int n) { n_ = n; }
  void wait() {
    if (n_ == 1) return;
    const unsigned gen = gen_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; gen_.load(std::memory_order_acquire) == gen; ++spins) {
      if (spins < 4000) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  int n_ = 1;
  std::atomic<int> arrived_{0};
  std::atomic<unsigned> gen_{0};
};

// The teams of one parallel region: the split for the region's size and a barrier per team.
// plan and run are called by every thread of the region.
class Teams {
 public:
  explicit Teams(int threads) : meet_(new TeamBarrier[threads]) {}
  const TimeLoopSplit& plan(int nchunks, int rows, int H, int G, bool splittable) {
#pragma omp single
    {
      split_ = time_loop_split(nchunks, rows, H, G, omp_get_num_threads(), splittable);
      for (int k = 0; k < split_.teams; ++k) meet_[k].init(split_.team);
    }
    return split_;
  }
  int team() const { return split_.team; }
  // run_chunk(j, u0, u1, member, barrier) for every chunk j: by one thread (chunks go to
  // whichever thread is free), or by each member of a team for its units.
  template <class F>
  void run(int nchunks, F&& run_chunk) {
    if (split_.team == 1) {
#pragma omp for schedule(dynamic, 1)
      for (int j = 0; j < nchunks; ++j) run_chunk(j, 0, split_.H, 0, meet_[0]);
      return;
    }
    const int k = omp_get_thread_num() / split_.team, m = omp_get_thread_num() % split_.team;
    for (int j = k; k < split_.teams && j < nchunks; j += split_.teams) {
      run_chunk(j, split_.unit_lo(m), split_.unit_lo(m + 1), m, meet_[k]);
    }
#pragma omp barrier
  }

 private:
  TimeLoopSplit split_;
  std::unique_ptr<TeamBarrier[]> meet_;
};

// ---------------------------------------------------------------------------------------
// Forward through time

// The table row slot s reads at step t: the padding row for a trajectory slot, else its
// row's token id (token input, ws.ids (B,T)) or its position b*T + t (dense input).
static size_t table_row(const Workspace& ws, int s, int t) {
  const int b = ws.row_of_slot[s];
  return b < 0 ? size_t(ws.pad_row)
               : ws.token_input ? size_t(ws.ids[size_t(b) * ws.T + t]) : size_t(b) * ws.T + t;
}

// Whether slot s, past its start, takes step t: always, but for a step its mask hides.
static bool is_real(const Workspace& ws, int s, int t) {
  return !ws.masked || ws.row_of_slot[s] < 0 || ws.valid[size_t(ws.row_of_slot[s]) * ws.T + t];
}

template <class Cell>
void rnn_forward(Workspace& ws, const float* table, int U, bool token_input, int pad_row,
                 bool masked, bool rec_dropout, const float* recurrent,
                 const float* recurrent_bias, int B, int T, int H, float* h_last, float* h_seq,
                 float* c_last, bool training) {
  constexpr int G = Cell::kGates;
  const int GH = Cell::kGates * H, W = Cell::kKept * H;
  // Whether two batch rows read one table row (tokens; not a table of each row's own
  // inputs, as input dropout's): backward's chunks then scatter into tables of their own.
  bool shared_rows = token_input && !training;  // (inference: no backward, not looked at)
  if (token_input && training) {
    std::vector<int> reader(U, -1);  // the batch row that reads each table row
    for (int b = 0; b < B && !shared_rows; ++b) {
      for (int t = 0; t < T; ++t) {
        int& r = reader[ws.ids[size_t(b) * T + t]];
        if (r >= 0 && r != b) shared_rows = true;
        r = b;
      }
    }
  }
  const int nchunks = time_loop_chunks(B, T, U, shared_rows, training);
  const int nslots = B + nchunks;
  const size_t SH = size_t(nslots) * H, SW = size_t(nslots) * W;

  ws.has_forward = false;
  ws.cell = Cell::kName, ws.activation = Cell::Act::kName, ws.recurrent_activation = Cell::RecAct::kName;
  ws.B = B, ws.T = T, ws.H = H, ws.U = U, ws.E = 0, ws.nslots = nslots;
  ws.token_input = token_input;
  ws.shared_rows = shared_rows;
  ws.dense_input = false;
  ws.masked = masked;
  ws.rec_dropout = rec_dropout;
  ws.pad_row = token_input && !masked && !rec_dropout ? pad_row : -1;
  pad_row = ws.pad_row;

  grow(ws.row_of_slot, nslots), grow(ws.start, nslots);
  // Training keeps the work rows and states of every step for backward; inference only the
  // last ones. A cell-state cell's h is never kept: backward recomputes h_{t-1} = o_{t-1} *
  // tanh(c_{t-1}) (less memory traffic, and the tanh is needed there anyway).
  auto work_block = [&](int t) { return training ? t : 0; };
  auto state_block = [&](int t) { return training ? t : t % 2; };
  grow(ws.work, size_t(training ? T : 1) * SW);
  grow(ws.states, size_t(training ? T + 1 : 2) * SH);
  if (Cell::kCellState) grow(ws.hs, 2 * SH);

  // Start step of each row: the length of its leading run of padding, or of masked steps
  // (T: none real); with a mask, the end: one past its last real step.
  std::vector<int> row_start(B, 0), row_end(B, T);
  if (masked) {
    for (int b = 0; b < B; ++b) {
      const uint8_t* v = ws.valid.data() + size_t(b) * T;
      int s = 0, e = T;
      while (s < T && !v[s]) ++s;
      while (e > s && !v[e - 1]) --e;
      row_start[b] = s, row_end[b] = e;
    }
  } else if (token_input && pad_row >= 0) {
    for (int b = 0; b < B; ++b) {
      const int32_t* r = ws.ids.data() + size_t(b) * T;
      int s = 0;
      while (s < T && r[s] == pad_row) ++s;
      row_start[b] = s;
    }
  }

  // Slots: rows sorted by start (then by end, latest first: with post-padding the rows still
  // running stay one range), dealt to chunks back and forth (0 1 1 0 0 1 ...: balanced
  // work); each chunk's slot range is its trajectory slot, then its rows in that order.
  std::vector<int> order(B);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return row_start[a] < row_start[b] || (row_start[a] == row_start[b] && row_end[a] > row_end[b]);
  });
  std::vector<std::vector<int>> chunk_rows(nchunks);
  for (int k = 0; k < B; ++k) {
    const int i = k % nchunks, j = (k / nchunks) % 2 ? nchunks - 1 - i : i;
    chunk_rows[j].push_back(order[k]);
  }
  ws.chunk_lo.assign(nchunks + 1, 0);
  ws.traj_end.assign(nchunks, 0);
  ws.max_chunk = 0;
  {
    int slot = 0;
    for (int j = 0; j < nchunks; ++j) {
      ws.chunk_lo[j] = slot;
      ws.row_of_slot[slot] = -1;
      ws.start[slot] = 0;
      ++slot;
      for (int b : chunk_rows[j]) {
        ws.row_of_slot[slot] = b;
        ws.start[slot] = row_start[b];
        if (!masked) ws.traj_end[j] = row_start[b];  // sorted: the last is the largest
        ++slot;
      }
      ws.max_chunk = std::max(ws.max_chunk, slot - ws.chunk_lo[j]);
    }
    ws.chunk_lo[nchunks] = slot;
  }

  // Gate by gate (each gate's (H,H) block of recurrent packed apart) when a gate's product
  // reads its own rows (recurrent dropout's masks, reset_after=False's r * h_{t-1}), or when a
  // team shares the steps (a member's columns of each gate are then whole panels).
  const bool gated = rec_dropout || Cell::kResetBefore;
  grow(ws.rec_packed, G * panel_floats(H, H));  // >= panel_floats(H, GH), the whole packing
  if (Cell::kSeparateProduct) grow(ws.product, size_t(nchunks) * ws.max_chunk * GH);
  if (gated) grow(ws.rd_rows, size_t(nchunks) * ws.max_chunk * H);
  float* work = ws.work.data();
  float* states = ws.states.data();
  // h_{t-1}: block t % 2 of hs (cell-state cells), else the kept state of step t-1.
  auto h_at = [&](int t) {
    return Cell::kCellState ? ws.hs.data() + size_t(t % 2) * SH : states + size_t(state_block(t)) * SH;
  };
  auto input = [&](int s, int t) { return table + table_row(ws, s, t) * GH; };
  auto real = [&](int s, int t) { return is_real(ws, s, t); };
  // Zero initial state. Step 0 has no product, so h_{-1} is read only as the output when
  // T = 0 (it must not be a previous call's).
  std::fill_n(states, SH, 0.f);
  if (Cell::kCellState) std::fill_n(ws.hs.data(), SH, 0.f);

  const int nth = team_threads();
  Teams teams(nth);
#pragma omp parallel num_threads(nth)
  {
  const TimeLoopSplit& split = teams.plan(nchunks, ws.max_chunk, H, G, !gated);
  const bool by_gate = gated || split.team > 1;
  if (!by_gate) {
    pack_panels(recurrent, H, GH, false, ws.rec_packed.data());  // by the whole team
  } else {
    for (int g = 0; g < G; ++g) {
      pack_panels(recurrent + g * H, H, H, false, ws.rec_packed.data() + g * panel_floats(H, H), GH);
    }
  }
  // Chunk j's steps, units [u0, u1) of them (all: u0 = 0, u1 = H), meeting its team's other
  // members at `team` once per step, when h_{t-1} is whole.
  auto run_chunk = [&](int j, int u0, int u1, int /*member*/, TeamBarrier& team) {
    const int nu = u1 - u0;
    const int traj = ws.chunk_lo[j], hi = ws.chunk_lo[j + 1], S = ws.traj_end[j];
    float* product = Cell::kSeparateProduct ? ws.product.data() + size_t(j) * ws.max_chunk * GH : nullptr;
    float* hd = gated ? ws.rd_rows.data() + size_t(j) * ws.max_chunk * H : nullptr;
    const float* rbias = recurrent_bias ? recurrent_bias + u0 : nullptr;
    // h_{t-1} @ recurrent for slots [r0, r0+n) into c (row stride ldc) (+)=, columns of units
    // [u0, u1) of each gate; gated (one member: all units), gate by gate:
    // (h_{t-1} [* r for reset_after=False's h gate, after forward_reset has made r]
    // [* rec_keep[b,g]]) @ recurrent[:, gH:(g+1)H]. z: the slots' work rows (W apart).
    auto recurrent_product = [&](const float* hprev, int r0, int n, float* c, int ldc, bool acc, float* z) {
      if (!by_gate) return gemm_packed(hprev + size_t(r0) * H, H, 1, n, H, packed_b(ws.rec_packed.data(), H), GH, c, acc, ldc);
      for (int g = 0; g < G; ++g) {
        const bool reset = Cell::kResetBefore && g == G - 1;
        for (int s = r0; s < r0 + n && reset; ++s) {
          if constexpr (Cell::kResetBefore) {
            Cell::forward_reset(z + size_t(s - r0) * W, c + size_t(s - r0) * ldc, hprev + size_t(s) * H,
                                hd + size_t(s - r0) * H, H, H);
          }
        }
        const float* a = reset ? hd : hprev + size_t(r0) * H;  // (n,H) the gate's rows
        for (int s = r0; s < r0 + n && rec_dropout; ++s) {
          const float* keep = ws.rec_keep.data() + (size_t(ws.row_of_slot[s]) * G + g) * H;
          VecMap(hd + size_t(s - r0) * H, H) = ConstVecMap(a + size_t(s - r0) * H, H) * ConstVecMap(keep, H);
        }
        // the panels of units [u0, u1): u0 is a multiple of 16
        const PanelB rec_g = packed_b(ws.rec_packed.data() + g * panel_floats(H, H) + size_t(u0) * H, H);
        gemm_packed(rec_dropout ? hd : a, H, 1, n, H, rec_g, nu, c + g * H + u0, acc, ldc);
      }
    };
    // Copies units [u0, u1) of each of `blocks` blocks (H apart) of a row.
    auto copy_units = [&](float* dst, const float* src, int blocks) {
      if (nu == H) return (void)std::memcpy(dst, src, size_t(blocks) * H * sizeof(float));
      for (int k = 0; k < blocks; ++k) std::memcpy(dst + k * H + u0, src + k * H + u0, nu * sizeof(float));
    };
    int active = traj + 1;  // row slots [traj+1, active) are past their leading padding
    for (int t = 0; t < T; ++t) {
      float* hprev = h_at(t);
      float* hnext = h_at(t + 1);
      float* sprev = states + size_t(state_block(t)) * SH;
      float* snext = states + size_t(state_block(t + 1)) * SH;
      const int first_new = active;
      while (active < hi && ws.start[active] <= t) ++active;
      // Rows starting now continue from the trajectory's state h_{t-1} (and c_{t-1}), or
      // with a mask from the zero state.
      for (int s = first_new; t > 0 && s < active; ++s) {
        for (float* st : {hprev, Cell::kCellState ? sprev : nullptr}) {
          if (!st) continue;
          if (masked) std::fill_n(st + size_t(s) * H + u0, nu, 0.f);
          else copy_units(st + size_t(s) * H, st + size_t(traj) * H, 1);
        }
      }
      team.wait();  // every member's units of h_{t-1} are in place
      const int w0 = t < S ? traj : traj + 1;  // the trajectory runs while rows wait for it
      float* zt = work + size_t(work_block(t)) * SW;  // (nslots,W) this step's work rows
      // Slots [w0, active) in runs of real steps (without a mask: one run); a masked step
      // keeps the state (and, for backward's recomputed h, the work row that made it).
      for (int r0 = w0, r1; r0 < active; r0 = r1) {
        if (!real(r0, t)) {
          copy_units(hnext + size_t(r0) * H, hprev + size_t(r0) * H, 1);
          if (Cell::kCellState) {
            copy_units(snext + size_t(r0) * H, sprev + size_t(r0) * H, 1);
            if (training) copy_units(zt + size_t(r0) * W, zt - SW + size_t(r0) * W, Cell::kKept);
          }
          r1 = r0 + 1;
          continue;
        }
        for (r1 = r0 + 1; r1 < active && real(r1, t);) ++r1;
        const int n = r1 - r0;
        float* z = zt + size_t(r0) * W;  // (n,W)
        for (int s = r0; s < r1; ++s) copy_units(z + size_t(s - r0) * W, input(s, t), G);
        // h_{t-1} @ recurrent (h_{-1} = 0): into the work rows, or apart (n,G*H)
        if (!Cell::kSeparateProduct) {
          if (t > 0) recurrent_product(hprev, r0, n, z, W, true, z);
        } else if (t > 0) {
          recurrent_product(hprev, r0, n, product, GH, false, z);
        } else {
          for (int s = r0; s < r1; ++s) {
            for (int g = 0; g < G; ++g) std::fill_n(product + size_t(s - r0) * GH + g * H + u0, nu, 0.f);
          }
          for (int s = r0; s < r1; ++s) {  // z and r from the zero state (r * h_{-1} = 0)
            if constexpr (Cell::kResetBefore) {
              Cell::forward_reset(z + size_t(s - r0) * W, product + size_t(s - r0) * GH, hprev + size_t(s) * H,
                                  hd + size_t(s - r0) * H, H, H);
            }
          }
        }
        for (int s = r0; s < r1; ++s) {
          // Fetch what step t+1 copies in for this slot (its table row; in training, its
          // fresh work row, far beyond the caches) while step t computes.
          if (t + 1 < T) {
            const float* src = input(s, t + 1);
            for (int g = 0; g < G; ++g) {
              for (int c = u0; c < u1; c += 16) __builtin_prefetch(src + g * H + c);
            }
            float* dst = work + size_t(t + 1) * SW + size_t(s) * W;
            for (int k = 0; training && k < Cell::kKept; ++k) {
              for (int c = u0; c < u1; c += 16) __builtin_prefetch(dst + k * H + c, 1);
            }
          }
          Cell::forward(z + size_t(s - r0) * W + u0,
                        Cell::kSeparateProduct ? product + size_t(s - r0) * GH + u0 : nullptr,
                        rbias, sprev + size_t(s) * H + u0, snext + size_t(s) * H + u0,
                        hnext + size_t(s) * H + u0, nu, H);
        }
      }
      // Outputs; a position before a row's start takes the trajectory's state (with a mask:
      // zero, the state it keeps).
      for (int s = traj + 1; h_seq && s < hi; ++s) {
        float* out = h_seq + (size_t(ws.row_of_slot[s]) * T + t) * H;
        if (s >= active && masked) std::fill_n(out + u0, nu, 0.f);
        else copy_units(out, hnext + size_t(s < active ? s : traj) * H, 1);
      }
    }
    // Final states; an all-padding row's are the trajectory's (with a mask: zero).
    const float* hT = h_at(T);
    const float* cT = states + size_t(state_block(T)) * SH;
    for (int s = traj + 1; s < hi; ++s) {
      const size_t src = size_t(ws.start[s] < T ? s : traj) * H, dst = size_t(ws.row_of_slot[s]) * H;
      const bool zero = masked && ws.start[s] == T;
      for (auto [out, from] : {std::pair{h_last, hT}, std::pair{c_last, cT}}) {
        if (!out) continue;
        if (zero) std::fill_n(out + dst + u0, nu, 0.f);
        else copy_units(out + dst, from + src, 1);
      }
    }
  };
  // A thread (or team) owns a chunk for all time steps; a chunk's results do not depend on
  // which thread computes them.
  teams.run(nchunks, run_chunk);
  }
  ws.forward_team = teams.team();
  ws.has_forward = training;
}

// ---------------------------------------------------------------------------------------
// Backward through time

constexpr int kGroupSteps = 2;  // time steps per drecurrent product and dtable scatter

template <class Cell>
void rnn_backward(Workspace& ws, const float* recurrent, const float* dh_last,
                  const float* dh_seq, const float* dc_last, float* dtable, float* drecurrent,
                  float* drecurrent_bias) {
  constexpr int G = Cell::kGates;
  const int T = ws.T, H = ws.H, U = ws.U, GH = G * H, W = Cell::kKept * H;
  const int nslots = ws.nslots;
  const size_t SH = size_t(nslots) * H, SW = size_t(nslots) * W;
  const int nchunks = int(ws.chunk_lo.size()) - 1;
  const bool private_dtable = ws.shared_rows && nchunks > 1;  // rows read by several chunks
  const bool rd = ws.rec_dropout;
  const bool gated = rd || Cell::kResetBefore;  // as in forward: gate by gate
  const int HG = gated ? GH : H;  // floats per row of the group's h_{t-1} (a copy per gate)

  grow(ws.rect_packed, gated ? G * panel_floats(H, H) : panel_floats(GH, H));
  const PanelB rect = packed_b(ws.rect_packed.data(), GH);
  // Per chunk, a group of up to kGroupSteps steps: dz rows (row stride ldz, so drecurrent
  // reads them in place; recurrent dropout reads a gate's columns in place, the last gate's
  // last panel up to 15 floats past a row: kPanel floats of slack), the h_{t-1} rows and the
  // table rows they belong to.
  const int ldz = round_up(GH, kPanel);
  const int cap = kGroupSteps * ws.max_chunk;
  grow(ws.dz_group, size_t(nchunks) * cap * ldz + kPanel);
  if (Cell::kSeparateProduct) grow(ws.dzin_group, size_t(nchunks) * cap * GH);
  grow(ws.h_group, size_t(nchunks) * cap * HG);
  if (gated) grow(ws.rd_rows, size_t(nchunks) * ws.max_chunk * H);
  grow(ws.row_group, size_t(nchunks) * cap);
  grow(ws.drec_chunk, size_t(nchunks) * H * GH);
  if (drecurrent_bias) grow(ws.drb_chunk, size_t(nchunks) * GH);
  if (private_dtable) grow(ws.dtable_chunk, size_t(nchunks - 1) * U * GH);
  grow(ws.dh, SH);
  if (Cell::kCellState) grow(ws.dc, SH), grow(ws.aux, SH);
  const float* work = ws.work.data();
  const float* states = ws.states.data();
  float* dH = ws.dh.data();
  float* dC = Cell::kCellState ? ws.dc.data() : nullptr;

  // Initial state gradients: dh_last (and dc_last) for each row; an all-padding row's go
  // to its chunk's trajectory (its final state was the trajectory's; with a mask, the zero
  // state, which the trajectory keeps: it never runs).
  std::fill_n(dH, SH, 0.f);
  if (dC) std::fill_n(dC, SH, 0.f);
  for (int j = 0; j < nchunks; ++j) {
    const int traj = ws.chunk_lo[j];
    for (int s = traj + 1; s < ws.chunk_lo[j + 1]; ++s) {
      const size_t src = size_t(ws.row_of_slot[s]) * H, dst = size_t(ws.start[s] < T ? s : traj) * H;
      VecMap(dH + dst, H) += ConstVecMap(dh_last + src, H);
      if (dc_last && dC) VecMap(dC + dst, H) += ConstVecMap(dc_last + src, H);
    }
  }

  if (Cell::kCellState) grow(ws.aux_step, size_t(nslots) * std::max(1, panel_count(H)));  // per member
  const int nth = team_threads();
  Teams teams(nth);
#pragma omp parallel num_threads(nth)
  {
  teams.plan(nchunks, ws.max_chunk, H, G, !gated);  // by every thread of the region
  if (!gated) {
    pack_panels(recurrent, GH, H, true, ws.rect_packed.data());  // recurrent^T, by the whole team
  } else {  // each gate's block recurrent[:, gH:(g+1)H]^T (H,H)
    for (int g = 0; g < G; ++g) {
      pack_panels(recurrent + g * H, H, H, true, ws.rect_packed.data() + g * panel_floats(H, H), GH);
    }
  }
  // Chunk j's steps, units [u0, u1) of them (all: u0 = 0, u1 = H) by member `member` of
  // its team, which meets at `team` once per step (dz rows whole) and after each group.
  auto run_chunk = [&](int j, int u0, int u1, int member, TeamBarrier& team) {
    const int nu = u1 - u0;
    const int traj = ws.chunk_lo[j], hi = ws.chunk_lo[j + 1], S = ws.traj_end[j];
    // data() + offset, not &v[offset]: with B = 0 the group buffers are empty
    float* drec = ws.drec_chunk.data() + size_t(j) * H * GH;
    float* drb = drecurrent_bias ? ws.drb_chunk.data() + size_t(j) * GH : nullptr;
    float* dzg = ws.dz_group.data() + size_t(j) * cap * ldz;
    float* dzin = Cell::kSeparateProduct ? ws.dzin_group.data() + size_t(j) * cap * GH : nullptr;
    const size_t ldin = Cell::kSeparateProduct ? GH : ldz;  // row stride of the dz_in rows
    float* hg = ws.h_group.data() + size_t(j) * cap * HG;
    float* hd = gated ? ws.rd_rows.data() + size_t(j) * ws.max_chunk * H : nullptr;
    auto rect_g = [&](int g) { return packed_b(ws.rect_packed.data() + g * panel_floats(H, H), H); };
    // recurrent^T's panels of output units [u0, u1) (u0 is a multiple of 16)
    const PanelB rect_units{rect.b + size_t(u0 / kPanel) * rect.panel_stride, rect.panel_stride, rect.row_stride};
    auto keep_of = [&](int s, int g) { return ws.rec_keep.data() + (size_t(ws.row_of_slot[s]) * G + g) * H; };
    int32_t* rowg = ws.row_group.data() + size_t(j) * cap;
    // Rows shared between chunks (private_dtable): chunk 0 scatters into dtable, the others
    // into their own copies, each zeroing its own. Else the chunks share dtable: dense input
    // (every position its own row: each chunk zeroes its rows), or token rows read by one
    // batch row each (zeroed by the team before the chunks start).
    float* dtab = private_dtable && j > 0 ? ws.dtable_chunk.data() + size_t(j - 1) * U * GH : dtable;
    if (member == 0) {
      if (ws.token_input) {
        if (private_dtable) std::fill_n(dtab, size_t(U) * GH, 0.f);
      } else {
        for (int s = traj + 1; s < hi; ++s) {
          std::fill_n(dtable + size_t(ws.row_of_slot[s]) * T * GH, size_t(T) * GH, 0.f);
        }
      }
      std::fill_n(drec, size_t(H) * GH, 0.f);
      if (drb) std::fill_n(drb, GH, 0.f);
    }
    team.wait();
    int kk = 0;  // rows in the current group
    // Over the group's rows: drecurrent += h_{t-1}^T @ dz_rec_t, drecurrent_bias += dz_rec_t,
    // dtable[row] += dz_in_t; a member's columns: units [u0, u1) of each gate.
    auto flush = [&] {
      if (!gated && nu == H) {
        gemm_packed(hg, 1, H, H, kk, rowmajor_b(dzg, ldz), GH, drec, true);
      } else {  // gate g: (gate g's rows of h_{t-1})^T @ dz_rec_g
        const int hstride = gated ? H : 0;  // gated: a copy of h_{t-1} per gate
        for (int g = 0; g < G; ++g) {
          gemm_packed(hg + g * hstride, 1, HG, H, kk, rowmajor_b(dzg + g * H + u0, ldz), nu, drec + g * H + u0,
                      true, GH);
        }
      }
      for (int r = 0; r < kk; ++r) {
        const float* din = (Cell::kSeparateProduct ? dzin : dzg) + size_t(r) * ldin;
        const int blocks = nu == H ? 1 : G, width = nu == H ? GH : nu;  // whole rows, or G blocks
        for (int g = 0; g < blocks; ++g) {
          const int c = g * H + u0;
          VecMap(dtab + size_t(rowg[r]) * GH + c, width) += ConstVecMap(din + c, width);
          if (drb) VecMap(drb + c, width) += ConstVecMap(dzg + size_t(r) * ldz + c, width);
        }
      }
      kk = 0;
      team.wait();  // the group's rows are free again
    };
    // Cell::aux (A(c_t)) of slot s, units [u0, u1), computed at step t+1 (for h_t) and used
    // again at step t.
    float* aux = Cell::kCellState ? ws.aux.data() : nullptr;
    // which step's aux each slot holds (the member's own record)
    int* aux_step = Cell::kCellState ? ws.aux_step.data() + size_t(member) * nslots + traj : nullptr;
    if (aux_step) std::fill_n(aux_step, hi - traj, -1);
    auto aux_of = [&](int s, int t) -> const float* {  // aux of step t, slot s
      if constexpr (Cell::kCellState) {
        float* a = aux + size_t(s) * H + u0;
        if (aux_step[s - traj] != t) {
          Cell::aux(states + size_t(t + 1) * SH + size_t(s) * H + u0, a, nu, H);
          aux_step[s - traj] = t;
        }
        return a;
      }
      return nullptr;
    };

    int active = hi;  // row slots [traj+1, active) are past their leading padding at step t
    for (int t = T - 1; t >= 0; --t) {
      while (active > traj + 1 && ws.start[active - 1] > t) --active;
      const int w0 = t < S ? traj : traj + 1;
      const int n = active - w0;
      if (dh_seq) {
        for (int s = traj + 1; s < hi; ++s) {  // a padding position's output is the trajectory's (masked: zero)
          const int b = ws.row_of_slot[s];
          float* dst = dH + size_t(s < active ? s : traj) * H + u0;
          VecMap(dst, nu) += ConstVecMap(dh_seq + (size_t(b) * T + t) * H + u0, nu);
        }
      }
      if (n == 0) continue;
      if (kk + n > cap) flush();
      // Slots [w0, active) in runs of real steps, as forward took them; a masked step kept
      // the state, so its gradients pass on unchanged. First the cells (into the group's dz
      // rows from row kk0), then, once every member's units are in, dL/dh_{t-1}.
      const int kk0 = kk;
      for (int r0 = w0, r1; r0 < active; r0 = r1) {
        if (!is_real(ws, r0, t)) {
          r1 = r0 + 1;
          continue;
        }
        for (r1 = r0 + 1; r1 < active && is_real(ws, r1, t);) ++r1;
        float* dz = dzg + size_t(kk) * ldz;  // (r1-r0,G*H), row stride ldz
        for (int s = r0; s < r1; ++s) {
          // The activations (T,nslots,...) are far bigger than the caches: fetch what step t-1
          // reads of this row (work row, state of step t-2) while step t computes.
          if (t > 0) {
            const float* g = work + size_t(t - 1) * SW + size_t(s) * W;
            for (int k = 0; k < Cell::kKept; ++k) {
              for (int c = u0; c < u1; c += 16) __builtin_prefetch(g + k * H + c);
            }
            const float* cp = states + size_t(t - 1) * SH + size_t(s) * H;
            for (int c = u0; c < u1; c += 16) __builtin_prefetch(cp + c);
          }
          const int r = kk + s - r0;  // the slot's row in the group
          float* dz_rec = dz + size_t(s - r0) * ldz;
          Cell::backward(work + size_t(t) * SW + size_t(s) * W + u0, states + size_t(t) * SH + size_t(s) * H + u0,
                         aux_of(s, t), dH + size_t(s) * H + u0, dC ? dC + size_t(s) * H + u0 : nullptr,
                         (Cell::kSeparateProduct ? dzin + size_t(r) * ldin : dz_rec) + u0, dz_rec + u0, nu, H);
          if (member == 0) rowg[r] = int32_t(table_row(ws, s, t));
          // h_{t-1}; a row starting now took the trajectory's (with a mask: zero)
          float* h = hg + size_t(r) * HG;
          const bool starts = s > traj && ws.start[s] == t;
          if (t == 0 || (starts && ws.masked)) {
            std::fill_n(h + u0, nu, 0.f);
          } else if constexpr (Cell::kCellState) {  // recomputed: o_{t-1} * tanh(c_{t-1})
            const int src = starts ? traj : s;
            Cell::hidden(work + size_t(t - 1) * SW + size_t(src) * W + u0, aux_of(src, t - 1), h + u0, nu, H);
          } else {  // kept (forward copied the trajectory's into a starting row's slot)
            std::memcpy(h + u0, states + size_t(t) * SH + size_t(s) * H + u0, nu * sizeof(float));
          }
          // gated (one member: all units): gate g's copy, the rows its product read ([* r]
          // [* rec_keep]); gate 0's last, in place
          for (int g = G - 1; gated && g >= 0; --g) {
            VecMap hgt(h + g * H, H);
            if (g > 0) hgt = ConstVecMap(h, H);
            if (Cell::kResetBefore && g == G - 1) {
              hgt *= ConstVecMap(work + size_t(t) * SW + size_t(s) * W + H, H);  // r
            }
            if (rd) hgt *= ConstVecMap(keep_of(s, g), H);
          }
        }
        if constexpr (Cell::kResetBefore) {
          // d(r * h_{t-1}) = dz_rec_h @ U_h^T [* rec_keep], then the r gate's gradients
          gemm_packed(dz + (G - 1) * H, ldz, 1, r1 - r0, H, rect_g(G - 1), H, hd, false);
          for (int s = r0; s < r1; ++s) {
            const int r = kk + s - r0;
            float* d_rh = hd + size_t(s - r0) * H;
            if (rd) VecMap(d_rh, H) *= ConstVecMap(keep_of(s, G - 1), H);
            Cell::backward_reset(work + size_t(t) * SW + size_t(s) * W, states + size_t(t) * SH + size_t(s) * H,
                                 d_rh, dH + size_t(s) * H, dzin + size_t(r) * ldin, dz + size_t(s - r0) * ldz, H, H);
          }
        }
        kk += r1 - r0;
      }
      team.wait();  // every member's units of the group's new rows are in
      if (t == 0) break;  // h_{-1} is the zero state: no gradient to pass on
      // dL/dh_{t-1} (+)= dz_rec_t @ recurrent^T       (from ... + h_{t-1} @ recurrent);
      // recurrent dropout: (+)= sum_g (dz_rec_g @ recurrent_g^T) * rec_keep[b,g]
      for (int r0 = w0, r1, k0 = kk0; r0 < active; r0 = r1) {
        if (!is_real(ws, r0, t)) {
          r1 = r0 + 1;
          continue;
        }
        for (r1 = r0 + 1; r1 < active && is_real(ws, r1, t);) ++r1;
        const float* dz = dzg + size_t(k0) * ldz;
        k0 += r1 - r0;
        if (!gated) {
          gemm_packed(dz, ldz, 1, r1 - r0, GH, rect_units, nu, dH + size_t(r0) * H + u0, Cell::kDirectDh, H);
        }
        for (int g = 0; gated && g < (Cell::kResetBefore ? G - 1 : G); ++g) {
          if (!rd) {  // (reset_after=False's z and r gates)
            gemm_packed(dz + g * H, ldz, 1, r1 - r0, H, rect_g(g), H, dH + size_t(r0) * H, Cell::kDirectDh || g > 0);
            continue;
          }
          gemm_packed(dz + g * H, ldz, 1, r1 - r0, H, rect_g(g), H, hd, false);
          for (int s = r0; s < r1; ++s) {
            VecMap d(dH + size_t(s) * H, H);
            if (g == 0 && !Cell::kDirectDh) d = ConstVecMap(hd + size_t(s - r0) * H, H) * ConstVecMap(keep_of(s, g), H);
            else d += ConstVecMap(hd + size_t(s - r0) * H, H) * ConstVecMap(keep_of(s, g), H);
          }
        }
      }
      // Rows that started at t took the trajectory's state h_{t-1} (c_{t-1}): add their
      // gradients to the trajectory's (its own, if it ran at t, came from the product above).
      // With a mask they started from the zero state, a constant.
      for (int s = active - 1; !ws.masked && s > traj && ws.start[s] == t; --s) {
        VecMap(dH + size_t(traj) * H + u0, nu) += ConstVecMap(dH + size_t(s) * H + u0, nu);
        if (dC) VecMap(dC + size_t(traj) * H + u0, nu) += ConstVecMap(dC + size_t(s) * H + u0, nu);
      }
    }
    if (kk > 0) flush();
  };
  constexpr int kBlocks = 16;
  if (ws.token_input && !private_dtable) {  // one dtable for all chunks: zeroed before any scatters
#pragma omp for schedule(static)
    for (int p = 0; p < kBlocks; ++p) {
      const size_t u0 = size_t(U) * p / kBlocks, u1 = size_t(U) * (p + 1) / kBlocks;
      std::fill(dtable + u0 * GH, dtable + u1 * GH, 0.f);
    }  // (the implied barrier)
  }
  teams.run(nchunks, run_chunk);

  // drecurrent and dtable: the chunks' partial sums, added in chunk order, by row blocks.
#pragma omp for schedule(static)
  for (int p = 0; p < kBlocks; ++p) {
    const size_t r0 = size_t(H) * p / kBlocks, r1 = size_t(H) * (p + 1) / kBlocks;
    VecMap dR(drecurrent + r0 * GH, (r1 - r0) * GH);
    dR = ConstVecMap(ws.drec_chunk.data() + r0 * GH, (r1 - r0) * GH);
    for (int j = 1; j < nchunks; ++j) dR += ConstVecMap(ws.drec_chunk.data() + (j * size_t(H) + r0) * GH, (r1 - r0) * GH);
    const size_t u0 = size_t(U) * p / kBlocks, u1 = size_t(U) * (p + 1) / kBlocks;
    for (int j = 1; private_dtable && j < nchunks; ++j) {
      const float* part = ws.dtable_chunk.data() + size_t(j - 1) * U * GH;
      VecMap(dtable + u0 * GH, (u1 - u0) * GH) += ConstVecMap(part + u0 * GH, (u1 - u0) * GH);
    }
  }
  }
  ws.backward_team = teams.team();
  if (drecurrent_bias) {  // in chunk order
    VecMap drb(drecurrent_bias, GH);
    drb = ConstVecMap(ws.drb_chunk.data(), GH);
    for (int j = 1; j < nchunks; ++j) drb += ConstVecMap(ws.drb_chunk.data() + size_t(j) * GH, GH);
  }
}

#define FASTLSTM_ENGINE(Cell)                                                                    \
  template void rnn_forward<Cell>(Workspace&, const float*, int, bool, int, bool, bool,           \
                                  const float*,                                                   \
                                  const float*, int, int, int, float*, float*, float*, bool);     \
  template void rnn_backward<Cell>(Workspace&, const float*, const float*, const float*,          \
                                   const float*, float*, float*, float*);
FASTLSTM_FOR_EACH_CELL(FASTLSTM_ENGINE)

}  // namespace fastlstm
