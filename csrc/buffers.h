// Buffers the kernels grow and reuse, and Eigen views of float rows.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <vector>

namespace fastlstm {

using FloatBuf = std::vector<float, Eigen::aligned_allocator<float>>;
using VecMap = Eigen::Map<Eigen::ArrayXf>;
using ConstVecMap = Eigen::Map<const Eigen::ArrayXf>;

// Grown, never shrunk: no allocation once a shape has been seen. Called outside parallel
// regions only (an allocation failure there is a MemoryError, inside one it would abort).
template <class V>
inline void grow(V& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace fastlstm
