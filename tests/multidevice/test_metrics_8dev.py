"""8 fake CPU devices: every streamed metric equals its dense oracle or its 1-device result."""

import pathlib

import jax
import numpy as np
import pytest

import face_jax
from face_jax import dense
from tests import cases
from tests.metrics import fixtures as fx

assert jax.device_count() == 8, f'expected 8 fake CPU devices, got {jax.devices()}'

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'reference'
ORACLES = fx.DENSE_ORACLES
MULTI_PASS = ('sfda', 'ncti', 'etran', 'nleep', 'parc')


@pytest.mark.parametrize('case', ['gauss_small', 'imbalanced_offset'])
def test_eight_devices_match_dense(case):
  with np.load(FIXTURES / 'cases' / f'{case}.npz') as d:
    x, y, p = d['X'], d['y'], d['probs']
  eng = face_jax.Engine(dtype='float64')
  assert eng.num_devices == 8
  out = face_jax.score(x, y, source_probs=p, metrics=tuple(ORACLES), batch_size=61, engine=eng)
  for m, f in ORACLES.items():
    assert out[m] == pytest.approx(f(x, y, p), rel=1e-9), m
  pca = face_jax.score(x, y, metrics=('gbc',), pca_dim=16, batch_size=61, engine=eng)['gbc']
  assert pca == pytest.approx(dense.gbc(x, y, pca_dim=16), rel=1e-5)


def _vec(r):
  return np.array(r.astuple() if hasattr(r, 'astuple') else [float(r)], np.float64)


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
def test_eight_devices_equal_one_device(dtype):
  x, y = cases.gaussian_classes(410, 12, 4, seed=3, sep=0.8, offset=20.0)
  x = x.astype(dtype)
  one = face_jax.Engine(face_jax.default_mesh(jax.devices()[:1]), dtype=dtype)
  eight = face_jax.Engine(dtype=dtype)
  kw = dict(metrics=MULTI_PASS, batch_size=37, pca_dim=8, subsample=300)  # 37 -> 40 rows a step
  r1 = face_jax.score(x, y, engine=one, **kw)
  r8 = face_jax.score(x, y, engine=eight, **kw)
  assert one.passes_run == eight.passes_run == 3
  rtol = 1e-5 if dtype == 'float32' else 1e-10
  for m in ('sfda', 'ncti', 'etran'):
    np.testing.assert_allclose(_vec(r8[m]), _vec(r1[m]), rtol=rtol, err_msg=m)
  # The same k energies are selected; only their summation order differs.
  assert r8['etran'].s_en == pytest.approx(r1['etran'].s_en, rel=1e-12)
  for m in ('nleep', 'parc'):  # the same rows, collected exactly
    assert float(r8[m]) == float(r1[m]) and r8[m].n_used == 300 and r8[m].n_total == 410
