"""H-score and the regularised H-score (``metrics/hscore.py``): fixtures, dense, NormMoments."""

import numpy as np
import pytest

from face_jax._src.metrics import hscore as hscore_lib
from tests.metrics import fixtures as fx

KEYS = ('hscore_tllib', 'reg_hscore_tllib')


@pytest.mark.parametrize('case,key', fx.fixture_params(KEYS))
def test_float64_matches_reference_fixture(case, key):
  fx.check_float64_matches_reference_fixture(case, key)


@pytest.mark.parametrize('case,key', fx.float32_params(KEYS))
def test_float32_stream_matches_dense_on_rounded_data(case, key):
  fx.check_float32_stream_matches_dense(case, key)


def test_norm_moments_are_masked_additive_sums():
  k, d = 3, 6
  fx.check_masked_additive(
      hscore_lib.NormMoments,
      hscore_lib.NormMomentsSpec(k, d, 'float64'),
      {'shift': np.full((k, d), 3.0)},
  )


def test_norm_sums_quartic_about_the_mean_is_exact():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(300, 7)) * np.exp(rng.normal(size=7)) + 50.0
  center = x[:10].mean(0)
  z = x - center
  a = np.sum(z * z, 1)
  sums = hscore_lib.NormSums(
      center=center,
      n=300.0,
      sum=z.sum(0),
      sq=float(a.sum()),
      quartic=float((a * a).sum()),
      cross=a @ z,
  )
  mu = x.mean(0)
  xc = x - mu
  want = float(np.sum(np.sum(xc * xc, 1) ** 2))
  assert sums.quartic_about(mu, xc.T @ xc) == pytest.approx(want, rel=1e-12)
