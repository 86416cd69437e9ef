"""GBC (``metrics/gbc.py``): reference fixtures, dense, the PCA variant and ProjectedMoments."""

import numpy as np
import pytest

import face_jax
from face_jax._src.metrics import gbc as gbc_lib
from tests.metrics import fixtures as fx

KEYS = (
    'gbc_google_spherical_nopca_f64',
    'gbc_google_diagonal_nopca_f64',
    'gbc_google_spherical_pca64_f32',
)


@pytest.mark.parametrize('case,key', fx.fixture_params(KEYS))
def test_float64_matches_reference_fixture(case, key):
  want = fx.case(case)[1][key]['value']
  if want is None:
    assert key == 'gbc_google_spherical_pca64_f32' and case == 'many_classes'
    x, y, _, _ = fx.inputs(case, 'f64')
    with pytest.raises(
        face_jax.InputError, match=r'pca_dim=64 needs 1 <= pca_dim <= min\(N, D\) = 32'
    ):
      face_jax.score(x, y, metrics=('gbc',), pca_dim=64)
    return
  fx.check_float64_matches_reference_fixture(case, key)


@pytest.mark.parametrize('case,key', fx.float32_params(KEYS))
def test_float32_stream_matches_dense_on_rounded_data(case, key):
  # Cases without a reference value (PCA-64 on D = 32) are left out; their error is tested above.
  fx.check_float32_stream_matches_dense(case, key)


def test_pca_larger_than_the_data_is_refused_before_any_pass():
  a, _ = fx.case('many_classes')  # D = 32
  eng = face_jax.Engine(dtype='float64')
  with pytest.raises(face_jax.InputError, match=r'pca_dim=64 needs .*\(N=4000, D=32\)'):
    face_jax.score(a['X'], a['y'], metrics=('gbc',), pca_dim=64, engine=eng)
  assert eng.passes_run == 0
  # A stream (N unknown up front) with N < pca_dim <= D fails after the first pass.
  x, y = a['X'][:20], a['y'][:20] % 4
  eng = face_jax.Engine(dtype='float64')
  with pytest.raises(
      face_jax.InputError, match=r'pca_dim=30 needs 1 <= pca_dim <= min\(N, D\) = 20'
  ):
    face_jax.score([(x, y)], num_classes=4, metrics=('gbc',), pca_dim=30, engine=eng)
  assert eng.passes_run == 1


def test_pca_takes_a_second_pass():
  a, _ = fx.case('imbalanced_offset')
  eng = face_jax.Engine(dtype='float64')
  face_jax.score(a['X'], a['y'], metrics=('gbc',), pca_dim=32, engine=eng)
  assert eng.passes_run == 2


@pytest.mark.parametrize(
    'options,match',
    [
        ({'gaussian_type': 'full'}, 'gaussian_type must be one of'),
        ({'pca_dim': 2.5}, 'pca_dim must be None or a positive int'),
    ],
)
def test_bad_options(options, match):
  a, _ = fx.case('gauss_small')
  with pytest.raises(face_jax.InputError, match=match):
    face_jax.score(a['X'], a['y'], metrics=('gbc',), **options)


def test_projected_moments_are_masked_additive_sums():
  k, d = 3, 6
  fx.check_masked_additive(
      gbc_lib.ProjectedMoments,
      gbc_lib.ProjectedMomentsSpec(k, d, 2, 'float64'),
      {
          'center': np.ones(d),
          'basis': np.random.default_rng(2).normal(size=(d, 2)),
          'shift': np.zeros((k, 2)),
      },
  )
