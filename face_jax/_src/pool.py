"""Pool-relative combination of per-model score components (FaCe pool_minmax, NCTI, ETran).

One implementation serves every pool-relative score: ``pool_minmax`` min–max
normalises each named component over the models of a pool and sums them with
signed weights; ``ncti_pool`` and ``etran_pool`` are that function with the
published weights (``face_jax.dense`` delegates to these, and FaCe's
``face_pool`` uses ``pool_minmax``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from face_jax._src.errors import InputError

# NCTI (Wang et al., ICCV 2023, BUserName/NCTI): ncc_n + seli_n − vc_n.
NCTI_WEIGHTS = {'s_ncc': 1.0, 's_seli': 1.0, 'vc': -1.0}
NCTI_COMPONENTS = ('s_seli', 's_ncc', 'vc')
# ETran (Gholami et al., ICCV 2023, mgholamikn/ETran): 0.15·s_en_n + 0.85·s_cls_n.
ETRAN_WEIGHTS = {'s_en': 0.15, 's_cls': 0.85}
ETRAN_COMPONENTS = ('s_cls', 's_en')


def minmax_normalise(values: Mapping[str, float], component: str = 'value') -> dict[str, float]:
  """Min–max normalises ``{model: value}`` over the pool to [0, 1].

  A component that is constant over the pool (max = min, e.g. a pool of one
  model) becomes 0 for every model.  Non-finite values cannot be normalised
  and raise, naming the model.
  """
  for model, v in values.items():
    if not math.isfinite(float(v)):
      raise InputError(f'cannot min-max normalise {component!r}: model {model!r} has value {v} '
                       '(not finite)')
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
  if not components:
    raise InputError('the pool is empty')
  if not weights:
    raise InputError('pool_minmax: no component weights given')
  for c, w in weights.items():
    if not math.isfinite(float(w)):
      raise InputError(f'pool_minmax: the weight of component {c!r} is not finite ({w})')
  for model, comps in components.items():
    for c in weights:
      if c not in comps:
        raise InputError(f'model {model!r} has no component {c!r} (has {sorted(comps)})')
  out = {m: 0.0 for m in components}
  for c, w in weights.items():
    norm = minmax_normalise({m: comps[c] for m, comps in components.items()}, c)
    for m in out:
      out[m] += float(w) * norm[m]
  return out


def _named(components: Mapping[str, Any], names: tuple[str, ...], fn: str) -> dict[str, dict]:
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
        raise InputError(f'{fn}: model {m!r} has {len(vals)} components, expected '
                         f'{len(names)} {names}')
      out[m] = dict(zip(names, (float(v) for v in vals)))
  return out


def ncti_pool(components: Mapping[str, Any]) -> dict[str, float]:
  """Published NCTI score over a pool of models: ncc_n + seli_n − vc_n.

  Wang et al., "How Far Pre-trained Models Are from Neural Collapse on the
  Target Dataset Informs their Transferability", ICCV 2023
  (BUserName/NCTI@b18d39514a3f2a7a949500b467a38b93de1428e4): each raw
  component is min–max normalised over the pool (``pool_minmax``).

  Args:
    components: ``{model: c}`` with c an ``NctiComponents`` (from
      ``face_jax.score(..., metrics=('ncti',))``), a mapping with keys
      ``s_seli``, ``s_ncc``, ``vc``, or a 3-tuple ``(s_seli, s_ncc, vc)`` (the
      order of ``face_jax.dense.ncti_components``).

  Returns:
    ``{model: score}``; higher = predicted more transferable.
  """
  return pool_minmax(_named(components, NCTI_COMPONENTS, 'ncti_pool'), NCTI_WEIGHTS)


def etran_pool(components: Mapping[str, Any]) -> dict[str, float]:
  """Published ETran score over a pool of models: 0.15·s_en_n + 0.85·s_cls_n.

  Gholami et al., "ETran: Energy-Based Transferability Estimation", ICCV 2023
  (mgholamikn/ETran@d4551ed8f41f4ed6eba08b9cc1a78bae178acd19): each raw
  component is min–max normalised over the pool (``pool_minmax``).

  Args:
    components: ``{model: c}`` with c an ``EtranComponents``, a mapping with
      keys ``s_cls``, ``s_en``, or a pair ``(s_cls, s_en)`` (the order of
      ``face_jax.dense.etran_components``).

  Returns:
    ``{model: score}``; higher = predicted more transferable.
  """
  return pool_minmax(_named(components, ETRAN_COMPONENTS, 'etran_pool'), ETRAN_WEIGHTS)
