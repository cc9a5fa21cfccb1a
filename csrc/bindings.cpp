// fastlstm._core: converts and checks arrays, locks workspaces, releases the GIL, calls the
// kernels (gemm, affine, the recurrent engine over its cells, the optimizers).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "affine.h"
#include "dense_input.h"
#include "gemm.h"
#include "optimizers.h"
#include "threads.h"

namespace py = pybind11;
using namespace fastlstm;

using F32 = py::array_t<float, py::array::c_style>;
using I32 = py::array_t<int32_t, py::array::c_style>;

static std::string shape_str(const std::vector<py::ssize_t>& s) {
  std::ostringstream o;
  o << "(";
  for (size_t k = 0; k < s.size(); ++k) o << (k ? ", " : "") << s[k];
  o << (s.size() == 1 ? ",)" : ")");
  return o.str();
}

// A C-contiguous array of dtype T with the expected shape (-1: any extent), or ValueError.
template <class T>
static py::array_t<T, py::array::c_style> checked(py::handle obj, const char* name,
                                                  const char* dims,
                                                  std::vector<py::ssize_t> shape) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::value_error(std::string(name) + " must be a numpy array, got " +
                          std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(py::dtype::of<T>())) {  // equal, not is: an unpickled array's dtype is another object
    throw py::value_error(std::string(name) + " must have dtype " +
                          std::string(py::str(py::dtype::of<T>())) + ", got " +
                          std::string(py::str(a.dtype())));
  }
  std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
  bool ok = got.size() == shape.size();
  for (size_t k = 0; ok && k < shape.size(); ++k) ok = shape[k] < 0 || shape[k] == got[k];
  if (!ok) {
    std::vector<py::ssize_t> want = shape;
    std::ostringstream o;
    o << name << " must have shape " << dims;
    bool all_known = true;
    for (auto s : want) all_known = all_known && s >= 0;
    if (all_known) o << " = " << shape_str(want);
    o << ", got " << shape_str(got);
    throw py::value_error(o.str());
  }
  // Read in place wherever it starts: the kernels' results do not depend on alignment.
  return py::array_t<T, py::array::c_style>::ensure(a);
}

// Sizes the kernels index with int: a clear error past 2**31 - 1.
static int as_int(py::ssize_t v, const char* what) {
  if (v > py::ssize_t(INT32_MAX)) {
    throw py::value_error(std::string(what) + " = " + std::to_string(v) +
                          " is too large: the kernels take sizes below 2**31");
  }
  return int(v);
}

// A forward's outputs, allocated under the GIL: h_last (B,H) and, on request, h_seq (B,T,H)
// and c_last (B,H) (cells with a cell state).
struct HiddenStates {
  F32 last;
  std::optional<F32> seq, c;
  bool state;
  HiddenStates(py::ssize_t B, py::ssize_t T, py::ssize_t H, bool sequences, bool state,
               bool cell_state)
      : last({B, H}), state(state) {
    if (sequences) seq.emplace(std::vector<py::ssize_t>{B, T, H});
    if (state && cell_state) c.emplace(std::vector<py::ssize_t>{B, H});
  }
  float* seq_data() { return seq ? seq->mutable_data() : nullptr; }
  float* c_data() { return c ? c->mutable_data() : nullptr; }
  // h_last, or (h_last, h_seq); with the state: (h_last, h_seq or None, c_last or None).
  py::object result() {
    auto opt = [](std::optional<F32>& a) { return a ? py::object(*a) : py::none(); };
    if (state) return py::make_tuple(last, opt(seq), opt(c));
    return seq ? py::object(py::make_tuple(last, *seq)) : py::object(last);
  }
};

// A backward's gradients of the forward's outputs, checked against its shapes: dh_last (B,H);
// dh_seq (B,T,H) and dc_last (B,H) optional (None: no gradient).
struct StateGradients {
  std::optional<F32> last, seq, c;
  template <class Cell>
  void check(py::handle dh_last, py::handle dh_seq, py::handle dc_last, py::ssize_t B,
             py::ssize_t T, py::ssize_t H) {
    last = checked<float>(dh_last, "dh_last", "(B, H)", {B, H});
    if (!dh_seq.is_none()) seq = checked<float>(dh_seq, "dh_seq", "(B, T, H)", {B, T, H});
    if (!dc_last.is_none()) {
      if (!Cell::kCellState) {
        throw py::value_error(std::string("the ") + Cell::kName + " cell has no cell state: dc_last must be None");
      }
      c = checked<float>(dc_last, "dc_last", "(B, H)", {B, H});
    }
  }
  const float* seq_data() const { return seq ? seq->data() : nullptr; }
  const float* c_data() const { return c ? c->data() : nullptr; }
};

// A forward's step inputs besides the table, taken under the workspace's lock (the kernel
// reads the copies): mask (B,T) bool or None into ws.valid, recurrent dropout's keep-masks
// (B,G,H) float32 (0 or 1/(1-rate)) or None into ws.rec_keep. First of all the workspace is
// marked as holding no forward, so a check failing after its inputs were overwritten (here
// or on the ids) leaves no backward to run on mixed data.
struct StepInputs {
  bool masked = false, rec_dropout = false;
};
template <class Cell>
static StepInputs take_step_inputs(Workspace& ws, py::handle mask, py::handle keep, py::ssize_t B,
                                   py::ssize_t T, py::ssize_t H) {
  ws.has_forward = false;
  StepInputs in;
  if (!mask.is_none()) {
    auto m = checked<bool>(mask, "mask", "(B, T)", {B, T});
    ws.valid.assign(m.data(), m.data() + B * T);
    in.masked = true;
  }
  if (!keep.is_none()) {
    auto k = checked<float>(keep, "recurrent_dropout_mask",
                            ("(B, " + std::to_string(Cell::kGates) + ", H)").c_str(), {B, Cell::kGates, H});
    ws.rec_keep.assign(k.data(), k.data() + k.size());
    in.rec_dropout = true;
  }
  return in;
}

// Workspace held by Python; a missing one means a private one for this call.
static std::shared_ptr<Workspace> workspace_or_new(std::shared_ptr<Workspace> ws) {
  return ws ? ws : std::make_shared<Workspace>();
}

// A float32 C-contiguous writeable numpy array, updated in place (never a converted copy).
static py::array_t<float> in_place(py::handle obj, const char* name) {
  if (!py::isinstance<py::array_t<float>>(obj) ||
      !(py::reinterpret_borrow<py::array>(obj).flags() & py::array::c_style) ||
      !py::reinterpret_borrow<py::array>(obj).writeable()) {
    throw py::value_error(std::string(name) +
                          " must be a writeable C-contiguous float32 numpy array (updated in place)");
  }
  return py::reinterpret_borrow<py::array_t<float>>(obj);
}

// Runs prepare() (checks and output arrays: needs the GIL, may read the workspace), then
// compute() (the kernels, without the GIL), all with the workspace locked: no other call on
// it runs in between. Deadlock-free: no thread waits for `busy` while it holds the GIL.
template <class Prepare, class Compute>
static void locked(Workspace& ws, Prepare&& prepare, Compute&& compute) {
  py::gil_scoped_release nogil;
  std::lock_guard<std::mutex> lock(ws.busy);
  {
    py::gil_scoped_acquire gil;
    prepare();
  }
  compute();
}

// In a child forked after threaded use the kernels run single-threaded: say so, once.
static void warn_if_forked() {
  if (take_fork_notice() &&
      PyErr_WarnEx(PyExc_RuntimeWarning,
                   "fastlstm: this process was forked after the kernels ran threads; OpenMP's "
                   "threads do not survive fork(), so the kernels run single-threaded here (same "
                   "results). Use the 'spawn' or 'forkserver' start method for threaded children.",
                   1) < 0) {
    throw py::error_already_set();
  }
}

// An optimizer's in-place update: w (writeable float32 C-contiguous), g (float32, w's shape)
// and the state arrays (each writeable float32 C-contiguous with w's size; None where the
// option that would use it is off).
struct Update {
  py::array_t<float> w;
  F32 g;
  Update(py::handle w_, py::handle g_) : w(in_place(w_, "w")) {
    warn_if_forked();
    g = checked<float>(g_, "g", "as w", std::vector<py::ssize_t>(w.shape(), w.shape() + w.ndim()));
  }
  size_t n() const { return size_t(w.size()); }
  // The argument object outlives the call: its data pointer stays valid.
  float* state(py::handle obj, const char* name, bool optional = false) const {
    if (optional && obj.is_none()) return nullptr;
    auto a = in_place(obj, name);
    if (a.size() != w.size()) throw py::value_error(std::string(name) + " must have as many elements as w");
    return a.mutable_data();
  }
};

// dense: rnn_backward (after rnn_forward), else rnn_backward_table (after rnn_forward_tokens
// or rnn_forward_projected).
static void check_backward(const Workspace& ws, bool dense) {
  if (!ws.has_forward || ws.dense_input != dense) {
    throw py::value_error(std::string("backward needs a preceding ") +
                          (dense ? "rnn_forward" : "rnn_forward_tokens or rnn_forward_projected") +
                          "(..., training=True) on the same workspace");
  }
}

// The cell (FASTLSTM_FOR_EACH_CELL's) a forward asked for, as names.
struct CellName {
  std::string cell, activation = "tanh", recurrent_activation = "sigmoid";
};

// Runs f(Cell{}) for the cell named `name.cell` ("lstm", "gru", "gru_reset_before",
// "simple_rnn") with its
// activations (tanh, relu, linear; sigmoid, hard_sigmoid), or ValueError.
template <class F>
static auto with_cell(const CellName& name, F&& f) {
  auto with_rec = [&](auto a) {
    using A = decltype(a);
    if (name.cell == "simple_rnn") return f(SimpleRnnCell<A>{});  // no gates
    if (name.recurrent_activation == Sigmoid::kName) {
      if (name.cell == "lstm") return f(LstmCell<A, Sigmoid>{});
      if (name.cell == "gru") return f(GruCell<A, Sigmoid>{});
      if (name.cell == "gru_reset_before") return f(GruResetBeforeCell<A, Sigmoid>{});
    } else if (name.recurrent_activation == HardSigmoid::kName) {
      if (name.cell == "lstm") return f(LstmCell<A, HardSigmoid>{});
      if (name.cell == "gru") return f(GruCell<A, HardSigmoid>{});
      if (name.cell == "gru_reset_before") return f(GruResetBeforeCell<A, HardSigmoid>{});
    } else {
      throw py::value_error("recurrent_activation must be 'sigmoid' or 'hard_sigmoid', got '" +
                            name.recurrent_activation + "'");
    }
    throw py::value_error("cell must be 'lstm', 'gru', 'gru_reset_before' or 'simple_rnn', got '" +
                          name.cell + "'");
  };
  if (name.activation == Tanh::kName) return with_rec(Tanh{});
  if (name.activation == Relu::kName) return with_rec(Relu{});
  if (name.activation == Linear::kName) return with_rec(Linear{});
  throw py::value_error("activation must be 'tanh', 'relu' or 'linear', got '" + name.activation + "'");
}

// The cell of a workspace's last forward.
static CellName cell_of(const Workspace& ws) { return {ws.cell, ws.activation, ws.recurrent_activation}; }

// "G*H" as the messages write it: "4H", "3H", "H".
static std::string gh(int G) { return G == 1 ? "H" : std::to_string(G) + "H"; }

// The recurrent kernel (H, G*H) of a cell with G gates per unit, H >= 1; its H.
static py::ssize_t units_of(const F32& recurrent, int G) {
  const py::ssize_t H = recurrent.shape(0);
  if (H < 1 || recurrent.shape(1) != G * H) {
    throw py::value_error("recurrent_kernel must have shape (H, " + gh(G) +
                          ") with H >= 1, got " + shape_str({recurrent.shape(0), recurrent.shape(1)}));
  }
  return H;
}

// The recurrent bias (G*H,) of a cell that takes one (GRU), or None; its data or null.
template <class Cell>
static const float* recurrent_bias_of(py::handle rb, py::ssize_t H, std::optional<F32>& keep) {
  if (rb.is_none()) return nullptr;
  if (!Cell::kSeparateProduct) {
    throw py::value_error(std::string("the ") + Cell::kName + " cell takes no recurrent_bias");
  }
  keep = checked<float>(rb, "recurrent_bias", ("(" + gh(Cell::kGates) + ",)").c_str(), {Cell::kGates * H});
  return keep->data();
}

// One module per ISA level, fastlstm._core_<level> (CMakeLists.txt names it). Its class is
// module_local: several levels can be loaded in one process (each registers its own type).
PYBIND11_MODULE(FASTLSTM_MODULE, m) {
  m.doc() = "fastlstm C++ kernels: fused LSTM forward/backward through time (Keras semantics)";

  m.def("set_num_threads", [](py::handle n) {
    // Any integer (int, numpy's), not bool or float; huge values are capped like large ones.
    if (PyBool_Check(n.ptr()) || !PyIndex_Check(n.ptr())) {
      throw py::type_error("number of threads must be an int, got " +
                           std::string(py::str(py::type::of(n).attr("__name__"))));
    }
    py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(n.ptr()));
    if (!index) throw py::error_already_set();
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (overflow < 0 || (!overflow && v < 1)) {
      throw py::value_error("number of threads must be >= 1, got " + std::string(py::str(n)));
    }
    set_num_threads(overflow > 0 ? INT32_MAX : int(std::min<long long>(v, INT32_MAX)));
  }, py::arg("n"),
  "Threads the kernels use: n >= 1, capped at the CPUs this process may run on (more threads\n"
  "than cores only slow these compute-bound kernels; results are the same for any count).");
  m.def("get_num_threads", &get_num_threads,
        "Threads the kernels use now: set_num_threads's n, else OMP_NUM_THREADS, else the CPUs of\n"
        "this process's affinity mask; never more than those CPUs; 1 in a child forked after\n"
        "threaded use.");
  m.def("build_info", [] {
    py::dict d;
#ifdef FASTLSTM_SANITIZE_BUILD
    d["sanitize"] = true;
#else
    d["sanitize"] = false;
#endif
    d["isa"] = FASTLSTM_ISA_LEVEL;
    d["vector_floats"] = vector_floats();
    return d;
  }, "How this extension was built: {'sanitize': ASan + UBSan build, 'isa': its ISA level,\n"
     "'vector_floats': floats per vector register in its products}.");
  m.def("time_loop_split", [](int B, int T, int H, int G, int U, bool shared_rows, bool training, int threads,
                              bool splittable) {
    if (B < 1 || T < 0 || H < 1 || G < 1 || U < 1 || threads < 1) throw py::value_error("sizes must be >= 1 (T >= 0)");
    const int nchunks = time_loop_chunks(B, T, U, shared_rows, training);
    // the largest chunk's slots: its rows (dealt evenly) and its trajectory
    const int rows = (B + nchunks - 1) / nchunks + 1;
    const TimeLoopSplit split = time_loop_split(nchunks, rows, H, G, threads, splittable);
    py::list units;
    for (int m = 0; m < split.team; ++m) units.append(py::make_tuple(split.unit_lo(m), split.unit_lo(m + 1)));
    py::dict d;
    d["chunks"] = nchunks, d["team"] = split.team, d["teams"] = split.teams, d["units"] = units;
    return d;
  }, py::arg("B"), py::arg("T"), py::arg("H"), py::arg("G"), py::arg("U"), py::arg("shared_rows"), py::arg("training"),
     py::arg("threads"), py::arg("splittable") = true,
  "How the time loops share `threads` threads for a layer of H units (G gates each) on B rows\n"
  "of T steps (U table rows; shared_rows: several rows read one table row, as tokens do):\n"
  "{'chunks': chunks of rows, 'team': threads per chunk, 'teams': teams, 'units': each member's\n"
  "unit range [u0, u1)}. Chunk j goes to team j % teams.");
  m.def("fma_peak_gflops", [](int threads) {
    if (threads < 1) throw py::value_error("threads must be >= 1");
    py::gil_scoped_release nogil;
    return fma_peak_gflops(threads);
  }, py::arg("threads"), "Measured fp32 FMA peak of `threads` threads, GFLOP/s.");

  m.def("adam_update", [](py::handle w, py::handle g, py::handle m, py::handle v, py::handle v_hat,
                          float decay, float alpha, float beta_1, float one_minus_beta_1, float beta_2,
                          float one_minus_beta_2, float epsilon) {
    Update u(w, g);
    float *pm = u.state(m, "m"), *pv = u.state(v, "v"), *ph = u.state(v_hat, "v_hat", true);
    py::gil_scoped_release nogil;
    adam_update(u.w.mutable_data(), u.g.data(), pm, pv, ph, u.n(), decay, alpha, beta_1,
                one_minus_beta_1, beta_2, one_minus_beta_2, epsilon);
  }, py::arg("w"), py::arg("g"), py::arg("m"), py::arg("v"), py::arg("v_hat"), py::arg("decay"),
  py::arg("alpha"), py::arg("beta_1"), py::arg("one_minus_beta_1"), py::arg("beta_2"),
  py::arg("one_minus_beta_2"), py::arg("epsilon"),
  "One Adam step in place (v_hat None: no amsgrad). See csrc/optimizers.h.");

  m.def("rmsprop_update", [](py::handle w, py::handle g, py::handle v, py::handle average_grad,
                             py::handle mom, float decay, float lr, float rho, float one_minus_rho,
                             float epsilon, float momentum) {
    Update u(w, g);
    float *pv = u.state(v, "v"), *pa = u.state(average_grad, "average_grad", true),
          *pm = u.state(mom, "mom", true);
    py::gil_scoped_release nogil;
    rmsprop_update(u.w.mutable_data(), u.g.data(), pv, pa, pm, u.n(), decay, lr, rho, one_minus_rho,
                   epsilon, momentum);
  }, py::arg("w"), py::arg("g"), py::arg("v"), py::arg("average_grad"), py::arg("mom"),
  py::arg("decay"), py::arg("lr"), py::arg("rho"), py::arg("one_minus_rho"), py::arg("epsilon"),
  py::arg("momentum"),
  "One RMSprop step in place (average_grad None: not centered; mom None: no momentum). See "
  "csrc/optimizers.h.");

  m.def("sgd_update", [](py::handle w, py::handle g, py::handle mom, float decay, float lr,
                         float momentum, bool nesterov) {
    Update u(w, g);
    float* pm = u.state(mom, "mom", true);
    py::gil_scoped_release nogil;
    sgd_update(u.w.mutable_data(), u.g.data(), pm, u.n(), decay, lr, momentum, nesterov);
  }, py::arg("w"), py::arg("g"), py::arg("mom"), py::arg("decay"), py::arg("lr"),
  py::arg("momentum"), py::arg("nesterov"),
  "One SGD step in place (mom None: no momentum). See csrc/optimizers.h.");

  m.def("adagrad_update", [](py::handle w, py::handle g, py::handle acc, float decay, float lr,
                             float epsilon) {
    Update u(w, g);
    float* pa = u.state(acc, "acc");
    py::gil_scoped_release nogil;
    adagrad_update(u.w.mutable_data(), u.g.data(), pa, u.n(), decay, lr, epsilon);
  }, py::arg("w"), py::arg("g"), py::arg("acc"), py::arg("decay"), py::arg("lr"),
  py::arg("epsilon"), "One Adagrad step in place. See csrc/optimizers.h.");

  py::class_<Workspace, std::shared_ptr<Workspace>>(m, "Workspace", py::module_local(),
      "Activations kept by a forward call for its backward; reused between calls.")
      .def(py::init<>())
      .def_property_readonly("teams", [](const Workspace& ws) { return py::make_tuple(ws.forward_team.load(), ws.backward_team.load()); },
                             "Threads per chunk of rows in the last forward and backward (1: one thread per chunk).");

  m.def("affine", [](py::handle x_, py::handle kernel_, py::handle bias_) {
    warn_if_forked();
    auto x = checked<float>(x_, "x", "(N, E)", {-1, -1});
    const py::ssize_t N = x.shape(0), E = x.shape(1);
    auto kernel = checked<float>(kernel_, "kernel", "(E, M)", {E, -1});
    const py::ssize_t H4 = kernel.shape(1);
    auto bias = checked<float>(bias_, "bias", "(M,)", {H4});
    const int n = as_int(N, "N"), e = as_int(E, "E"), m = as_int(H4, "M");
    F32 z({N, H4});
    {
      py::gil_scoped_release nogil;
      affine(x.data(), kernel.data(), bias.data(), n, e, m, z.mutable_data());
    }
    return z;
  }, py::arg("x"), py::arg("kernel"), py::arg("bias"),
  "z (N,M) = x (N,E) @ kernel (E,M) + bias (M): the LSTM input projection, the Dense layer.");

  m.def("add_rows_at", [](py::ssize_t rows, py::handle ids_, py::handle values_) {
    warn_if_forked();
    auto ids = checked<int32_t>(ids_, "ids", "(N,)", {-1});
    const py::ssize_t N = ids.shape(0);
    auto values = checked<float>(values_, "values", "(N, E)", {N, -1});
    const py::ssize_t E = values.shape(1);
    if (rows < 0) throw py::value_error("rows must be >= 0, got " + std::to_string(rows));
    const int n = as_int(N, "N"), e = as_int(E, "E");
    // The ids are copied, then checked: the kernel reads the checked copy.
    std::vector<int32_t> id(ids.data(), ids.data() + N);
    for (py::ssize_t k = 0; k < N; ++k) {
      if (id[k] < 0 || id[k] >= rows) {
        throw py::value_error("ids[" + std::to_string(k) + "] = " + std::to_string(id[k]) +
                              " is out of range [0, " + std::to_string(rows) + ")");
      }
    }
    F32 out({rows, E});
    {
      py::gil_scoped_release nogil;
      std::fill_n(out.mutable_data(), size_t(rows) * size_t(E), 0.f);
      add_rows_at(id.data(), values.data(), n, e, out.mutable_data());
    }
    return out;
  }, py::arg("rows"), py::arg("ids"), py::arg("values"),
  "out (rows,E) = zeros, then out[ids[n]] += values[n] in n order (np.add.at's sums): the "
  "Embedding's backward. ids (N,) int32 in [0, rows), values (N,E).");

  m.def("affine_backward", [](py::handle x_, py::handle kernel_, py::handle dz_,
                                        bool need_dx) {
    warn_if_forked();
    auto x = checked<float>(x_, "x", "(N, E)", {-1, -1});
    const py::ssize_t N = x.shape(0), E = x.shape(1);
    auto kernel = checked<float>(kernel_, "kernel", "(E, M)", {E, -1});
    const py::ssize_t H4 = kernel.shape(1);
    auto dz = checked<float>(dz_, "dz", "(N, M)", {N, H4});
    F32 dkernel({E, H4}), dbias(H4);
    std::optional<F32> dx;
    if (need_dx) dx.emplace(std::vector<py::ssize_t>{N, E});
    float* dx_ptr = dx ? dx->mutable_data() : nullptr;
    const int n = as_int(N, "N"), e = as_int(E, "E"), m = as_int(H4, "M");
    {
      py::gil_scoped_release nogil;
      affine_backward(x.data(), kernel.data(), dz.data(), n, e, m, dx_ptr,
                      dkernel.mutable_data(), dbias.mutable_data());
    }
    py::object dx_out = dx ? py::object(*dx) : py::none();
    return py::make_tuple(dx_out, dkernel, dbias);
  }, py::arg("x"), py::arg("kernel"), py::arg("dz"), py::arg("need_dx") = true,
  "Backward of affine: (dx (N,E) or None, dkernel (E,M), dbias (M)).");

  // affine_masked's mask (B,G,E) and kernel (E,M): G must divide M; its G.
  auto gates_of_mask = [](const F32& mask, py::ssize_t M) {
    const py::ssize_t G = mask.shape(1);
    if (G < 1 || M % G != 0) {
      throw py::value_error("mask must have shape (B, G, E) with G dividing M = " + std::to_string(M) +
                            ", got G = " + std::to_string(G));
    }
    return int(G);
  };
  // affine_masked's sample_rows (B+1) for x (N,E): copied (the kernels read the copy, which
  // no other thread can change once the GIL is released), then checked to go from 0 up to N.
  auto sample_rows_of = [](py::handle lo_, py::ssize_t B, py::ssize_t N) {
    auto lo = checked<int32_t>(lo_, "sample_rows", "(B + 1,)", {B + 1});
    std::vector<int32_t> v(lo.data(), lo.data() + B + 1);
    bool ok = v[0] == 0 && v[B] == N;
    for (py::ssize_t b = 0; ok && b < B; ++b) ok = v[b] <= v[b + 1];
    if (!ok) {
      throw py::value_error("sample_rows must rise from 0 to the " + std::to_string(N) +
                            " rows of x (sample b owns rows [sample_rows[b], sample_rows[b+1]))");
    }
    return v;
  };

  m.def("affine_masked", [gates_of_mask, sample_rows_of](py::handle x_, py::handle kernel_, py::handle bias_,
                                                         py::handle mask_, py::handle lo_) {
    warn_if_forked();
    auto x = checked<float>(x_, "x", "(N, E)", {-1, -1});
    const py::ssize_t N = x.shape(0), E = x.shape(1);
    auto kernel = checked<float>(kernel_, "kernel", "(E, M)", {E, -1});
    const py::ssize_t M = kernel.shape(1);
    auto bias = checked<float>(bias_, "bias", "(M,)", {M});
    auto mask = checked<float>(mask_, "mask", "(B, G, E)", {-1, -1, E});
    const py::ssize_t B = mask.shape(0);
    const int G = gates_of_mask(mask, M);
    const int b = as_int(B, "B"), e = as_int(E, "E"), m = as_int(M, "M");
    as_int(N, "N");
    const std::vector<int32_t> lo = sample_rows_of(lo_, B, N);
    F32 z({N, M});
    {
      py::gil_scoped_release nogil;
      affine_masked(x.data(), lo.data(), kernel.data(), bias.data(), mask.data(), b, e, m, G, z.mutable_data());
    }
    return z;
  }, py::arg("x"), py::arg("kernel"), py::arg("bias"), py::arg("mask"), py::arg("sample_rows"),
  "Input dropout's projection: rows [sample_rows[b], sample_rows[b+1]) of z (N,M) are those of\n"
  "x (N,E) @ (kernel with column block g scaled row-wise by mask[b,g]) + bias, for kernel (E,M),\n"
  "bias (M,), mask (B,G,E), sample_rows (B+1,) int32.");

  m.def("affine_masked_backward", [gates_of_mask, sample_rows_of](py::handle x_, py::handle kernel_,
                                                                  py::handle mask_, py::handle dz_,
                                                                  py::handle lo_, bool need_dx) {
    warn_if_forked();
    auto x = checked<float>(x_, "x", "(N, E)", {-1, -1});
    const py::ssize_t N = x.shape(0), E = x.shape(1);
    auto kernel = checked<float>(kernel_, "kernel", "(E, M)", {E, -1});
    const py::ssize_t M = kernel.shape(1);
    auto mask = checked<float>(mask_, "mask", "(B, G, E)", {-1, -1, E});
    const py::ssize_t B = mask.shape(0);
    const int G = gates_of_mask(mask, M);
    auto dz = checked<float>(dz_, "dz", "(N, M)", {N, M});
    const int b = as_int(B, "B"), e = as_int(E, "E"), m = as_int(M, "M");
    as_int(N, "N");
    const std::vector<int32_t> lo = sample_rows_of(lo_, B, N);
    F32 dkernel({E, M}), dbias(M);
    std::optional<F32> dx;
    if (need_dx) dx.emplace(std::vector<py::ssize_t>{N, E});
    {
      py::gil_scoped_release nogil;
      affine_masked_backward(x.data(), lo.data(), kernel.data(), mask.data(), dz.data(), b, e, m, G,
                             dx ? dx->mutable_data() : nullptr, dkernel.mutable_data(), dbias.mutable_data());
    }
    return py::make_tuple(dx ? py::object(*dx) : py::none(), dkernel, dbias);
  }, py::arg("x"), py::arg("kernel"), py::arg("mask"), py::arg("dz"), py::arg("sample_rows"),
  py::arg("need_dx") = true,
  "Backward of affine_masked: (dx (N,E) or None, dkernel (E,M), dbias (M)).");

  m.def("rnn_forward", [](py::handle x_, py::handle kernel_, py::handle recurrent_,
                          py::handle bias_, const std::string& cell, py::handle recurrent_bias_,
                          bool return_sequences, std::shared_ptr<Workspace> ws, bool training,
                          bool return_state, py::handle mask, py::handle keep,
                          const std::string& activation, const std::string& recurrent_activation) {
    warn_if_forked();
    return with_cell({cell, activation, recurrent_activation}, [&](auto c) {
      using Cell = decltype(c);
      constexpr int G = Cell::kGates;
      auto x = checked<float>(x_, "x", "(B, T, E)", {-1, -1, -1});
      const py::ssize_t B = x.shape(0), T = x.shape(1), E = x.shape(2);
      auto recurrent = checked<float>(recurrent_, "recurrent_kernel", ("(H, " + gh(G) + ")").c_str(), {-1, -1});
      const py::ssize_t H = units_of(recurrent, G);
      auto kernel = checked<float>(kernel_, "kernel", ("(E, " + gh(G) + ")").c_str(), {E, G * H});
      auto bias = checked<float>(bias_, "bias", ("(" + gh(G) + ",)").c_str(), {G * H});
      std::optional<F32> rb_keep;
      const float* rb = recurrent_bias_of<Cell>(recurrent_bias_, H, rb_keep);
      const int b = as_int(B, "B"), t = as_int(T, "T"), e = as_int(E, "E"), h = as_int(H, "H");
      as_int(B * T, "B*T (positions of dense input)");
      ws = workspace_or_new(ws);
      HiddenStates out(B, T, H, return_sequences, return_state, Cell::kCellState);
      StepInputs in;
      locked(*ws, [&] { in = take_step_inputs<Cell>(*ws, mask, keep, B, T, H); }, [&] {
        rnn_forward_dense<Cell>(*ws, x.data(), kernel.data(), recurrent.data(), bias.data(), rb,
                                in.masked, in.rec_dropout, b, t, e, h, out.last.mutable_data(), out.seq_data(),
                                out.c_data(), training);
      });
      return out.result();
    });
  }, py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
  py::arg("cell") = "lstm", py::arg("recurrent_bias") = py::none(),
  py::arg("return_sequences") = false, py::arg("workspace") = nullptr,
  py::arg("training") = true, py::arg("return_state") = false, py::arg("mask") = py::none(),
  py::arg("recurrent_dropout_mask") = py::none(), py::arg("activation") = "tanh",
  py::arg("recurrent_activation") = "sigmoid",
  "A recurrent layer over x (B,T,E) float32; cell 'lstm' (G = 4 gates), 'gru' (reset_after,\n"
  "G = 3; recurrent_bias (3H,) or None), 'gru_reset_before' (G = 3) or 'simple_rnn' (G = 1),\n"
  "with activation 'tanh', 'relu'\n"
  "or 'linear' and recurrent_activation 'sigmoid' or 'hard_sigmoid': kernel (E,G*H),\n"
  "recurrent_kernel (H,G*H), bias (G*H,). -> h_last (B,H), or (h_last, h_seq (B,T,H)); with\n"
  "return_state, (h_last, h_seq or None, c_last (B,H), None for cells without a cell state).\n"
  "mask (B,T) bool or None: a False step keeps the state (Keras's masking); positions before\n"
  "a row's first True step give zeros. recurrent_dropout_mask (B,G,H) float32 or None: gate g's\n"
  "product reads h_{t-1} * mask[b,g] (Keras's recurrent dropout, implementation 1). Pass a\n"
  "Workspace to keep what rnn_backward needs (training=True) or to reuse its memory.");

  m.def("rnn_backward", [](std::shared_ptr<Workspace> ws, py::handle x_, py::handle kernel_,
                           py::handle recurrent_, py::handle dh_last_, py::handle dh_seq_,
                           py::handle dc_last_, bool need_recurrent_bias) {
    warn_if_forked();
    if (!ws) throw py::value_error("workspace must be the one passed to rnn_forward");
    std::optional<F32> x, kernel, recurrent, dx, dkernel, drecurrent, dbias, drb;
    StateGradients d;
    CellName cell;
    locked(*ws, [&] {  // shapes from the workspace's last forward, which cannot change meanwhile
      check_backward(*ws, true);
      cell = cell_of(*ws);
      with_cell(cell, [&](auto c) {
        using Cell = decltype(c);
        constexpr int G = Cell::kGates;
        const py::ssize_t B = ws->B, T = ws->T, E = ws->E, H = ws->H;
        x = checked<float>(x_, "x", "(B, T, E) as in forward", {B, T, E});
        kernel = checked<float>(kernel_, "kernel", ("(E, " + gh(G) + ")").c_str(), {E, G * H});
        recurrent = checked<float>(recurrent_, "recurrent_kernel", ("(H, " + gh(G) + ")").c_str(), {H, G * H});
        d.check<Cell>(dh_last_, dh_seq_, dc_last_, B, T, H);
        dx.emplace(std::vector<py::ssize_t>{B, T, E});
        dkernel.emplace(std::vector<py::ssize_t>{E, G * H});
        drecurrent.emplace(std::vector<py::ssize_t>{H, G * H});
        dbias.emplace(std::vector<py::ssize_t>{G * H});
        if (need_recurrent_bias) drb.emplace(std::vector<py::ssize_t>{G * H});
      });
    }, [&] {
      with_cell(cell, [&](auto c) {
        rnn_backward_dense<decltype(c)>(*ws, x->data(), kernel->data(), recurrent->data(),
                                        d.last->data(), d.seq_data(), d.c_data(),
                                        dx->mutable_data(), dkernel->mutable_data(),
                                        drecurrent->mutable_data(), dbias->mutable_data(),
                                        drb ? drb->mutable_data() : nullptr);
      });
    });
    if (drb) return py::object(py::make_tuple(*dx, *dkernel, *drecurrent, *dbias, *drb));
    return py::object(py::make_tuple(*dx, *dkernel, *drecurrent, *dbias));
  }, py::arg("workspace"), py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"),
  py::arg("dh_last"), py::arg("dh_seq") = py::none(), py::arg("dc_last") = py::none(),
  py::arg("need_recurrent_bias") = false,
  "Backward of rnn_forward (the cell of that forward) -> (dx (B,T,E), dkernel (E,G*H),\n"
  "drecurrent (H,G*H), dbias (G*H)), and drecurrent_bias (G*H) last with need_recurrent_bias.");

  m.def("rnn_forward_tokens", [](py::handle ids_, py::handle table_, py::handle recurrent_,
                                 int pad_row, const std::string& cell, py::handle recurrent_bias_,
                                 bool return_sequences, std::shared_ptr<Workspace> ws,
                                 bool training, bool return_state, py::handle mask,
                                 py::handle keep, const std::string& activation,
                                 const std::string& recurrent_activation) {
    warn_if_forked();
    return with_cell({cell, activation, recurrent_activation}, [&](auto c) {
      using Cell = decltype(c);
      constexpr int G = Cell::kGates;
      auto ids = checked<int32_t>(ids_, "ids", "(B, T)", {-1, -1});
      const py::ssize_t B = ids.shape(0), T = ids.shape(1);
      auto table = checked<float>(table_, "table", ("(U, " + gh(G) + ")").c_str(), {-1, -1});
      const py::ssize_t U = table.shape(0);
      auto recurrent = checked<float>(recurrent_, "recurrent_kernel", ("(H, " + gh(G) + ")").c_str(), {-1, -1});
      const py::ssize_t H = units_of(recurrent, G);
      if (table.shape(1) != G * H) {
        throw py::value_error("table must have shape (U, " + gh(G) + ") = (U, " +
                              std::to_string(G * H) + "), got " +
                              shape_str({table.shape(0), table.shape(1)}));
      }
      if (pad_row < -1 || pad_row >= U) {
        throw py::value_error("pad_row must be -1 or a table row in [0, " + std::to_string(U) +
                              "), got " + std::to_string(pad_row));
      }
      if (pad_row >= 0 && !mask.is_none()) {
        throw py::value_error("pad_row and mask exclude each other: with a mask, the masked steps are skipped");
      }
      std::optional<F32> rb_keep;
      const float* rb = recurrent_bias_of<Cell>(recurrent_bias_, H, rb_keep);
      const int u = as_int(U, "U"), b = as_int(B, "B"), t = as_int(T, "T"), h = as_int(H, "H");
      ws = workspace_or_new(ws);
      HiddenStates out(B, T, H, return_sequences, return_state, Cell::kCellState);
      StepInputs in;
      locked(*ws, [&] {
        in = take_step_inputs<Cell>(*ws, mask, keep, B, T, H);
        // The ids are copied, then checked: the kernel reads the checked copy (another thread
        // may change the caller's array at any time once the GIL is released).
        const int32_t* src = ids.data();
        ws->ids.assign(src, src + B * T);
        const int32_t* id = ws->ids.data();
        for (py::ssize_t k = 0; k < B * T; ++k) {
          if (id[k] < 0 || id[k] >= U) {
            throw py::value_error("ids[" + std::to_string(k / T) + ", " + std::to_string(k % T) +
                                  "] = " + std::to_string(id[k]) + " is not a table row in [0, " +
                                  std::to_string(U) + ")");
          }
        }
      }, [&] {
        rnn_forward<Cell>(*ws, table.data(), u, true, pad_row, in.masked, in.rec_dropout,
                          recurrent.data(), rb, b, t, h, out.last.mutable_data(), out.seq_data(), out.c_data(), training);
      });
      return out.result();
    });
  }, py::arg("ids"), py::arg("table"), py::arg("recurrent_kernel"), py::arg("pad_row") = -1,
  py::arg("cell") = "lstm", py::arg("recurrent_bias") = py::none(),
  py::arg("return_sequences") = false, py::arg("workspace") = nullptr,
  py::arg("training") = true, py::arg("return_state") = false, py::arg("mask") = py::none(),
  py::arg("recurrent_dropout_mask") = py::none(), py::arg("activation") = "tanh",
  py::arg("recurrent_activation") = "sigmoid",
  "A recurrent layer (cell as in rnn_forward) over token ids (B,T) int32 whose projected\n"
  "inputs are rows of table (U,G*H) (= embeddings @ kernel + bias). Leading runs of pad_row are\n"
  "skipped exactly (not with recurrent dropout); or mask (B,T) bool, recurrent_dropout_mask as\n"
  "in rnn_forward. -> h_last (B,H), or (h_last, h_seq\n"
  "(B,T,H)); with return_state, (h_last, h_seq or None, c_last (B,H) or None).");

  m.def("rnn_backward_table", [](std::shared_ptr<Workspace> ws, py::handle recurrent_,
                                 py::handle dh_last_, py::handle dh_seq_, py::handle dc_last_,
                                 bool need_recurrent_bias) {
    warn_if_forked();
    if (!ws) throw py::value_error("workspace must be the one passed to the forward");
    std::optional<F32> recurrent, dtable, drecurrent, drb;
    StateGradients d;
    CellName cell;
    locked(*ws, [&] {  // shapes from the workspace's last forward, which cannot change meanwhile
      check_backward(*ws, false);
      cell = cell_of(*ws);
      with_cell(cell, [&](auto c) {
        using Cell = decltype(c);
        constexpr int G = Cell::kGates;
        const py::ssize_t B = ws->B, T = ws->T, U = ws->U, H = ws->H;
        recurrent = checked<float>(recurrent_, "recurrent_kernel", ("(H, " + gh(G) + ")").c_str(), {H, G * H});
        d.check<Cell>(dh_last_, dh_seq_, dc_last_, B, T, H);
        // the shape of the forward's table: (U, G*H) of token rows, or (B, T, G*H)
        dtable.emplace(ws->token_input ? std::vector<py::ssize_t>{U, G * H}
                                       : std::vector<py::ssize_t>{B, T, G * H});
        drecurrent.emplace(std::vector<py::ssize_t>{H, G * H});
        if (need_recurrent_bias) drb.emplace(std::vector<py::ssize_t>{G * H});
      });
    }, [&] {
      with_cell(cell, [&](auto c) {
        rnn_backward<decltype(c)>(*ws, recurrent->data(), d.last->data(), d.seq_data(), d.c_data(),
                                  dtable->mutable_data(), drecurrent->mutable_data(),
                                  drb ? drb->mutable_data() : nullptr);
      });
    });
    if (drb) return py::object(py::make_tuple(*dtable, *drecurrent, *drb));
    return py::object(py::make_tuple(*dtable, *drecurrent));
  }, py::arg("workspace"), py::arg("recurrent_kernel"), py::arg("dh_last"),
  py::arg("dh_seq") = py::none(), py::arg("dc_last") = py::none(),
  py::arg("need_recurrent_bias") = false,
  "Backward of rnn_forward_tokens or rnn_forward_projected -> (dtable (the shape of that\n"
  "forward's table), drecurrent (H,G*H)), and drecurrent_bias (G*H) last with\n"
  "need_recurrent_bias.");

  m.def("rnn_forward_projected", [](py::handle table_, py::handle recurrent_, const std::string& cell,
                                    py::handle recurrent_bias_, bool return_sequences,
                                    std::shared_ptr<Workspace> ws, bool training, bool return_state,
                                    py::handle mask, py::handle keep, const std::string& activation,
                                    const std::string& recurrent_activation) {
    warn_if_forked();
    return with_cell({cell, activation, recurrent_activation}, [&](auto c) {
      using Cell = decltype(c);
      constexpr int G = Cell::kGates;
      auto recurrent = checked<float>(recurrent_, "recurrent_kernel", ("(H, " + gh(G) + ")").c_str(), {-1, -1});
      const py::ssize_t H = units_of(recurrent, G);
      auto table = checked<float>(table_, "table", ("(B, T, " + gh(G) + ")").c_str(), {-1, -1, G * H});
      const py::ssize_t B = table.shape(0), T = table.shape(1);
      std::optional<F32> rb_keep;
      const float* rb = recurrent_bias_of<Cell>(recurrent_bias_, H, rb_keep);
      const int b = as_int(B, "B"), t = as_int(T, "T"), h = as_int(H, "H");
      const int n = as_int(B * T, "B*T (positions)");
      ws = workspace_or_new(ws);
      HiddenStates out(B, T, H, return_sequences, return_state, Cell::kCellState);
      StepInputs in;
      locked(*ws, [&] { in = take_step_inputs<Cell>(*ws, mask, keep, B, T, H); }, [&] {
        rnn_forward<Cell>(*ws, table.data(), n, false, -1, in.masked, in.rec_dropout, recurrent.data(), rb, b, t, h,
                          out.last.mutable_data(), out.seq_data(), out.c_data(), training);
      });
      return out.result();
    });
  }, py::arg("table"), py::arg("recurrent_kernel"), py::arg("cell") = "lstm",
  py::arg("recurrent_bias") = py::none(), py::arg("return_sequences") = false,
  py::arg("workspace") = nullptr, py::arg("training") = true, py::arg("return_state") = false,
  py::arg("mask") = py::none(), py::arg("recurrent_dropout_mask") = py::none(), py::arg("activation") = "tanh",
  py::arg("recurrent_activation") = "sigmoid",
  "rnn_forward on inputs already projected: table (B,T,G*H) = x @ kernel + bias, as the\n"
  "caller computed it (e.g. a dropout mask per gate, Keras's implementation 1).");

}
