"""The CPU kernels of ``stats.Moments``: one pass over the rows + BLAS ``ssyrk`` (XLA FFI).

On CPU, XLA's version of ``Moments`` is held back by three things (measured in
benchmarks/README.md): XLA:CPU has no symmetric rank-k kernel (its ``Zᵀ Z``
computes both triangles and runs well below the rate of numpy's ``Z.T @ Z``,
which calls OpenBLAS's ``ssyrk``); around the product it materialises the centred
batch and scatter-adds the class sums; and it page-faults fresh multi-MB
temporaries in on every step. The one-pass statistics are bound by that product,
so on CPU ``Moments`` runs as XLA FFI custom calls (``csrc/moments.cc``) that run
inside XLA's CPU runtime (no Python, no GIL, safe on several devices), on the data
XLA already holds:

* ``class_moments``: one batch's counts, class sums and squares, and the upper
  triangle of the weighted scatter (``Moments.from_batch``): one pass over the rows
  centres, sums and packs them, then one ``ssyrk``;
* ``accumulate_moments``: the same, added in place into the engine's compensated
  accumulator pair (hi, lo) (``Moments.accumulate``; the state buffers alias the
  outputs): the class sums are two-summed row by row and the scatter's upper triangle
  is two-summed from a per-thread scratch, so a step allocates nothing.

Memory: each thread that runs a kernel keeps its scratch between calls: the packed
batch (rows · D floats) and, for ``accumulate_moments``, one D × D product (64 MiB at
D = 4096); it grows to the largest batch seen and lives as long as the thread (XLA's CPU
threads live as long as the process).

Where it comes from:

* the handlers are compiled once per (source, jaxlib version) with the system C++
  compiler (``$CXX``, else ``c++``/``g++``/``clang++``) against
  ``jax.ffi.include_dir()`` and cached in ``$FACE_JAX_CACHE_DIR`` (default
  ``$XDG_CACHE_HOME/face_jax`` or ``~/.cache/face_jax``); nothing is linked: the
  ``ssyrk`` used is the one inside numpy's own bundled OpenBLAS
  (``scipy_cblas_ssyrk64_``), whose address is handed to the library once;
* if anything is missing (no compiler, a numpy without a bundled OpenBLAS, a read-only
  cache, ``FACE_JAX_CPU_KERNEL=0``), ``available()`` is False, ``status()`` says why,
  and ``Moments`` uses its pure-XLA code instead: the same sums up to float32 rounding,
  only slower.

Only float32 with the scatter and products of at least ``stats.CPU_KERNEL_MIN_WORK``
multiply-adds are handled (``Moments.uses_cpu_kernel``; float64 accumulation and small
batches keep the XLA code), and GPUs and TPUs never use it
(``lax.platform_dependent`` selects it for CPU lowering only).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

MOMENTS_TARGET = 'face_jax_class_moments'
ACCUMULATE_TARGET = 'face_jax_accumulate_moments'
CLASS_SCATTER_TARGET = 'face_jax_accumulate_class_scatter'
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc', 'moments.cc')
_SSYRK_SYMBOLS = ('scipy_cblas_ssyrk64_', 'cblas_ssyrk64_')  # ILP64 cblas_ssyrk only
_STATUS = {'available': None, 'detail': 'not tried yet'}
_KEEP = []  # keeps the loaded libraries alive


def _cache_dir() -> str:
  if os.environ.get('FACE_JAX_CACHE_DIR'):
    return os.environ['FACE_JAX_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'face_jax')


def _compiler() -> str | None:
  for name in (os.environ.get('CXX'), 'c++', 'g++', 'clang++'):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _build() -> str:
  """Path of the compiled handler library (built on first use, atomically)."""
  import jaxlib  # pylint: disable=g-import-not-at-top

  with open(_SOURCE, 'rb') as f:
    src = f.read()
  key = hashlib.sha256(src + jaxlib.__version__.encode()).hexdigest()[:16]
  path = os.path.join(_cache_dir(), f'moments-{key}.so')
  if os.path.exists(path):
    return path
  cxx = _compiler()
  if cxx is None:
    raise RuntimeError('no C++ compiler found (set $CXX)')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  os.close(fd)
  try:
    # -ffp-contract=off: the two-sums need every product and sum rounded as written.
    cmd = [
        cxx,
        '-O3',
        '-ffp-contract=off',
        '-std=c++17',
        '-shared',
        '-fPIC',
        '-w',
        '-I',
        jax.ffi.include_dir(),
        _SOURCE,
        '-o',
        tmp,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
      raise RuntimeError(f'compiling {_SOURCE} failed: {proc.stderr.strip()[-2000:]}')
    os.replace(tmp, path)  # atomic: concurrent builders agree on the result
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _numpy_ssyrk() -> int:
  """Address of the ILP64 cblas_ssyrk in numpy's bundled OpenBLAS."""
  root = os.path.dirname(os.path.dirname(np.__file__))
  libs = sorted(
      glob.glob(os.path.join(root, 'numpy.libs', '*openblas*'))
      + glob.glob(os.path.join(os.path.dirname(np.__file__), '.dylibs', '*openblas*'))
  )
  for lib in libs:
    try:
      handle = ctypes.CDLL(lib)
    except OSError:
      continue
    for sym in _SSYRK_SYMBOLS:
      fn = getattr(handle, sym, None)
      if fn is not None:
        _KEEP.append(handle)
        return ctypes.cast(fn, ctypes.c_void_p).value
  raise RuntimeError(
      f'no ILP64 cblas_ssyrk ({", ".join(_SSYRK_SYMBOLS)}) in numpy\'s bundled '
      f'OpenBLAS (looked in {libs or "numpy.libs: none found"})'
  )


def available() -> bool:
  """True when the custom calls are registered for CPU (tried once per process)."""
  if _STATUS['available'] is None:
    _STATUS['available'] = False
    if os.environ.get('FACE_JAX_CPU_KERNEL', '1') == '0':
      _STATUS['detail'] = 'disabled by FACE_JAX_CPU_KERNEL=0'
      return False
    try:
      addr = _numpy_ssyrk()
      lib = ctypes.CDLL(_build())
      lib.face_jax_set_ssyrk.argtypes = [ctypes.c_void_p]
      lib.face_jax_set_ssyrk(addr)
      jax.ffi.register_ffi_target(
          MOMENTS_TARGET, jax.ffi.pycapsule(lib.FaceJaxClassMoments), platform='cpu'
      )
      jax.ffi.register_ffi_target(
          ACCUMULATE_TARGET, jax.ffi.pycapsule(lib.FaceJaxAccumulateMoments), platform='cpu'
      )
      jax.ffi.register_ffi_target(
          CLASS_SCATTER_TARGET, jax.ffi.pycapsule(lib.FaceJaxAccumulateClassScatter), platform='cpu'
      )
      _KEEP.append(lib)
    except Exception as e:  # pylint: disable=broad-except
      _STATUS['detail'] = f'unavailable ({type(e).__name__}: {e}); Moments uses its XLA code'
      return False
    _STATUS['available'] = True
    _STATUS['detail'] = (
        "face_jax CPU kernels (one pass over the rows + BLAS ssyrk of numpy's OpenBLAS, XLA FFI)"
    )
  return bool(_STATUS['available'])


def status() -> str:
  """Whether ``Moments`` uses the CPU kernels on CPU, and if not, why."""
  available()
  return _STATUS['detail']


def _require():
  if not available():
    raise RuntimeError(f'the face_jax CPU kernel is not available: {status()}')


def class_moments(
    x: jax.Array, y: jax.Array, m: jax.Array, shift: jax.Array, weight: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One batch of ``stats.Moments`` in one pass over the rows (CPU only, float32).

  Args:
    x: [B, D] features; y: [B] int32 labels in [0, K); m: [B] float32 mask (0: padding,
      skipped whatever the row holds); shift: [K, D]; weight: [K].

  Returns:
    count [K], sum [K, D] and sq_sum [K, D] of z = x − shift[y] over unmasked rows, and
    the upper triangle of Σ w_y z zᵀ [D, D] (strict lower triangle zero).
  """
  _require()
  k, d = shift.shape
  f32 = jnp.float32
  out = (
      jax.ShapeDtypeStruct((k,), f32),
      jax.ShapeDtypeStruct((k, d), f32),
      jax.ShapeDtypeStruct((k, d), f32),
      jax.ShapeDtypeStruct((d, d), f32),
  )
  return jax.ffi.ffi_call(MOMENTS_TARGET, out)(x, y, m, shift, weight)


def accumulate_moments(
    x: jax.Array,
    y: jax.Array,
    m: jax.Array,
    shift: jax.Array,
    weight: jax.Array,
    hi: tuple,
    lo: tuple,
) -> tuple[tuple, tuple]:
  """Adds one batch into the compensated accumulator pair in place (CPU only, float32).

  Args:
    x, y, m, shift, weight: as for ``class_moments``.
    hi, lo: (count [K], sum [K, D], sq_sum [K, D], scatter [D, D]) each; the running
      sums are hi + lo. Donate them: the outputs alias these buffers.

  Returns:
    (hi, lo) with the batch added (count, sums and squares two-summed row by row, the
    scatter's upper triangle two-summed from the batch's ``ssyrk``; the strict lower
    triangles are left as they were).
  """
  _require()
  state = tuple(hi) + tuple(lo)
  out = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in state)
  res = jax.ffi.ffi_call(ACCUMULATE_TARGET, out, input_output_aliases={5 + j: j for j in range(8)})(
      x, y, m, shift, weight, *state
  )
  return tuple(res[:4]), tuple(res[4:])


def accumulate_class_scatter(
    x: jax.Array, y: jax.Array, m: jax.Array, shift: jax.Array, hi: tuple, lo: tuple
) -> tuple[tuple, tuple]:
  """Adds one batch of ``stats.ClassScatter`` into its compensated pair in place (CPU, float32).

  The rows are grouped by class and each class present gets one ``ssyrk`` of its own
  rows, so every row is multiplied once (B·D² multiply-adds, as for the pooled scatter).

  Args:
    x: [B, D] features; y: [B] int32 labels in [0, K); m: [B] float32 mask (0: padding,
      skipped); shift: [K, D] per-class shift.
    hi, lo: (count [K], sum [K, D], scatter [K, D, D]) each; the running sums are
      hi + lo. Donate them: the outputs alias these buffers.

  Returns:
    (hi, lo) with the batch added: counts and class sums of z = x − shift[y] two-summed
    row by row, the upper triangle of each class's Σ z zᵀ two-summed (strict lower
    triangles left as they were).
  """
  _require()
  state = tuple(hi) + tuple(lo)
  out = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in state)
  res = jax.ffi.ffi_call(
      CLASS_SCATTER_TARGET, out, input_output_aliases={4 + j: j for j in range(6)}
  )(x, y, m, shift, *state)
  return tuple(res[:3]), tuple(res[3:])
