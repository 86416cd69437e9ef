"""Scoring the zoo with every registered metric, and the statistics of the FaCe ablation.

Synopsis::

    from benchmarks.zoo import harness
    infos = harness.metric_infos()                       # every registered metric
    recs = harness.score_extractor(ex, images, labels, infos)
    # {metric: {'value', 'error', 'higher_is_better', 'pool_relative', ...}}
    terms = harness.face_variant_terms(features, labels)  # {variant key: {'C', 'F', 'nc1'}}
    scores = harness.oriented_scores(per_model_records, 'face')   # {model: score}, higher = better

A *record* is the JSON-ready outcome of one metric on one (model, target):

- ``value``: the metric's scalar (``FaCeResult.score``, ``float(result)``, ...),
  or None for pool-relative metrics (their score only exists over a pool) and
  for errors;
- ``error``: None, or ``"<ExceptionType>: message"`` when the metric raised
  (the harness records it and goes on);
- ``higher_is_better``, ``pool_relative``: from the registry;
- ``components``: the per-model components of a pool-relative metric;
- ``terms``: FaCe's ``variance_collapse``, ``class_fairness``, ``nc1``.

Pool-relative scores (``combine`` over the models scored on the same target)
are formed by ``pool_scores``: the metric's ``<name>_pool`` function
(``face_jax.<name>_pool`` or the registry's ``MetricInfo.pool``, e.g.
``ncti_pool``, ``etran_pool``), and for FaCe the extra score
``face_pool_minmax`` = ``face_jax.pool_minmax`` of (C, F) with λ = 1, which is
exactly ``face_jax.face_pool``.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

import face_jax
from face_jax import engine as engine_lib

FACE_POOL = 'face_pool_minmax'

# The FaCe ablation grid: every variant of the specification (FACE_SPEC.md) at the
# default temperature 0.1, ridge 1e-3 and λ = 1.
ABLATION_AXES = {
    'weighting': face_jax.FaceOptions.CHOICES['weighting'],
    'vc_transform': face_jax.FaceOptions.CHOICES['vc_transform'],
    'bc_cov': face_jax.FaceOptions.CHOICES['bc_cov'],
    'fairness': face_jax.FaceOptions.CHOICES['fairness'],
}
# The specification's default variant: the reference of the ablation's paired differences
# (face_jax's own default, FaceOptions(), is the variant this ablation selected).
DEFAULT_VARIANT = {'weighting': 'balanced', 'vc_transform': 'neg', 'bc_cov': 'pooled',
                   'fairness': 'std'}


def variant_key(v: Mapping[str, str]) -> str:
  """'weighting/vc_transform/bc_cov/fairness', e.g. 'balanced/neg/pooled/std'."""
  return '/'.join(v[a] for a in ABLATION_AXES)


def ablation_variants() -> list[dict[str, str]]:
  """Every variant of the grid (2 x 2 x 3 x 3 = 36), the default first."""
  out = [dict(zip(ABLATION_AXES, combo)) for combo in itertools.product(*ABLATION_AXES.values())]
  out.sort(key=lambda v: v != DEFAULT_VARIANT)
  return out


def metric_infos(names: Sequence[str] | None = None) -> dict[str, engine_lib.MetricInfo]:
  """``{name: MetricInfo}`` of the requested metrics (default: every registered one)."""
  names = face_jax.metric_names() if names is None else list(names)
  return {n: engine_lib.get(n) for n in names}


def scalar(value: Any) -> float:
  """The scalar of a metric value: ``.score`` of a result object, else ``float(value)``."""
  if hasattr(value, 'score'):
    return float(value.score)
  return float(value)


def _error(e: BaseException) -> str:
  return f'{type(e).__name__}: {e}'


def _record(info: engine_lib.MetricInfo, value: Any = None, error: str | None = None) -> dict:
  rec: dict[str, Any] = {'value': None, 'error': error,
                         'higher_is_better': bool(info.higher_is_better),
                         'pool_relative': bool(info.pool_relative)}
  if error is not None:
    return rec
  try:
    if info.pool_relative:
      if not (hasattr(value, 'components') and callable(value.components)):
        raise TypeError(f'pool-relative metric {info.name!r} returned {type(value).__name__} '
                        'without components()')
      rec['components'] = {k: float(v) for k, v in value.components().items()}
    else:
      rec['value'] = scalar(value)
    if hasattr(value, 'variance_collapse'):
      rec['terms'] = {'variance_collapse': float(value.variance_collapse),
                      'class_fairness': float(value.class_fairness), 'nc1': float(value.nc1)}
  except Exception as e:  # a value the harness cannot read is that metric's error
    rec['error'] = _error(e)
  return rec


def score_extractor(extractor, images: np.ndarray, labels: np.ndarray,
                    infos: Mapping[str, engine_lib.MetricInfo], *, batch_size: int = 512,
                    num_classes: int | None = None,
                    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
                    suspects: set | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, dict]:
  """Every metric of ``infos`` on a model's default-layer features, via ``face_jax.score_model``.

  The metrics run together (shared passes).  When that raises, the group is
  split in halves and each half retried (recursively), so a failing metric
  costs only its own record and about 2·log2(#metrics) extra calls.  Metrics
  in ``suspects`` (e.g. those that failed on the previous model) run on their
  own from the start, and newly failing metrics are added to it.  Metrics
  that need ``source_probs`` get the softmax of the model's ``logits`` layer
  (its source classifier head); a model without a head records an error for them.

  Args:
    extractor: a ``face_jax.models.FeatureExtractor``.
    images: uint8 [N, H, W, C].
    labels: int [N].
    infos: ``{metric: MetricInfo}``.
    batch_size: examples per streamed step.
    num_classes: K (default ``labels.max() + 1``).
    metric_options: ``{metric: {option: value}}`` (as in ``face_jax.score``).
    suspects: optional mutable set of metric names to run separately (updated).
    log: optional progress callback.

  Returns:
    ``{metric: record}`` (see the module docstring), plus ``'_seconds'``.
  """
  t0 = time.perf_counter()
  suspects = set() if suspects is None else suspects

  def run(ms):
    opts = {m: dict(o) for m, o in (metric_options or {}).items() if m in ms}
    out = face_jax.score_model(extractor, (images, labels), metrics=tuple(ms),
                               batch_size=batch_size, num_classes=num_classes,
                               metric_options=opts or None)
    return out[extractor.default_layer]

  records: dict[str, Any] = {}

  def group(ms):
    try:
      values = run(ms)
    except Exception as e:  # recorded, not raised: one metric must not stop the zoo
      if len(ms) == 1:
        records[ms[0]] = _record(infos[ms[0]], error=_error(e))
        suspects.add(ms[0])
        if log:
          log(f'{ms[0]}: {_error(e)}')
        return
      half = len(ms) // 2
      group(ms[:half])
      group(ms[half:])
      return
    for n in ms:
      records[n] = _record(infos[n], values[n])

  names = [n for n in infos if n not in suspects]
  if names:
    group(names)
  for n in infos:
    if n in suspects and n not in records:
      group([n])
  records = {n: records[n] for n in infos}
  records['_seconds'] = time.perf_counter() - t0
  return records


def class_moments(features: np.ndarray, labels: np.ndarray, num_classes: int,
                  engine: face_jax.Engine | None = None) -> dict[str, engine_lib.ClassMoments]:
  """Finalised ``Moments`` of both FaCe weightings, from one float64 pass of the engine.

  Returns:
    ``{'sample': ClassMoments (unit class weights), 'balanced': ClassMoments
    (weights N/(K n_k))}``.
  """
  features = np.asarray(features, np.float64)
  labels = np.asarray(labels, np.int32)
  counts = np.bincount(labels, minlength=num_classes)
  spec = engine_lib.MomentsSpec(num_classes=num_classes, dim=features.shape[1], dtype='float64')
  shift = engine_lib.FIRST_BATCH_SHIFT
  reqs = {'sample': engine_lib.Request(engine_lib.Moments, spec,
                                       {'shift': shift, 'weight': np.ones(num_classes)}),
          'balanced': engine_lib.Request(engine_lib.Moments, spec,
                                         {'shift': shift,
                                          'weight': engine_lib.balanced_weights(counts)})}
  eng = engine or face_jax.Engine(dtype='float64')
  src = engine_lib.ArraySource(features, labels, num_classes=num_classes, feat_dtype=np.float64)
  return dict(eng.run_pass(src, {'features': reqs})['features'])


def face_variant_terms(features: np.ndarray, labels: np.ndarray, num_classes: int | None = None,
                       variants: Iterable[Mapping[str, str]] | None = None) -> dict[str, dict]:
  """C, F and NC1 of every FaCe variant, from one pass of statistics.

  The statistics (both weightings' ``ClassMoments``) are accumulated once;
  every variant is then ``face_from_moments`` (host float64, cheap).

  Args:
    features: [N, D] features.
    labels: [N] int labels.
    num_classes: K (default ``labels.max() + 1``).
    variants: default ``ablation_variants()``.

  Returns:
    ``{variant_key: {'C': float, 'F': float, 'nc1': float}}``.
  """
  k = int(num_classes or int(np.max(labels)) + 1)
  mom = class_moments(features, labels, k)
  out = {}
  for v in (variants or ablation_variants()):
    r = face_jax.face_from_moments(mom[v['weighting']], face_jax.FaceOptions(**v))
    out[variant_key(v)] = {'C': r.variance_collapse, 'F': r.class_fairness, 'nc1': r.nc1}
  return out


def pool_function(name: str) -> Callable | None:
  """The ``<name>_pool`` function of a pool-relative metric, if the library has one."""
  fn = getattr(face_jax, f'{name}_pool', None)
  if fn is None:
    fn = engine_lib.get(name).pool
  return fn


def available_scores(records: Mapping[str, Mapping[str, Mapping[str, Any]]],
                     metric: str) -> tuple[dict[str, float], dict[str, str]]:
  """Oriented scores (higher = better) of the models that have a finite value for ``metric``.

  Args:
    records: ``{model: {metric: record}}`` for the models of one target.
    metric: a metric name, or ``FACE_POOL``.

  Returns:
    ``(scores, missing)``: ``{model: score}`` of the models with a value
    (pool-relative metrics combined over exactly those models; metrics with
    ``higher_is_better=False`` negated) and ``{model: reason}`` of the others.

  Raises:
    ValueError: a pool-relative metric without a pool function.
  """
  missing: dict[str, str] = {}
  if metric == FACE_POOL:
    comps = {}
    for m, recs in records.items():
      rec = recs.get('face') or {}
      t = rec.get('terms')
      if rec.get('error') or not t:
        missing[m] = rec.get('error') or 'no FaCe terms'
      elif not (math.isfinite(t['variance_collapse']) and math.isfinite(t['class_fairness'])):
        missing[m] = f'non-finite FaCe terms {t}'
      else:
        comps[m] = {'variance_collapse': t['variance_collapse'],
                    'class_fairness': t['class_fairness']}
    scores = face_jax.pool_minmax(comps, {'variance_collapse': 1.0, 'class_fairness': 1.0}) \
        if comps else {}
    return scores, missing
  good = {}
  for m, recs in records.items():
    rec = recs.get(metric)
    if rec is None or rec.get('error'):
      missing[m] = (rec or {}).get('error') or 'not scored'
      continue
    vals = rec.get('components') if rec['pool_relative'] else {'value': rec['value']}
    if vals is None or not all(v is not None and math.isfinite(float(v)) for v in vals.values()):
      missing[m] = f'non-finite value {vals}'
      continue
    good[m] = rec
  if not good:
    return {}, missing
  first = next(iter(good.values()))
  if first['pool_relative']:
    fn = pool_function(metric)
    if fn is None:
      raise ValueError(f'{metric} is pool-relative but the library has no {metric}_pool function')
    out = {m: float(v) for m, v in fn({m: r['components'] for m, r in good.items()}).items()}
  else:
    out = {m: float(r['value']) for m, r in good.items()}
  sign = 1.0 if first['higher_is_better'] else -1.0
  return {m: sign * v for m, v in out.items()}, missing


def oriented_scores(records: Mapping[str, Mapping[str, Mapping[str, Any]]],
                    metric: str) -> dict[str, float]:
  """``{model: score}`` of one metric over a pool, oriented so that higher = better.

  Like ``available_scores``, but every model must have a value.

  Raises:
    ValueError: a model has an error or no finite value for the metric (the
      message names them), or a pool-relative metric has no pool function.
  """
  scores, missing = available_scores(records, metric)
  if missing:
    raise ValueError(f'{metric}: no value for {len(missing)} model(s): '
                     + '; '.join(f'{m}: {e}' for m, e in sorted(missing.items())[:3]))
  return scores
