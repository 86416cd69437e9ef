"""LogME (``metrics/logme.py``) against the reference fixtures and ``face_jax.dense``."""

import pytest

import face_jax
from tests.metrics import fixtures as fx

KEYS = ('logme_thuml', 'logme_tllib_icml')


@pytest.mark.parametrize('case,key', fx.fixture_params(KEYS))
def test_float64_matches_reference_fixture(case, key):
  fx.check_float64_matches_reference_fixture(case, key)


@pytest.mark.parametrize('case,key', fx.float32_params(KEYS))
def test_float32_stream_matches_dense_on_rounded_data(case, key):
  fx.check_float32_stream_matches_dense(case, key)


def test_bad_options():
  a, _ = fx.case('gauss_small')
  with pytest.raises(face_jax.InputError, match='variant must be one of'):
    face_jax.score(a['X'], a['y'], metrics=('logme',), variant='google')
