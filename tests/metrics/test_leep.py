"""LEEP and NCE (``metrics/leep.py``): fixtures, dense, source probabilities, the statistics."""

import math

import numpy as np
import pytest

import face_jax
from face_jax import dense
from face_jax._src.metrics import leep as leep_lib
from tests.metrics import fixtures as fx

KEYS = ('leep_thuml', 'nce_thuml')


@pytest.mark.parametrize('case,key', fx.fixture_params(KEYS))
def test_float64_matches_reference_fixture(case, key):
  fx.check_float64_matches_reference_fixture(case, key)


@pytest.mark.parametrize('case,key', fx.float32_params(KEYS))
def test_float32_stream_matches_dense_on_rounded_data(case, key):
  fx.check_float32_stream_matches_dense(case, key)


def test_source_metrics_need_source_probs():
  a, _ = fx.case('gauss_small')
  for metric in ('leep', 'nce'):
    with pytest.raises(face_jax.InputError, match=rf"'{metric}' needs \['source_probs'\]"):
      face_jax.score(a['X'], a['y'], metrics=(metric,))
  batches = [(a['X'][:250], a['y'][:250]), (a['X'][250:], a['y'][250:])]
  with pytest.raises(face_jax.InputError, match="needs \\['source_probs'\\]"):
    face_jax.score(batches, num_classes=5, metrics=('leep',))


@pytest.mark.parametrize('metric', ['leep', 'nce'])
def test_probabilities_must_sum_to_one(metric):
  a, _ = fx.case('gauss_small')
  p = a['probs'].copy()
  p[420] *= 1.01
  with pytest.raises(
      face_jax.InputError,
      match=r'batch 4 \(rows 400:500\): 1 invalid source_probs rows .*sum.* to 1',
  ):
    face_jax.score(a['X'], a['y'], source_probs=p, metrics=(metric,), batch_size=100)
  p = a['probs'].copy()
  p[7, 0] = -0.1
  p[7, 1] += 0.1
  with pytest.raises(face_jax.InputError, match='1 invalid source_probs rows'):
    face_jax.score(a['X'], a['y'], source_probs=p, metrics=(metric,))


def _stat_cases():
  k, ks = 3, 5
  return [
      (leep_lib.SourceJoint, leep_lib.SourceJointSpec(k, ks, 'float64'), {}),
      (leep_lib.SourceJoint, leep_lib.SourceJointSpec(k, ks, 'float64', hard=True), {}),
      (
          leep_lib.LeepLogLik,
          leep_lib.LeepLogLikSpec(k, ks, 'float64'),
          {'cond': np.random.default_rng(1).uniform(size=(k, ks))},
      ),
  ]


@pytest.mark.parametrize(
    'stat,spec,params', _stat_cases(), ids=lambda v: getattr(v, '__name__', '')
)
def test_statistics_are_masked_additive_sums(stat, spec, params):
  fx.check_masked_additive(stat, spec, params)


def test_leep_zero_mass_source_class_and_zero_expected_prediction():
  # Source class 2 gets no probability mass: P(.|z=2) := 0 (the reference: 0/0 = nan).
  rng = np.random.default_rng(0)
  probs = np.concatenate([rng.dirichlet(np.ones(2), 60), np.zeros((60, 1))], axis=1)
  y = np.arange(60) % 3
  x = rng.normal(size=(60, 4))
  joint = leep_lib.JointCounts(
      counts=np.bincount(y).astype(float), joint=np.stack([probs[y == c].sum(0) for c in range(3)])
  )
  cond = leep_lib.leep_conditional(joint)
  assert np.all(cond[:, 2] == 0) and np.allclose(cond[:, :2].sum(0), 1.0)
  got = face_jax.score(x, y, source_probs=probs, metrics=('leep',))['leep']
  assert got == pytest.approx(dense.leep(probs, y), rel=1e-12)
  # A sample always lends its own mass to P(y_i | z), so EEP_i > 0 mathematically;
  # an EEP that underflows to 0 is counted apart and gives -inf, as log 0 in the reference.
  sums = leep_lib.LeepSums(n=60.0, log_sum=-50.0, zero_rows=1.0)
  assert leep_lib.leep_from_sums(joint, sums) == -math.inf
  assert leep_lib.leep_from_sums(joint, leep_lib.LeepSums(60.0, -50.0, 0.0)) == -50.0 / 60.0


@pytest.mark.parametrize('ks', [1000, 997, 64, 48])  # blocked (125, 16 wide), unblocked
def test_first_argmax_is_argmax_with_the_first_index_on_ties(ks):
  import jax.numpy as jnp
  from face_jax._src.metrics import leep as leep_lib

  rng = np.random.default_rng(0)
  p = rng.random((257, ks)).astype(np.float32)
  p[:, 7] = p[:, ks // 2] = 2.0  # a tie in every row: the first index wins
  p[3] = 0.0  # all equal
  p[4, ks - 1] = 5.0  # the last column
  p[5, 20:40] = 3.0  # a tie across a block boundary (blocks of 16 at ks = 48)
  got = np.asarray(leep_lib.first_argmax(jnp.asarray(p)))
  np.testing.assert_array_equal(got, np.argmax(p, axis=-1))
  assert got[0] == 7 and got[3] == 0 and got[4] == ks - 1 and got[5] == 20
