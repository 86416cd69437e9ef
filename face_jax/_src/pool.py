"""Pool-relative combination of per-model score components (FaCe's pool combinations, NCTI, ETran).

One implementation serves every pool-relative score: ``pool_combine``
normalises each named component over the models of a pool (min–max, z-score or
rank) and sums them with signed weights; ``pool_minmax`` is its min–max case.  The metric modules hold their pool scores (``ncti_pool`` in
``metrics/ncti.py``, ``etran_pool`` in ``metrics/etran.py``, ``face_pool`` in
``metrics/face.py``), each this function with its published weights;
``face_jax.dense`` delegates to them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import scipy.stats

from face_jax._src.errors import InputError

NORMALISATIONS = ('minmax', 'zscore', 'rank')


def _finite_array(values: Mapping[str, float], component: str, how: str) -> np.ndarray:
  for model, v in values.items():
    if not math.isfinite(float(v)):
      raise InputError(
          f'cannot {how} normalise {component!r}: model {model!r} has value {v} (not finite)'
      )
  return np.array([float(v) for v in values.values()], np.float64)


def minmax_normalise(values: Mapping[str, float], component: str = 'value') -> dict[str, float]:
  """Min–max normalises ``{model: value}`` over the pool to [0, 1].

  A component that is constant over the pool (max = min, e.g. a pool of one
  model) becomes 0 for every model.  Non-finite values cannot be normalised
  and raise, naming the model.
  """
  arr = _finite_array(values, component, 'min-max')
  if arr.size == 0:
    return {}
  lo, hi = arr.min(), arr.max()
  if hi == lo:
    return {m: 0.0 for m in values}
  return {m: float((float(v) - lo) / (hi - lo)) for m, v in values.items()}


def zscore_normalise(values: Mapping[str, float], component: str = 'value') -> dict[str, float]:
  """Standardises ``{model: value}`` over the pool: (v − mean) / std (population std).

  A component that is constant over the pool becomes 0 for every model.
  Non-finite values raise, naming the model.
  """
  arr = _finite_array(values, component, 'z-score')
  if arr.size == 0:
    return {}
  centred = arr - arr.mean()
  sd = float(np.sqrt(np.mean(centred * centred)))
  if sd == 0.0 or arr.max() == arr.min():
    return {m: 0.0 for m in values}
  return {m: float(z) for m, z in zip(values, centred / sd)}


def rank_normalise(values: Mapping[str, float], component: str = 'value') -> dict[str, float]:
  """Ranks ``{model: value}`` over the pool, scaled to [0, 1]: (rank − 1) / (n − 1).

  Ties share their average rank; a component that is constant over the pool
  (or a pool of one model) becomes 0 for every model.  Non-finite values raise.
  """
  arr = _finite_array(values, component, 'rank')
  if arr.size == 0:
    return {}
  if arr.max() == arr.min():
    return {m: 0.0 for m in values}
  r = (scipy.stats.rankdata(arr, method='average') - 1.0) / (arr.size - 1)
  return {m: float(v) for m, v in zip(values, r)}


_NORMALISERS = {
    'minmax': minmax_normalise,
    'zscore': zscore_normalise,
    'rank': rank_normalise,
}


def pool_combine(
    components: Mapping[str, Mapping[str, float]],
    weights: Mapping[str, float],
    normalise: str = 'minmax',
) -> dict[str, float]:
  """Weighted sum of components normalised over the pool (``NORMALISATIONS``).

  Args:
    components: ``{model: {component: value}}``; every model must have every
      component named in ``weights``.
    weights: ``{component: weight}`` (sign included); the score of model m is
      ``Σ_c weight_c · normalise_c(m)``.
    normalise: "minmax" ([0, 1]), "zscore" (mean 0, std 1) or "rank" (ranks
      scaled to [0, 1]); a component constant over the pool contributes 0.

  Returns:
    ``{model: score}`` (same keys and order as ``components``).

  Raises:
    InputError: an unknown normalisation, an empty pool or weights, a
      non-finite weight, a missing component, or a non-finite value (naming
      the model and component).

  Example:
    >>> pool_combine({'a': {'u': 1.0}, 'b': {'u': 3.0}}, {'u': 2.0}, 'zscore')
    {'a': -2.0, 'b': 2.0}
  """
  if normalise not in _NORMALISERS:
    raise InputError(f'normalise must be one of {NORMALISATIONS}, got {normalise!r}')
  name = f'pool_{normalise}'
  if not components:
    raise InputError('the pool is empty')
  if not weights:
    raise InputError(f'{name}: no component weights given')
  for c, w in weights.items():
    if not math.isfinite(float(w)):
      raise InputError(f'{name}: the weight of component {c!r} is not finite ({w})')
  for model, comps in components.items():
    for c in weights:
      if c not in comps:
        raise InputError(f'model {model!r} has no component {c!r} (has {sorted(comps)})')
  fn = _NORMALISERS[normalise]
  out = {m: 0.0 for m in components}
  for c, w in weights.items():
    norm = fn({m: comps[c] for m, comps in components.items()}, c)
    for m in out:
      out[m] += float(w) * norm[m]
  return out


def pool_minmax(
    components: Mapping[str, Mapping[str, float]], weights: Mapping[str, float]
) -> dict[str, float]:
  """Weighted sum of pool-normalised components.

  Args:
    components: ``{model: {component: value}}``; every model must have every
      component named in ``weights``.
    weights: ``{component: weight}`` (sign included); the score of model m is
      ``Σ_c weight_c · minmax_c(m)``.

  Returns:
    ``{model: score}`` (same keys and order as ``components``).

  Raises:
    InputError: an empty pool or weights, a non-finite weight, a missing
      component, or a non-finite value (naming the model and component).

  Example:
    >>> pool_minmax({'a': {'u': 1.0}, 'b': {'u': 3.0}}, {'u': 2.0})
    {'a': 0.0, 'b': 2.0}
  """
  return pool_combine(components, weights, 'minmax')


def named_components(
    components: Mapping[str, Any], names: tuple[str, ...], fn: str
) -> dict[str, dict]:
  """Per-model components as ``{name: value}``.

  A model's entry may be a result object with a ``components()`` method
  (``NctiComponents``, ``EtranComponents``), a mapping, or a sequence in the
  order ``names``.
  """
  out = {}
  for m, vals in components.items():
    if hasattr(vals, 'components') and callable(vals.components):
      out[m] = dict(vals.components())
    elif isinstance(vals, Mapping):
      out[m] = dict(vals)
    else:
      try:
        vals = tuple(vals)
      except TypeError:
        raise InputError(f'{fn}: model {m!r} has {vals!r}, expected components {names}') from None
      if len(vals) != len(names):
        raise InputError(
            f'{fn}: model {m!r} has {len(vals)} components, expected ' f'{len(names)} {names}'
        )
      out[m] = dict(zip(names, (float(v) for v in vals)))
  return out
