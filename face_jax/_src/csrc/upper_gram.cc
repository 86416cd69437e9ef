// face_jax CPU kernel: the upper triangle of Z^T Z with BLAS ssyrk, as an XLA FFI custom call.
//
// XLA:CPU has no symmetric rank-k kernel: its matmul computes both triangles, and at
// 2 threads it runs at about half of OpenBLAS's ssyrk rate for Z^T Z (see
// benchmarks/README.md). This handler calls the ssyrk that numpy already ships
// (numpy's bundled OpenBLAS, `scipy_cblas_ssyrk64_`, ILP64); its address is passed in
// once from Python (face_jax/_src/cpu_gram.py), so nothing is linked at build time.
//
// out [D, D] float32: upper triangle of Z^T Z (row-major), strict lower triangle zero.
// z   [B, D] float32, row-major.
#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// cblas_ssyrk(order, uplo, trans, n, k, alpha, a, lda, beta, c, ldc), ILP64 integers.
using SsyrkFn = void (*)(int, int, int, int64_t, int64_t, float, const float*, int64_t, float,
                         float*, int64_t);
SsyrkFn g_ssyrk = nullptr;

constexpr int kRowMajor = 101, kUpper = 121, kTrans = 112;

ffi::Error UpperGram(ffi::Buffer<ffi::F32> z, ffi::ResultBuffer<ffi::F32> out) {
  const auto dims = z.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("face_jax upper_gram: z must be [B, D]");
  const int64_t b = dims[0], d = dims[1];
  float* c = out->typed_data();
  std::memset(c, 0, sizeof(float) * static_cast<size_t>(d) * static_cast<size_t>(d));
  if (g_ssyrk == nullptr) return ffi::Error::Internal("face_jax upper_gram: ssyrk is not set");
  if (b > 0 && d > 0) g_ssyrk(kRowMajor, kUpper, kTrans, d, b, 1.0f, z.typed_data(), d, 0.0f, c, d);
  return ffi::Error::Success();
}

}  // namespace

extern "C" void face_jax_set_ssyrk(void* fn) { g_ssyrk = reinterpret_cast<SsyrkFn>(fn); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(FaceJaxUpperGram, UpperGram,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
