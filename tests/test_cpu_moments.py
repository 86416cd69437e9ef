"""The CPU kernels of Moments (one pass over the rows + BLAS ssyrk, XLA FFI) against XLA and float64."""

import glob
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import face_jax
from face_jax import engine
from face_jax._src import cpu_moments
from face_jax._src import stats as stats_lib
from tests import cases

needs_kernel = pytest.mark.skipif(
    not cpu_moments.available(), reason="needs the CPU kernels: " + cpu_moments.status()
)


@pytest.fixture
def any_size(monkeypatch):
  """The kernels for every batch size (the tests here jit fresh functions, so nothing cached)."""
  monkeypatch.setattr(stats_lib, "CPU_KERNEL_MIN_WORK", 0)


def _numpy_has_openblas():
  root = os.path.dirname(os.path.dirname(np.__file__))
  return bool(glob.glob(os.path.join(root, "numpy.libs", "*openblas*")))


def test_available_where_it_can_be_built():
  can = any(shutil.which(c) for c in ("c++", "g++", "clang++")) and _numpy_has_openblas()
  if can:
    assert cpu_moments.available(), cpu_moments.status()
    assert "ssyrk" in cpu_moments.status()
  else:  # then the reason is stated and Moments uses its XLA code
    assert not cpu_moments.available() and "unavailable" in cpu_moments.status()


def test_which_specs_use_the_kernel():
  spec = lambda **kw: stats_lib.MomentsSpec(num_classes=3, dim=256, **kw)
  rows = stats_lib.CPU_KERNEL_MIN_WORK // 256**2
  assert stats_lib.Moments.uses_cpu_kernel(spec(), rows) == cpu_moments.available()
  assert not stats_lib.Moments.uses_cpu_kernel(spec(), rows - 1)  # too small a product
  for other in (spec(scatter_kernel="xla"), spec(dtype="float64"), spec(scatter=False)):
    assert not stats_lib.Moments.uses_cpu_kernel(other, rows)
  with pytest.raises(ValueError, match="scatter_kernel"):
    spec(scatter_kernel="blas")


def _problem(b, d, k, pad, seed=0):
  rng = np.random.default_rng(seed)
  x = (rng.standard_normal((b, d)) * 3 + 50).astype(np.float32)
  y = rng.integers(0, k, b).astype(np.int32)
  m = np.ones(b, bool)
  if pad:
    m[-pad:] = False
    x[-pad:] = 1e30  # padding must contribute nothing, whatever it holds
    x[-1, 0] = np.nan
    y[-1] = k + 5  # (the engine clamps labels; padding labels may be anything)
  shift = (rng.standard_normal((k, d)) + 50).astype(np.float32)
  weight = rng.uniform(0.5, 2.0, k).astype(np.float32)
  batch = stats_lib.Batch(
      features=jnp.asarray(x), labels=jnp.asarray(y), mask=jnp.asarray(m), extras={}
  )
  params = {"shift": jnp.asarray(shift), "weight": jnp.asarray(weight)}
  return batch, params, x, y, m, shift, weight


def _oracle(x, y, m, shift, weight, k):
  """float64 count, class sums and squares about the shift, and the weighted scatter."""
  z = np.where(m[:, None], x.astype(np.float64) - shift[np.clip(y, 0, k - 1)], 0.0)
  yy = np.where(m, y, 0)
  count = np.bincount(yy, weights=m.astype(float), minlength=k)
  s = np.zeros((k, x.shape[1]))
  q = np.zeros((k, x.shape[1]))
  np.add.at(s, yy, z)
  np.add.at(q, yy, z * z)
  zw = z * np.sqrt(weight.astype(np.float64))[yy][:, None]
  return count, s, q, zw.T @ zw


def _check(got: stats_lib.Moments, ref, kernel: bool):
  count, s, q, scatter = ref
  np.testing.assert_array_equal(np.asarray(got.count, np.float64), count)
  scale = np.abs(s).max() + 1.0
  np.testing.assert_allclose(np.asarray(got.sum, np.float64), s, rtol=0, atol=1e-5 * scale)
  np.testing.assert_allclose(np.asarray(got.sq_sum, np.float64), q, rtol=2e-6, atol=1e-5)
  sc = np.asarray(got.scatter, np.float64)
  if kernel:
    assert np.all(np.tril(sc, -1) == 0.0)  # the kernel ran: strict lower triangle zero
  np.testing.assert_allclose(
      stats_lib.symmetrize_upper(sc), scatter, rtol=0, atol=1e-5 * np.abs(scatter).max()
  )


@needs_kernel
@pytest.mark.parametrize(
    "b,d,k,pad", [(257, 1024, 7, 5), (64, 300, 3, 0), (3, 5, 2, 1), (40, 1, 4, 3), (6, 16, 3, 6)]
)
def test_from_batch_kernel_and_xla_agree_with_float64(b, d, k, pad, any_size):
  batch, params, x, y, m, shift, weight = _problem(b, d, k, pad)
  ref = _oracle(x, y, m, shift, weight, k)
  for kernel in ("auto", "xla"):
    spec = stats_lib.MomentsSpec(num_classes=k, dim=d, scatter_kernel=kernel)
    got = jax.jit(lambda p, bt, spec=spec: stats_lib.Moments.from_batch(spec, p, bt))(params, batch)
    _check(got, ref, kernel == "auto")


def _accumulate(spec, params, batches, start, stat=stats_lib.Moments):
  """Runs ``stat.accumulate`` over batches from the state ``start``; returns hi + lo in float64."""
  hi = stats_lib.as_slot(start)
  lo = jax.tree.map(jnp.zeros_like, hi)
  acc = jax.jit(lambda p, bt, h, l: stat.accumulate(spec, p, bt, h, l), donate_argnums=(2, 3))
  for bt in batches:
    hi, lo = acc(params, bt, hi, lo)
  return jax.tree.map(
      lambda a, b: np.asarray(a, np.float64)[0] + np.asarray(b, np.float64)[0], hi, lo
  )


@needs_kernel
@pytest.mark.parametrize("b,d,k,pad", [(129, 70, 5, 4), (16, 3, 2, 16)])
def test_accumulate_kernel_and_xla_agree_with_float64(b, d, k, pad, any_size):
  probs = [_problem(b, d, k, pad, seed=s) for s in range(3)]
  params = probs[0][1]
  _, _, _, _, _, shift, weight = probs[0]
  refs = [_oracle(p[2], p[3], p[4], shift, weight, k) for p in probs]
  count, s, q, sc = (sum(r[i] for r in refs) for i in range(4))
  ref = (count + 3.0, s + 0.25, q + 0.5, sc + np.triu(np.ones((d, d))))
  start = stats_lib.Moments(
      count=jnp.full((k,), 3.0),
      sum=jnp.full((k, d), 0.25),
      sq_sum=jnp.full((k, d), 0.5),
      scatter=jnp.triu(jnp.ones((d, d))),
  )
  for kernel in ("auto", "xla"):
    spec = stats_lib.MomentsSpec(num_classes=k, dim=d, scatter_kernel=kernel)
    got = _accumulate(spec, params, [p[0] for p in probs], start)
    np.testing.assert_array_equal(got.count, ref[0])
    np.testing.assert_allclose(got.sum, ref[1], rtol=0, atol=1e-5 * (np.abs(ref[1]).max() + 1))
    np.testing.assert_allclose(got.sq_sum, ref[2], rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(
        stats_lib.symmetrize_upper(got.scatter),
        stats_lib.symmetrize_upper(ref[3]),
        rtol=0,
        atol=1e-5 * np.abs(ref[3]).max(),
    )


@needs_kernel
def test_accumulate_is_compensated(any_size):
  """hi + lo keeps the exact running sum where a float32 sum loses it (row-by-row two-sum)."""
  d, k, n = 4, 1, 4096
  spec = stats_lib.MomentsSpec(num_classes=k, dim=d)
  x = np.full((n, d), 1.0 + 2.0**-20, np.float32)  # exactly representable
  batch = stats_lib.Batch(
      features=jnp.asarray(x), labels=jnp.zeros(n, jnp.int32), mask=jnp.ones(n, bool), extras={}
  )
  params = {"shift": jnp.zeros((k, d)), "weight": jnp.ones(k)}
  start = stats_lib.Moments.empty(spec)
  start = start.replace(sum=start.sum + 2.0**24)  # a large running sum
  total = _accumulate(spec, params, [batch], start).sum
  exact = 2.0**24 + n * (1.0 + 2.0**-20)
  np.testing.assert_allclose(total, exact, rtol=1e-9)
  plain = np.float32(2.0**24)
  for _ in range(n):  # the same sum in float32 alone: each add rounds up to +2
    plain = np.float32(plain + x[0, 0])
  assert abs(float(plain) - exact) > 1000.0


@needs_kernel
def test_kernel_rejects_labels_outside_range():
  """The engine clamps labels before the call; the kernel itself still refuses bad ones."""
  x = jnp.ones((3, 4))
  with pytest.raises(Exception, match="label outside"):
    jax.block_until_ready(
        cpu_moments.class_moments(
            x, jnp.array([0, 2, 1], jnp.int32), jnp.ones(3), jnp.zeros((2, 4)), jnp.ones(2)
        )
    )


def test_disabled_by_environment_falls_back_to_xla():
  code = (
      "from face_jax._src import cpu_moments, stats; import jax, jax.numpy as jnp, numpy as np;"
      "print(cpu_moments.available(), cpu_moments.status());"
      "spec = stats.MomentsSpec(num_classes=2, dim=4);"
      "print(stats.Moments.uses_cpu_kernel(spec, 10 ** 9));"
      "b = stats.Batch(features=jnp.ones((3, 4)), labels=jnp.array([0, 1, 1]),"
      " mask=jnp.ones(3, bool), extras={});"
      "p = {'shift': jnp.zeros((2, 4)), 'weight': jnp.ones(2)};"
      "print(float(stats.Moments.from_batch(spec, p, b).scatter[1, 0]))"
  )
  env = dict(os.environ, FACE_JAX_CPU_KERNEL="0", JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
  )
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert lines[0] == "False disabled by FACE_JAX_CPU_KERNEL=0"
  assert lines[1] == "False"
  assert float(lines[2]) == 3.0  # the XLA product fills the lower triangle too


@pytest.mark.parametrize("kernel", ["auto", "xla"])
def test_engine_pass_with_each_kernel_matches_float64(kernel):
  """A whole sharded, compensated pass (ragged last batch) with the kernels or the XLA code."""
  k, d = 5, 1030
  x, y = cases.gaussian_classes(600, d, k, seed=11, offset=1000.0)
  spec = stats_lib.MomentsSpec(num_classes=k, dim=d, scatter_kernel=kernel)
  assert stats_lib.Moments.uses_cpu_kernel(spec, 128) == (
      kernel == "auto" and cpu_moments.available()
  )
  shift = np.stack([x[y == c][:3].mean(0) for c in range(k)])
  req = engine.Request(stats_lib.Moments, spec, {"shift": shift, "weight": np.ones(k)})
  src = engine.ArraySource(x.astype(np.float32), y, batch_size=128)
  fin = face_jax.Engine().run_pass(src, {"features": {"m": req}})["features"]["m"]
  mus = np.stack([x[y == c].mean(0) for c in range(k)])
  sw = sum((x[y == c] - mus[c]).T @ (x[y == c] - mus[c]) for c in range(k))
  np.testing.assert_allclose(fin.within_scatter, sw, rtol=0, atol=2e-5 * np.abs(sw).max())
  np.testing.assert_allclose(fin.means, mus, rtol=1e-6)
  np.testing.assert_array_equal(fin.counts, np.bincount(y, minlength=k))


@needs_kernel
def test_step_updates_the_donated_state_in_place():
  """The compiled step holds no copy of the state: the kernel writes the donated buffers."""
  k, d, b = 50, 256, 512  # rows · D² = CPU_KERNEL_MIN_WORK: the kernels run
  spec = stats_lib.MomentsSpec(num_classes=k, dim=d)
  assert stats_lib.Moments.uses_cpu_kernel(spec, b)
  layout = (("features", k, ((stats_lib.Moments, spec),)),)
  eng = face_jax.Engine()
  step = eng.build_step(layout)
  states = eng.init_states(layout)
  params = eng.replicate(
      {"features": ({"shift": np.zeros((k, d), np.float32), "weight": np.ones(k, np.float32)},)}
  )
  raw = {
      "features": np.ones((b, d), np.float32),
      "label": np.zeros(b, np.int32),
      "_mask": np.ones(b, bool),
  }
  hlo = step.lower(states, eng.to_global(raw), params, None).compile().as_text()
  state_shapes = (f"f32[{k},{d}]", f"f32[{d},{d}]", f"f32[1,{k},{d}]", f"f32[1,{d},{d}]")
  copies = [
      ln
      for ln in hlo.splitlines()
      if ("copy(" in ln or "copy_fusion" in ln) and any(s in ln for s in state_shapes)
  ]
  assert not copies, "\n".join(copies)
  assert "face_jax_accumulate_moments" in hlo


def test_subclasses_accumulate_their_own_features(any_size):
  """A subclass's ``prepare`` (or a ``from_batch`` override) is honoured by accumulate."""

  class Doubled(stats_lib.Moments):

    @classmethod
    def prepare(cls, spec, params, batch):
      return batch.replace(features=2.0 * batch.features)

  class DoubledOld(stats_lib.Moments):

    @classmethod
    def from_batch(cls, spec, params, batch):
      return super().from_batch(spec, params, batch.replace(features=2.0 * batch.features))

  b, d, k = 40, 6, 3
  batch, params, x, y, m, shift, weight = _problem(b, d, k, 0)
  spec = stats_lib.MomentsSpec(num_classes=k, dim=d)
  want = _oracle(2.0 * x, y, m, shift, weight, k)
  for stat in (Doubled, DoubledOld):
    _check(_accumulate(spec, params, [batch], stat.empty(spec), stat), want, kernel=False)


@needs_kernel
def test_small_products_keep_the_xla_code():
  """Below CPU_KERNEL_MIN_WORK the XLA code runs (its diagonal tiles fill the lower triangle)."""
  batch, params, *_ = _problem(50, 300, 3, 0)
  spec = stats_lib.MomentsSpec(num_classes=3, dim=300)
  assert not stats_lib.Moments.uses_cpu_kernel(spec, 50)
  sc = np.asarray(
      jax.jit(lambda p, bt: stats_lib.Moments.from_batch(spec, p, bt))(params, batch).scatter
  )
  assert spec.blocks == 2 and np.any(np.tril(sc, -1) != 0.0)


def _class_scatter_pass(x, y, k, batch_size, **spec_kw):
  spec = stats_lib.ClassScatterSpec(num_classes=k, dim=x.shape[1], **spec_kw)
  req = engine.Request(stats_lib.ClassScatter, spec, {"shift": engine.FIRST_BATCH_SHIFT})
  src = engine.ArraySource(x, y, batch_size=batch_size, num_classes=k)
  return engine.Engine().run_pass(src, {"features": {"c": req}})["features"]["c"]


@pytest.mark.parametrize("kernel,tile_rows", [("auto", None), ("xla", None), ("xla", 8)])
def test_class_scatter_every_path_matches_float64(any_size, kernel, tile_rows):
  """Kernel, XLA tiles (default and small, many tiles per class) vs numpy float64.

  The stream has a ragged last batch (padding rows), an empty class and a
  single-sample class, and a large common offset.
  """
  rng = np.random.default_rng(3)
  k, d, n = 9, 40, 1003
  y = rng.integers(0, k - 2, n).astype(np.int32)
  y[17] = k - 1  # one sample; class k - 2 is empty
  x = (rng.standard_normal((n, d)) * 2 + 100).astype(np.float32)
  spec = stats_lib.ClassScatterSpec(
      num_classes=k, dim=d, scatter_kernel=kernel, tile_rows=tile_rows
  )
  assert stats_lib.ClassScatter.uses_cpu_kernel(spec, 256) == (
      kernel == "auto" and cpu_moments.available()
  )
  out = _class_scatter_pass(x, y, k, 256, scatter_kernel=kernel, tile_rows=tile_rows)
  x64 = x.astype(np.float64)
  np.testing.assert_array_equal(out.counts, np.bincount(y, minlength=k))
  for c in range(k):
    xc = x64[y == c]
    ref = (xc - xc.mean(0)).T @ (xc - xc.mean(0)) if len(xc) else np.zeros((d, d))
    got = out.class_scatter(c)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * max(np.abs(ref).max(), 1.0))
    np.testing.assert_array_equal(got, got.T)
    if len(xc):
      np.testing.assert_allclose(out.means[c], xc.mean(0), rtol=1e-6)
  g = x64.mean(0)
  about = (x64[y == 0] - g).T @ (x64[y == 0] - g)
  np.testing.assert_allclose(
      out.class_scatter_about(0, g), about, rtol=0, atol=2e-6 * np.abs(about).max()
  )


def test_class_tile_rows():
  assert stats_lib.class_tile_rows(4096, 100) == 16  # 20 -> the power of two below
  assert stats_lib.class_tile_rows(64, 1000) == 8  # at least 8
  assert stats_lib.class_tile_rows(1 << 20, 2) == 256  # at most 256
  with pytest.raises(ValueError, match="scatter_kernel"):
    stats_lib.ClassScatterSpec(num_classes=2, dim=3, scatter_kernel="blas")
