"""The metric registry: every score ``face_jax.score`` can compute, by name.

This module holds the registry only and imports no metric: the catalogue
``face_jax._src.metrics`` registers the library's metrics when it is imported
(``face_jax._src.api`` imports it), and code outside the package registers its
own through ``face_jax.engine.register``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

from face_jax._src.errors import InputError


@dataclasses.dataclass(frozen=True)
class MetricInfo:
  """A registered metric.

  Attributes:
    name: registry name (``face_jax.score(metrics=(name, ...))``).
    plan: ``plan(stream_info, options, dtype: str) -> generator`` with ``options``
      an instance of ``options`` (see ``plan.run_plans``).
    options: the metric's options class: a frozen, hashable dataclass whose
      field defaults are the metric's defaults and whose ``__post_init__``
      validates the values (raising ``InputError``); no fields for a metric
      without options.
    higher_is_better: orientation of the returned value.
    citation: paper and reference implementation.
    summary: one line.
    needs: per-sample extras the metric requires (e.g. ``{'source_probs'}``).
    pool_relative: True when the value is a set of per-model components that
      only become a score over a pool of models.
    pool: ``pool({model: value}) -> {model: score}`` combining the values of a
      pool of models (the score of a pool-relative metric), or None.
  """

  name: str
  plan: Callable[..., Any]
  options: type
  higher_is_better: bool
  citation: str
  summary: str
  needs: frozenset = frozenset()
  pool_relative: bool = False
  pool: Callable[..., Any] | None = None

  def option_names(self) -> tuple[str, ...]:
    """The names of the options the metric accepts (its options class's fields)."""
    return tuple(f.name for f in dataclasses.fields(self.options))


_REGISTRY: dict[str, MetricInfo] = {}


def register(info: MetricInfo) -> MetricInfo:
  """Adds ``info`` under ``info.name`` (``ValueError`` if the name is taken); returns it."""
  if not (isinstance(info.options, type) and dataclasses.is_dataclass(info.options)):
    raise ValueError(
        f'metric {info.name!r}: options must be a dataclass type, ' f'got {info.options!r}'
    )
  if info.name in _REGISTRY:
    raise ValueError(f'metric {info.name!r} is already registered')
  _REGISTRY[info.name] = info
  return info


def unregister(name: str) -> MetricInfo:
  """Removes the metric ``name`` and returns its ``MetricInfo``; ``InputError`` if unknown."""
  info = get(name)
  del _REGISTRY[name]
  return info


@contextlib.contextmanager
def registered(info: MetricInfo) -> Iterator[MetricInfo]:
  """Context manager: ``info`` is registered inside the ``with`` block only."""
  register(info)
  try:
    yield info
  finally:
    _REGISTRY.pop(info.name, None)


def get(name: str) -> MetricInfo:
  """The ``MetricInfo`` registered under ``name``; ``InputError`` if unknown."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise InputError(f'unknown metric {name!r}; known: {sorted(_REGISTRY)}') from None


def names() -> list[str]:
  """Sorted names of every registered metric (``face_jax.score(metrics=...)``)."""
  return sorted(_REGISTRY)
