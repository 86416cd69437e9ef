"""Degenerate features never give a silent NaN: every metric returns a number or raises InputError."""

import dataclasses
import math
import warnings

import numpy as np
import pytest

import face_jax


def _floats(v):
  if hasattr(v, 'variance_collapse'):
    return [v.score, v.variance_collapse, v.class_fairness, v.nc1]
  if dataclasses.is_dataclass(v):
    return [
        float(getattr(v, f.name))
        for f in dataclasses.fields(v)
        if isinstance(getattr(v, f.name), (float, int, np.floating))
    ]
  return [float(v)]


def _cases():
  rng = np.random.default_rng(0)
  n, d, k = 400, 70, 4
  y = np.arange(n) % k
  mu = rng.normal(size=(k, d)) * 5
  low = rng.normal(size=(n, d))
  low[:, 10:] = 0.0
  return {
      'constant': (np.ones((n, d)), y),
      'zeros': (np.zeros((n, d)), y),
      'collapsed': (mu[y], y),
      'low_rank': (low, y),
      'tiny_scale': (rng.normal(size=(n, d)) * 1e-12, y),
  }, rng.dirichlet(np.ones(5), n)


@pytest.mark.parametrize('case', ['constant', 'zeros', 'collapsed', 'low_rank', 'tiny_scale'])
def test_every_metric_number_or_input_error(case):
  cases, probs = _cases()
  x, y = cases[case]
  for metric in face_jax.metric_names():
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      try:
        value = face_jax.score(x, y, metrics=(metric,), source_probs=probs)[metric]
      except face_jax.InputError as e:
        assert metric in str(e) or 'features' in str(e), str(e)
        continue
    for v in _floats(value):
      assert v is None or not math.isnan(v), (case, metric, value)
