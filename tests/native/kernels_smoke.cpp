// The kernels without Python, for a CPU this machine can only emulate (CI cross-compiles
// this for aarch64 and runs it under qemu-aarch64): the products (affine and its backward)
// over every tile shape, the LSTM and GRU forward through time against plain float64 loops,
// and bitwise the same results (forward and backward) on 1 and 2 threads, one row's by a team. Exit status 0: all passed.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "affine.h"
#include "engine.h"
#include "gemm.h"
#include "threads.h"

using namespace fastlstm;
using Vec = std::vector<float>;

static int failures = 0;
static void check(bool ok, const char* what, int a, int b, int c, double err) {
  if (!ok) std::printf("FAIL %s (%d, %d, %d): error %.3g\n", what, a, b, c, err), ++failures;
}
static Vec random_vec(std::mt19937& g, size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  Vec v(n);
  for (auto& x : v) x = d(g);
  return v;
}
// max |a - b| / max(1, max |b|)
static double rel_err(const Vec& a, const std::vector<double>& b) {
  double e = 0, m = 1;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::abs(a[i] - b[i])), m = std::max(m, std::abs(b[i]));
  return e / m;
}
static double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// z = x @ k + b, and dx = dz @ k^T, dk = x^T @ dz, db = sum dz, against float64 loops.
static void affine_case(std::mt19937& g, int N, int E, int M) {
  Vec x = random_vec(g, size_t(N) * E), k = random_vec(g, size_t(E) * M), b = random_vec(g, M),
      dz = random_vec(g, size_t(N) * M);
  Vec z(size_t(N) * M), dx(size_t(N) * E), dk(size_t(E) * M), db(M);
  affine(x.data(), k.data(), b.data(), N, E, M, z.data());
  affine_backward(x.data(), k.data(), dz.data(), N, E, M, dx.data(), dk.data(), db.data());
  std::vector<double> rz(z.size()), rdx(dx.size()), rdk(dk.size(), 0.0), rdb(M, 0.0);
  for (int n = 0; n < N; ++n) {
    for (int m = 0; m < M; ++m) {
      double s = b[m];
      for (int e = 0; e < E; ++e) s += double(x[n * E + e]) * k[e * M + m];
      rz[n * M + m] = s;
      rdb[m] += dz[n * M + m];
    }
    for (int e = 0; e < E; ++e) {
      double s = 0;
      for (int m = 0; m < M; ++m) s += double(dz[n * M + m]) * k[e * M + m], rdk[e * M + m] += double(x[n * E + e]) * dz[n * M + m];
      rdx[n * E + e] = s;
    }
  }
  for (auto [got, want, name] : {std::tuple{&z, &rz, "affine"}, std::tuple{&dx, &rdx, "affine dx"},
                                 std::tuple{&dk, &rdk, "affine dkernel"}, std::tuple{&db, &rdb, "affine dbias"}}) {
    const double e = rel_err(*got, *want);
    check(e <= 1e-5, name, N, E, M, e);
  }
}

// LSTM (gates i f c o) or GRU (reset_after: z r h, recurrent bias) through time from the zero
// state; table (B*T, G*H) holds x_t @ kernel + bias. Checks h_T against float64; returns it,
// then the gradients of a backward pass (for the 1 vs 2 threads comparison); teams: the
// threads per chunk that forward and backward ran.
template <class Cell>
static Vec recurrent_case(std::mt19937& g, int B, int T, int H, int (*teams)[2] = nullptr) {
  constexpr int G = Cell::kGates;
  const int GH = G * H;
  Vec table = random_vec(g, size_t(B) * T * GH), R = random_vec(g, size_t(H) * GH, 0.3f), rb = random_vec(g, GH);
  Vec h_last(size_t(B) * H), c_last(size_t(B) * H);
  Workspace ws;
  rnn_forward<Cell>(ws, table.data(), B * T, false, -1, false, false, R.data(), G == 3 ? rb.data() : nullptr,
                    B, T, H, h_last.data(), nullptr, G == 4 ? c_last.data() : nullptr, true);
  std::vector<double> want(size_t(B) * H);
  for (int b = 0; b < B; ++b) {
    std::vector<double> h(H, 0.0), c(H, 0.0), q(GH);
    for (int t = 0; t < T; ++t) {
      const float* x = table.data() + (size_t(b) * T + t) * GH;
      for (int j = 0; j < GH; ++j) {
        double s = G == 3 ? rb[j] : 0.0;
        for (int i = 0; i < H; ++i) s += h[i] * R[size_t(i) * GH + j];
        q[j] = s;
      }
      for (int u = 0; u < H; ++u) {
        if (G == 4) {
          const double in = sigmoid(x[u] + q[u]), f = sigmoid(x[H + u] + q[H + u]);
          const double cc = std::tanh(x[2 * H + u] + q[2 * H + u]), o = sigmoid(x[3 * H + u] + q[3 * H + u]);
          c[u] = f * c[u] + in * cc;
          q[u] = o * std::tanh(c[u]);  // h_t, kept apart until every unit has read h_{t-1}
        } else {
          const double z = sigmoid(x[u] + q[u]), r = sigmoid(x[H + u] + q[H + u]);
          const double hh = std::tanh(x[2 * H + u] + r * q[2 * H + u]);
          q[u] = z * h[u] + (1 - z) * hh;
        }
      }
      for (int u = 0; u < H; ++u) h[u] = q[u];
    }
    for (int u = 0; u < H; ++u) want[size_t(b) * H + u] = h[u];
  }
  const double e = rel_err(h_last, want);
  check(e <= 1e-5, Cell::kName, B, T, H, e);

  const Vec dh_last = random_vec(g, size_t(B) * H), dc_last = random_vec(g, size_t(B) * H);
  Vec dtable(table.size()), drec(R.size()), drb(GH);
  rnn_backward<Cell>(ws, R.data(), dh_last.data(), nullptr, G == 4 ? dc_last.data() : nullptr, dtable.data(),
                     drec.data(), G == 3 ? drb.data() : nullptr);
  if (teams) (*teams)[0] = ws.forward_team, (*teams)[1] = ws.backward_team;
  Vec out = h_last;
  for (const Vec* v : {&dtable, &drec, &drb}) out.insert(out.end(), v->begin(), v->end());
  return out;
}

int main() {
  std::printf("vector floats %d\n", vector_floats());
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::mt19937 g(7);
    for (int N : {1, 2, 5, 6, 7, 12, 13, 25}) {
      // column tiles of 1-4 panels, partial last vectors (100: 7 panels as 3 + 4; 400: 25 as 3-4 each)
      for (int M : {1, 3, 8, 16, 17, 31, 32, 33, 46, 48, 64, 80, 100, 129, 400}) affine_case(g, N, 5, M);
    }
    affine_case(g, 9, 300, 20);  // two k blocks
  }
  std::vector<Vec> runs;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::mt19937 g(11);
    Vec a = recurrent_case<LstmCell<>>(g, 7, 9, 13), b = recurrent_case<GruCell<>>(g, 5, 6, 17);
    a.insert(a.end(), b.begin(), b.end());
    // one row of many units: at 2 threads a team of 2 splits each step by units
    int lstm_teams[2], gru_teams[2];
    for (const Vec& v : {recurrent_case<LstmCell<>>(g, 1, 5, 300, &lstm_teams),
                         recurrent_case<GruCell<>>(g, 1, 4, 250, &gru_teams)}) {
      a.insert(a.end(), v.begin(), v.end());
    }
    for (int k = 0; k < 2; ++k) {
      if (lstm_teams[k] != team_threads() || gru_teams[k] != team_threads()) {  // 1 on one CPU
        std::printf("FAIL: one row of 250-300 units at %d threads ran teams of %d, %d (%s)\n", team_threads(),
                    lstm_teams[k], gru_teams[k], k ? "backward" : "forward"), ++failures;
      }
    }
    runs.push_back(a);
  }
  if (runs[0] != runs[1]) std::printf("FAIL: 1 and 2 threads differ (forward or backward)\n"), ++failures;
  std::printf("fma peak, 1 thread: %.1f GFLOP/s\n", fma_peak_gflops(1));
  std::printf(failures ? "%d FAILED\n" : "all passed\n", failures);
  return failures ? 1 : 0;
}
