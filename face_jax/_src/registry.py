"""The metric registry: every score ``face_jax.score`` can compute, by name."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from face_jax._src.errors import InputError


@dataclasses.dataclass(frozen=True)
class MetricInfo:
  """A registered metric.

  Attributes:
    name: registry name (``face_jax.score(metrics=(name, ...))``).
    plan: ``plan(stream_info, options: dict, dtype: str) -> generator`` (see ``plan.run_plans``).
    defaults: option name -> default value (the options the metric accepts).
    higher_is_better: orientation of the returned value.
    citation: paper and reference implementation.
    summary: one line.
    needs: per-sample extras the metric requires (e.g. ``{'source_probs'}``).
    pool_relative: True when the value is a set of per-model components that
      only become a score over a pool of models.
  """

  name: str
  plan: Callable[..., Any]
  defaults: Mapping[str, Any]
  higher_is_better: bool
  citation: str
  summary: str
  needs: frozenset = frozenset()
  pool_relative: bool = False


_REGISTRY: dict[str, MetricInfo] = {}


def register(info: MetricInfo) -> MetricInfo:
  if info.name in _REGISTRY:
    raise ValueError(f'metric {info.name!r} is already registered')
  _REGISTRY[info.name] = info
  return info


def get(name: str) -> MetricInfo:
  """The ``MetricInfo`` registered under ``name``; ``InputError`` if unknown."""
  _ensure_loaded()
  try:
    return _REGISTRY[name]
  except KeyError:
    raise InputError(f'unknown metric {name!r}; known: {sorted(_REGISTRY)}') from None


def names() -> list[str]:
  """Sorted names of every registered metric (``face_jax.score(metrics=...)``)."""
  _ensure_loaded()
  return sorted(_REGISTRY)


def _ensure_loaded():
  # Importing the metric modules registers them.
  from face_jax._src import metrics  # noqa: F401
  from face_jax._src.baselines import register_a  # noqa: F401
  from face_jax._src.baselines import register_b  # noqa: F401
