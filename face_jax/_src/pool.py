"""Pool-relative combination of per-model score components (FaCe pool_minmax, NCTI, ETran)."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from face_jax._src.errors import InputError


def minmax_normalise(values: Mapping[str, float], component: str = 'value') -> dict[str, float]:
  """Min–max normalises ``{model: value}`` over the pool to [0, 1].

  A component that is constant over the pool (max = min) becomes 0 for every
  model.  Non-finite values cannot be normalised and raise, naming the model.
  """
  for model, v in values.items():
    if not math.isfinite(float(v)):
      raise InputError(f'cannot min-max normalise {component!r}: model {model!r} has value {v}')
  if not values:
    return {}
  arr = np.array([float(v) for v in values.values()], np.float64)
  lo, hi = arr.min(), arr.max()
  if hi == lo:
    return {m: 0.0 for m in values}
  return {m: float((float(v) - lo) / (hi - lo)) for m, v in values.items()}


def pool_minmax(components: Mapping[str, Mapping[str, float]],
                weights: Mapping[str, float]) -> dict[str, float]:
  """Weighted sum of pool-normalised components.

  Args:
    components: ``{model: {component: value}}``; every model must have every
      component named in ``weights``.
    weights: ``{component: weight}``; the score of model m is
      ``Σ_c weight_c · minmax_c(m)``.

  Returns:
    ``{model: score}``.

  Raises:
    InputError: an empty pool, a missing component, or a non-finite value.
  """
  if not components:
    raise InputError('the pool is empty')
  for model, comps in components.items():
    missing = [c for c in weights if c not in comps]
    if missing:
      raise InputError(f'model {model!r} lacks component(s) {missing}')
  out = {m: 0.0 for m in components}
  for c, w in weights.items():
    norm = minmax_normalise({m: comps[c] for m, comps in components.items()}, c)
    for m in out:
      out[m] += float(w) * norm[m]
  return out
