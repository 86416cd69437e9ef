"""The CPU scatter kernel (BLAS ssyrk through XLA FFI) against the XLA product and float64."""

import glob
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from face_jax._src import cpu_gram
from face_jax._src import stats as stats_lib


def _numpy_has_openblas():
  root = os.path.dirname(os.path.dirname(np.__file__))
  return bool(glob.glob(os.path.join(root, "numpy.libs", "*openblas*")))


def test_available_where_it_can_be_built():
  can = any(shutil.which(c) for c in ("c++", "g++", "clang++")) and _numpy_has_openblas()
  if can:
    assert cpu_gram.available(), cpu_gram.status()
    assert "ssyrk" in cpu_gram.status()
  else:  # then the reason is stated and the XLA product is used
    assert not cpu_gram.available() and "unavailable" in cpu_gram.status()


def _batch(b, d, k, seed=0, pad=0):
  rng = np.random.default_rng(seed)
  x = (rng.standard_normal((b, d)) * 3 + 50).astype(np.float32)
  y = rng.integers(0, k, b).astype(np.int32)
  m = np.ones(b, bool)
  if pad:
    m[-pad:] = False
    x[-pad:] = 1e30          # padding must contribute nothing, whatever it holds
  return stats_lib.Batch(features=jnp.asarray(x), labels=jnp.asarray(y), mask=jnp.asarray(m),
                         extras={}), x, y, m


@pytest.mark.skipif(not cpu_gram.available(), reason="needs the BLAS kernel: " + cpu_gram.status())
@pytest.mark.parametrize("b,d,k,pad", [(257, 1024, 7, 5), (64, 1100, 3, 0), (3, 1030, 2, 1)])
def test_blas_and_xla_moments_agree_with_float64(b, d, k, pad):
  batch, x, y, m = _batch(b, d, k, pad=pad)
  rng = np.random.default_rng(1)
  shift = (rng.standard_normal((k, d)) + 50).astype(np.float32)
  weight = rng.uniform(0.5, 2.0, k).astype(np.float32)
  params = {"shift": jnp.asarray(shift), "weight": jnp.asarray(weight)}
  out = {}
  for kernel in ("auto", "xla"):
    spec = stats_lib.MomentsSpec(num_classes=k, dim=d, scatter_kernel=kernel)
    out[kernel] = jax.jit(lambda p, bt, spec=spec: stats_lib.Moments.from_batch(spec, p, bt))(
        params, batch)
  # float64 oracle of the weighted scatter about the per-class shift.
  z = np.where(m[:, None], x.astype(np.float64) - shift[y], 0.0)
  zw = z * np.sqrt(weight.astype(np.float64))[y][:, None]
  ref = zw.T @ zw
  blas = np.asarray(out["auto"].scatter, np.float64)
  assert np.all(np.tril(blas, -1) == 0.0)      # the BLAS kernel ran: strict lower triangle zero
  scale = np.abs(ref).max()
  for kernel in ("auto", "xla"):
    got = stats_lib.symmetrize_upper(np.asarray(out[kernel].scatter, np.float64))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * scale)
  for leaf in ("count", "sum", "sq_sum"):   # the class sums do not depend on the kernel
    np.testing.assert_allclose(np.asarray(getattr(out["auto"], leaf)),
                               np.asarray(getattr(out["xla"], leaf)), rtol=1e-6, atol=1e-3)


def test_small_dims_keep_the_xla_product():
  """Below CPU_GRAM_MIN_DIM the XLA block product runs (its diagonal tiles fill the lower triangle)."""
  batch, *_ = _batch(50, 300, 3)
  spec = stats_lib.MomentsSpec(num_classes=3, dim=300)
  params = {k: jnp.asarray(v, jnp.float32) for k, v in stats_lib.Moments.default_params(spec).items()}
  sc = np.asarray(stats_lib.Moments.from_batch(spec, params, batch).scatter)
  assert spec.blocks == 2 and np.any(np.tril(sc, -1) != 0.0)


def test_scatter_kernel_option_is_checked():
  with pytest.raises(ValueError, match="scatter_kernel"):
    stats_lib.MomentsSpec(num_classes=2, dim=3, scatter_kernel="blas")


def test_disabled_by_environment_falls_back_to_xla():
  code = ("from face_jax._src import cpu_gram, stats; import jax, jax.numpy as jnp, numpy as np;"
          "print(cpu_gram.available(), cpu_gram.status());"
          "spec = stats.MomentsSpec(num_classes=2, dim=4);"
          "b = stats.Batch(features=jnp.ones((3, 4)), labels=jnp.array([0, 1, 1]),"
          " mask=jnp.ones(3, bool), extras={});"
          "p = {'shift': jnp.zeros((2, 4)), 'weight': jnp.ones(2)};"
          "print(float(stats.Moments.from_batch(spec, p, b).scatter[0, 0]))")
  env = dict(os.environ, FACE_JAX_CPU_GRAM="0", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert lines[0] == "False disabled by FACE_JAX_CPU_GRAM=0"
  assert float(lines[1]) == 3.0


@pytest.mark.parametrize("kernel", ["auto", "xla"])
def test_engine_pass_with_each_kernel_matches_float64(kernel):
  """A whole sharded, compensated pass (ragged last batch) with either scatter kernel."""
  import face_jax
  from tests import cases
  k, d = 5, 1030
  x, y = cases.gaussian_classes(600, d, k, seed=11, offset=1000.0)
  spec = stats_lib.MomentsSpec(num_classes=k, dim=d, scatter_kernel=kernel)
  shift = np.stack([x[y == c][:3].mean(0) for c in range(k)])
  req = face_jax.Request(stats_lib.Moments, spec, {"shift": shift, "weight": np.ones(k)})
  src = face_jax.ArraySource(x.astype(np.float32), y, batch_size=128)
  fin = face_jax.Engine().run_pass(src, {"features": {"m": req}})["features"]["m"]
  mus = np.stack([x[y == c].mean(0) for c in range(k)])
  sw = sum((x[y == c] - mus[c]).T @ (x[y == c] - mus[c]) for c in range(k))
  np.testing.assert_allclose(fin.within_scatter, sw, rtol=0, atol=2e-5 * np.abs(sw).max())
  np.testing.assert_allclose(fin.means, mus, rtol=1e-6)
