"""Public entry points: ``score`` (several metrics, shared passes) and ``face_score``.

Importing this module loads the metric catalogue (``face_jax._src.metrics``),
which registers every metric of the library.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from face_jax._src import engine as engine_lib
from face_jax._src import plan as plan_lib
from face_jax._src import registry
from face_jax._src import sources
from face_jax._src import metrics as _catalogue  # noqa: F401  (registers every metric)
from face_jax._src.errors import FaceJaxWarning, InputError
from face_jax._src.metrics.face import FaceOptions


def _is_array(x) -> bool:
  return isinstance(x, (np.ndarray, jax.Array))


def make_source(
    features, labels=None, *, source_probs=None, batch_size=None, num_classes=None, dtype=None
):
  """Wraps ``features`` (array or iterable of batches) in a host source.

  Returns:
    (source, accumulation dtype name).
  """
  if _is_array(features):
    if labels is None:
      raise InputError('labels are required with an array of features')
    feats = jax.device_get(features) if isinstance(features, jax.Array) else features
    if not sources.is_floating(np.asarray(feats).dtype):
      raise InputError(f'features must be floating point, got dtype {np.asarray(feats).dtype}')
    acc = dtype or ('float64' if np.asarray(feats).dtype == np.float64 else 'float32')
    extras = {}
    if source_probs is not None:
      extras['source_probs'] = (
          jax.device_get(source_probs) if isinstance(source_probs, jax.Array) else source_probs
      )
    labels = jax.device_get(labels) if isinstance(labels, jax.Array) else labels
    src = sources.ArraySource(
        feats, labels, extras=extras, batch_size=batch_size, num_classes=num_classes, feat_dtype=acc
    )
    return src, acc
  if labels is not None or source_probs is not None:
    raise InputError(
        'with streamed input, labels (and source_probs) travel inside each batch; '
        'pass labels=None'
    )
  if isinstance(features, (str, bytes)) or not (
      isinstance(features, Iterable) or callable(features)
  ):
    raise InputError(
        'features must be an array or an iterable of batches, got ' f'{type(features).__name__}'
    )
  src = sources.IterableSource(
      features, num_classes=num_classes, batch_size=batch_size, dtype=dtype
  )
  acc = dtype or ('float64' if src.feat_dtype == np.float64 else 'float32')
  return src, acc


def route_options(
    metrics: Sequence[str], options: Mapping[str, Any], metric_options: Mapping[str, Any] | None
):
  """Each requested metric's options instance, from flat and per-metric options.

  Args:
    metrics: registry names.
    options: flat options ``{option: value}``, given to every requested metric
      whose options class has a field of that name.
    metric_options: ``{metric: {option: value}}`` or ``{metric: options
      instance}`` (e.g. ``{'face': FaceOptions(...)}``); a dict overrides the
      flat options it names, an instance is used as it is.

  Returns:
    (``[MetricInfo]`` in the order of ``metrics``, ``{metric: options instance}``).

  Raises:
    InputError: an unknown metric, an option no requested metric accepts, an
      option the named metric does not have, an options instance of the wrong
      class, or an invalid option value (raised by the options class).
  """
  infos = [registry.get(m) for m in metrics]
  per: dict[str, dict] = {i.name: {} for i in infos}
  instances: dict[str, Any] = {}
  for name, value in options.items():
    takers = [i for i in infos if name in i.option_names()]
    if not takers:
      valid = sorted({o for i in infos for o in i.option_names()})
      raise InputError(
          f'option {name!r} is not accepted by any of {list(metrics)}; ' f'valid options: {valid}'
      )
    for i in takers:
      per[i.name][name] = value
  for m, opts in (metric_options or {}).items():
    if m not in per:
      raise InputError(f'metric_options names {m!r}, which is not among metrics={list(metrics)}')
    info = registry.get(m)
    if dataclasses.is_dataclass(opts) and not isinstance(opts, type):
      if not isinstance(opts, info.options):
        raise InputError(
            f'metric_options[{m!r}] is a {type(opts).__name__}; {m} takes '
            f'{info.options.__name__} (or a dict of its fields)'
        )
      instances[m] = opts
      continue
    for name, value in opts.items():
      if name not in info.option_names():
        raise InputError(f'{m} has no option {name!r}; valid: {sorted(info.option_names())}')
      per[m][name] = value
  out = {
      i.name: instances[i.name] if i.name in instances else i.options(**per[i.name]) for i in infos
  }
  return infos, out


def score(
    features,
    labels=None,
    *,
    metrics: Sequence[str] = ('face',),
    source_probs=None,
    batch_size: int | None = None,
    num_classes: int | None = None,
    dtype: str | None = None,
    mesh=None,
    engine: engine_lib.Engine | None = None,
    progress: Callable[[engine_lib.PassProgress], None] | None = None,
    metric_options: Mapping[str, Any] | None = None,
    nonfinite: str | None = None,
    **options,
) -> dict[str, Any]:
  """Computes several transferability metrics in as few passes over the data as they allow.

  The union of the statistics the metrics need is accumulated in one pass
  (identical statistics once); metrics that need later passes (which take the
  previous pass's finalised parameters) make the stream run again.

  Args:
    features: [N, D] float array (with ``labels`` [N]), or an iterable of batches
      ``(features [b, D], labels [b][, {'source_probs': [b, Ks]}])`` / dicts
      with ``features``, ``labels`` (and ``source_probs``, ``_mask``); a
      one-shot iterator supports only single-pass metrics.
    labels: [N] integer labels in ``[0, num_classes)`` (array input only).
    metrics: registry names (``face_jax.metric_names()``).
    source_probs: [N, Ks] source-model class probabilities (array input only).
    batch_size: rows per step (arrays: default ``min(N, 8192)``; iterables: the
      first batch's size); steps are padded, never dropped.
    num_classes: K (default for arrays: ``labels.max() + 1``; required for iterables).
    dtype: accumulation dtype: 'float32' or 'float64' (default: float64 for an
      in-memory float64 array, else float32).
    mesh: a 1-D ``('data',)`` mesh (default: every device).
    engine: an existing ``Engine`` (overrides ``mesh``/``progress``).
    progress: callback receiving ``PassProgress`` reports.
    metric_options: per-metric options, ``{metric: {option: value}}`` or
      ``{metric: options instance}`` (e.g. ``{'face': FaceOptions(...)}``, used
      as it is); each metric's options class (``MetricInfo.options``) holds its
      defaults.
    nonfinite: what a row holding a NaN or ±Inf feature does: 'raise' (the
      default, ``Engine``'s: an ``InputError`` naming the batch and the count)
      or 'skip' (the row is left out of every statistic; the rows dropped are
      reported in a ``FaceJaxWarning``, in ``engine.dropped`` and, for FaCe, in
      ``diagnostics['nonfinite_dropped']``).  Labels and ``source_probs`` are
      never skipped.
    **options: options by name, given to every requested metric whose options
      class has that field.

  Returns:
    ``{metric: value}``: a float or the metric's result object.

  Raises:
    InputError: bad input (named), unknown metrics or options.
  """
  policy = nonfinite or (engine.nonfinite if engine is not None else 'raise')
  src, acc, names, make_plan = _prepare(
      features,
      labels,
      metrics,
      source_probs,
      batch_size,
      num_classes,
      dtype,
      metric_options,
      options,
      nonfinite=policy,
  )
  eng = engine or engine_lib.Engine(
      mesh, dtype=acc, progress=progress, nonfinite=nonfinite or 'raise'
  )
  if eng.dtype != acc:
    raise InputError(f'the engine accumulates in {eng.dtype} but dtype {acc} was asked for')
  if nonfinite is not None and eng.nonfinite != nonfinite:
    raise InputError(f'the engine has nonfinite={eng.nonfinite!r} but {nonfinite!r} was asked for')
  plans = {'features': {name: make_plan(name) for name in names}}
  run = plan_lib.run_plans(eng, src, plans)
  out = dict(run.results['features'])
  report_dropped(eng.dropped.get('features'), out)
  return out


def report_dropped(dropped: Mapping[str, Any] | None, results: Mapping[str, Any], where: str = ''):
  """Reports the rows ``nonfinite='skip'`` dropped: a ``FaceJaxWarning`` and FaCe's diagnostics.

  Args:
    dropped: ``engine.dropped[stream]`` (``{'rows', 'batches'}``), or None (nothing dropped).
    results: ``{metric: value}``; values with a ``diagnostics`` dict (FaCe) get
      ``diagnostics['nonfinite_dropped'] = dropped``.
    where: the stream's description in the message (e.g. " (layer 'pool')").
  """
  if not dropped:
    return
  for v in results.values():
    if isinstance(getattr(v, 'diagnostics', None), dict):
      v.diagnostics['nonfinite_dropped'] = dropped
  shown = ', '.join(f'{label}: {rows}' for label, rows in dropped['batches'][:10])
  more = ' ...' if len(dropped['batches']) > 10 else ''
  warnings.warn(
      f"nonfinite='skip'{where}: {dropped['rows']} row(s) with non-finite features were left "
      f'out of every statistic (rows per batch: {shown}{more})',
      FaceJaxWarning,
      stacklevel=3,
  )


def _prepare(
    features,
    labels,
    metrics,
    source_probs,
    batch_size,
    num_classes,
    dtype,
    metric_options,
    options,
    nonfinite='raise',
):
  """(source, accumulation dtype, metric names, make_plan(name) -> fresh plan) for ``score``."""
  if isinstance(metrics, str):
    metrics = (metrics,)
  if not metrics:
    raise InputError('metrics is empty')
  infos, per = route_options(metrics, options, metric_options)
  src, acc = make_source(
      features,
      labels,
      source_probs=source_probs,
      batch_size=batch_size,
      num_classes=num_classes,
      dtype=dtype,
  )
  for i in infos:
    missing = [n for n in i.needs if n not in src.extras_shapes]
    if missing:
      raise InputError(f'metric {i.name!r} needs {missing} (e.g. source_probs=...)')
  info = engine_lib.StreamInfo(
      name='features',
      dim=src.dim,
      num_classes=src.num_classes,
      # Rows may be dropped: the class counts are then those of the first pass.
      label_counts=src.label_counts if nonfinite != 'skip' else None,
      extras=src.extras_shapes,
      reiterable=src.reiterable,
      nonfinite=nonfinite,
  )
  by_name = {i.name: i for i in infos}

  def make_plan(name):
    return by_name[name].plan(info, per[name], acc)

  return src, acc, list(by_name), make_plan


def start_errors(features, labels=None, **score_args) -> dict[str, InputError]:
  """The metrics that refuse this input before any pass over the data, with their errors.

  Each metric's plan is started on its own (``score_args``: ``metrics`` and the other
  keyword arguments of ``score`` that describe the input and the options; ``mesh``,
  ``engine`` and ``progress`` do not apply): a plan that can tell from the stream's
  description alone that the metric is undefined (e.g. ETran with fewer than 200
  samples) raises at once.  Nothing is compiled or streamed, so a caller scoring many
  metrics together can leave those out instead of finding them by failed passes.
  """
  args = dict(score_args)
  policy = args.pop('nonfinite', None) or 'raise'
  named = {
      k: args.pop(k, None)
      for k in ('source_probs', 'batch_size', 'num_classes', 'dtype', 'metric_options')
  }
  _, _, names, make_plan = _prepare(
      features,
      labels,
      args.pop('metrics', ('face',)),
      named['source_probs'],
      named['batch_size'],
      named['num_classes'],
      named['dtype'],
      named['metric_options'],
      args,
      nonfinite=policy,
  )
  errors = {}
  for name in names:
    try:
      plan_lib.start(make_plan(name), name)
    except InputError as e:
      errors[name] = e
  return errors


def face_score(
    features,
    labels=None,
    *,
    num_classes: int | None = None,
    batch_size: int | None = None,
    dtype: str | None = None,
    mesh=None,
    engine: engine_lib.Engine | None = None,
    progress: Callable[[engine_lib.PassProgress], None] | None = None,
    options: FaceOptions | None = None,
    nonfinite: str | None = None,
    **face_options,
):
  """FaCe (Fair Collapse) of one model's features on a target dataset.

  See ``face_jax.FaceOptions`` for the variants (and their defaults, the
  variant the zoo ablation selected: docs/face_ablation.md) and docs/face.md
  for the maths.

  Args:
    features: [N, D] float array with ``labels`` [N], or an iterable of
      ``(features, labels)`` batches (see ``score``).
    labels: [N] integer labels (array input).
    num_classes, batch_size, dtype, mesh, engine, progress, nonfinite: as in ``score``.
    options: a ``FaceOptions`` (default: ``FaceOptions()``).
    **face_options: ``FaceOptions`` fields by name (weighting, vc_transform,
      bc_cov, fairness, temperature, fairness_weight, ridge, combine); they
      replace those of ``options``.

  Returns:
    A ``FaCeResult``.

  Raises:
    InputError: bad input, or a keyword that is not a ``FaceOptions`` field.

  Example:
    >>> import numpy as np, face_jax
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(200) % 4
    >>> x = rng.normal(size=(200, 16)) + 3.0 * np.eye(16)[y]
    >>> r = face_jax.face_score(x, y)
    >>> bool(r.nc1 > 0), bool(r.variance_collapse == -r.nc1), -1 <= r.class_fairness <= 0
    (True, True, True)
    >>> face_jax.face_score(x, y, fairness='std').options.fairness
    'std'
  """
  fields = {f.name for f in dataclasses.fields(FaceOptions)}
  unknown = sorted(set(face_options) - fields)
  if unknown:
    raise InputError(
        f'face_score got unknown option(s) {unknown}; FaceOptions fields: ' f'{sorted(fields)}'
    )
  if options is not None and not isinstance(options, FaceOptions):
    raise InputError(f'options must be a FaceOptions, got {type(options).__name__}')
  opts = dataclasses.replace(options or FaceOptions(), **face_options)
  out = score(
      features,
      labels,
      metrics=('face',),
      batch_size=batch_size,
      num_classes=num_classes,
      dtype=dtype,
      mesh=mesh,
      engine=engine,
      progress=progress,
      metric_options={'face': opts},
      nonfinite=nonfinite,
  )
  return out['face']
