// fastlstm._cpu: which ISA levels this CPU and OS run, asked before any kernel module is
// imported (fastlstm/_core.py picks one). Built without any -march: it must load anywhere.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

namespace {

// This architecture's levels, lowest first (the kernel modules CMakeLists.txt can build).
std::vector<std::string> levels() {
#if defined(__x86_64__) || defined(_M_X64)
  return {"baseline", "avx2", "avx512"};
#elif defined(__aarch64__)
  return {"neon"};
#else
  return {"baseline"};
#endif
}

// The levels the running CPU has every instruction of, with the OS saving their registers
// (__builtin_cpu_supports checks XGETBV for the AVX and AVX-512 state).
std::vector<std::string> supported() {
#if defined(__x86_64__) || defined(_M_X64)
  std::vector<std::string> out = {"baseline"};
  __builtin_cpu_init();
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  // GCC knows the levels: every feature -march=x86-64-v3/v4 lets the compiler emit
  const bool v3 = __builtin_cpu_supports("x86-64-v3"), v4 = __builtin_cpu_supports("x86-64-v4");
#else
  // clang 14 knows fewer names (no f16c, lzcnt, movbe: every CPU with AVX2 and BMI2 has them)
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                  __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("sse4.2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("avx512cd");
#endif
  if (v3) out.push_back("avx2");
  if (v4) out.push_back("avx512");
  return out;
#else
  return levels();  // aarch64: NEON is part of ARMv8-A
#endif
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "The ISA levels of this architecture and of the running CPU (see fastlstm/_core.py)";
  m.def("levels", &levels, "This architecture's ISA levels, lowest first.");
  m.def("supported", &supported, "The levels the running CPU and OS support, lowest first.");
}
