// Thread count and fork safety. libgomp keeps its worker threads in a pool; a child forked
// after the parent started a team inherits the pool's bookkeeping without the threads, and
// its next multi-threaded region waits for them forever. A child therefore runs every region
// single-threaded (results are bitwise the same for any thread count).
#include "threads.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

namespace fastlstm {

static std::atomic<int> g_requested{0};       // 0: not set, use OpenMP's default
static std::atomic<bool> g_team_started{false};  // this process ran a region with > 1 thread
static std::atomic<bool> g_forked{false};     // forked after g_team_started: 1 thread only
static std::atomic<bool> g_fork_notice{false};   // not yet reported to Python

static void after_fork_in_child() {
  if (g_team_started) g_forked = true, g_fork_notice = true;
}

static const bool g_atfork_registered = [] {
  return pthread_atfork(nullptr, nullptr, after_fork_in_child) == 0;
}();

void set_num_threads(int n) { g_requested = n; }

// FASTLSTM_OVERSUBSCRIBE=1 (read at import) lifts the cap at the CPUs: more threads than
// cores, slow, but it runs the many-core splits of the time loops on a small machine (tests).
static const bool g_oversubscribe = [] {
  const char* v = std::getenv("FASTLSTM_OVERSUBSCRIBE");
  return v && std::string(v) == "1";
}();

// n capped at the CPUs of this thread's affinity mask (omp_get_num_procs reads it at every
// call); 1 in a child forked after threaded use.
static int capped(int n) {
  return g_forked ? 1 : std::max(1, g_oversubscribe ? n : std::min(n, omp_get_num_procs()));
}

int get_num_threads() {
  const int requested = g_requested;
  // omp_get_max_threads: OMP_NUM_THREADS if set, else the CPUs available at start-up.
  return capped(requested > 0 ? requested : omp_get_max_threads());
}

int team_size(int n) {
  n = capped(n);
  if (n > 1) g_team_started = true;
  return n;
}

int team_threads() { return team_size(get_num_threads()); }

bool take_fork_notice() { return g_fork_notice.exchange(false); }

}  // namespace fastlstm
