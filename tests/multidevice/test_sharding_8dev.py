"""8 fake CPU devices: sharded results equal single-device results and the float64 oracle."""

import jax
import numpy as np
import pytest

import face_jax
from face_jax import engine
from face_jax._src import engine as engine_lib
from tests import cases
from tests.oracles import face_oracle

assert jax.device_count() == 8, f'expected 8 fake CPU devices, got {jax.devices()}'

FIELDS = ('score', 'variance_collapse', 'class_fairness', 'nc1', 'mean_overlap')


def _close(a, b, rtol):
  for f in FIELDS:
    np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=rtol, err_msg=f)
  np.testing.assert_allclose(a.overlap, b.overlap, rtol=rtol, atol=rtol * b.overlap.max())
  np.testing.assert_array_equal(a.class_counts, b.class_counts)


def test_device_count_and_default_mesh():
  mesh = face_jax.default_mesh()
  assert mesh.devices.size == 8 and mesh.axis_names == ('data',)


@pytest.mark.parametrize('case', ['imbalanced', 'many_classes', 'offset'])
@pytest.mark.parametrize('dtype', ['float32', 'float64'])
def test_eight_devices_equal_one_device(case, dtype):
  x, y = cases.make(case)
  x = x.astype(dtype)
  one = face_jax.Engine(face_jax.default_mesh(jax.devices()[:1]), dtype=dtype)
  eight = face_jax.Engine(dtype=dtype)
  assert eight.num_devices == 8
  for opts in (dict(), dict(weighting='sample', bc_cov='diagonal', fairness='entropy')):
    r1 = face_jax.face_score(x, y, batch_size=37, engine=one, **opts)
    r8 = face_jax.face_score(x, y, batch_size=37, engine=eight, **opts)  # 37 -> 40 rows per step
    _close(r8, r1, 1e-6)
    ref = face_oracle(x.astype(np.float64), y, **opts)
    for f in FIELDS:
      np.testing.assert_allclose(getattr(r8, f), ref[f], rtol=1e-4 if dtype == 'float32' else 1e-8)


def test_streams_on_eight_devices():
  x, y = cases.make('imbalanced')
  x = x.astype(np.float32)
  batches = [(x[i : i + 29], y[i : i + 29]) for i in range(0, len(y), 29)]
  r8 = face_jax.face_score(batches, num_classes=8, weighting='balanced')
  r1 = face_jax.face_score(
      x, y, engine=face_jax.Engine(face_jax.default_mesh(jax.devices()[:1])), weighting='balanced'
  )
  _close(r8, r1, 1e-6)
  assert r8.diagnostics['passes'] == 2


def test_single_trace_on_eight_devices():
  x, y = cases.gaussian_classes(1000, 16, 4, seed=0)
  before = engine_lib.TRACE_COUNTS['step']
  face_jax.face_score(x.astype(np.float32), y, batch_size=100, weighting='sample')
  assert engine_lib.TRACE_COUNTS['step'] - before == 1


def test_bad_batch_named_on_eight_devices():
  x, y = cases.gaussian_classes(400, 16, 4, seed=0)
  x = x.astype(np.float32)
  x[250, 3] = np.nan
  with pytest.raises(face_jax.InputError, match=r'batch 2 \(rows 200:300\)'):
    face_jax.face_score(x, y, batch_size=100)


def test_cpu_kernel_and_xla_code_on_eight_devices():
  """The Moments CPU kernels run on every device, as on one, and agree with the XLA code.

  (Every other test here runs the kernels too, where they can be built; where not,
  tests/test_cpu_moments.py checks the stated reason and both runs use the XLA code.)
  """
  from face_jax._src import cpu_moments
  from face_jax._src import stats as stats_lib

  k, d = 3, 1030
  x, y = cases.gaussian_classes(400, d, k, seed=5, offset=100.0)
  x = x.astype(np.float32)
  # 256 rows -> 32 per device: 32 · 1030² >= CPU_KERNEL_MIN_WORK, the kernels run on each.
  assert stats_lib.Moments.uses_cpu_kernel(stats_lib.MomentsSpec(num_classes=k, dim=d), 32) == (
      cpu_moments.available()
  )
  one = face_jax.Engine(face_jax.default_mesh(jax.devices()[:1]))
  r1 = face_jax.face_score(x, y, batch_size=256, engine=one, weighting='sample')
  r8 = face_jax.face_score(x, y, batch_size=256, weighting='sample')
  _close(r8, r1, 1e-5)
  ref = face_oracle(x.astype(np.float64), y, weighting='sample')
  for f in FIELDS:
    np.testing.assert_allclose(getattr(r8, f), ref[f], rtol=1e-4)
  shift = np.stack([x[y == c][:2].mean(0) for c in range(k)])
  fin = {}
  for kernel in ('auto', 'xla'):
    spec = stats_lib.MomentsSpec(num_classes=k, dim=d, scatter_kernel=kernel)
    req = engine.Request(stats_lib.Moments, spec, {'shift': shift, 'weight': np.ones(k)})
    src = engine.ArraySource(x, y, batch_size=256)
    fin[kernel] = face_jax.Engine().run_pass(src, {'features': {'m': req}})['features']['m']
  sw = fin['xla'].within_scatter
  np.testing.assert_allclose(fin['auto'].within_scatter, sw, rtol=0, atol=1e-6 * np.abs(sw).max())
  np.testing.assert_allclose(fin['auto'].means, fin['xla'].means, rtol=1e-9)
  np.testing.assert_array_equal(fin['auto'].counts, fin['xla'].counts)
