// The kernels' thread count: one setting for every parallel region, safe after fork().
#pragma once

namespace fastlstm {

// Threads the kernels use: min(requested, usable CPUs) (FASTLSTM_OVERSUBSCRIBE=1: requested).
// Requested: set_num_threads(n), else OMP_NUM_THREADS, else the CPUs in this process's
// affinity mask. 1 in a child forked after the parent ran threads (libgomp's thread pool does not survive fork: a team would hang).
// A query only: it starts nothing.
int get_num_threads();
void set_num_threads(int n);  // n >= 1 (checked by the caller)

// The team size of a parallel region: get_num_threads(), or `n` capped alike. Every region
// sizes its team through these (they record that this process has run threads).
int team_threads();
int team_size(int n);

// True once in a child forked after threaded use (then never again): the caller warns.
bool take_fork_notice();

}  // namespace fastlstm
