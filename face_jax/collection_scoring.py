"""Scoring a model collection with many metrics: records, failure isolation, pool-relative scores.

Synopsis::

    from face_jax import collection_scoring as cs
    from face_jax import models
    from face_jax.data import targets

    coll = models.load_collection('benchmarks/zoo/weights')
    train = targets.digits_target()['train']
    records = cs.score_collection(coll, train.images, train.labels)   # every registered metric
    # {model: {metric: record}}
    scores, missing = cs.available_scores(records, 'face')    # {model: score}, higher = better
    pooled, _ = cs.available_scores(records, cs.FACE_POOL)    # FaCe's pool min-max score

A *record* is the JSON-ready outcome of one metric on one model:

- ``value``: the metric's scalar (``FaCeResult.score``, ``float(result)``, ...),
  or None for pool-relative metrics (their score only exists over a pool) and
  for errors;
- ``error``: None, or ``"<ExceptionType>: message"`` when the metric raised
  (the error is recorded and scoring goes on);
- ``higher_is_better``, ``pool_relative``: from the metric registry;
- ``components``: the per-model components of a pool-relative metric;
- ``terms``: FaCe's ``variance_collapse``, ``class_fairness``, ``nc1``,
  ``fairness_share``.

Pool-relative scores (combined over the models scored on the same data) are
formed by ``available_scores``: the metric's ``<name>_pool`` function
(``face_jax.ncti_pool``, ``face_jax.etran_pool``), and for FaCe the extra
scores ``FACE_POOLS`` (``face_pool_minmax``, ``face_pool_zscore``,
``face_pool_rank``): (C, F) of the 'face' records normalised over the pool and
summed with λ = 1, exactly ``face_jax.face_pool(..., combine=...)``.
``face_ranking_score()`` names the one that FaCe's default ranks a pool by, and
``face_pool_shares`` gives F's share of each model's pool score.

``face_variant_terms`` gives FaCe's terms under many variants from one pass of
statistics (the zoo benchmark's ablation).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from face_jax import engine as engine_lib
from face_jax._src.metrics import face as face_lib
from face_jax._src import api
from face_jax.scoring import score_model

FACE_POOL = 'face_pool_minmax'
# FaCe's pool scores by name: ``face_<combination>`` for every pool combination of
# ``face_jax.FaceOptions.combine`` (the terms of the 'face' records, λ = 1).
FACE_POOLS: dict[str, str] = {f'face_{c}': c for c in face_lib.COMBINES if c != 'sum'}


def face_ranking_score(options: face_lib.FaceOptions | None = None) -> str:
  """The score that ranks a pool by FaCe under ``options`` (default: ``FaceOptions()``).

  ``face_<combine>`` (e.g. ``face_pool_zscore``) for a pool combination, else ``face``.
  """
  combine = (options or face_lib.FaceOptions()).combine
  return 'face' if combine == 'sum' else f'face_{combine}'


# The values of FaCe's variant options (``face_jax.FaceOptions``).
FACE_VARIANT_CHOICES: dict[str, tuple[str, ...]] = {
    name: face_lib.FaceOptions.CHOICES[name]
    for name in ('weighting', 'vc_transform', 'bc_cov', 'fairness')
}

MetricInfo = engine_lib.MetricInfo


def metric_info(name: str) -> MetricInfo:
  """The registry entry of a metric (``InputError`` if unknown)."""
  return engine_lib.get(name)


def metric_infos(names: Sequence[str] | None = None) -> dict[str, MetricInfo]:
  """``{name: MetricInfo}`` of the requested metrics (default: every registered one)."""
  names = engine_lib.names() if names is None else list(names)
  return {n: engine_lib.get(n) for n in names}


def scalar(value: Any) -> float:
  """The scalar of a metric value: ``.score`` of a result object, else ``float(value)``."""
  if hasattr(value, 'score'):
    return float(value.score)
  return float(value)


def error_text(e: BaseException) -> str:
  """``"<ExceptionType>: message"``: how a record states an error."""
  return f'{type(e).__name__}: {e}'


def metric_record(info: MetricInfo, value: Any = None, error: str | None = None) -> dict:
  """The record (module docstring) of a metric's value, or of its error.

  A value that cannot be read (e.g. a pool-relative value without
  ``components()``) becomes the record's error.
  """
  rec: dict[str, Any] = {
      'value': None,
      'error': error,
      'higher_is_better': bool(info.higher_is_better),
      'pool_relative': bool(info.pool_relative),
  }
  if error is not None:
    return rec
  try:
    if info.pool_relative:
      if not (hasattr(value, 'components') and callable(value.components)):
        raise TypeError(
            f'pool-relative metric {info.name!r} returned {type(value).__name__} '
            'without components()'
        )
      rec['components'] = {k: float(v) for k, v in value.components().items()}
    else:
      rec['value'] = scalar(value)
    if hasattr(value, 'variance_collapse'):
      rec['terms'] = {
          'variance_collapse': float(value.variance_collapse),
          'class_fairness': float(value.class_fairness),
          'nc1': float(value.nc1),
          'fairness_share': float(value.fairness_share),
      }
  except Exception as e:  # pylint: disable=broad-except  # a value we cannot read is its error
    rec['error'] = error_text(e)
  return rec


def _isolated(
    run: Callable,
    infos: Mapping[str, MetricInfo],
    records: dict,
    suspects: set,
    log: Callable[[str], None] | None,
    t0: float,
) -> dict[str, dict]:
  """Runs every metric of ``infos`` with ``run(names) -> {metric: value}``, isolating failures.

  When a group raises it is split in halves, each retried (recursively), so a
  failing metric costs only its own record and about 2·log2(#metrics) extra calls.
  Metrics in ``suspects`` run on their own; newly failing ones are added to it;
  metrics already in ``records`` are not run.

  Returns:
    ``{metric: record}`` in the order of ``infos``, plus ``'_seconds'`` (since ``t0``).
  """

  def group(ms):
    try:
      values = run(ms)
    except Exception as e:  # pylint: disable=broad-except  # one metric must not stop the rest
      if len(ms) == 1:
        records[ms[0]] = metric_record(infos[ms[0]], error=error_text(e))
        suspects.add(ms[0])
        if log:
          log(f'{ms[0]}: {error_text(e)}')
        return
      half = len(ms) // 2
      group(ms[:half])
      group(ms[half:])
      return
    for n in ms:
      records[n] = metric_record(infos[n], values[n])

  together = [n for n in infos if n not in suspects and n not in records]
  if together:
    group(together)
  for n in infos:
    if n not in records:
      group([n])
  out = {n: records[n] for n in infos}
  out['_seconds'] = time.perf_counter() - t0
  return out


def score_features(
    features: np.ndarray,
    labels: np.ndarray,
    infos: Mapping[str, MetricInfo],
    *,
    source_probs: np.ndarray | None = None,
    batch_size: int = 512,
    num_classes: int | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    suspects: set | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict]:
  """Every metric of ``infos`` on one model's in-memory features, failures isolated.

  Metrics that refuse the input before any pass (e.g. ETran with N < 200) are
  recorded first (``start_errors``: nothing compiled); the others run together in
  shared passes (``face_jax.score``), a failing one costing only its own record
  (see ``score_extractor``).  A metric that needs source probabilities records an
  error when ``source_probs`` is None.

  Args:
    features: [N, D] float features.
    labels: int [N].
    infos: ``{metric: MetricInfo}`` (``metric_infos``).
    source_probs: [N, Ks] source-model probabilities, or None.
    batch_size, num_classes, metric_options, suspects, log: as in ``score_extractor``.

  Returns:
    ``{metric: record}`` in the order of ``infos``, plus ``'_seconds'`` (wall time).
  """
  t0 = time.perf_counter()
  suspects = set() if suspects is None else suspects
  options = {m: dict(o) for m, o in (metric_options or {}).items() if m in infos}
  records: dict[str, Any] = {}
  for n in infos:
    if source_probs is None and 'source_probs' in infos[n].needs:
      records[n] = metric_record(
          infos[n],
          error=f'InputError: {n} needs source probabilities: the model has no classifier '
          'head (a "logits" layer) and no source_probs were given',
      )
  ready = tuple(n for n in infos if n not in records)
  if ready:
    early = api.start_errors(
        features,
        labels,
        metrics=ready,
        source_probs=source_probs,
        batch_size=batch_size,
        num_classes=num_classes,
        metric_options={m: options[m] for m in ready if m in options} or None,
    )
    for n, e in early.items():
      records[n] = metric_record(infos[n], error=error_text(e))
      if log:
        log(f'{n}: {error_text(e)}')

  def run(ms):
    opts = {m: options[m] for m in ms if m in options}
    return api.score(
        features,
        labels,
        metrics=tuple(ms),
        source_probs=source_probs,
        batch_size=batch_size,
        num_classes=num_classes,
        metric_options=opts or None,
    )

  return _isolated(run, infos, records, suspects, log, t0)


def score_extractor(
    extractor,
    images: np.ndarray,
    labels: np.ndarray,
    infos: Mapping[str, MetricInfo],
    *,
    batch_size: int = 512,
    num_classes: int | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    suspects: set | None = None,
    log: Callable[[str], None] | None = None,
    in_memory: bool = True,
) -> dict[str, dict]:
  """Every metric of ``infos`` on a model's default-layer features.

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
    infos: ``{metric: MetricInfo}`` (``metric_infos``).
    batch_size: examples per streamed step.
    num_classes: K (default ``labels.max() + 1``).
    metric_options: ``{metric: {option: value}}`` (as in ``face_jax.score``).
    suspects: optional mutable set of metric names to run separately (updated).
    log: optional callback, called with a message for every failing metric.
    in_memory: compute the features once (``FeatureExtractor.embed``) and score
      them with ``score_features``: one forward compilation per model, and the
      statistics compile once for every model with the same feature dimension
      (the default; the images are in memory already).  False: ``score_model``
      streams the images through the model, fused with the statistics, for every
      metric group.

  Returns:
    ``{metric: record}`` in the order of ``infos``, plus ``'_seconds'`` (wall time).
  """
  layer = extractor.default_layer
  if in_memory:
    needs_probs = any('source_probs' in infos[m].needs for m in infos)
    with_probs = needs_probs and 'logits' in extractor.layer_names
    feats = extractor.embed(
        images, (layer, 'logits') if with_probs else (layer,), batch_size=batch_size
    )
    probs = None
    if with_probs:  # the source model's predictions, as score_model forms them
      probs = np.asarray(jax.nn.softmax(feats['logits'], axis=-1))
    return score_features(
        feats[layer],
        labels,
        infos,
        source_probs=probs,
        batch_size=batch_size,
        num_classes=num_classes,
        metric_options=metric_options,
        suspects=suspects,
        log=log,
    )

  t0 = time.perf_counter()
  suspects = set() if suspects is None else suspects

  def run(ms):
    opts = {m: dict(o) for m, o in (metric_options or {}).items() if m in ms}
    out = score_model(
        extractor,
        (images, labels),
        metrics=tuple(ms),
        batch_size=batch_size,
        num_classes=num_classes,
        metric_options=opts or None,
    )
    return out[layer]

  return _isolated(run, infos, {}, suspects, log, t0)


def score_collection(
    collection,
    images: np.ndarray,
    labels: np.ndarray,
    metrics: Sequence[str] | Mapping[str, MetricInfo] | None = None,
    *,
    batch_size: int = 512,
    num_classes: int | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str, str], None] | None = None,
    done: Callable[[str, Mapping[str, Any], float], None] | None = None,
    in_memory: bool = True,
) -> dict[str, dict[str, dict]]:
  """Every model of a collection on one labelled dataset (``score_extractor`` per model).

  A metric that fails on one model runs on its own for the following models,
  so it cannot take the others' shared passes down with it.

  Args:
    collection: a ``face_jax.models.Collection`` (or any iterable of entries
      with ``name`` and ``build()``).
    images: uint8 [N, H, W, C].
    labels: int [N].
    metrics: metric names or ``metric_infos(...)`` (default: every registered metric).
    batch_size, num_classes, metric_options: as in ``score_extractor``.
    log: optional ``log(model, message)`` for every failing metric.
    done: optional ``done(model, records, seconds)`` after each model.
    in_memory: as in ``score_extractor``.

  Returns:
    ``{model: {metric: record}}`` in collection order (no ``'_seconds'``).
  """
  infos = metrics if isinstance(metrics, Mapping) else metric_infos(metrics)
  records: dict[str, dict[str, dict]] = {}
  suspects: set = set()
  for entry in collection:
    t0 = time.perf_counter()
    ex = entry.build()
    name = entry.name
    recs = score_extractor(
        ex,
        images,
        labels,
        infos,
        batch_size=batch_size,
        num_classes=num_classes,
        metric_options=metric_options,
        suspects=suspects,
        in_memory=in_memory,
        log=(lambda m, name=name: log(name, m)) if log else None,
    )
    records[name] = {m: r for m, r in recs.items() if m in infos}
    if done:
      done(name, records[name], time.perf_counter() - t0)
  return records


def pool_function(name: str) -> Callable | None:
  """The pool function of a metric (``MetricInfo.pool``, e.g. ``ncti_pool``), or None."""
  return engine_lib.get(name).pool


def available_scores(
    records: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str
) -> tuple[dict[str, float], dict[str, str]]:
  """Oriented scores (higher = better) of the models that have a finite value for ``metric``.

  Args:
    records: ``{model: {metric: record}}`` for the models scored on one dataset.
    metric: a metric name, or one of ``FACE_POOLS`` (``FACE_POOL``: min–max).

  Returns:
    ``(scores, missing)``: ``{model: score}`` of the models with a value
    (pool-relative metrics combined over exactly those models; metrics with
    ``higher_is_better=False`` negated) and ``{model: reason}`` of the others.

  Raises:
    ValueError: a pool-relative metric without a pool function.
  """
  missing: dict[str, str] = {}
  if metric in FACE_POOLS:
    comps = {}
    for m, recs in records.items():
      rec = recs.get('face') or {}
      t = rec.get('terms')
      if rec.get('error') or not t:
        missing[m] = rec.get('error') or 'no FaCe terms'
      elif not (math.isfinite(t['variance_collapse']) and math.isfinite(t['class_fairness'])):
        missing[m] = f'non-finite FaCe terms {t}'
      else:
        comps[m] = {
            'variance_collapse': t['variance_collapse'],
            'class_fairness': t['class_fairness'],
        }
    scores = face_lib.combine_terms(comps, FACE_POOLS[metric]) if comps else {}
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


def face_pool_shares(
    records: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str
) -> dict[str, float]:
  """F's share of each model's FaCe pool score ``metric`` (one of ``FACE_POOLS``, λ = 1).

  ``face_jax.face_pool_shares`` on the terms of the 'face' records, over the
  models that have finite terms (the pool ``available_scores`` combines):
  |λ·F̃| / (|C̃| + |λ·F̃|) with the pool-normalised terms.  Near 0 for every model:
  fairness does not move the ranking.
  """
  if metric not in FACE_POOLS:
    raise ValueError(f'{metric!r} is not a FaCe pool score ({sorted(FACE_POOLS)})')
  comps = {}
  for m, recs in records.items():
    t = (recs.get('face') or {}).get('terms')
    if t and math.isfinite(t['variance_collapse']) and math.isfinite(t['class_fairness']):
      comps[m] = {k: t[k] for k in ('variance_collapse', 'class_fairness')}
  if not comps:
    return {}
  return face_lib.pool_fairness_shares(comps, FACE_POOLS[metric])


def oriented_scores(
    records: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str
) -> dict[str, float]:
  """``{model: score}`` of one metric over a pool, oriented so that higher = better.

  Like ``available_scores``, but every model must have a value.

  Raises:
    ValueError: a model has an error or no finite value for the metric (the
      message names them), or a pool-relative metric has no pool function.
  """
  scores, missing = available_scores(records, metric)
  if missing:
    raise ValueError(
        f'{metric}: no value for {len(missing)} model(s): '
        + '; '.join(f'{m}: {e}' for m, e in sorted(missing.items())[:3])
    )
  return scores


def class_moments(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    engine: engine_lib.Engine | None = None,
) -> dict[str, engine_lib.ClassMoments]:
  """Finalised ``Moments`` of both FaCe weightings, from one float64 pass of the engine.

  Args:
    features: [N, D] features.
    labels: [N] int labels in [0, num_classes).
    num_classes: K.
    engine: the engine (default: a float64 ``face_jax.Engine``).

  Returns:
    ``{'sample': ClassMoments (unit class weights), 'balanced': ClassMoments
    (weights N/(K n_k))}``.
  """
  features = np.asarray(features, np.float64)
  labels = np.asarray(labels, np.int32)
  counts = np.bincount(labels, minlength=num_classes)
  spec = engine_lib.MomentsSpec(num_classes=num_classes, dim=features.shape[1], dtype='float64')
  shift = engine_lib.FIRST_BATCH_SHIFT
  reqs = {
      'sample': engine_lib.Request(
          engine_lib.Moments, spec, {'shift': shift, 'weight': np.ones(num_classes)}
      ),
      'balanced': engine_lib.Request(
          engine_lib.Moments, spec, {'shift': shift, 'weight': engine_lib.balanced_weights(counts)}
      ),
  }
  eng = engine or engine_lib.Engine(dtype='float64')
  src = engine_lib.ArraySource(features, labels, num_classes=num_classes, feat_dtype=np.float64)
  return dict(eng.run_pass(src, {'features': reqs})['features'])


def face_variant_terms(
    features: np.ndarray,
    labels: np.ndarray,
    variants: Iterable[Mapping[str, Any]],
    num_classes: int | None = None,
) -> list[dict[str, float]]:
  """C, F and NC1 of FaCe variants, from one pass of statistics.

  The statistics (both weightings' ``ClassMoments``) are accumulated once;
  every variant is then ``face_jax.face_from_moments`` (host float64, cheap).

  Args:
    features: [N, D] features.
    labels: [N] int labels.
    variants: ``face_jax.FaceOptions`` fields of each variant, e.g.
      ``{'weighting': 'balanced', 'bc_cov': 'pooled'}`` (the others default);
      ``FACE_VARIANT_CHOICES`` lists the values of the variant options.
    num_classes: K (default ``labels.max() + 1``).

  Returns:
    One ``{'C': float, 'F': float, 'nc1': float}`` per variant, in order.
  """
  k = int(num_classes or int(np.max(labels)) + 1)
  mom = class_moments(features, labels, k)
  out = []
  for v in variants:
    opts = face_lib.FaceOptions(**v)
    r = face_lib.face_from_moments(mom[opts.weighting], opts)
    out.append({'C': r.variance_collapse, 'F': r.class_fairness, 'nc1': r.nc1})
  return out
