"""The CPU scatter kernel: upper triangle of ``Zᵀ Z`` with BLAS ``ssyrk`` (XLA FFI).

XLA:CPU has no symmetric rank-k kernel: its ``Zᵀ Z`` computes both triangles and, on
the CPUs measured (benchmarks/README.md), runs at about half the rate of numpy's
``Z.T @ Z``, which calls OpenBLAS's ``ssyrk``. The one-pass statistics are bound by
that product, so on CPU ``Moments`` computes it with the same ``ssyrk`` through an
XLA FFI custom call (``csrc/upper_gram.cc``): it runs inside XLA's CPU runtime (no
Python, no GIL, safe on several devices), on the data XLA already holds.

Where it comes from:

* the handler is compiled once per (source, jaxlib version) with the system C++
  compiler (``$CXX``, else ``c++``/``g++``) against ``jax.ffi.include_dir()`` and
  cached in ``$FACE_JAX_CACHE_DIR`` (default ``$XDG_CACHE_HOME/face_jax`` or
  ``~/.cache/face_jax``); nothing is linked: the ``ssyrk`` used is the one inside
  numpy's own bundled OpenBLAS (``scipy_cblas_ssyrk64_``), whose address is handed
  to the library once;
* if anything is missing (no compiler, a numpy without a bundled OpenBLAS, a read-only
  cache, ``FACE_JAX_CPU_GRAM=0``), ``available()`` is False, ``status()`` says why, and
  ``Moments`` uses the pure-XLA upper-block-triangle product instead: the same
  numbers up to float32 rounding, only slower.

Only float32 is handled (float64 accumulation keeps the XLA path), only for
D >= ``stats.CPU_GRAM_MIN_DIM`` (where it measured faster than the XLA product), and
GPUs and TPUs never use it (``lax.platform_dependent`` selects it for CPU lowering only).
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
import numpy as np

TARGET = 'face_jax_upper_gram'
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc', 'upper_gram.cc')
_SSYRK_SYMBOLS = ('scipy_cblas_ssyrk64_', 'cblas_ssyrk64_')   # ILP64 cblas_ssyrk only
_STATUS = {'available': None, 'detail': 'not tried yet'}
_KEEP = []   # keeps the loaded libraries alive


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
  path = os.path.join(_cache_dir(), f'upper_gram-{key}.so')
  if os.path.exists(path):
    return path
  cxx = _compiler()
  if cxx is None:
    raise RuntimeError('no C++ compiler found (set $CXX)')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  os.close(fd)
  try:
    cmd = [cxx, '-O2', '-std=c++17', '-shared', '-fPIC', '-w',
           '-I', jax.ffi.include_dir(), _SOURCE, '-o', tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
      raise RuntimeError(f'compiling {_SOURCE} failed: {proc.stderr.strip()[-2000:]}')
    os.replace(tmp, path)            # atomic: concurrent builders agree on the result
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _numpy_ssyrk() -> int:
  """Address of the ILP64 cblas_ssyrk in numpy's bundled OpenBLAS."""
  root = os.path.dirname(os.path.dirname(np.__file__))
  libs = sorted(glob.glob(os.path.join(root, 'numpy.libs', '*openblas*'))
                + glob.glob(os.path.join(os.path.dirname(np.__file__), '.dylibs', '*openblas*')))
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
  raise RuntimeError(f'no ILP64 cblas_ssyrk ({", ".join(_SSYRK_SYMBOLS)}) in numpy\'s bundled '
                     f'OpenBLAS (looked in {libs or "numpy.libs: none found"})')


def available() -> bool:
  """True when the ssyrk custom call is registered for CPU (tried once per process)."""
  if _STATUS['available'] is None:
    _STATUS['available'] = False
    if os.environ.get('FACE_JAX_CPU_GRAM', '1') == '0':
      _STATUS['detail'] = 'disabled by FACE_JAX_CPU_GRAM=0'
      return False
    try:
      addr = _numpy_ssyrk()
      lib = ctypes.CDLL(_build())
      lib.face_jax_set_ssyrk.argtypes = [ctypes.c_void_p]
      lib.face_jax_set_ssyrk(addr)
      jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.FaceJaxUpperGram), platform='cpu')
      _KEEP.append(lib)
    except Exception as e:  # pylint: disable=broad-except
      _STATUS['detail'] = f'unavailable ({type(e).__name__}: {e}); using the XLA product'
      return False
    _STATUS['available'] = True
    _STATUS['detail'] = "BLAS ssyrk of numpy's OpenBLAS via XLA FFI"
  return bool(_STATUS['available'])


def status() -> str:
  """Which CPU scatter kernel ``Moments`` uses, and if not the BLAS one, why."""
  available()
  return _STATUS['detail']


def upper_gram(z: jax.Array) -> jax.Array:
  """[B, D] float32 -> [D, D]: upper triangle of zᵀ z, strict lower triangle zero (CPU only)."""
  d = z.shape[1]
  return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((d, d), z.dtype))(z)
