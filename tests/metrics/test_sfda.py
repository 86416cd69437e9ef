"""SFDA (``metrics/sfda.py``) against the reference fixtures and ``face_jax.dense``."""

import pytest

import face_jax
from face_jax._src.errors import InputError
from tests.metrics import fixtures as fx


@pytest.mark.parametrize('case', fx.CASES)
def test_float64_in_memory_matches_reference_fixture(case):
  fx.check_mp_float64_matches_reference_fixture(case, 'sfda')


@pytest.mark.parametrize('case', fx.CASES)
def test_float32_streamed_matches_dense_on_rounded_data(case):
  fx.check_mp_float32(case, 'sfda')


def test_pass_count():
  fx.check_pass_count('sfda')


def test_bad_data():
  x, y, _ = fx.mp_case('gauss_small')
  with pytest.raises(InputError, match='at least 2 populated classes'):
    face_jax.score(x[:100], y[:100], metrics=('sfda',))  # class 0 only
  with pytest.raises(InputError, match='sfda has no option'):
    face_jax.score(x, y, metrics=('sfda',), metric_options={'sfda': {'pca_dim': 3}})
