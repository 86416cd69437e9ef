"""Every streamed metric equals its in-memory float64 oracle (``face_jax.dense``).

The data are streamed in steps of 64 rows (the last one padded) in the drawn dtype,
and the oracles see exactly the streamed values, in float64.  Tolerances are those
of the metric tests (tests/metrics/fixtures.py): float64 ``DENSE_RTOL = 1e-8``,
float32 ``F32_RTOL = FLOAT32_RTOL = 1e-4``; FaCe against tests/oracles.py as
tests/metrics/test_face.py (absolute floors 1e-12 / 1e-9; the score, C + λF, to the
tolerance of |C| + |λF|, and the overlaps to that of the largest); VCI with the absolute
floors of tests/metrics/test_collapse.py; PARC exactly (the rows are collected
exactly and scored by the same in-memory code).  NLEEP (a Gaussian-mixture fit per
call) is left to tests/metrics for time.
"""

import numpy as np
import pytest
from hypothesis import given

import face_jax
from face_jax import dense
from tests import oracles
from tests.metrics import fixtures as fx
from tests.property import strategies as pst
from tests.property import test_labels

RTOL = {'float64': fx.DENSE_RTOL, 'float32': fx.F32_RTOL}
FACE_ATOL = {'float64': 1e-12, 'float32': 1e-9}
VCI_ATOL = {'float64': 1e-12, 'float32': 1e-6}
ORACLES = {
    'nc1': lambda x, y, p: oracles.face_oracle(x, y, weighting='balanced')['nc1'],
    **fx.DENSE_ORACLES,
}


@given(data=pst.datasets())
def test_one_pass_metrics_match_dense(data):
  out = pst.one_pass_scores(data)
  x, y, p = data.x64, data.y, data.p64
  rtol = RTOL[data.dtype]
  for m, oracle in ORACLES.items():
    atol = VCI_ATOL[data.dtype] if m == 'vci' else 0.0
    assert out[m] == pytest.approx(oracle(x, y, p), rel=rtol, abs=atol), m
  pst.assert_face_close(out['face'], oracles.face_oracle(x, y), rtol, FACE_ATOL[data.dtype])


@given(data=pst.datasets(shapes=(pst.SHAPES[1],), min_n=200, max_per_class=60))
def test_multi_pass_metrics_match_dense(data):
  out = face_jax.score(
      data.x,
      data.y,
      metrics=test_labels.MULTI_PASS,
      metric_options=test_labels.MULTI_PASS_OPTIONS,
      batch_size=pst.BATCH,
  )
  x, y = data.x64, data.y
  rtol = {'float64': fx.DENSE_RTOL, 'float32': fx.FLOAT32_RTOL}[data.dtype]
  want = {
      'sfda': [dense.sfda(x, y)],
      'ncti': dense.ncti_components(x, y, pca_solver='full', pca_dim=4),
      'etran': dense.etran_components(x, y),
  }
  for m, w in want.items():
    np.testing.assert_allclose(fx.values(out[m]), w, rtol=rtol, err_msg=m)
  assert float(out['parc']) == dense.parc(x, None, y, n_dims=4)
