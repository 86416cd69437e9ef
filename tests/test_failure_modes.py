"""The numerical edge cases of docs/failure_modes.md: the table there is what this test asserts.

The table "Numerical edge cases" lists one row per case of ``CASES`` below, and
in its last column the outcome of every registered metric, as clauses
``metric[, metric...]: outcome`` separated by ``;`` (``others`` names every
metric the row does not name elsewhere).  Outcomes:

* ``finite``: a value whose every float field is finite (no NaN, no inf);
* ``= x``: the value (FaCe: its score) equals x (``inf``, ``-inf`` or a number);
* ``unscaled``: the value equals the metric's value on the case's unscaled
  float64 data (relative 1e-5);
* ``oracle``: the value equals the float64 in-memory oracle on the same data
  (``face_jax.dense``; FaCe: tests/oracles.py) within relative 1e-6 (float64
  input) or 1e-4 (other input, accumulated in float32);
* ``InputError "text"``: ``face_jax.InputError`` whose message holds the text;
* ``not run here (reason)``: the outcome is stated in the doc, not run by the
  test (the reason says why).

Every row must cover every registered metric, so a new metric fails this
test until its outcomes are written down.
"""

import dataclasses
import functools
import math
import pathlib
import re
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import face_jax
from face_jax import dense
from tests import oracles
from tests.metrics import fixtures as fx

DOC = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'failure_modes.md'
N, D, K = 240, 8, 3  # N > 200: ETran's energy tail needs more than 200 samples


def _base(n=N, d=D, k=K, seed=0):
  rng = np.random.default_rng(seed)
  y = np.arange(n) % k
  mu = rng.normal(size=(k, d)) * 3.0
  return mu[y] + rng.normal(size=(n, d)), y


def _probs(n, ks=5, seed=1):
  return np.random.default_rng(seed).dirichlet(np.ones(ks), n)


def _equal_means():
  x, y = _base()
  for c in range(K):
    x[y == c] -= x[y == c].mean(0)
  return x + 1.0, y, _probs(N)


def _collapse():
  _, y = _base()
  mu = np.random.default_rng(2).normal(size=(K, D)) * 3.0
  return mu[y], y, _probs(N)


def _singular_within():
  _, y = _base()
  x = np.random.default_rng(4).normal(size=(K, D))[y] * 3.0
  x[:, :2] += np.random.default_rng(3).normal(size=(N, 2))
  return x, y, _probs(N)


def _column(kind):
  x, y = _base()
  x[:, 3] = 5.0 if kind == 'constant' else x[:, 2]
  return x, y, _probs(N)


def _scaled(scale, dtype):
  x, y = _base()
  return (x * scale).astype(dtype), y, _probs(N)


def _single_sample_class():
  x, y = _base()
  y = y.copy()
  y[y == 2] = 0
  y[0] = 2
  return x, y, _probs(N)


def _low_precision(dtype, probs_too=False):
  x, y = _base()
  p = _probs(N)
  return x.astype(dtype), y, (p.astype(dtype) if probs_too else p)


def _probs_zeros():
  x, y = _base()
  p = _probs(N)
  p[:, 0] = 0.0
  return x, y, p / p.sum(1, keepdims=True)


CASES = {
    'baseline': lambda: (*_base(), _probs(N)),
    'equal_means': _equal_means,
    'collapse': _collapse,
    'singular_within': _singular_within,
    'wide': lambda: (*_base(n=12, d=200), _probs(12)),
    'constant_column': lambda: _column('constant'),
    'duplicate_column': lambda: _column('duplicate'),
    'tiny_f64': lambda: _scaled(1e-30, np.float64),
    'tiny_f32': lambda: _scaled(1e-30, np.float32),
    'huge_f64': lambda: _scaled(1e30, np.float64),
    'huge_f32': lambda: _scaled(1e30, np.float32),
    'single_sample_class': _single_sample_class,
    'two_classes': lambda: (*_base(k=2), _probs(N)),
    'k1000': lambda: (*_base(n=2000, k=1000), _probs(2000)),
    'float16': lambda: _low_precision(np.float16),
    'bfloat16': lambda: _low_precision(jnp.bfloat16),
    'float16_probs': lambda: _low_precision(np.float16, probs_too=True),
    'probs_zeros': _probs_zeros,
    'probs_one_hot': lambda: (*_base(), np.eye(5)[_base()[1]]),
}


def _oracle(metric, x, y, p):
  x = np.asarray(x, np.float64)
  if metric == 'face':
    return [oracles.face_oracle(x, y)['score']]
  if metric in fx.DENSE_ORACLES:
    return [fx.DENSE_ORACLES[metric](x, y, p)]
  if metric == 'nc1':  # equal class counts here: balanced Σ_W = pooled Σ_W
    return [dense.nc1(x, y)]
  if metric == 'ncti':  # the PCA dimension clipped to min(N, D), as the streamed default does
    return list(dense.ncti_components(x, y, pca_solver='full', pca_dim=min(64, *x.shape)))
  if metric == 'parc':
    return [dense.parc(x, None, y, n_dims=min(32, *x.shape))]
  return list(np.atleast_1d(fx.dense_value(metric, x, y)))


def _values(v):
  """The float fields of a metric's value (FaCe: score, C, F, NC1; components: all)."""
  if isinstance(v, face_jax.FaCeResult):
    return [v.score, v.variance_collapse, v.class_fairness, v.nc1]
  if hasattr(v, 'astuple'):
    return [float(a) for a in v.astuple()]
  if dataclasses.is_dataclass(v):
    return [float(v.value)]
  return [float(v)]


@functools.lru_cache(maxsize=None)
def _run(case, metric):
  """('value', [floats]) or ('error', message) of ``metric`` on ``case``."""
  x, y, p = CASES[case]()
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    try:
      return 'value', _values(face_jax.score(x, y, metrics=(metric,), source_probs=p)[metric])
    except face_jax.InputError as e:
      return 'error', str(e)


def _table():
  """{case: {metric: outcome}} from the doc's table of numerical edge cases."""
  text = DOC.read_text()
  section = text.split('## Numerical edge cases', 1)[1].split('\n## ', 1)[0]
  rows = [r for r in section.splitlines() if r.startswith('| `')]
  metrics = face_jax.metric_names()
  table = {}
  for row in rows:
    cells = [c.strip() for c in row.strip().strip('|').split('|')]
    case = cells[0].strip('`')
    outcomes = {}
    for clause in cells[-1].split(';'):
      names, outcome = clause.split(':', 1)
      names = [n.strip().strip('`') for n in names.split(',')]
      if names == ['others']:
        names = [m for m in metrics if m not in outcomes]
      for n in names:
        assert n in metrics and n not in outcomes, (case, n)
        outcomes[n] = outcome.strip()
    assert sorted(outcomes) == metrics, (case, sorted(set(metrics) - set(outcomes)))
    table[case] = outcomes
  return table


TABLE = _table()


def test_the_table_covers_every_case():
  assert sorted(TABLE) == sorted(CASES)


def _check(case, metric, outcome):
  if outcome.startswith('not run here'):
    assert re.fullmatch(r'not run here \(.+\)', outcome), outcome
    return
  kind, got = _run(case, metric)
  m = re.fullmatch(r'InputError "(.+)"', outcome)
  if m:
    assert kind == 'error' and m.group(1) in got, (case, metric, got)
    return
  assert kind == 'value', (case, metric, got)
  assert not any(math.isnan(v) for v in got), (case, metric, got)
  if outcome == 'finite':
    assert all(math.isfinite(v) for v in got), (case, metric, got)
  elif outcome.startswith('='):
    want = float(outcome[1:].strip())
    assert got[0] == pytest.approx(want, abs=1e-9), (case, metric, got)
  elif outcome == 'unscaled':
    ref_kind, ref = _run('baseline', metric)
    assert ref_kind == 'value', ref
    np.testing.assert_allclose(got, ref, rtol=1e-5, err_msg=f'{case} {metric}')
  elif outcome == 'oracle':
    x, y, p = CASES[case]()
    want = _oracle(metric, x, y, p)
    rtol = 1e-6 if x.dtype == np.float64 else fx.FLOAT32_RTOL  # float32 accumulation
    np.testing.assert_allclose(got[: len(want)], want, rtol=rtol, err_msg=f'{case} {metric}')
  else:
    raise AssertionError(f'unknown outcome {outcome!r} ({case}, {metric})')


@pytest.mark.parametrize('case', sorted(CASES))
def test_outcomes_match_the_doc(case):
  for metric, outcome in TABLE[case].items():
    _check(case, metric, outcome)
