"""Host-side sources: turn arrays or iterables of batches into fixed-shape, masked batches.

Every source yields ``(raw, label)`` pairs where ``raw`` holds this process's
rows of one step, always exactly ``local_batch_size`` of them (a multiple of
the number of local devices; padding rows have ``_mask = False``, label 0 and
zero features), and ``label`` names the batch for error messages.  A user
batch larger than the step size is split into several steps; a smaller one
is padded — rows are never dropped, merged across batches or duplicated.

Sources are *re-iterable* when every ``iter()`` starts a fresh pass (arrays,
lists, callables returning iterators); multi-pass statistics need that.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from face_jax._src.errors import InputError

DEFAULT_ARRAY_BATCH = 8192


def round_up(n: int, m: int) -> int:
  return -(-int(n) // int(m)) * int(m)


def is_floating(dtype) -> bool:
  """True for numpy's floating dtypes and ml_dtypes' (bfloat16, float8, ...), which numpy does not list."""
  return bool(jnp.issubdtype(dtype, jnp.floating))


def _check_features(features, where: str, dim: int | None):
  if features.ndim != 2:
    raise InputError(f'{where}: features must be 2-D [batch, dim], got shape {features.shape}')
  if not is_floating(features.dtype):
    raise InputError(f'{where}: features must be floating point, got dtype {features.dtype}')
  if dim is not None and features.shape[1] != dim:
    raise InputError(
        f"{where}: feature dim {features.shape[1]} differs from the first batch's {dim}"
    )


def _check_labels(labels, n: int, where: str):
  if labels.ndim != 1:
    raise InputError(f'{where}: labels must be 1-D [batch], got shape {labels.shape}')
  if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
    raise InputError(f'{where}: labels must be integers, got dtype {labels.dtype}')
  if labels.shape[0] != n:
    raise InputError(f'{where}: {labels.shape[0]} labels for {n} feature rows')


def _check_extras(extras: Mapping[str, np.ndarray], n: int, where: str):
  for k, v in extras.items():
    if v.ndim < 1 or v.shape[0] != n:
      raise InputError(f'{where}: extra {k!r} has shape {v.shape}, expected leading dim {n}')
    if k == 'source_probs':
      if v.ndim != 2 or not is_floating(v.dtype):
        raise InputError(
            f'{where}: source_probs must be a 2-D float array [batch, source classes], '
            f'got {v.dtype} {v.shape}'
        )


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
  if a.shape[0] == rows:
    return a
  pad = np.zeros((rows - a.shape[0],) + a.shape[1:], a.dtype)
  return np.concatenate([a, pad], axis=0)


def _steps(features, labels, extras, size: int, feat_dtype, where: str, first_index: int):
  """Splits one user batch into padded steps of ``size`` rows.

  ``_index`` [size] int32 numbers the real rows of the stream from
  ``first_index`` on (padding rows: -1); statistics that address individual
  rows (subsamples, per-row values) use it.
  """
  n = features.shape[0]
  starts = range(0, n, size) if n else []
  for j, lo in enumerate(starts):
    hi = min(lo + size, n)
    index = np.full((size,), -1, np.int32)
    index[: hi - lo] = np.arange(first_index + lo, first_index + hi, dtype=np.int64)
    raw = {
        'features': _pad_rows(np.asarray(features[lo:hi], feat_dtype), size),
        'label': _pad_rows(np.asarray(labels[lo:hi], np.int32), size),
        '_mask': _pad_rows(np.ones((hi - lo,), bool), size),
        '_index': index,
    }
    for k, v in extras.items():
      dt = feat_dtype if is_floating(v.dtype) else v.dtype
      raw[k] = _pad_rows(np.asarray(v[lo:hi], dt), size)
    label = where if len(starts) == 1 else f'{where} rows {lo}:{hi}'
    yield raw, label


class _SourceBase:
  """Common attributes of host sources."""

  reiterable = True
  label_counts: np.ndarray | None = None
  num_batches: int | None = None

  def __init__(
      self,
      *,
      feat_dtype,
      local_batch_size: int,
      dim: int,
      num_classes: int | None,
      extras_shapes: Mapping[str, tuple],
  ):
    self.feat_dtype = np.dtype(feat_dtype)
    self.local_batch_size = int(local_batch_size)
    self.dim = int(dim)
    self.num_classes = num_classes
    self.extras_shapes = dict(extras_shapes)

  def padding_batch(self) -> dict[str, np.ndarray]:
    """A fully masked step (for processes that run out of data first)."""
    b = self.local_batch_size
    raw = {
        'features': np.zeros((b, self.dim), self.feat_dtype),
        'label': np.zeros((b,), np.int32),
        '_mask': np.zeros((b,), bool),
        '_index': np.full((b,), -1, np.int32),
    }
    for k, shape in self.extras_shapes.items():
      raw[k] = np.zeros((b,) + tuple(shape), self.feat_dtype)
    return raw


def _local_devices() -> int:
  return jax.local_device_count()


def _as_host(a, name: str) -> np.ndarray:
  if a is None:
    raise InputError(f'{name} is required')
  return np.asarray(a)


def _feat_dtype_for(dtype: str | None, features_dtype) -> np.dtype:
  if dtype is not None:
    return np.dtype(dtype)
  return np.dtype(np.float64 if features_dtype == np.float64 else np.float32)


class ArraySource(_SourceBase):
  """An in-memory array (this process's rows) streamed in steps of ``batch_size`` rows.

  Args:
    features: [N, D] floating array.
    labels: [N] integer labels.
    extras: optional per-sample arrays, e.g. ``{'source_probs': [N, Ks]}``.
    batch_size: real rows per step (default ``min(N, 8192)``); each step is
      padded to a multiple of the local device count.
    num_classes: K (default ``labels.max() + 1``).
    feat_dtype: dtype the features are sent to the device in.
  """

  def __init__(
      self,
      features,
      labels,
      *,
      extras: Mapping[str, Any] | None = None,
      batch_size: int | None = None,
      num_classes: int | None = None,
      feat_dtype=np.float32,
  ):
    self.features = _as_host(features, 'features')
    self.labels = _as_host(labels, 'labels')
    self.extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
    _check_features(self.features, 'features', None)
    _check_labels(self.labels, self.features.shape[0], 'labels')
    _check_extras(self.extras, self.features.shape[0], 'input')
    n = self.features.shape[0]
    if n == 0:
      raise InputError('empty input: features has no rows')
    if batch_size is not None and int(batch_size) < 1:
      raise InputError(f'batch_size must be >= 1, got {batch_size}')
    self.batch_size = int(batch_size) if batch_size else min(n, DEFAULT_ARRAY_BATCH)
    labels_i = self.labels.astype(np.int64)
    if num_classes is None:
      if labels_i.min() < 0:
        raise InputError(f'{int((labels_i < 0).sum())} labels are negative')
      num_classes = int(labels_i.max()) + 1
    bad = (labels_i < 0) | (labels_i >= num_classes)
    if bad.any():
      raise InputError(
          f'{int(bad.sum())} labels are outside [0, {num_classes}) '
          f'(first at row {int(np.argmax(bad))}: {int(labels_i[np.argmax(bad)])})'
      )
    super().__init__(
        feat_dtype=feat_dtype,
        local_batch_size=round_up(self.batch_size, _local_devices()),
        dim=self.features.shape[1],
        num_classes=num_classes,
        extras_shapes={k: v.shape[1:] for k, v in self.extras.items()},
    )
    self.label_counts = np.bincount(labels_i, minlength=num_classes).astype(np.int64)
    self.num_batches = -(-n // self.batch_size)
    self.index_offset = 0
    if jax.process_count() > 1:
      # Rows are numbered globally: this process's rows follow those of lower
      # process indices; label counts and num_batches are global too.
      from jax.experimental import multihost_utils

      ns = np.asarray(multihost_utils.process_allgather(np.array(n))).reshape(-1)
      self.index_offset = int(ns[: jax.process_index()].sum())
      all_counts = multihost_utils.process_allgather(self.label_counts)
      self.label_counts = np.asarray(all_counts).reshape(-1, num_classes).sum(0)
      self.num_batches = int(-(-ns.max() // self.batch_size))

  def __iter__(self):
    n = self.features.shape[0]
    for i, lo in enumerate(range(0, n, self.batch_size)):
      hi = min(lo + self.batch_size, n)
      ex = {k: v[lo:hi] for k, v in self.extras.items()}
      yield from _steps(
          self.features[lo:hi],
          self.labels[lo:hi],
          ex,
          self.local_batch_size,
          self.feat_dtype,
          f'batch {i} (rows {lo}:{hi})',
          self.index_offset + lo,
      )


def _unpack(item, i: int):
  """A user batch -> (features, labels, extras)."""
  where = f'batch {i}'
  if isinstance(item, Mapping):
    item = dict(item)
    feats = item.pop('features', None)
    labels = item.pop('labels', item.pop('label', None))
    mask = item.pop('_mask', None)
    extras = item
  elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
    feats, labels = item[0], item[1]
    extras = dict(item[2]) if len(item) == 3 and item[2] is not None else {}
    mask = None
  else:
    raise InputError(
        f'{where}: expected a (features, labels[, extras]) tuple or a dict with '
        f"'features' and 'labels', got {type(item).__name__}"
    )
  if feats is None or labels is None:
    raise InputError(f'{where}: both features and labels are required')
  feats, labels = np.asarray(feats), np.asarray(labels)
  extras = {k: np.asarray(v) for k, v in extras.items()}
  _check_features(feats, where, None)
  _check_labels(labels, feats.shape[0], where)
  _check_extras(extras, feats.shape[0], where)
  if mask is not None:
    keep = np.asarray(mask, bool)
    feats, labels = feats[keep], labels[keep]
    extras = {k: v[keep] for k, v in extras.items()}
  return feats, labels, extras


def _check_like_first(feats, extras, first, where: str):
  """``InputError`` when a batch's feature dtype or an extra's trailing shape or dtype differs from the first batch's."""
  dtype, extra_specs = first
  if feats.dtype != dtype:
    raise InputError(
        f"{where}: features have dtype {feats.dtype}, the first batch's had {dtype} "
        '(the dtype of a stream must not change)'
    )
  for k, (shape, dt) in extra_specs.items():
    v = extras[k]
    if v.shape[1:] != shape or v.dtype != dt:
      raise InputError(
          f'{where}: extra {k!r} is {v.dtype} with trailing shape {v.shape[1:]}, the first '
          f"batch's was {dt} {shape} (shapes and dtypes of a stream must not change)"
      )


class IterableSource(_SourceBase):
  """A stream of user batches: ``(features, labels[, extras])`` tuples or dicts.

  Args:
    batches: an iterable of batches.  Re-iterable inputs (lists, tuples, objects
      whose ``iter()`` returns a fresh iterator) and zero-argument callables
      returning an iterator allow several passes; a one-shot iterator allows one.
      A dict batch may carry ``_mask`` (rows where it is False are ignored).
    num_classes: K (required: shapes are static).
    batch_size: rows per step (default: the first batch's size); larger user
      batches are split, smaller ones padded.
    dtype: dtype features are sent to the device in (default float32, float64
      for float64 input).
  """

  def __init__(
      self, batches, *, num_classes: int, batch_size: int | None = None, dtype: str | None = None
  ):
    if num_classes is None:
      raise InputError(
          'num_classes is required for streamed (iterable) input: '
          'the statistics have static shapes'
      )
    if callable(batches) and not isinstance(batches, Iterable):
      self._factory: Callable[[], Iterator] = batches
      self.reiterable = True
    elif isinstance(batches, Iterator):
      self._factory = None
      self._once = batches
      self.reiterable = False
    elif isinstance(batches, Iterable):
      self._factory = lambda: iter(batches)
      self.reiterable = True
    else:
      raise InputError(
          f'features must be an array, an iterable of batches or a callable, '
          f'got {type(batches).__name__}'
      )
    self._used = False
    self._local_rows = None
    first_iter = self._fresh()
    try:
      first = next(first_iter)
    except StopIteration:
      raise InputError('empty stream: the iterable yielded no batches') from None
    feats, labels, extras = _unpack(first, 0)
    # What every later batch must match (a change mid-stream is an error naming the batch).
    self._first = (feats.dtype, {k: (v.shape[1:], v.dtype) for k, v in extras.items()})
    self._peeked = (first, first_iter) if not self.reiterable else None
    size = int(batch_size) if batch_size else max(1, feats.shape[0])
    super().__init__(
        feat_dtype=_feat_dtype_for(dtype, feats.dtype),
        local_batch_size=round_up(size, _local_devices()),
        dim=feats.shape[1],
        num_classes=int(num_classes),
        extras_shapes={k: v.shape[1:] for k, v in extras.items()},
    )

  def _index_offset(self) -> int:
    """Global row number of this process's first row.

    On several processes the offsets need every process's row count, known
    after one full pass: from the second pass on, ``_index`` numbers the rows
    of all processes uniquely (process 0's rows first); during the first pass
    it is process-local.  (Metrics that address rows of a stream with unknown
    counts, the subsample ones, count the rows in a first pass anyway.)
    """
    if jax.process_count() == 1 or self._local_rows is None:
      return 0
    from jax.experimental import multihost_utils

    counts = np.asarray(multihost_utils.process_allgather(np.array(self._local_rows))).reshape(-1)
    return int(counts[: jax.process_index()].sum())

  def _fresh(self) -> Iterator:
    if self._factory is not None:
      return iter(self._factory())
    if self._used:
      raise InputError(
          'this stream is a one-shot iterator and was already consumed; pass a '
          'list, a re-iterable object, or a callable returning a fresh iterator '
          'to allow several passes'
      )
    self._used = True
    return self._once

  def __iter__(self):
    if self._peeked is not None:
      first, rest = self._peeked
      self._peeked = None
      it = itertools.chain([first], rest)
    else:
      it = self._fresh()
    seen = 0
    offset = self._index_offset()
    for i, item in enumerate(it):
      feats, labels, extras = _unpack(item, i)
      _check_features(feats, f'batch {i}', self.dim)
      if set(extras) != set(self.extras_shapes):
        raise InputError(
            f"batch {i}: extras {sorted(extras)} differ from the first batch's "
            f'{sorted(self.extras_shapes)}'
        )
      _check_like_first(feats, extras, self._first, f'batch {i}')
      yield from _steps(
          feats, labels, extras, self.local_batch_size, self.feat_dtype, f'batch {i}', offset + seen
      )
      seen += feats.shape[0]
    self._local_rows = seen
