"""8 fake CPU devices: the multi-pass and subsample baselines equal their 1-device results."""

import jax
import numpy as np
import pytest

import face_jax
from tests import cases

assert jax.device_count() == 8, f'expected 8 fake CPU devices, got {jax.devices()}'

METRICS = ('sfda', 'ncti', 'etran', 'nleep', 'parc')


def _vec(r):
  return np.array(r.astuple() if hasattr(r, 'astuple') else [float(r)], np.float64)


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
def test_eight_devices_equal_one_device(dtype):
  x, y = cases.gaussian_classes(410, 12, 4, seed=3, sep=0.8, offset=20.0)
  x = x.astype(dtype)
  one = face_jax.Engine(face_jax.default_mesh(jax.devices()[:1]), dtype=dtype)
  eight = face_jax.Engine(dtype=dtype)
  kw = dict(metrics=METRICS, batch_size=37, pca_dim=8, subsample=300)   # 37 -> 40 rows per step
  r1 = face_jax.score(x, y, engine=one, **kw)
  r8 = face_jax.score(x, y, engine=eight, **kw)
  assert one.passes_run == eight.passes_run == 3
  rtol = 1e-5 if dtype == 'float32' else 1e-10
  for m in ('sfda', 'ncti', 'etran'):
    np.testing.assert_allclose(_vec(r8[m]), _vec(r1[m]), rtol=rtol, err_msg=m)
  # The same k energies are selected; only their summation order differs.
  assert r8['etran'].s_en == pytest.approx(r1['etran'].s_en, rel=1e-12)
  for m in ('nleep', 'parc'):                          # the same rows, collected exactly
    assert float(r8[m]) == float(r1[m]) and r8[m].n_used == 300 and r8[m].n_total == 410
