"""Shared helpers for face_jax's shipped tfds builders.

Every shipped builder

* writes `array_record` files (the only tfds format that can be read without
  TensorFlow, through `tfds.data_source`),
* keeps examples in generation order (`disable_shuffling=True`), so the order of
  a split is the documented source order,
* records per-split label counts in the dataset metadata
  (`info.metadata["label_counts"]`), so `Pipeline.label_counts()` needs no
  pass over the data,
* derives its builder-config name from a fingerprint of its options *and* of
  the source files' names, sizes and modification times, so preparing the same
  builder from different inputs never reuses stale data.

>>> holdout = every_kth_per_class(np.array([0, 0, 1, 0, 1, 0, 0]), k=2)
>>> holdout.tolist()
[False, True, False, False, True, False, True]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

# Metadata key under which shipped builders store per-split label counts.
LABEL_COUNTS_KEY = "label_counts"


def already_registered(name: str) -> bool:
  """Whether `name` is already in the tfds builder registry.

  Used as the `skip_registration` class keyword of the shipped builders so that
  importing a second copy of face_jax (e.g. an installed one next to a
  checkout) does not fail on a duplicate registration.
  """
  # pylint: disable-next=protected-access
  return name in tfds.core.registered._DATASET_REGISTRY


def fingerprint(obj: Any) -> str:
  """A stable 16-hex-digit digest of a JSON-serialisable object.

  Args:
    obj: nested dicts/lists/str/int/float/None (numpy arrays must be hashed by
      the caller with `array_digest`).

  Returns:
    The first 16 hex digits of the SHA-1 of the canonical JSON encoding.
  """
  blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def array_digest(array: np.ndarray) -> str:
  """SHA-1 of an array's dtype, shape and bytes (C order)."""
  array = np.ascontiguousarray(array)
  h = hashlib.sha1()
  h.update(str(array.dtype.str).encode())
  h.update(str(array.shape).encode())
  if array.dtype == object:
    for item in array.reshape(-1):
      h.update(repr(item).encode("utf-8"))
  else:
    h.update(array.tobytes())
  return h.hexdigest()


def file_digest(path: str) -> str:
  """SHA-1 of a file's content."""
  h = hashlib.sha1()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def file_stat_key(path: str) -> list[Any]:
  """(absolute path, size, mtime in ns): a cheap identity of a file."""
  st = os.stat(path)
  return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def every_kth_per_class(labels: np.ndarray, k: int = 5) -> np.ndarray:
  """Deterministic stratified hold-out mask.

  Within each class, examples are ranked in source order (0, 1, 2, ...); the
  examples whose rank r satisfies `r % k == k - 1` are held out. This puts
  floor(n_c / k) examples of every class c in the hold-out set (a 1/k split
  stratified by class) with no random number generator involved, so the split
  is identical on every platform and library version.

  Args:
    labels: [N] integer labels in source order.
    k: hold out one example in every `k` (k >= 2).

  Returns:
    [N] bool, True for held-out (test) examples.
  """
  if k < 2:
    raise ValueError(f"k must be >= 2, got {k}.")
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
  holdout = np.zeros(labels.shape[0], dtype=bool)
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)  # source order
    holdout[idx[k - 1 :: k]] = True
  return holdout


def count_labels(labels: Iterable[int], num_classes: int) -> list[int]:
  """Label histogram as a JSON-friendly list of length `num_classes`."""
  labels = np.asarray(
      list(labels) if not isinstance(labels, np.ndarray) else labels, dtype=np.int64
  )
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels outside [0, {num_classes}): min={labels.min()}, max={labels.max()}.")
  return np.bincount(labels, minlength=num_classes).astype(int).tolist()


def normalize_split_sources(
    sources: Any, *, kind: str, default_split: str = "train", is_single=None
) -> dict[str, Any]:
  """Turns `x` or `{split: x}` into an ordered `{split: x}` dict.

  Args:
    sources: a single source (meaning one split named `default_split`) or a
      mapping from split name to source.
    kind: what a source is, for error messages.
    default_split: split name used for a single source.
    is_single: optional predicate telling a single source from a mapping of
      splits (needed when a single source may itself be a mapping).

  Returns:
    {split name: source}, in the mapping's order.
  """
  if sources is None:
    raise ValueError(f"No {kind} given.")
  single = is_single(sources) if is_single is not None else not isinstance(sources, Mapping)
  if single:
    return {default_split: sources}
  if not sources:
    raise ValueError(f"Empty mapping of splits to {kind}.")
  out = {}
  for split, src in sources.items():
    if not isinstance(split, str) or not split or split == "all":
      raise ValueError(
          f"Invalid split name {split!r}: use a non-empty string other than 'all' "
          "('all' is tfds's union of every split)."
      )
    out[split] = src
  return out


def as_path_list(files: Any) -> list[str]:
  """A path or a sequence of paths -> list of str paths."""
  if isinstance(files, (str, os.PathLike)):
    return [os.fspath(files)]
  if isinstance(files, Sequence):
    return [os.fspath(f) for f in files]
  raise TypeError(f"Expected a path or a list of paths, got {type(files).__name__}.")


def make_info(
    builder: tfds.core.DatasetBuilder,
    *,
    description: str,
    features: tfds.features.FeaturesDict,
    homepage: str | None = None,
    citation: str | None = None,
) -> tfds.core.DatasetInfo:
  """DatasetInfo with source order kept and a metadata dict for label counts."""
  return tfds.core.DatasetInfo(
      builder=builder,
      description=description,
      features=features,
      supervised_keys=None,
      homepage=homepage,
      citation=citation,
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(),
  )


def set_label_counts(builder: tfds.core.DatasetBuilder, counts: Mapping[str, list[int]]) -> None:
  """Stores per-split label counts in the builder's metadata (saved on prepare)."""
  builder.info.metadata[LABEL_COUNTS_KEY] = {k: list(map(int, v)) for k, v in counts.items()}


class ShippedBuilderMixin:
  """Makes `array_record` the default file format of a GeneratorBasedBuilder."""

  def __init__(self, *args, **kwargs):
    if kwargs.get("file_format") is None:
      kwargs["file_format"] = "array_record"
    super().__init__(*args, **kwargs)

  def download_and_prepare(self, *args, **kwargs):
    """Prepares the dataset from local files only (never touches the network)."""
    if kwargs.get("download_config") is None:
      kwargs["download_config"] = tfds.download.DownloadConfig(try_download_gcs=False)
    return super().download_and_prepare(*args, **kwargs)  # pytype: disable=attribute-error
