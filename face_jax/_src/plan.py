"""Multi-pass planning: metrics as coroutines over passes of shared statistics.

A metric's *plan* is a generator.  Each ``yield`` hands the scheduler a dict of
named ``Request``s for the next pass and receives the finalised statistics for
those names; ``return`` gives the metric's value.  ``run_plans`` runs every
plan of every stream in lock step: round ``r`` accumulates the union of all
requests of round ``r`` in ONE pass over the data (identical requests are
accumulated once), so metrics that need one pass share one pass, and a metric
that needs three makes the stream run three times.

Example::

    def mean_norm_plan(info):
      spec = MomentsSpec(info.num_classes, info.dim)
      got = yield {'m': Request(Moments, spec, {'shift': FIRST_BATCH_SHIFT,
                                                'weight': np.ones(info.num_classes)})}
      return float(np.linalg.norm(got['m'].global_mean()))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generator, Mapping, Sequence

import numpy as np

from face_jax._src.engine import Engine, PassCheckpoint, PassTotals, Request
from face_jax._src.errors import InputError

Plan = Generator[Mapping[str, Request], Mapping[str, Any], Any]


@dataclasses.dataclass
class PlanRun:
  """Outcome of ``run_plans``.

  Attributes:
    results: ``{stream: {plan_name: value}}``.
    passes: how many passes over the data were made.
  """

  results: dict
  passes: int


def run_plans(
    engine: Engine,
    source,
    plans: Mapping[str, Mapping[str, Plan]],
    *,
    featurizer=None,
    aux=None,
    history: Sequence[PassTotals] = (),
    resume: PassCheckpoint | None = None,
    on_pass: Callable[[int, PassTotals], None] | None = None,
    checkpoint: Callable[[PassCheckpoint], None] | None = None,
    checkpoint_every: int = 0,
) -> PlanRun:
  """Runs plans in lock step over as few passes of ``source`` as they allow.

  A run can be resumed: plans are deterministic coroutines, so the passes made
  before are replayed from their ``PassTotals`` (``history``, finalised again on
  the host: no data is read) and the pass after them continues from its
  ``PassCheckpoint`` (``resume``).

  Args:
    engine: the ``Engine`` that runs each pass.
    source: a re-iterable source (a one-shot source supports one pass).
    plans: ``{stream: {plan_name: generator}}`` (fresh, unstarted generators).
    featurizer, aux: passed to ``Engine.run_pass``.
    history: the ``PassTotals`` of the first passes, made before.
    resume: a ``PassCheckpoint`` of pass ``len(history)``, or None (from its start).
    on_pass: called with ``(pass_index, PassTotals)`` after each pass made here.
    checkpoint, checkpoint_every: passed to ``Engine.run_pass``.

  Returns:
    A ``PlanRun`` with every plan's return value.
  """
  results: dict = {stream: {} for stream in plans}
  active: dict = {}
  for stream, ps in plans.items():
    for name, gen in ps.items():
      _advance(results, active, stream, name, gen, None)
  passes = 0
  kw = {} if featurizer is None else {'featurizer': featurizer}
  while active:
    if passes >= 1 and not getattr(source, 'reiterable', True):
      waiting = sorted(f'{s}/{n}' for s, n in active)
      raise InputError(
          f'{", ".join(waiting)} need(s) another pass over the data, but the input is a one-shot '
          'iterator; pass a list, a re-iterable object or a callable returning a fresh iterator '
          '(or, for FaCe, weighting="sample")'
      )
    requests: dict = {}
    for (stream, name), (_, reqs) in active.items():
      for rname, req in reqs.items():
        requests.setdefault(stream, {})[(name, rname)] = req
    if passes < len(history):
      out = engine.finalize_totals(requests, history[passes])
    else:
      out = engine.run_pass(
          source,
          requests,
          aux=aux,
          pass_index=passes,
          resume=resume if passes == len(history) else None,
          checkpoint=checkpoint,
          checkpoint_every=checkpoint_every,
          on_totals=(lambda t, p=passes: on_pass(p, t)) if on_pass is not None else None,
          **kw,
      )
    passes += 1
    for (stream, name), (gen, reqs) in list(active.items()):
      got = {rname: out[stream][(name, rname)] for rname in reqs}
      del active[(stream, name)]
      _advance(results, active, stream, name, gen, got)
  return PlanRun(results=results, passes=passes)


# Numerical failures of a metric's host-side maths on degenerate data (constant
# features, no within-class variance, classes collapsed to points, ...).
_NUMERICAL_ERRORS = (
    np.linalg.LinAlgError,
    ValueError,
    ZeroDivisionError,
    FloatingPointError,
    IndexError,
)


def start(gen: Plan, name: str):
  """Runs a fresh plan to its first request (no pass): its InputError, if it has one now.

  Returns the first requests; raises as ``run_plans`` would (an ``InputError``
  naming the metric) when the plan fails or ends before asking for a pass.
  """
  results, active = {'features': {}}, {}
  _advance(results, active, 'features', name, gen, None)
  return active.get(('features', name), (None, {}))[1]


@dataclasses.dataclass(frozen=True)
class PlanFailure:
  """The value of an ``isolated`` plan that failed: ``"<ExceptionType>: message"``."""

  error: str


def isolated(gen: Plan, name: str) -> Plan:
  """``gen`` with its failure as its value (a ``PlanFailure``) instead of an exception.

  The failures are those ``run_plans`` would raise for the plan (an
  ``InputError``, a numerical failure of its host maths, a NaN result) and any
  other exception of its own code; the other plans of a ``run_plans`` go on.
  Errors of the data or the engine (bad batches) still stop the run.
  """
  got = None
  while True:
    results, active = {'features': {}}, {}
    try:
      _advance(results, active, 'features', name, gen, got)
    except Exception as e:  # pylint: disable=broad-except  # one metric must not stop the rest
      return PlanFailure(f'{type(e).__name__}: {e}')
    if not active:
      return results['features'][name]
    got = yield active[('features', name)][1]


def _advance(results, active, stream, name, gen, got):
  where = name if stream == 'features' else f'{name} (layer {stream!r})'
  try:
    reqs = gen.send(got) if got is not None else next(gen)
  except StopIteration as stop:
    if _has_nan(stop.value):
      raise InputError(
          f'{where} is undefined on these features (its computation gave NaN); '
          'typical causes: constant features, no within-class variance, or every '
          'class collapsed to a point'
      ) from None
    results[stream][name] = stop.value
    return
  except InputError:
    raise
  except _NUMERICAL_ERRORS as e:
    raise InputError(
        f'{where} cannot be computed on these features ({type(e).__name__}: {e}); '
        'typical causes: constant features, no within-class variance, or every '
        'class collapsed to a point'
    ) from e
  if not reqs:
    raise RuntimeError(f'plan {name!r} yielded no requests')
  active[(stream, name)] = (gen, dict(reqs))


def _has_nan(value) -> bool:
  """True if a metric's value (float, array, tuple, dataclass, dict) holds a NaN."""
  if value is None or isinstance(value, (str, bool)):
    return False
  if isinstance(value, (float, int, np.floating, np.integer)):
    return bool(np.isnan(value))
  if isinstance(value, np.ndarray):
    return bool(np.issubdtype(value.dtype, np.floating) and np.isnan(value).any())
  if isinstance(value, dict):
    return any(_has_nan(v) for v in value.values())
  if isinstance(value, (tuple, list)):
    return any(_has_nan(v) for v in value)
  if dataclasses.is_dataclass(value):
    return any(_has_nan(getattr(value, f.name)) for f in dataclasses.fields(value))
  return False
