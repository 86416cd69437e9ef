"""NLEEP and PARC on a row subsample (``metrics/subsample.py``): fixtures, dense, the subsample."""

import numpy as np
import pytest

import face_jax
from face_jax import dense
from face_jax._src.errors import FaceJaxWarning, InputError
from face_jax._src.metrics import subsample as subsample_lib
from tests.metrics import fixtures as fx


@pytest.mark.parametrize('metric', ['nleep', 'parc'])
@pytest.mark.parametrize('case', fx.CASES)
def test_float64_in_memory_matches_reference_fixture(case, metric):
  fx.check_mp_float64_matches_reference_fixture(case, metric)


@pytest.mark.parametrize('metric', ['nleep', 'parc'])
def test_float32_streamed_matches_dense_on_rounded_data(metric):
  fx.check_mp_float32('gauss_small', metric)


@pytest.mark.parametrize('metric', ['nleep', 'parc'])
def test_pass_count(metric):
  fx.check_pass_count(metric)


def test_subsample_is_seeded_deterministic_and_reported():
  x, y, _ = fx.mp_case('imbalanced_offset')
  a = face_jax.score(x, y, metrics=('parc',), subsample=400, subsample_seed=7)['parc']
  b = face_jax.score(x, y, metrics=('parc',), subsample=400, subsample_seed=7)['parc']
  c = face_jax.score(x, y, metrics=('parc',), subsample=400, subsample_seed=8)['parc']
  assert isinstance(a, face_jax.SubsampleResult)
  assert (a.n_used, a.n_total, a.seed, a.subsampled) == (400, 2626, 7, True)
  assert float(a) == float(b) and float(a) != float(c)
  rows = subsample_lib.select_rows(2626, 400, 7)
  assert rows.size == 400 and np.all(np.diff(rows) > 0)
  assert float(a) == dense.parc(x[rows], None, y[rows])
  # Streamed (uneven batches, N unknown up front) collects the same rows.
  batches = [(x[i : i + 300], y[i : i + 300]) for i in range(0, len(y), 300)]
  s = face_jax.score(
      batches, num_classes=20, metrics=('parc',), dtype='float64', subsample=400, subsample_seed=7
  )['parc']
  assert float(s) == float(a) and s.n_total == 2626


def test_nleep_subsample_matches_dense_on_the_selected_rows():
  x, y, _ = fx.mp_case('gauss_small')
  r = face_jax.score(x, y, metrics=('nleep',), metric_options={'nleep': {'subsample': 300}})
  r = r['nleep']
  rows = subsample_lib.select_rows(500, 300, 0)
  assert (r.n_used, r.n_total) == (300, 500)
  assert float(r) == dense.nleep(x[rows], y[rows])


def test_stream_that_changes_between_passes_is_an_error():
  x, y, _ = fx.mp_case('gauss_small')
  calls = []

  def batches():
    calls.append(1)
    # calls 1 and 2: peek at construction and the counting pass; the row pass loses rows.
    stop = len(y) if len(calls) <= 2 else len(y) - 50
    return iter(
        [(x[i : min(i + 100, stop)], y[i : min(i + 100, stop)]) for i in range(0, stop, 100)]
    )

  with pytest.raises(InputError, match='same rows'):
    face_jax.score(batches, num_classes=5, metrics=('parc',), dtype='float64', subsample=100)


@pytest.mark.parametrize(
    'metric,options,match',
    [
        ('nleep', {'subsample': 1}, 'subsample must be an integer >= 2'),
        ('nleep', {'pca_variance': 1.5}, r'pca_variance must be in \(0, 1\)'),
        ('parc', {'pca_solver': 'arpack'}, 'pca_solver must be one of'),
        ('parc', {'label_rdm': 'spearman'}, 'label_rdm must be one of'),
        ('parc', {'subsample_seed': -1}, 'subsample_seed must be an integer >= 0'),
    ],
)
def test_bad_options(metric, options, match):
  x, y, _ = fx.mp_case('gauss_small')
  with pytest.raises(InputError, match=match):
    face_jax.score(x, y, metrics=(metric,), metric_options={metric: options})


def test_parc_pca_dimension_above_d():
  x, y, _ = fx.mp_case('gauss_small')
  with pytest.warns(FaceJaxWarning, match='PCA to 32 dimensions'):
    r = face_jax.score(x[:, :20], y, metrics=('parc',))['parc']
  assert r.details == {'n_dims': 20}
  assert float(r) == dense.parc(x[:, :20], None, y, n_dims=20)
  with pytest.raises(InputError, match='PCA to 32 dimensions'):
    face_jax.score(x[:, :20], y, metrics=('parc',), pca_dim_policy='error')
