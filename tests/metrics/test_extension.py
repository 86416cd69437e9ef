"""A metric registered from outside the package through the public extension API only.

This is the example of docs/baselines.md, "Adding a metric": an options
dataclass, a plan asking the engine for an existing statistic (``Moments``),
``face_jax.engine.register``, then ``face_jax.score`` computes it alongside the
library's metrics (sharing their pass).
"""

import dataclasses

import numpy as np
import pytest

import face_jax
from face_jax import engine


@dataclasses.dataclass(frozen=True)
class SpreadOptions:
  """Options of the toy metric ``spread``.

  Attributes:
    power: the exponent p of the mean squared distance to the class mean.
  """

  power: float = 1.0

  def __post_init__(self):
    if not self.power > 0:
      raise face_jax.InputError(f'spread: power must be > 0, got {self.power!r}')


def spread_plan(info: engine.StreamInfo, options: SpreadOptions, dtype: str):
  """Plan of ``spread``: one pass of ``Moments`` (the request most metrics share)."""
  spec = engine.MomentsSpec(num_classes=info.num_classes, dim=info.dim, dtype=dtype)
  req = engine.Request(
      engine.Moments, spec, {'shift': engine.FIRST_BATCH_SHIFT, 'weight': np.ones(info.num_classes)}
  )
  fin = (yield {'moments': req})['moments']  # ClassMoments, host float64
  return float((np.trace(fin.within_scatter) / fin.n) ** options.power)


SPREAD = engine.MetricInfo(
    name='spread',
    plan=spread_plan,
    options=SpreadOptions,
    higher_is_better=False,
    citation='a test of the extension API',
    summary='(mean ‖x − μ_y‖²)^p; 1 pass of Moments',
)


def _numpy_spread(x, y, power):
  mu = np.stack([x[y == c].mean(0) for c in range(int(y.max()) + 1)])
  return float(np.mean(np.sum((x - mu[y]) ** 2, axis=1)) ** power)


def test_registered_metric_runs_with_score_and_shares_the_pass():
  rng = np.random.default_rng(0)
  y = np.arange(600) % 3
  x = rng.normal(size=(600, 5)) + 4.0 * np.eye(5)[y] + 100.0
  assert 'spread' not in face_jax.metric_names()
  with engine.registered(SPREAD):
    assert 'spread' in face_jax.metric_names() and engine.get('spread') is SPREAD
    eng = face_jax.Engine(dtype='float64')
    out = face_jax.score(x, y, metrics=('spread', 'hscore'), engine=eng, power=0.5)
    assert eng.passes_run == 1  # the same Moments request
    assert out['spread'] == pytest.approx(_numpy_spread(x, y, 0.5), rel=1e-10)
    out = face_jax.score(
        x.astype(np.float32),
        y,
        metrics=('spread',),
        batch_size=64,
        metric_options={'spread': SpreadOptions(power=2.0)},
    )
    assert out['spread'] == pytest.approx(
        _numpy_spread(x.astype(np.float32).astype(np.float64), y, 2.0), rel=1e-5
    )
    with pytest.raises(face_jax.InputError, match='power must be > 0'):
      face_jax.score(x, y, metrics=('spread',), power=0.0)
    with pytest.raises(ValueError, match='already registered'):
      engine.register(SPREAD)
  assert 'spread' not in face_jax.metric_names()
  with pytest.raises(face_jax.InputError, match="unknown metric 'spread'"):
    face_jax.score(x, y, metrics=('spread',))


def test_register_and_unregister():
  engine.register(SPREAD)
  try:
    assert 'spread' in face_jax.metric_names()
  finally:
    assert engine.unregister('spread') is SPREAD
  assert 'spread' not in face_jax.metric_names()
  with pytest.raises(face_jax.InputError, match='unknown metric'):
    engine.unregister('spread')
