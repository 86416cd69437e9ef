"""NC1 and VCI (``metrics/collapse.py``) against the reference fixtures and float64 oracles."""

import numpy as np
import pytest

import face_jax
from face_jax import dense
from tests import oracles
from tests.metrics import fixtures as fx

KEYS = ('nc1_rhubarbwu_pinv', 'nc1_papyan')


@pytest.mark.parametrize('case,key', fx.fixture_params(KEYS))
def test_float64_matches_reference_fixture(case, key):
  fx.check_float64_matches_reference_fixture(case, key)


@pytest.mark.parametrize('case,key', fx.float32_params(KEYS))
def test_float32_stream_matches_dense_on_rounded_data(case, key):
  fx.check_float32_stream_matches_dense(case, key)


@pytest.mark.parametrize('case', fx.CASES)
@pytest.mark.parametrize('path', ['f64', 'f32'])
def test_nc1_default_is_face_definition_and_vci_matches_float64_oracle(case, path):
  x, y, _, _ = fx.inputs(case, path)
  x64 = x.astype(np.float64)
  out = fx.scored(case, path, 'default')
  rtol = 1e-9 if path == 'f64' else fx.F32_RTOL
  face_nc1 = oracles.face_oracle(x64, y, weighting='balanced')['nc1']  # docs/face.md's default
  assert out['nc1'] == pytest.approx(face_nc1, rel=rtol)
  # VCI is exactly 0 on `wide` (N < D: Σ_T^† Σ_B = projector): absolute floor.
  assert out['vci'] == pytest.approx(
      dense.vci(x64, y), rel=rtol, abs=1e-12 if path == 'f64' else 1e-6
  )
  assert out['vci'] == pytest.approx(
      _vci_pinv_oracle(x64, y), rel=rtol, abs=1e-12 if path == 'f64' else 1e-6
  )


def _vci_pinv_oracle(x, y):
  """Straight from the definition with numpy's pinv / matrix_rank (float64)."""
  n = len(y)
  g = x.mean(0)
  st = (x - g).T @ (x - g) / n
  sb = sum(
      (y == c).sum() / n * np.outer(x[y == c].mean(0) - g, x[y == c].mean(0) - g)
      for c in np.unique(y)
  )
  return 1.0 - np.trace(np.linalg.pinv(st, hermitian=True) @ sb) / np.linalg.matrix_rank(sb)


@pytest.mark.parametrize(
    'options,match',
    [
        ({'weighting': 'uniform'}, 'weighting must be one of'),
        ({'centering': 'median'}, 'centering must be one of'),
    ],
)
def test_bad_options(options, match):
  a, _ = fx.case('gauss_small')
  with pytest.raises(face_jax.InputError, match=match):
    face_jax.score(a['X'], a['y'], metrics=('nc1',), **options)
  with pytest.raises(face_jax.InputError, match=match):
    face_jax.Nc1Options(**options)
