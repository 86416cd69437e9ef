// face_jax CPU kernels for `stats.Moments`, as XLA FFI custom calls (registered by
// face_jax/_src/cpu_moments.py).
//
// Why: XLA:CPU has no symmetric rank-k kernel (its Z^T Z computes both triangles and, on
// the CPUs measured, runs well below OpenBLAS's ssyrk rate: benchmarks/README.md), and
// around the product it materialises the centred batch, scatter-adds the class sums and
// page-faults fresh temporaries in on every step. These handlers make one pass over
// the rows in plain C++ and call the ssyrk that numpy already ships (numpy's bundled
// OpenBLAS, `scipy_cblas_ssyrk64_`, ILP64); its address is passed in once from Python, so
// nothing is linked at build time.
//
// Common inputs: x [B, D] f32, y [B] s32 in [0, K), m [B] f32 (1: sample, 0: padding),
// shift [K, D] f32, weight [K] f32; z_i = x_i - shift[y_i]. Padding rows are skipped, so
// they contribute exactly nothing whatever they hold. The rows sqrt(w_{y_i}) z_i of the
// samples are packed into a per-thread scratch buffer kept between calls, and one ssyrk
// of the packed rows gives the scatter.
//
// FaceJaxClassMoments: the batch's own sums (Moments.from_batch):
//   count [K], sum [K, D] (sum of z), sq [K, D] (sum of z^2), scatter [D, D] (upper
//   triangle of sum_i w_{y_i} z_i z_i^T; strict lower triangle zero).
// FaceJaxAccumulateMoments: the same sums added into the engine's compensated
//   accumulator pair (hi, lo) in place (inputs 5..12 alias outputs 0..7: hi count, sum,
//   sq, scatter, then lo count, sum, sq, scatter). count/sum/sq are added row by row with
//   Knuth's two-sum (hi + lo carries the running sum to about twice float32's precision, so
//   rounding does not grow with the number of batches); the
//   scatter is formed in a per-thread scratch and its upper triangle two-summed into
//   hi/lo (the strict lower triangles are left untouched: zero). Nothing per step is
//   allocated, and only the triangle the finalisation reads is swept.
// FaceJaxAccumulateClassScatter: `stats.ClassScatter` (TransRate's per-class scatter) added
//   into its compensated pair in place (inputs 4..9 alias outputs 0..5: hi count [K],
//   sum [K, D], scatter [K, D, D], then lo count, sum, scatter; no weight input). The rows
//   are packed grouped by class (a counting sort), and one ssyrk per class present in the
//   batch gives that class's scatter: every row is multiplied once (B·D² multiply-adds a
//   batch, as for the pooled scatter), not once per class.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;

namespace {

// cblas_ssyrk(order, uplo, trans, n, k, alpha, a, lda, beta, c, ldc), ILP64 integers.
using SsyrkFn = void (*)(int, int, int, int64_t, int64_t, float, const float*, int64_t, float,
                         float*, int64_t);
SsyrkFn g_ssyrk = nullptr;

constexpr int kRowMajor = 101, kUpper = 121, kTrans = 112;

// Vector loops are compiled for AVX2 and a baseline (the loader picks one at run time),
// so a cached library is safe on any x86-64 CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FACE_JAX_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FACE_JAX_CLONES
#endif

// hi + lo += v (Knuth's two-sum; the rounding error of hi + v goes to lo).
inline void TwoSum1(float& hi, float& lo, float v) {
  const float s = hi + v;
  const float bb = s - hi;
  lo += (hi - (s - bb)) + (v - bb);
  hi = s;
}

// The same, element-wise over n values.
FACE_JAX_CLONES
void TwoSum(float* __restrict hi, float* __restrict lo, const float* __restrict v, int64_t n) {
  for (int64_t j = 0; j < n; ++j) TwoSum1(hi[j], lo[j], v[j]);
}

// One row: z = x - c; s += z; q += z^2; out = sw * z.
FACE_JAX_CLONES
void CentreRow(const float* __restrict x, const float* __restrict c, float sw, int64_t d,
               float* __restrict s, float* __restrict q, float* __restrict out) {
  for (int64_t j = 0; j < d; ++j) {
    const float z = x[j] - c[j];
    s[j] += z;
    q[j] += z * z;
    out[j] = sw * z;
  }
}

// The same with s and q two-summed into (s, sl) and (q, ql).
FACE_JAX_CLONES
void CentreRowTwoSum(const float* __restrict x, const float* __restrict c, float sw, int64_t d,
                     float* __restrict s, float* __restrict sl, float* __restrict q,
                     float* __restrict ql, float* __restrict out) {
  for (int64_t j = 0; j < d; ++j) {
    const float z = x[j] - c[j];
    out[j] = sw * z;
    TwoSum1(s[j], sl[j], z);
    TwoSum1(q[j], ql[j], z * z);
  }
}

struct Rows {
  const float* x;
  const int32_t* y;
  const float* m;
  const float* shift;
  const float* weight;
  int64_t b, d, k;
};

ffi::Error Check(F32& x, S32& y, F32& m, F32& shift, F32& weight, Rows* r) {
  const auto xd = x.dimensions(), cd = shift.dimensions();
  if (xd.size() != 2 || cd.size() != 2 || cd[1] != xd[1] || y.element_count() != xd[0] ||
      m.element_count() != xd[0] || weight.element_count() != cd[0]) {
    return ffi::Error::InvalidArgument(
        "face_jax moments kernel: want x [B, D], y [B], m [B], shift [K, D], weight [K]");
  }
  if (g_ssyrk == nullptr) return ffi::Error::Internal("face_jax moments kernel: ssyrk is not set");
  *r = Rows{x.typed_data(), y.typed_data(), m.typed_data(), shift.typed_data(),
            weight.typed_data(), xd[0], xd[1], cd[0]};
  for (int64_t i = 0; i < r->b; ++i) {
    if (r->m[i] != 0.0f && (r->y[i] < 0 || r->y[i] >= r->k)) {
      return ffi::Error::InvalidArgument("face_jax moments kernel: label outside [0, K)");
    }
  }
  return ffi::Error::Success();
}

// Per-thread scratch, grown to the largest size seen and kept (no page faults per step).
float* Scratch(std::vector<float>& v, int64_t n) {
  if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  return v.data();
}

// Upper triangle of z^T z for row-major z [rows, d] into c [d, d] (strict lower untouched).
void Gram(const float* z, int64_t rows, int64_t d, float* c) {
  if (rows > 0) {
    g_ssyrk(kRowMajor, kUpper, kTrans, d, rows, 1.0f, z, d, 0.0f, c, d);
  } else {
    for (int64_t r = 0; r < d; ++r) std::memset(c + r * d + r, 0, sizeof(float) * (d - r));
  }
}

ffi::Error ClassMoments(F32 x, S32 y, F32 m, F32 shift, F32 weight, F32Out count, F32Out sum,
                        F32Out sq, F32Out scatter) {
  Rows r;
  if (auto err = Check(x, y, m, shift, weight, &r); err.failure()) return err;
  const int64_t d = r.d;
  float* cnt = count->typed_data();
  float* s = sum->typed_data();
  float* q = sq->typed_data();
  float* c = scatter->typed_data();
  std::memset(cnt, 0, sizeof(float) * r.k);
  std::memset(s, 0, sizeof(float) * r.k * d);
  std::memset(q, 0, sizeof(float) * r.k * d);
  if (d == 0) return ffi::Error::Success();
  thread_local std::vector<float> packed_v;
  float* packed = Scratch(packed_v, r.b * d);
  int64_t rows = 0;
  for (int64_t i = 0; i < r.b; ++i) {
    if (r.m[i] == 0.0f) continue;
    const int32_t yi = r.y[i];
    cnt[yi] += 1.0f;
    CentreRow(r.x + i * d, r.shift + yi * d, std::sqrt(r.weight[yi]), d, s + yi * d, q + yi * d,
              packed + rows * d);
    ++rows;
  }
  for (int64_t row = 1; row < d; ++row) std::memset(c + row * d, 0, sizeof(float) * row);
  Gram(packed, rows, d, c);
  return ffi::Error::Success();
}

ffi::Error AccumulateMoments(
    F32 x, S32 y, F32 m, F32 shift, F32 weight,
    F32 hc0, F32 hs0, F32 hq0, F32 hS0, F32 lc0, F32 ls0, F32 lq0, F32 lS0,
    F32Out hc, F32Out hs, F32Out hq, F32Out hS, F32Out lc, F32Out ls, F32Out lq, F32Out lS) {
  // The state inputs alias the outputs (input_output_aliases), so the state is read and
  // updated in place through the output buffers; should XLA ever hand over distinct
  // buffers, the state is copied over first.
  Rows r;
  if (auto err = Check(x, y, m, shift, weight, &r); err.failure()) return err;
  const int64_t d = r.d;
  if (hS->element_count() != d * d || hs->element_count() != r.k * d ||
      hc->element_count() != r.k) {
    return ffi::Error::InvalidArgument("face_jax accumulate_moments: state shapes do not match");
  }
  const F32* ins[] = {&hc0, &hs0, &hq0, &hS0, &lc0, &ls0, &lq0, &lS0};
  F32Out* outs[] = {&hc, &hs, &hq, &hS, &lc, &ls, &lq, &lS};
  for (int j = 0; j < 8; ++j) {
    const float* from = ins[j]->typed_data();
    float* to = (*outs[j])->typed_data();
    if (from != to) std::memcpy(to, from, sizeof(float) * ins[j]->element_count());
  }
  if (d == 0) return ffi::Error::Success();
  float *cnt = hc->typed_data(), *cntl = lc->typed_data();
  float *s = hs->typed_data(), *sl = ls->typed_data();
  float *q = hq->typed_data(), *ql = lq->typed_data();
  thread_local std::vector<float> packed_v, gram_v;
  float* packed = Scratch(packed_v, r.b * d);
  int64_t rows = 0;
  for (int64_t i = 0; i < r.b; ++i) {
    if (r.m[i] == 0.0f) continue;
    const int32_t yi = r.y[i];
    TwoSum1(cnt[yi], cntl[yi], 1.0f);
    CentreRowTwoSum(r.x + i * d, r.shift + yi * d, std::sqrt(r.weight[yi]), d, s + yi * d,
                    sl + yi * d, q + yi * d, ql + yi * d, packed + rows * d);
    ++rows;
  }
  if (rows == 0) return ffi::Error::Success();
  float* g = Scratch(gram_v, d * d);
  Gram(packed, rows, d, g);
  float *big = hS->typed_data(), *small = lS->typed_data();
  for (int64_t row = 0; row < d; ++row) {
    TwoSum(big + row * d + row, small + row * d + row, g + row * d + row, d - row);
  }
  return ffi::Error::Success();
}

// One row: z = x - c; out = z; (s, sl) += z (two-sum).
FACE_JAX_CLONES
void CentreRowSumTwoSum(const float* __restrict x, const float* __restrict c, int64_t d,
                        float* __restrict s, float* __restrict sl, float* __restrict out) {
  for (int64_t j = 0; j < d; ++j) {
    const float z = x[j] - c[j];
    out[j] = z;
    TwoSum1(s[j], sl[j], z);
  }
}

ffi::Error AccumulateClassScatter(F32 x, S32 y, F32 m, F32 shift,
                                  F32 hc0, F32 hs0, F32 hS0, F32 lc0, F32 ls0, F32 lS0,
                                  F32Out hc, F32Out hs, F32Out hS, F32Out lc, F32Out ls,
                                  F32Out lS) {
  const auto xd = x.dimensions(), cd = shift.dimensions();
  if (xd.size() != 2 || cd.size() != 2 || cd[1] != xd[1] || y.element_count() != xd[0] ||
      m.element_count() != xd[0]) {
    return ffi::Error::InvalidArgument(
        "face_jax class_scatter kernel: want x [B, D], y [B], m [B], shift [K, D]");
  }
  if (g_ssyrk == nullptr) {
    return ffi::Error::Internal("face_jax class_scatter kernel: ssyrk is not set");
  }
  const int64_t b = xd[0], d = xd[1], k = cd[0];
  if (hS->element_count() != k * d * d || hs->element_count() != k * d ||
      hc->element_count() != k) {
    return ffi::Error::InvalidArgument("face_jax class_scatter kernel: state shapes do not match");
  }
  const float* xs = x.typed_data();
  const int32_t* ys = y.typed_data();
  const float* ms = m.typed_data();
  const float* sh = shift.typed_data();
  for (int64_t i = 0; i < b; ++i) {
    if (ms[i] != 0.0f && (ys[i] < 0 || ys[i] >= k)) {
      return ffi::Error::InvalidArgument("face_jax class_scatter kernel: label outside [0, K)");
    }
  }
  const F32* ins[] = {&hc0, &hs0, &hS0, &lc0, &ls0, &lS0};
  F32Out* outs[] = {&hc, &hs, &hS, &lc, &ls, &lS};
  for (int j = 0; j < 6; ++j) {
    const float* from = ins[j]->typed_data();
    float* to = (*outs[j])->typed_data();
    if (from != to) std::memcpy(to, from, sizeof(float) * ins[j]->element_count());
  }
  if (d == 0) return ffi::Error::Success();
  // Counting sort of the sample rows by class: start[c] is class c's first packed row.
  thread_local std::vector<int64_t> start_v, fill_v;
  start_v.assign(static_cast<size_t>(k) + 1, 0);
  fill_v.assign(static_cast<size_t>(k), 0);
  for (int64_t i = 0; i < b; ++i) {
    if (ms[i] != 0.0f) ++start_v[ys[i] + 1];
  }
  for (int64_t c = 0; c < k; ++c) start_v[c + 1] += start_v[c];
  float *cnt = hc->typed_data(), *cntl = lc->typed_data();
  float *s = hs->typed_data(), *sl = ls->typed_data();
  thread_local std::vector<float> packed_v, gram_v;
  float* packed = Scratch(packed_v, start_v[k] * d);
  for (int64_t i = 0; i < b; ++i) {
    if (ms[i] == 0.0f) continue;
    const int32_t c = ys[i];
    TwoSum1(cnt[c], cntl[c], 1.0f);
    CentreRowSumTwoSum(xs + i * d, sh + c * d, d, s + c * d, sl + c * d,
                       packed + (start_v[c] + fill_v[c]++) * d);
  }
  float* g = Scratch(gram_v, d * d);
  float *big = hS->typed_data(), *small = lS->typed_data();
  for (int64_t c = 0; c < k; ++c) {
    const int64_t rows = start_v[c + 1] - start_v[c];
    if (rows == 0) continue;
    Gram(packed + start_v[c] * d, rows, d, g);
    float* bc = big + c * d * d;
    float* sc = small + c * d * d;
    for (int64_t row = 0; row < d; ++row) {
      TwoSum(bc + row * d + row, sc + row * d + row, g + row * d + row, d - row);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

extern "C" void face_jax_set_ssyrk(void* fn) { g_ssyrk = reinterpret_cast<SsyrkFn>(fn); }

namespace {

// The inputs both handlers share: x, y, m, shift, weight.
auto BindBatch() {
  return ffi::Ffi::Bind().Arg<F32>().Arg<S32>().Arg<F32>().Arg<F32>().Arg<F32>();
}

}  // namespace

// count, sum, sq, scatter.
XLA_FFI_DEFINE_HANDLER_SYMBOL(FaceJaxClassMoments, ClassMoments,
                              BindBatch().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

// The state: hi count, sum, sq, scatter, lo count, sum, sq, scatter (as inputs, aliased to
// the outputs in the same order).
XLA_FFI_DEFINE_HANDLER_SYMBOL(FaceJaxAccumulateMoments, AccumulateMoments,
                              BindBatch()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

// x, y, m, shift; the state: hi count, sum, scatter, lo count, sum, scatter (as inputs,
// aliased to the outputs in the same order).
XLA_FFI_DEFINE_HANDLER_SYMBOL(FaceJaxAccumulateClassScatter, AccumulateClassScatter,
                              ffi::Ffi::Bind()
                                  .Arg<F32>().Arg<S32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>());
