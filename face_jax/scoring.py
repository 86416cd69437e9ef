"""Scoring models on datasets: a Flax forward pass streamed straight into the statistics.

Synopsis::

    import face_jax
    from face_jax import data, models

    pipe = data.get('digits', 'all', data_dir='/tmp/tfds', batch_size=256)
    out = face_jax.score_model(models.get('cnn_small', image_size=32), pipe,
                               layers=('block2', 'pool'), metrics=('face',))
    out['pool']['face'].score

Each data pass runs the model once per batch inside the engine's jitted step
(features never leave the device); every requested layer is its own
statistics stream.  The dataset can be a ``face_jax.data`` pipeline (tfds), a
dataset name, or in-memory ``(inputs, labels)`` — images as uint8 [N, H, W, C],
text as a list of strings, and for ``task="segmentation"`` label maps
[N, H, W].  This module is an edge: it reads data; the core never does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from face_jax._src import api
from face_jax._src import engine as engine_lib
from face_jax._src import featurize
from face_jax._src import plan as plan_lib
from face_jax._src.api import route_options
from face_jax._src.errors import InputError
from face_jax._src.sources import round_up

TASKS = ('classification', 'segmentation')


class ModelInputSource:
  """Host batches for a feature extractor: preprocessed inputs, labels, ``_mask``, ``_index``.

  Args:
    factory: zero-argument callable returning an iterator of batches, dicts with
      ``input_key``, ``label`` (and optionally ``_mask``), all of ``batch_size`` rows.
    extractor: the ``face_jax.models.FeatureExtractor`` (its ``host_preprocess``
      tokenises text / validates images).
    input_key: key of the model input in each batch.
    batch_size: rows per batch from ``factory`` (per process).
    num_classes: K.
    label_counts: [K] class counts if known before streaming (classification).
    num_batches: batches per pass (the same on every process), if known.
    index_offset: global row number of this process's first row.
    factory_from: optional ``factory_from(start)``: the batches from batch ``start``
      on (a resumed pass, ``iter_from``); without it a resumed pass reads and skips.
    num_local_examples: real rows of this process (all batches but the last are full).
  """

  reiterable = True

  def __init__(
      self,
      factory: Callable[[], Iterable[Mapping[str, Any]]],
      *,
      extractor,
      input_key: str,
      batch_size: int,
      num_classes: int,
      label_counts: np.ndarray | None = None,
      num_batches: int | None = None,
      index_offset: int = 0,
      factory_from: Callable[[int], Iterable[Mapping[str, Any]]] | None = None,
      num_local_examples: int | None = None,
  ):
    self.factory = factory
    self.factory_from = factory_from
    self.num_local_examples = num_local_examples
    self.extractor = extractor
    self.input_key = input_key
    self.batch_size = int(batch_size)
    self.local_batch_size = round_up(self.batch_size, jax.local_device_count())
    self.num_classes = int(num_classes)
    self.label_counts = label_counts
    self.num_batches = num_batches
    self.index_offset = int(index_offset)
    self.extras_shapes: dict = {}
    self._template = None

  def _convert(self, batch: Mapping[str, Any], i: int) -> dict[str, np.ndarray]:
    if self.input_key not in batch or 'label' not in batch:
      raise InputError(
          f'batch {i}: expected keys {self.input_key!r} and "label", got {sorted(batch)}'
      )
    inputs = batch[self.input_key]
    n = len(inputs)
    if n > self.local_batch_size:
      raise InputError(f'batch {i}: {n} rows, more than the batch size {self.batch_size}')
    if self.extractor.input_kind == 'text':
      inputs = [str(t) for t in inputs]
    try:
      raw = dict(self.extractor.host_preprocess(inputs))
    except (TypeError, ValueError) as e:
      raise InputError(f'batch {i}: {e}') from e
    label = np.asarray(batch['label'])
    if label.shape[0] != n or not np.issubdtype(label.dtype, np.integer):
      raise InputError(
          f'batch {i}: labels must be integers with {n} rows, got {label.dtype} ' f'{label.shape}'
      )
    mask = np.asarray(batch.get('_mask', np.ones(n, bool)), bool)
    index = np.full((n,), -1, np.int64)
    pos = np.cumsum(mask) - 1
    index[mask] = self.index_offset + self._seen + pos[mask]
    self._seen += int(mask.sum())
    raw['label'] = label.astype(np.int32)
    raw['_mask'] = mask
    raw['_index'] = index.astype(np.int32)
    pad = self.local_batch_size - n
    if pad:
      raw = {
          k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in raw.items()
      }
      raw['_index'][n:] = -1
    return raw

  def __iter__(self):
    return self._iter(0, self.factory())

  def iter_from(self, start: int):
    """The pass from batch ``start`` on (``Engine.run_pass`` resuming a pass)."""
    if self.factory_from is None or self.num_local_examples is None:
      it = self._iter(0, self.factory())
      for _ in range(start):
        if next(it, None) is None:
          break
      return it
    return self._iter(start, self.factory_from(start))

  def _iter(self, start, batches):
    self._seen = min(start * self.batch_size, self.num_local_examples or 0)
    for i, batch in enumerate(batches, start):
      raw = self._convert(batch, i)
      if self._template is None:
        self._template = {k: (v.shape, v.dtype) for k, v in raw.items()}
      yield raw, f'batch {i}'

  def padding_batch(self) -> dict[str, np.ndarray]:
    if self._template is None:
      raise InputError('this process has no data at all; cannot build a padding batch')
    raw = {k: np.zeros(s, d) for k, (s, d) in self._template.items()}
    raw['_index'][:] = -1
    return raw


def _array_factory(inputs, labels, batch_size: int):
  n = len(inputs)

  def factory(start=0):
    for lo in range(start * batch_size, n, batch_size):
      hi = min(lo + batch_size, n)
      yield {'input': inputs[lo:hi], 'label': labels[lo:hi]}

  return factory


def _resolve_model(model, model_options):
  if isinstance(model, str):
    from face_jax import models  # edge import: only model scoring needs the model zoo

    return models.get(model, **(model_options or {}))
  if model_options:
    raise InputError('model_options only apply when the model is given by preset name')
  return model


def _make_source(extractor, data, *, split, data_dir, batch_size, num_classes, task):
  """Returns (source, num_classes)."""
  from face_jax import data as data_lib  # edge import: the tfds pipeline

  if isinstance(data, str):
    if split is None:
      raise InputError('a dataset name needs split=...')
    data = data_lib.get(data, split, data_dir=data_dir, batch_size=batch_size)
  if isinstance(data, data_lib.Pipeline):
    pipe = data
    k = num_classes or pipe.num_classes
    counts = pipe.label_counts() if task == 'classification' else None
    offset = pipe.local_range[0] if pipe.local_range is not None else 0
    src = ModelInputSource(
        lambda: iter(pipe),
        extractor=extractor,
        input_key=pipe.input_key,
        batch_size=pipe.batch_size,
        num_classes=k,
        label_counts=counts,
        num_batches=pipe.num_batches,
        index_offset=offset,
        factory_from=pipe.iter_from,
        num_local_examples=pipe.num_local_examples,
    )
    return src, k
  if isinstance(data, tuple) and len(data) == 2:
    inputs, labels = data
    if not isinstance(inputs, (np.ndarray, list, tuple)):
      raise InputError(
          f'inputs must be an array of images or a list of strings, got {type(inputs).__name__}'
      )
    labels = np.asarray(labels)
    if len(inputs) != labels.shape[0]:
      raise InputError(f'{len(inputs)} inputs but {labels.shape[0]} labels')
    if len(inputs) == 0:
      raise InputError('empty input: no examples')
    if not np.issubdtype(labels.dtype, np.integer):
      raise InputError(f'labels must be integers, got {labels.dtype}')
    if task == 'segmentation':
      if labels.ndim != 3:
        raise InputError(f'segmentation labels must be label maps [N, H, W], got {labels.shape}')
      if num_classes is None:
        raise InputError(
            'num_classes is required for segmentation (the ignore label is not a class)'
        )
      k, counts = int(num_classes), None
    else:
      if labels.ndim != 1:
        raise InputError(f'labels must be 1-D [N], got {labels.shape}')
      if labels.min() < 0:
        raise InputError(f'{int((labels < 0).sum())} labels are negative')
      k = int(num_classes or labels.max() + 1)
      bad = labels >= k
      if bad.any():
        raise InputError(f'{int(bad.sum())} labels are outside [0, {k})')
      counts = np.bincount(labels, minlength=k)
    if jax.process_count() > 1:
      raise InputError(
          'in-memory inputs are single-process; on several hosts use a '
          'face_jax.data pipeline (each process reads its own slice)'
      )
    bs = min(batch_size, len(inputs))
    factory = _array_factory(inputs, labels, bs)
    src = ModelInputSource(
        factory,
        factory_from=factory,
        num_local_examples=len(inputs),
        extractor=extractor,
        input_key='input',
        batch_size=bs,
        num_classes=k,
        label_counts=counts,
        num_batches=-(-len(inputs) // bs),
    )
    return src, k
  raise InputError(
      f'data must be a face_jax.data pipeline, a dataset name or an (inputs, labels) '
      f'tuple, got {type(data).__name__}'
  )


def score_model(
    model,
    data,
    *,
    split: str | None = None,
    data_dir: str | None = None,
    layers: str | Sequence[str] | None = None,
    metrics: Sequence[str] = ('face',),
    pooling: str | None = None,
    batch_size: int = 256,
    num_classes: int | None = None,
    task: str = 'classification',
    resize: str = 'features_to_labels',
    ignore_label: int = 255,
    source_probs_layer: str | None = None,
    mesh=None,
    engine: engine_lib.Engine | None = None,
    progress: Callable[[engine_lib.PassProgress], None] | None = None,
    model_options: Mapping[str, Any] | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    **options,
) -> dict[str, dict[str, Any]]:
  """Scores a model's layers on a dataset, streaming its forward pass into the statistics.

  Args:
    model: a ``face_jax.models.FeatureExtractor`` or a preset name (with ``model_options``).
    data: a ``face_jax.data`` pipeline, a dataset name (with ``split``, ``data_dir``),
      or in-memory ``(inputs, labels)``: uint8 images [N, H, W, C] or a list of
      strings, labels [N] (classification) or label maps [N, H, W] (segmentation).
    layers: layer name(s) to score (default: the model's ``default_layer``; for
      segmentation, its last spatial layer); each is its own stream, all from one
      forward pass per batch.
    metrics: registry names, as in ``face_jax.score``.
    pooling: pooling of token/conv layers (see ``face_jax.models``).
    batch_size: examples per step for in-memory data and dataset names.
    num_classes: K (default: the dataset's; required for segmentation).
    task: "classification" or "segmentation" (every labelled pixel is a sample).
    resize: segmentation: "features_to_labels" or "labels_to_features".
    ignore_label: segmentation label that is masked out.
    source_probs_layer: logits layer whose softmax is used as ``source_probs``
      (default: ``"logits"`` when a requested metric needs source probabilities
      and the model has a classifier head).
    mesh, engine, progress, metric_options, **options: as in ``face_jax.score``.

  Returns:
    ``{layer: {metric: value}}``.

  Raises:
    InputError: bad data, unknown layers or metrics, a metric that needs source
      probabilities from a model without a classifier head.
  """
  prepared = prepare_model(
      model,
      data,
      split=split,
      data_dir=data_dir,
      layers=layers,
      metrics=metrics,
      pooling=pooling,
      batch_size=batch_size,
      num_classes=num_classes,
      task=task,
      resize=resize,
      ignore_label=ignore_label,
      source_probs_layer=source_probs_layer,
      model_options=model_options,
      metric_options=metric_options,
      nonfinite=engine.nonfinite if engine is not None else 'raise',
      **options,
  )
  eng = engine or engine_lib.Engine(mesh, progress=progress)
  params = eng.replicate(prepared.extractor.params)
  plans = prepared.plans(eng.dtype)
  run = plan_lib.run_plans(eng, prepared.source, plans, featurizer=prepared.featurizer, aux=params)
  for l in prepared.layers:
    api.report_dropped(eng.dropped.get(l), run.results[l], f' (layer {l!r})')
  return run.results


@dataclasses.dataclass
class PreparedModel:
  """A model and a dataset ready to stream (``prepare_model``).

  Attributes:
    extractor: the ``FeatureExtractor``.
    source: the host source of model inputs (``ModelInputSource``).
    featurizer: the model's featurizer (one forward pass, one stream per layer).
    layers: the layers scored (the streams).
    stream_infos: ``{layer: StreamInfo}``.
    infos: the requested metrics' ``MetricInfo``s.
    options: ``{metric: options instance}``.
  """

  extractor: Any
  source: ModelInputSource
  featurizer: featurize.ModelFeaturizer
  layers: tuple
  stream_infos: dict
  infos: list
  options: dict

  def plans(self, dtype: str, wrap: Callable | None = None) -> dict[str, dict[str, Any]]:
    """Fresh plans ``{layer: {metric: generator}}`` (``wrap(gen, metric)`` applied if given)."""
    out = {}
    for l in self.layers:
      out[l] = {}
      for i in self.infos:
        gen = i.plan(self.stream_infos[l], self.options[i.name], dtype)
        out[l][i.name] = wrap(gen, i.name) if wrap is not None else gen
    return out


def prepare_model(
    model,
    data,
    *,
    split: str | None = None,
    data_dir: str | None = None,
    layers: str | Sequence[str] | None = None,
    metrics: Sequence[str] = ('face',),
    pooling: str | None = None,
    batch_size: int = 256,
    num_classes: int | None = None,
    task: str = 'classification',
    resize: str = 'features_to_labels',
    ignore_label: int = 255,
    source_probs_layer: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    nonfinite: str = 'raise',
    **options,
) -> PreparedModel:
  """Everything ``score_model`` streams, without streaming it: source, featurizer, plans.

  Arguments as in ``score_model``; every check of the model, its layers, the
  metrics and the data runs here, before any pass.  ``nonfinite``: the policy of
  the ``Engine`` that will stream it ('skip': class counts come from the first
  pass, since rows may be dropped).
  """
  if task not in TASKS:
    raise InputError(f'task must be one of {TASKS}, got {task!r}')
  if isinstance(metrics, str):
    metrics = (metrics,)
  extractor = _resolve_model(model, model_options)
  seg = featurize.Segmentation(resize, int(ignore_label)) if task == 'segmentation' else None
  dense = seg is not None
  if layers is None:
    layers = (extractor.dense_layer_names[-1],) if dense else (extractor.default_layer,)
  elif isinstance(layers, str):
    layers = (layers,)
  layers = tuple(dict.fromkeys(layers))
  unknown = [l for l in layers if l not in extractor.layer_names]
  if unknown:
    raise InputError(
        f'unknown layer(s) {unknown} of {extractor.name}; layers: {extractor.layer_names}'
    )
  infos, per = route_options(metrics, options, metric_options)
  needs_probs = any('source_probs' in i.needs for i in infos)
  if needs_probs and source_probs_layer is None:
    if 'logits' not in extractor.layer_names:
      raise InputError(
          f'metrics {[i.name for i in infos if i.needs]} need source probabilities, '
          f'but {extractor.name} has no classifier head (a "logits" layer)'
      )
    source_probs_layer = 'logits'
  if needs_probs and dense:
    raise InputError('source-probability metrics are not defined per pixel (segmentation)')
  src, k = _make_source(
      extractor,
      data,
      split=split,
      data_dir=data_dir,
      batch_size=batch_size,
      num_classes=num_classes,
      task=task,
  )
  fn_layers = layers + (
      (source_probs_layer,) if source_probs_layer and source_probs_layer not in layers else ()
  )
  cache = extractor.__dict__.setdefault('_face_featurizers', {})
  key = (fn_layers, layers, pooling, source_probs_layer if needs_probs else None, seg)
  if key not in cache:
    fn = extractor.feature_fn(fn_layers, pooling=pooling, dense=dense)
    cache[key] = featurize.ModelFeaturizer(
        fn, layers, source_probs_layer if needs_probs else None, seg
    )
  feat = cache[key]
  extras = {}
  if needs_probs:
    extras['source_probs'] = (extractor.feature_dim(source_probs_layer),)
  stream_infos = {}
  for l in layers:
    dim = extractor.feature_dim(l)
    info = engine_lib.StreamInfo(
        name=l,
        dim=dim,
        num_classes=k,
        # An engine with nonfinite='skip' may drop rows: counts come from the first pass.
        label_counts=src.label_counts if nonfinite != 'skip' else None,
        extras=extras,
        reiterable=True,
        nonfinite=nonfinite,
    )
    stream_infos[l] = info
  return PreparedModel(extractor, src, feat, layers, stream_infos, list(infos), per)
