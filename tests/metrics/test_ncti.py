"""NCTI (``metrics/ncti.py``): fixtures, dense, the LDA branches, the PCA dimension, options."""

import math

import numpy as np
import pytest

import face_jax
from face_jax import dense
from face_jax._src.errors import InputError
from tests.metrics import fixtures as fx


@pytest.mark.parametrize('case', fx.CASES)
def test_float64_in_memory_matches_reference_fixture(case):
  fx.check_mp_float64_matches_reference_fixture(case, 'ncti')


@pytest.mark.parametrize('case', fx.CASES)
def test_float32_streamed_matches_dense_on_rounded_data(case):
  fx.check_mp_float32(case, 'ncti')


def test_pass_count():
  fx.check_pass_count('ncti')


def test_ncti_eigen_solver_branch():
  # Small-variance features: exp(-Σ top-32 PCA variances) > 1e-10, so the
  # reference's LDA takes the shrinkage 'eigen' solver.
  x, y, _ = fx.mp_case('gauss_small')
  xs = 0.3 * x
  r = face_jax.score(xs, y, metrics=('ncti',))['ncti']
  assert r.lda_solver == 'eigen'
  np.testing.assert_allclose(r.astuple(), dense.ncti_components(xs, y), rtol=fx.DENSE_RTOL)
  r32 = face_jax.score(xs.astype(np.float32), y, metrics=('ncti',), batch_size=97)['ncti']
  np.testing.assert_allclose(
      r32.astuple(), dense.ncti_components(xs.astype(np.float32), y), rtol=fx.FLOAT32_RTOL
  )


def test_ncti_rank_deficient_features_drop_null_components():
  # rank(S_T) = 40 < 64: PCA components 41..64 have zero variance.  In exact
  # arithmetic they are zero columns of F, which the LDA drops; the streamed
  # NCTI computes exactly that, in float64 and float32 alike (the reference
  # would divide those columns' rounding noise by its std instead).
  from sklearn.decomposition import PCA
  from tests import cases

  x, y = cases.gaussian_classes(600, 40, 6, seed=2, sep=1.0, offset=3.0)
  x = np.concatenate([x, np.zeros((600, 60))], 1)
  x = x @ np.linalg.qr(np.random.default_rng(0).normal(size=(100, 100)))[0]
  pca = PCA(64, svd_solver='full')
  f = pca.fit_transform(x)
  f[:, pca.explained_variance_ < 1e-12 * pca.explained_variance_[0]] = 0.0
  h, p = dense._lda_svd(f, y, 6, np.bincount(y))  # pylint: disable=protected-access
  h = h - h.mean(0)
  want = (
      float(np.linalg.svd(h, compute_uv=False).sum()),
      float(p[np.arange(600), y].mean()),
      math.log(sum(np.linalg.svd(p[y == c], compute_uv=False).sum() for c in range(6))),
  )
  r64 = face_jax.score(x, y, metrics=('ncti',), batch_size=97)['ncti']
  r32 = face_jax.score(x.astype(np.float32), y, metrics=('ncti',), batch_size=97)['ncti']
  np.testing.assert_allclose(r64.astuple(), want, rtol=fx.DENSE_RTOL)
  np.testing.assert_allclose(r32.astuple(), want, rtol=fx.FLOAT32_RTOL)


def test_ncti_pca_dim_policy_error_and_explicit_dim():
  x, y, _ = fx.mp_case('many_classes')
  with pytest.raises(InputError, match='PCA to 64 dimensions needs min'):
    face_jax.score(x, y, metrics=('ncti',), pca_dim_policy='error')
  x2, y2, _ = fx.mp_case('gauss_small')
  r = face_jax.score(x2, y2, metrics=('ncti',), pca_dim=16)['ncti']
  assert r.pca_dim == 16
  np.testing.assert_allclose(
      r.astuple(), dense.ncti_components(x2, y2, pca_dim=16), rtol=fx.DENSE_RTOL
  )


@pytest.mark.parametrize(
    'options,match',
    [
        ({'pca_dim': 0}, 'pca_dim must be a positive integer'),
        ({'pca_dim_policy': 'pad'}, 'pca_dim_policy must be one of'),
    ],
)
def test_bad_options(options, match):
  x, y, _ = fx.mp_case('gauss_small')
  with pytest.raises(InputError, match=match):
    face_jax.score(x, y, metrics=('ncti',), metric_options={'ncti': options})


def test_one_shot_iterator_is_refused():
  x, y, _ = fx.mp_case('gauss_small')
  with pytest.raises(InputError, match='one-shot iterator'):
    face_jax.score(iter([(x, y)]), num_classes=5, metrics=('ncti',))
