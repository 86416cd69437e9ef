"""FaCe (``metrics/face.py``): every variant of docs/face.md against the float64 oracle."""

import dataclasses
import itertools
import warnings

import numpy as np
import pytest

import face_jax
from tests import cases
from tests.oracles import face_oracle

VARIANTS = list(
    itertools.product(
        ('balanced', 'sample'),
        ('neg', 'neglog'),
        ('pooled', 'diagonal', 'spherical'),
        ('std', 'range', 'entropy', 'cv', 'log_std'),
    )
)
FIELDS = ('score', 'variance_collapse', 'class_fairness', 'nc1', 'mean_overlap')


def _compare(res, ref, rtol, atol=1e-12):
  for f in FIELDS:
    np.testing.assert_allclose(getattr(res, f), ref[f], rtol=rtol, atol=atol, err_msg=f)
  np.testing.assert_allclose(res.overlap, ref['overlap'], rtol=rtol, atol=atol)
  np.testing.assert_allclose(res.log_overlap, ref['log_overlap'], rtol=rtol, atol=atol)
  a, b = abs(res.variance_collapse), abs(res.options.fairness_weight * res.class_fairness)
  assert res.fairness_share == pytest.approx(b / (a + b) if a + b else 0.0, rel=1e-12)
  assert res.combination == 'sum'
  np.testing.assert_array_equal(res.classes, ref['classes'])


@pytest.mark.parametrize('case', sorted(cases.CASES))
def test_every_variant_float64(case):
  x, y = cases.make(case)
  for weighting, vc, bc, fair in VARIANTS:
    opts = dict(weighting=weighting, vc_transform=vc, bc_cov=bc, fairness=fair)
    res = face_jax.face_score(x, y, **opts)
    ref = face_oracle(x, y, **opts)
    _compare(res, ref, rtol=1e-8)
    assert res.options == face_jax.FaceOptions(**opts)


@pytest.mark.parametrize('case', sorted(cases.CASES))
@pytest.mark.parametrize('weighting', ['balanced', 'sample'])
def test_float32_streaming_path(case, weighting):
  x, y = cases.make(case)
  x32 = x.astype(np.float32)  # the oracle sees exactly the same (rounded) data
  for bc, fair in (('pooled', 'std'), ('diagonal', 'entropy'), ('spherical', 'range')):
    opts = dict(weighting=weighting, bc_cov=bc, fairness=fair)
    res = face_jax.face_score(x32, y, batch_size=37, **opts)
    ref = face_oracle(x32.astype(np.float64), y, **opts)
    _compare(res, ref, rtol=1e-4, atol=1e-9)


def test_options_temperature_weight_ridge():
  x, y = cases.make('imbalanced')
  for t, lam, rho in ((0.05, 0.5, 0.0), (1.0, 2.0, 1e-2), (0.3, 0.0, 1e-6)):
    opts = dict(fairness='entropy', temperature=t, fairness_weight=lam, ridge=rho)
    res = face_jax.face_score(x, y, **opts)
    _compare(res, face_oracle(x, y, **opts), rtol=1e-8)


def test_defaults_are_the_leave_one_target_out_choice():
  assert face_jax.FaceOptions() == face_jax.FaceOptions(
      weighting='sample',
      vc_transform='neg',
      bc_cov='diagonal',
      fairness='std',
      temperature=0.1,
      fairness_weight=1.0,
      ridge=1e-3,
      combine='pool_zscore',
  )
  x, y = cases.make('imbalanced')
  r = face_jax.face_score(x, y)
  assert r.options == face_jax.FaceOptions()
  assert r.variance_collapse == pytest.approx(-r.nc1)
  # One model: the score is the sum, and the result says so.
  assert r.combination == 'sum' and r.score == pytest.approx(r.variance_collapse + r.class_fairness)
  assert 'cond_sigma_reg' not in r.diagnostics  # only for bc_cov='pooled'


def test_result_fields_and_diagnostics():
  x, y = cases.make('imbalanced')
  res = face_jax.face_score(
      x, y, weighting='balanced', vc_transform='neg', bc_cov='pooled', fairness='std'
  )
  k = len(np.unique(y))
  assert res.overlap.shape == (k,)
  np.testing.assert_array_equal(res.class_counts, np.bincount(y))
  d = res.diagnostics
  assert (d['N'], d['D'], d['K']) == (x.shape[0], x.shape[1], k)
  assert d['left_out'] == [] and d['rank_sigma_b'] == k - 1
  assert d['cond_sigma_reg'] >= 1.0
  assert res.score == pytest.approx(res.variance_collapse + res.class_fairness)
  assert res.to_dict()['options']['weighting'] == 'balanced'


def test_perfect_collapse_and_coincident_means():
  # Every sample sits on its class mean: NC1 = 0 -> C = 0 (neg) and +inf (neglog).
  mu = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
  y = np.repeat(np.arange(3), 4)
  x = mu[y]
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    r = face_jax.face_score(x, y, vc_transform='neg', bc_cov='pooled')
    assert r.nc1 == 0.0 and r.variance_collapse == 0.0
    assert face_jax.face_score(x, y, vc_transform='neglog').variance_collapse == np.inf
    # Tr Σ_W = 0 with distinct means: every D_B is +inf, so every overlap is 0.
    assert np.all(r.overlap == 0.0) and r.class_fairness == 0.0
  # All class means equal: no singular value kept, NC1 = +inf.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 3))
  y = np.repeat([0, 1], 20)
  x[y == 1] -= x[y == 1].mean(0) - x[y == 0].mean(0)
  r = face_jax.face_score(x, y)
  assert r.nc1 == np.inf and r.variance_collapse == -np.inf and r.diagnostics['rank_sigma_b'] == 0
  assert face_jax.face_score(x, y, vc_transform='neg').variance_collapse == -np.inf


def test_face_pool_minmax():
  pool = {}
  for i, sep in enumerate((0.3, 1.0, 3.0)):
    x, y = cases.gaussian_classes(400, 10, 4, seed=i, sep=sep)
    pool[f'm{i}'] = face_jax.face_score(x, y)
  s = face_jax.face_pool(pool, combine='pool_minmax')
  c = {m: r.variance_collapse for m, r in pool.items()}
  f = {m: r.class_fairness for m, r in pool.items()}
  norm = lambda v: {
      m: (x - min(v.values())) / (max(v.values()) - min(v.values())) for m, x in v.items()
  }
  cn, fn = norm(c), norm(f)
  for m in pool:
    assert s[m] == pytest.approx(cn[m] + fn[m], rel=1e-12)
  assert face_jax.face_pool(pool, fairness_weight=0.0, combine='pool_minmax') == pytest.approx(cn)
  # A single model has no pool score beyond 0 for constant terms.
  assert face_jax.face_pool({'a': pool['m0']}, combine='pool_minmax') == {'a': 0.0}
  # A single model's score under a pool combination is the sum, and says so.
  r = face_jax.face_score(*cases.make('basic'), combine='pool_minmax')
  assert r.score == pytest.approx(r.variance_collapse + r.class_fairness, rel=1e-12)
  assert r.combination == 'sum' and r.options.combine == 'pool_minmax'


def test_face_pool_zscore_rank_and_sum():
  pool = {}
  for i, sep in enumerate((0.3, 1.0, 3.0, 0.6)):
    x, y = cases.gaussian_classes(300, 8, 4, seed=i, sep=sep)
    pool[f'm{i}'] = face_jax.face_score(x, y, combine='pool_zscore')
  c = np.array([r.variance_collapse for r in pool.values()])
  f = np.array([r.class_fairness for r in pool.values()])
  z = lambda v: (v - v.mean()) / v.std()
  got = face_jax.face_pool(pool)  # the results' own combine: pool_zscore
  np.testing.assert_allclose(list(got.values()), z(c) + z(f), rtol=1e-12)
  got = face_jax.face_pool(pool, combine='pool_rank', fairness_weight=2.0)
  rank = lambda v: (np.argsort(np.argsort(v)) / (len(v) - 1))
  np.testing.assert_allclose(list(got.values()), rank(c) + 2.0 * rank(f), rtol=1e-12)
  got = face_jax.face_pool(pool, combine='sum')
  np.testing.assert_allclose(list(got.values()), c + f, rtol=1e-12)
  with pytest.raises(face_jax.InputError, match='different combinations'):
    face_jax.face_pool(
        {**pool, 'x': dataclasses.replace(pool['m0'], options=face_jax.FaceOptions(combine='sum'))}
    )
  with pytest.raises(face_jax.InputError, match='combine must be one of'):
    face_jax.face_pool(pool, combine='pool_median')


def test_face_pool_shares():
  pool = {}
  for i, sep in enumerate((0.3, 1.0, 3.0, 0.6)):
    x, y = cases.gaussian_classes(300, 8, 4, seed=i, sep=sep)
    pool[f'm{i}'] = face_jax.face_score(x, y, combine='pool_zscore')
  c = np.array([r.variance_collapse for r in pool.values()])
  f = np.array([r.class_fairness for r in pool.values()])
  z = lambda v: (v - v.mean()) / v.std()
  got = face_jax.face_pool_shares(pool)  # the results' own combine: pool_zscore
  want = np.abs(2.0 * z(f)) / (np.abs(z(c)) + np.abs(2.0 * z(f)))
  np.testing.assert_allclose(
      list(face_jax.face_pool_shares(pool, fairness_weight=2.0).values()), want, rtol=1e-12
  )
  assert all(0.0 <= v <= 1.0 for v in got.values()) and max(got.values()) > 0.1
  # The sum: each model's own fairness_share.
  got = face_jax.face_pool_shares(pool, combine='sum')
  np.testing.assert_allclose(
      list(got.values()), [r.fairness_share for r in pool.values()], rtol=1e-12
  )
  # F constant over the pool contributes nothing to a pool score: share 0.
  flat = {m: dataclasses.replace(r, class_fairness=-0.5) for m, r in pool.items()}
  assert set(face_jax.face_pool_shares(flat, combine='pool_minmax').values()) == {0.0}
  with pytest.raises(face_jax.InputError, match='combine must be one of'):
    face_jax.face_pool_shares(pool, combine='pool_median')


def test_scale_free_fairness_sees_tiny_overlaps():
  # Well separated classes: every overlap underflows to ~0, so std/range see nothing, while
  # the scale-free fairness still measures how unequal the overlaps are.
  x, y = cases.gaussian_classes(400, 6, 5, seed=3, sep=40.0)
  x[y == 0] *= 3.0  # one class wider than the others: unequal overlaps
  std = face_jax.face_score(x, y, fairness='std')
  cv = face_jax.face_score(x, y, fairness='cv')
  logstd = face_jax.face_score(x, y, fairness='log_std')
  assert abs(std.class_fairness) < 1e-12 and std.fairness_share < 1e-12
  assert cv.class_fairness < -0.1 and logstd.class_fairness < -1.0
  assert np.all(np.isfinite(logstd.log_overlap)) and logstd.fairness_share > 0.1


def test_options_instance_and_keywords():
  x, y = cases.make('imbalanced')
  opts = face_jax.FaceOptions(fairness='std', bc_cov='pooled')
  a = face_jax.face_score(x, y, options=opts)
  b = face_jax.face_score(x, y, fairness='std', bc_cov='pooled')
  c = face_jax.score(x, y, metrics=('face',), metric_options={'face': opts})['face']
  assert a.options == b.options == c.options == opts
  assert a.score == b.score == c.score
  # Keywords replace the fields of an options instance.
  d = face_jax.face_score(x, y, options=opts, fairness='range')
  assert d.options == face_jax.FaceOptions(fairness='range', bc_cov='pooled')
  with pytest.raises(face_jax.InputError, match=r"unknown option\(s\) \['fairnes'\]"):
    face_jax.face_score(x, y, fairnes='std')
  with pytest.raises(face_jax.InputError, match='fairness must be one of'):
    face_jax.face_score(x, y, fairness='median')
  with pytest.raises(face_jax.InputError, match='options must be a FaceOptions'):
    face_jax.face_score(x, y, options={'fairness': 'std'})
  assert set(face_jax.FaceOptions.CHOICES) == {
      'weighting',
      'vc_transform',
      'bc_cov',
      'fairness',
      'combine',
  }
