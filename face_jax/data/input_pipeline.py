"""Input pipeline: tfds array_record data -> grain -> fixed-size, masked numpy batches.

>>> import face_jax.data as fd
>>> pipe = fd.get("digits", "test", data_dir="/tmp/tfds", batch_size=128)  # doctest: +SKIP
>>> pipe.num_examples, pipe.num_batches, pipe.num_classes                  # doctest: +SKIP
(355, 3, 10)
>>> batch = next(iter(pipe))                                                # doctest: +SKIP
>>> batch["image"].shape, batch["label"].dtype, batch["_mask"].sum()        # doctest: +SKIP
((128, 8, 8, 1), dtype('int32'), 128)

No TensorFlow is needed: datasets are stored as `array_record` files, read
through `tfds.data_source`-style random access (`builder.as_data_source`) and
batched by a `grain.MapDataset` (optionally with worker processes). The
optional `backend="tf"` path (`builder.as_dataset` + `tfds.as_numpy`) needs
TensorFlow and datasets prepared in the TFRecord format.

Batching contract (big_vision `make_for_inference` / CLU `pad_dataset` style: every
host runs the same number of steps, padded with masked examples, nothing dropped):

* Each process reads its own contiguous slice of the split. The slices follow
  `tfds.even_splits(split, n=process_count)`: with N examples and P processes,
  the first N % P processes get ceil(N / P) examples, the others floor(N / P).
  (For a combined spec such as "train+test" the grain backend slices the
  concatenation, while tfds.even_splits, used by the tf backend, slices each
  part; both are exact partitions.)
* Every process yields exactly `num_batches = ceil(ceil(N / P) / batch_size)`
  batches of exactly `batch_size` rows. Rows past the end of a process's slice
  are padding: `_mask` False, label 0, zero image/features, empty text. No
  example is dropped or duplicated.
* Order is the dataset's stored order (no shuffling), so every pass is
  identical.

Throughput (benchmarks/input_pipeline_throughput.py, batch 256, one process,
2-core CPU machine, num_workers=0): digits ~15-30k examples/s, 32x32x3 uint8
images ~11k/s (raw Tensor feature) and ~10k/s (PNG Image feature),
WordNet glosses ~23k/s. The cost is tfds's per-record decoding (protobuf parse
+ feature decode, ~40-90 us/record); batching is numpy. With num_workers > 0
grain starts fresh worker processes for every pass (~1.3-2.5 s here before the
first batch), which pays off only for long, decode-heavy passes on machines
with spare cores.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from face_jax.data.builders import common
from face_jax.data.builders.arrays import Arrays
from face_jax.data.builders.digits import Digits
from face_jax.data.builders.image_folder import ImageFolder
from face_jax.data.builders.text_csv import TextCsv
from face_jax.data.builders.wordnet_glosses import WordnetGlosses

SHIPPED_BUILDERS: Mapping[str, type[tfds.core.DatasetBuilder]] = {
    "digits": Digits,
    "image_folder": ImageFolder,
    "arrays": Arrays,
    "text_csv": TextCsv,
    "wordnet_glosses": WordnetGlosses,
}
BACKENDS = ("grain", "tf")
MASK_KEY = "_mask"
LABEL_KEY = "label"
_INPUT_KEY_CANDIDATES = ("image", "text", "features")
# Records read per `__getitems__` call when counting labels.
_LABEL_SCAN_CHUNK = 8192


class DatasetNotPreparedError(FileNotFoundError):
  """A tfds dataset is not prepared (in a usable format) under `data_dir`."""


@dataclasses.dataclass(frozen=True)
class ArraySpec:
  """Shape and dtype of one batch entry.

  Attributes:
    shape: full shape including the leading batch dimension, e.g. (256, 8, 8, 1).
    dtype: numpy dtype; `object` for text (numpy arrays of `str`).
  """

  shape: tuple[int, ...]
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _Field:
  """How one stored feature becomes one batch entry."""

  key: str  # stored feature name
  out_key: str  # batch key
  kind: str  # "array" | "text"
  shape: tuple[int, ...]  # per example
  dtype: np.dtype


def process_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, stop) of a process's contiguous slice; same sizes as `tfds.even_splits`.

  Args:
    num_examples: N, examples in the split.
    process_index: i in [0, P).
    process_count: P >= 1.

  Returns:
    (start, stop): the first N % P processes get ceil(N/P) examples, the rest floor(N/P).

  >>> [process_range(11, i, 3) for i in range(3)]
  [(0, 4), (4, 8), (8, 11)]
  """
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"Need 0 <= process_index < process_count, got {process_index}, " f"{process_count}."
    )
  per, rem = divmod(int(num_examples), int(process_count))
  start = per * process_index + min(process_index, rem)
  return start, start + per + (1 if process_index < rem else 0)


def _require_tensorflow():
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "backend='tf' needs TensorFlow, which is not installed. Install it with "
        "`pip install tensorflow` (CPU is enough for input pipelines), or use the "
        "default backend='grain', which reads array_record datasets without TensorFlow."
    ) from e
  return tf


def _fields(
    features: tfds.features.FeaturesDict, input_key: str | None, label_key: str
) -> tuple[str, list[_Field], tuple[str, ...], list[str]]:
  """Chooses the batch entries from a dataset's top-level features.

  Returns:
    (input key, fields, class names, skipped feature names).
  """
  keys = list(features.keys())
  if label_key not in features:
    raise ValueError(
        f"The dataset has no label feature {label_key!r} (features: {keys}); "
        "pass label_key=<name of its ClassLabel feature>."
    )
  label_feat = features[label_key]
  if not isinstance(label_feat, tfds.features.ClassLabel):
    raise ValueError(
        f"Feature {label_key!r} is a {type(label_feat).__name__}, not a "
        "tfds.features.ClassLabel: the number of classes is unknown."
    )
  class_names = tuple(label_feat.names)
  if input_key is None:
    found = [k for k in _INPUT_KEY_CANDIDATES if k in features]
    if not found:
      raise ValueError(
          f"No input feature among {_INPUT_KEY_CANDIDATES} (features: {keys}); "
          "pass input_key=<feature name>."
      )
    input_key = found[0]
  elif input_key not in features:
    raise ValueError(f"input_key {input_key!r} is not a feature of the dataset ({keys}).")
  if input_key == label_key:
    raise ValueError("input_key and label_key must differ.")

  fields = []
  skipped = []
  for key in keys:
    feat = features[key]
    if key == label_key:
      fields.append(_Field(key, LABEL_KEY, "array", (), np.dtype(np.int32)))
      continue
    out_key = key
    if out_key in (LABEL_KEY, MASK_KEY):
      skipped.append(key)  # would collide with the label / mask entries
      continue
    shape = tuple(getattr(feat, "shape", ()) or ())
    is_text = isinstance(feat, tfds.features.Text) or (
        isinstance(feat, tfds.features.Tensor) and np.dtype(feat.np_dtype) == object and shape == ()
    )
    is_array = isinstance(feat, (tfds.features.Image, tfds.features.Tensor)) and not is_text
    fixed = all(isinstance(s, int) and s >= 0 for s in shape)
    if key == input_key:
      if is_text:
        fields.append(_Field(key, key, "text", (), np.dtype(object)))
      elif is_array and fixed and np.dtype(feat.np_dtype) != object:
        fields.append(_Field(key, key, "array", shape, np.dtype(feat.np_dtype)))
      else:
        raise ValueError(
            f"Input feature {key!r} ({feat!r}) cannot be batched: it needs a fixed shape "
            "(e.g. resize images while preparing, as image_folder(image_size=...) does) "
            "or must be a scalar text feature."
        )
    elif is_array and fixed and np.issubdtype(np.dtype(feat.np_dtype), np.number):
      fields.append(_Field(key, key, "array", shape, np.dtype(feat.np_dtype)))
    else:
      skipped.append(key)  # other text, variable-shape or nested features
  return input_key, fields, class_names, skipped


def _skip_decoders(features: tfds.features.FeaturesDict, keep: set[str]) -> dict[str, Any] | None:
  """SkipDecoding for image features that are not needed (saves the PNG/JPEG decode)."""
  dec = {
      k: tfds.decode.SkipDecoding()
      for k in features.keys()
      if k not in keep and isinstance(features[k], tfds.features.Image)
  }
  return dec or None


def _to_str(x: Any) -> str:
  if isinstance(x, bytes):
    return x.decode("utf-8")
  if isinstance(x, np.ndarray):  # 0-d bytes/str array
    return _to_str(x.item())
  return str(x)


def _empty_batch(fields: list[_Field], batch_size: int) -> dict[str, np.ndarray]:
  out = {}
  for f in fields:
    if f.kind == "text":
      out[f.out_key] = np.full((batch_size,), "", dtype=object)
    else:
      out[f.out_key] = np.zeros((batch_size,) + f.shape, dtype=f.dtype)
  return out


def _collate_records(
    records: list[Mapping[str, Any]], fields: list[_Field], batch_size: int
) -> dict[str, np.ndarray]:
  """Stacks decoded examples into one padded batch (rows past len(records) are padding)."""
  n = len(records)
  if n > batch_size:
    raise ValueError(f"{n} records for a batch of {batch_size}.")
  out = _empty_batch(fields, batch_size)
  if n:
    for f in fields:
      dst = out[f.out_key]
      if f.kind == "text":
        for i, r in enumerate(records):
          dst[i] = _to_str(r[f.key])
      else:
        col = np.stack([np.asarray(r[f.key]) for r in records])
        if col.shape[1:] != f.shape:
          raise ValueError(
              f"Feature {f.key!r}: example shape {col.shape[1:]} != declared {f.shape}."
          )
        dst[:n] = col
  out[MASK_KEY] = np.arange(batch_size) < n
  return out


def _collate_columns(
    columns: Mapping[str, np.ndarray], n: int, fields: list[_Field], batch_size: int
) -> dict[str, np.ndarray]:
  """Like `_collate_records` for already batched columns (tf backend)."""
  out = _empty_batch(fields, batch_size)
  for f in fields if n else ():
    col = columns[f.key]
    if f.kind == "text":
      for i in range(n):
        out[f.out_key][i] = _to_str(col[i])
    else:
      out[f.out_key][:n] = col[:n]
  out[MASK_KEY] = np.arange(batch_size) < n
  return out


def _read(source, indices: list[int], use_getitems: bool) -> list[Mapping[str, Any]]:
  if not indices:
    return []
  if use_getitems:
    return list(source.__getitems__(indices))  # parallel array_record reads
  return [source[i] for i in indices]


def _supports_getitems(source) -> bool:
  """Whether `source.__getitems__` works (tfds.testing.mock_data's mock binds it
  without `self` in tfds 4.9.10, so there only per-record `__getitem__` works)."""
  getitems = getattr(source, "__getitems__", None)
  if getitems is None:
    return False
  if len(source) == 0:
    return True  # nothing will be read
  try:
    getitems([0])  # reads one record; an empty key list short-circuits in tfds
  except TypeError:
    return False
  return True


class _BatchReader:
  """Picklable `batch index -> padded batch` map for grain (workers pickle it)."""

  def __init__(
      self, source, fields: list[_Field], start: int, stop: int, batch_size: int, use_getitems: bool
  ):
    self.source = source
    self.fields = fields
    self.start = start
    self.stop = stop
    self.batch_size = batch_size
    self.use_getitems = use_getitems

  def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
    lo = min(self.start + int(batch_index) * self.batch_size, self.stop)
    hi = min(lo + self.batch_size, self.stop)
    records = _read(self.source, list(range(lo, hi)), self.use_getitems)
    return _collate_records(records, self.fields, self.batch_size)


_PLAIN_SPLIT = re.compile(r"^[A-Za-z0-9_\-]+$")


class Pipeline:
  """Re-iterable, deterministic stream of fixed-size padded numpy batches.

  Each `iter(pipeline)` is a fresh pass over this process's slice in dataset
  order. Batches are dicts:

  * `<input_key>`: `image` uint8 [b, H, W, C] (grayscale has C=1), `text`
    object [b] of `str`, or `features` [b, ...];
  * `label`: int32 [b] (0 on padding rows);
  * `_mask`: bool [b], False on padding rows;
  * every other fixed-shape numeric feature, e.g. `source_probs` float32 [b, K_s].

  Attributes:
    name: dataset name.
    split: the split spec read (global, before per-process slicing).
    builder: the `tfds.core.DatasetBuilder`.
    info: its `tfds.core.DatasetInfo`.
    batch_size: rows per batch (per process).
    process_index / process_count: this process's slot.
    input_key: key of the model input in each batch.
    class_names: tuple of K names (label k is `class_names[k]`).
    num_classes: K.
    num_examples: examples in the whole split (all processes).
    num_local_examples: examples in this process's slice.
    local_range: (start, stop) of this slice within the split (grain backend).
    num_batches: batches per pass (same on every process).
    element_spec: {key: ArraySpec} of one batch.
    skipped_features: stored features left out of batches (text other than the
      input, variable-shape or nested features).
  """

  def __init__(
      self,
      *,
      builder: tfds.core.DatasetBuilder,
      name: str,
      split: str,
      batch_size: int,
      process_index: int,
      process_count: int,
      num_workers: int = 0,
      backend: str = "grain",
      input_key: str | None = None,
      label_key: str = "label",
  ):
    self.builder = builder
    self.info = builder.info
    self.name = name
    self.split = split
    self.batch_size = int(batch_size)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.num_workers = int(num_workers)
    self.backend = backend
    self.label_key = label_key
    features = self.info.features
    self.input_key, self._fields, self.class_names, skipped = _fields(
        features, input_key, label_key
    )
    self.skipped_features = tuple(skipped)
    self.num_classes = len(self.class_names)
    self._decoders = _skip_decoders(features, {f.key for f in self._fields})
    self._label_counts: np.ndarray | None = None

    if backend == "grain":
      self._source = _as_data_source(builder, name, split, self._decoders)
      self._use_getitems = _supports_getitems(self._source)
      self.num_examples = len(self._source)
      counts = [
          b - a
          for a, b in (
              process_range(self.num_examples, i, self.process_count)
              for i in range(self.process_count)
          )
      ]
      self.local_range = process_range(self.num_examples, self.process_index, self.process_count)
    else:
      self._source = None
      self._tf_splits = tfds.even_splits(split, n=self.process_count)
      try:
        self.num_examples = int(self.info.splits[split].num_examples)
        counts = [int(self.info.splits[s].num_examples) for s in self._tf_splits]
      except Exception as e:  # pylint: disable=broad-except
        if not _is_prepared(builder):
          raise _not_prepared_error(builder, name, "tfrecord") from e
        raise
      self.local_range = None
    self.num_local_examples = counts[self.process_index]
    self._max_local_examples = max(counts)
    self.num_batches = math.ceil(self._max_local_examples / self.batch_size)
    spec = {}
    for f in self._fields:
      spec[f.out_key] = ArraySpec((self.batch_size,) + f.shape, f.dtype)
    spec[MASK_KEY] = ArraySpec((self.batch_size,), np.dtype(bool))
    self.element_spec: dict[str, ArraySpec] = spec

  def __len__(self) -> int:
    return self.num_batches

  def __repr__(self) -> str:
    return (
        f"Pipeline(name={self.name!r}, split={self.split!r}, backend={self.backend!r}, "
        f"num_examples={self.num_examples}, process={self.process_index}/"
        f"{self.process_count}, batch_size={self.batch_size}, "
        f"num_batches={self.num_batches}, input_key={self.input_key!r}, "
        f"num_classes={self.num_classes})"
    )

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    if self.backend == "grain":
      return self._iter_grain()
    return self._iter_tf()

  def iter_from(self, start: int) -> Iterator[dict[str, np.ndarray]]:
    """A pass that starts at batch `start` (a resumed pass; the grain backend reads from there)."""
    start = int(start)
    if not 0 <= start <= self.num_batches:
      raise ValueError(f"start must be in [0, {self.num_batches}], got {start}.")
    if self.backend == "grain":
      return self._iter_grain(start)
    it = self._iter_tf()
    for _ in range(start):
      next(it)
    return it

  # -- grain -----------------------------------------------------------------
  def _reader(self) -> _BatchReader:
    start, stop = self.local_range
    return _BatchReader(
        self._source, self._fields, start, stop, self.batch_size, self._use_getitems
    )

  def _iter_grain(self, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    import grain  # pylint: disable=g-import-not-at-top

    if start >= self.num_batches:
      return
    ds = grain.MapDataset.range(start, self.num_batches).map(self._reader())
    if self.num_workers > 0:
      _ensure_absl_flags_parsed()
      it = ds.to_iter_dataset().mp_prefetch(
          grain.MultiprocessingOptions(num_workers=self.num_workers, per_worker_buffer_size=2)
      )
    else:
      # A small thread prefetch: array_record reads release the GIL.
      it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
    iterator = iter(it)
    count = 0
    try:
      for batch in iterator:
        count += 1
        if self.num_workers > 0:
          # Worker outputs arrive as grain SharedMemoryArrays; copy them into
          # plain arrays so the shared memory is released now.
          batch = {k: np.array(v) for k, v in batch.items()}
        yield batch
    finally:
      close = getattr(iterator, "close", None)
      if close is not None:
        close()  # stops worker processes / prefetch threads, also on early exit
    if count != self.num_batches - start:
      raise RuntimeError(f"grain produced {count} batches, expected {self.num_batches - start}.")

  # -- tf.data -----------------------------------------------------------------
  def _iter_tf(self) -> Iterator[dict[str, np.ndarray]]:
    _require_tensorflow()
    ds = self.builder.as_dataset(
        split=self._tf_splits[self.process_index],
        shuffle_files=False,
        decoders=self._decoders,
        read_config=tfds.ReadConfig(shuffle_seed=None, interleave_cycle_length=1),
    )
    ds = ds.batch(self.batch_size, drop_remainder=False)
    count = 0
    for columns in tfds.as_numpy(ds):
      n = len(columns[self.label_key])
      yield _collate_columns(columns, n, self._fields, self.batch_size)
      count += 1
    while count < self.num_batches:
      yield _collate_columns({}, 0, self._fields, self.batch_size)
      count += 1

  # -- label counts -------------------------------------------------------------
  def label_counts(self) -> np.ndarray:
    """Examples per class over the whole split (every process), [num_classes] int64.

    Shipped builders store per-split counts at preparation time, so for plain
    split names (and "all" / "a+b") this reads no data. Otherwise the split's
    labels are scanned once (image decoding skipped) and the result is cached.
    """
    if self._label_counts is None:
      counts = self._label_counts_from_metadata()
      if counts is None:
        counts = self._scan_label_counts()
      if counts.shape != (self.num_classes,) or counts.sum() != self.num_examples:
        raise RuntimeError(
            f"Label counts {counts.tolist()} disagree with {self.num_examples} examples "
            f"and {self.num_classes} classes."
        )
      self._label_counts = counts
    return self._label_counts.copy()

  def _label_counts_from_metadata(self) -> np.ndarray | None:
    if self.label_key != LABEL_KEY:
      return None
    metadata = getattr(self.info, "metadata", None)
    stored = metadata.get(common.LABEL_COUNTS_KEY) if metadata else None
    if not stored:
      return None
    names = [s.strip() for s in str(self.split).split("+")]
    if not all(_PLAIN_SPLIT.match(s) for s in names):
      return None
    total = np.zeros(self.num_classes, dtype=np.int64)
    for s in names:
      parts = list(stored) if s == "all" else [s]
      for p in parts:
        if p not in stored:
          return None
        total += np.asarray(stored[p], dtype=np.int64)
    return total

  def _scan_label_counts(self) -> np.ndarray:
    k = self.num_classes
    counts = np.zeros(k, dtype=np.int64)

    def add(labels):
      labels = np.asarray(labels, dtype=np.int64).reshape(-1)
      if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"Label outside [0, {k}) in {self.name}/{self.split}.")
      counts[:] += np.bincount(labels, minlength=k)

    if self.backend == "grain":
      for lo in range(0, self.num_examples, _LABEL_SCAN_CHUNK):
        idx = list(range(lo, min(lo + _LABEL_SCAN_CHUNK, self.num_examples)))
        add([r[self.label_key] for r in _read(self._source, idx, self._use_getitems)])
    else:
      _require_tensorflow()
      ds = self.builder.as_dataset(split=self.split, shuffle_files=False, decoders=self._decoders)
      ds = ds.map(lambda ex: ex[self.label_key]).batch(_LABEL_SCAN_CHUNK)
      for labels in tfds.as_numpy(ds):
        add(labels)
    return counts


def _ensure_absl_flags_parsed() -> None:
  """grain 0.2.x worker processes read an absl flag directly and fail with
  UnparsedFlagAccessError in programs that do not parse absl flags (grain issue
  #1355, fixed upstream by PR #1362). Marking the (default) flags as parsed is
  the documented workaround; `absl.app.run` still parses argv later."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _is_prepared(builder) -> bool:
  try:
    return bool(builder.is_prepared())
  except Exception:  # pylint: disable=broad-except
    return False


def _not_prepared_error(builder, name: str, file_format: str) -> DatasetNotPreparedError:
  data_dir = getattr(builder, "_data_dir_root", None) or getattr(builder, "data_dir", "?")
  return DatasetNotPreparedError(
      f"tfds dataset {name!r} is not prepared in {file_format} format under data_dir "
      f"{data_dir!s} (looked for {getattr(builder, 'data_path', '?')!s}). face_jax never "
      "downloads at run time. Prepare it once on a machine with network access, e.g. "
      f"`tfds build {name} --data_dir=<data_dir> --file_format={file_format}` or in Python "
      f"`tfds.builder({name!r}, data_dir=<data_dir>, file_format={file_format!r})"
      ".download_and_prepare()` (generating some datasets needs TensorFlow), then copy "
      f"the data_dir here. Shipped offline builders: {sorted(SHIPPED_BUILDERS)}."
  )


def _as_data_source(builder, name: str, split: str, decoders):
  try:
    return builder.as_data_source(split=split, decoders=decoders)
  except Exception as e:  # pylint: disable=broad-except
    if not _is_prepared(builder):
      raise _not_prepared_error(builder, name, "array_record") from e
    if isinstance(e, NotImplementedError):
      raise DatasetNotPreparedError(
          f"tfds dataset {name!r} is prepared under {builder.data_path} but not in a "
          "random-access format (array_record); the grain backend cannot read it. "
          "Re-prepare it with file_format='array_record' in another data_dir, or use "
          "backend='tf' (needs TensorFlow)."
      ) from e
    raise


def _make_builder(
    name: str,
    data_dir: str | None,
    backend: str,
    download_and_prepare: bool,
    builder_kwargs: dict[str, Any],
) -> tfds.core.DatasetBuilder:
  file_format = "array_record" if backend == "grain" else "tfrecord"
  if name in SHIPPED_BUILDERS:
    builder = SHIPPED_BUILDERS[name](data_dir=data_dir, file_format=file_format, **builder_kwargs)
    if download_and_prepare:
      builder.download_and_prepare()
    elif not builder.is_prepared():
      raise _not_prepared_error(builder, name, file_format)
    fmt = builder.info.file_format
    if fmt is not None and str(getattr(fmt, "value", fmt)) != file_format:
      raise DatasetNotPreparedError(
          f"{name!r} is already prepared under {builder.data_path} as {fmt}, but "
          f"backend={backend!r} needs {file_format}; use another data_dir."
      )
    return builder
  try:
    return tfds.builder(name, data_dir=data_dir, **builder_kwargs)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f"Unknown dataset {name!r}: not a shipped builder ({sorted(SHIPPED_BUILDERS)}) "
        f"nor a tfds dataset found offline (data_dir={data_dir!r})."
    ) from e


def get(
    name: str,
    split: str,
    data_dir: str | None = None,
    *,
    batch_size: int = 256,
    process_index: int | None = None,
    process_count: int | None = None,
    num_workers: int = 0,
    backend: str = "grain",
    download_and_prepare: bool = True,
    input_key: str | None = None,
    label_key: str = "label",
    **builder_kwargs: Any,
) -> Pipeline:
  """Builds the evaluation input pipeline of one dataset split.

  Args:
    name: a shipped builder ("digits", "image_folder", "arrays", "text_csv",
      "wordnet_glosses") or any tfds dataset name (optionally "name/config:version")
      already prepared in array_record format under `data_dir`.
    split: tfds split spec, e.g. "train", "test", "all", "train[:10%]".
    data_dir: tfds data directory (None: tfds's default, $TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    batch_size: rows per batch on this process (the per-process batch).
    process_index: this process's index (default `jax.process_index()`).
    process_count: number of processes (default `jax.process_count()`).
    num_workers: grain worker processes (0: read in this process).
    backend: "grain" (array_record, no TensorFlow) or "tf" (tf.data; needs
      TensorFlow and TFRecord-format data).
    download_and_prepare: for shipped builders, generate the dataset into
      `data_dir` from local files if it is not there yet (never uses the network).
      Other tfds datasets are never downloaded: they must already be prepared.
    input_key: batch key of the model input (default: the first of "image",
      "text", "features" present).
    label_key: name of the ClassLabel feature (emitted as batch key "label").
    **builder_kwargs: shipped builders' options (e.g. `root_dir`, `image_size`,
      `arrays`, `files`, `wordnet_dir`, `parts`, `subsample`) or
      `tfds.builder` kwargs (e.g. `config`, `version`).

  Returns:
    A `Pipeline`.

  Preparation is idempotent and tfds writes into a temporary directory that it
  renames when done, but with several processes sharing one `data_dir`, prepare
  shipped datasets once beforehand (e.g. call `get` on one process, or set
  `download_and_prepare=False` on the others after a barrier) to avoid
  duplicate work.

  Raises:
    ValueError: bad arguments or unknown dataset.
    ImportError: backend="tf" without TensorFlow.
    DatasetNotPreparedError: a tfds dataset is not prepared under `data_dir`.
  """
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
  if not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
    raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}.")
  if backend == "tf":
    _require_tensorflow()
    if num_workers:
      raise ValueError("num_workers applies to the grain backend only.")
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  process_range(0, int(process_index), int(process_count))  # validates
  builder = _make_builder(name, data_dir, backend, download_and_prepare, builder_kwargs)
  return Pipeline(
      builder=builder,
      name=name,
      split=split,
      batch_size=int(batch_size),
      process_index=int(process_index),
      process_count=int(process_count),
      num_workers=int(num_workers),
      backend=backend,
      input_key=input_key,
      label_key=label_key,
  )
