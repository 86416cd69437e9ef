"""`arrays`: a tfds dataset from in-memory numpy arrays or an `.npz` file.

>>> import numpy as np, face_jax.data as fd
>>> data = {"features": np.random.rand(100, 16).astype(np.float32),
...         "labels": np.arange(100) % 4}
>>> pipe = fd.get("arrays", "train", data_dir="/tmp/tfds", arrays=data,
...               batch_size=32)                                   # doctest: +SKIP
>>> pipe.input_key, pipe.num_classes                               # doctest: +SKIP
('features', 4)

A source is a mapping (or the path of an `.npz` file) with

* exactly one input: `image` ([N, H, W] or [N, H, W, C], uint8; a 3-D array
  gets C=1) or `features` ([N, ...], any real dtype, stored as float32);
* `labels`: [N] integers in [0, num_classes);
* optional `source_probs`: [N, K_s] (stored as float32), e.g. a source model's
  softmax outputs for LEEP-style scores;
* optional `class_names`: [K] strings (an `.npz` may carry them too).

`arrays` may also be `{split: source}`; a single source gives one split,
`train`. The number of classes is `len(class_names)` if given, else the
`num_classes` option, else `max(labels) + 1` over all splits. Examples keep the
order of the arrays. The config name is a digest of the arrays' content and the
options, so new data never reuses a stale prepared copy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from face_jax.data.builders import common

_NAME = "arrays"
_INPUT_KEYS = ("image", "features")
_KNOWN_KEYS = frozenset(_INPUT_KEYS + ("labels", "source_probs", "class_names"))


@dataclasses.dataclass(eq=False, repr=False)
class ArraysConfig(tfds.core.BuilderConfig):
  """Options of `Arrays`.

  Attributes:
    data: {split: {"image"|"features": [N, ...], "labels": [N], "source_probs"?: [N, K_s]}}.
    input_key: "image" or "features".
    class_names: [K] class names.
  """

  data: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
  input_key: str = "features"
  class_names: list[str] = dataclasses.field(default_factory=list)

  def __repr__(self) -> str:  # the arrays themselves would flood logs
    sizes = {s: int(d["labels"].shape[0]) for s, d in self.data.items()}
    return (
        f"ArraysConfig(name={self.name!r}, input_key={self.input_key!r}, "
        f"examples={sizes}, num_classes={len(self.class_names)})"
    )


def _load_source(src: Any) -> dict[str, np.ndarray]:
  if isinstance(src, (str, os.PathLike)):
    path = os.fspath(src)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"arrays: .npz file {path!r} does not exist.")
    with np.load(path, allow_pickle=False) as npz:
      return {k: np.asarray(npz[k]) for k in npz.files}
  if isinstance(src, Mapping):
    return {str(k): np.asarray(v) for k, v in src.items()}
  raise TypeError(
      f"arrays: a source must be a mapping of arrays or an .npz path, " f"got {type(src).__name__}."
  )


def _is_single_source(x: Any) -> bool:
  """A path, or a mapping with array keys (vs. a mapping of split names)."""
  return not isinstance(x, Mapping) or any(k in _KNOWN_KEYS for k in x)


def make_config(
    arrays: Any, num_classes: int | None = None, class_names: Any = None
) -> ArraysConfig:
  """Validates the arrays and returns a content-addressed `ArraysConfig`.

  Args:
    arrays: a source (mapping or .npz path) or `{split: source}`.
    num_classes: optional number of classes (>= max label + 1).
    class_names: optional [K] class names (overrides `num_classes`).

  Returns:
    The config.

  Raises:
    ValueError / TypeError: on missing or inconsistent arrays.
  """
  sources = common.normalize_split_sources(arrays, kind="arrays", is_single=_is_single_source)
  data: dict[str, dict[str, np.ndarray]] = {}
  input_key = None
  file_names = None
  for split, src in sources.items():
    d = _load_source(src)
    unknown = set(d) - _KNOWN_KEYS
    if unknown:
      raise ValueError(
          f"arrays[{split!r}]: unknown keys {sorted(unknown)}; " f"expected {sorted(_KNOWN_KEYS)}."
      )
    keys = [k for k in _INPUT_KEYS if k in d]
    if len(keys) != 1:
      raise ValueError(f"arrays[{split!r}]: need exactly one of 'image' or 'features', got {keys}.")
    if input_key is None:
      input_key = keys[0]
    elif keys[0] != input_key:
      raise ValueError(f"arrays: every split needs the same input key ({input_key!r}).")
    if "labels" not in d:
      raise ValueError(f"arrays[{split!r}]: missing 'labels'.")
    labels = d["labels"]
    if labels.ndim != 1 or not (
        np.issubdtype(labels.dtype, np.integer)
        or (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)))
    ):
      raise ValueError(
          f"arrays[{split!r}]: labels must be a 1-D integer array, "
          f"got {labels.dtype} {labels.shape}."
      )
    n = labels.shape[0]
    x = d[input_key]
    if x.shape[:1] != (n,):
      raise ValueError(f"arrays[{split!r}]: {input_key} has {x.shape[:1]} rows, labels {n}.")
    if input_key == "image":
      if x.dtype != np.uint8:
        raise ValueError(f"arrays[{split!r}]: image must be uint8, got {x.dtype}.")
      if x.ndim == 3:
        x = x[..., None]
      if x.ndim != 4:
        raise ValueError(f"arrays[{split!r}]: image must be [N,H,W] or [N,H,W,C], got {x.shape}.")
    else:
      if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"arrays[{split!r}]: features must be real numbers, got {x.dtype}.")
      if x.ndim < 2:
        raise ValueError(
            f"arrays[{split!r}]: features must be [N, ...] with N rows, got {x.shape}."
        )
      x = x.astype(np.float32)
    out = {input_key: x, "labels": labels.astype(np.int64)}
    if "source_probs" in d:
      sp = d["source_probs"]
      if sp.ndim != 2 or sp.shape[0] != n:
        raise ValueError(f"arrays[{split!r}]: source_probs must be [N, K_s], got {sp.shape}.")
      out["source_probs"] = sp.astype(np.float32)
    if "class_names" in d:
      names = [str(s) for s in d["class_names"].tolist()]
      if file_names is not None and names != file_names:
        raise ValueError("arrays: splits carry different class_names.")
      file_names = names
    data[split] = out
  shapes = {
      s: (d[input_key].shape[1:], d.get("source_probs", np.zeros((0, 0))).shape[1:])
      for s, d in data.items()
  }
  if len(set(shapes.values())) != 1:
    raise ValueError(f"arrays: splits disagree on per-example shapes: {shapes}.")
  if len({"source_probs" in d for d in data.values()}) != 1:
    raise ValueError("arrays: source_probs must be given for every split or none.")

  max_label = max(int(d["labels"].max(initial=-1)) for d in data.values())
  min_label = min(int(d["labels"].min(initial=0)) for d in data.values())
  if min_label < 0:
    raise ValueError(f"arrays: negative label {min_label}.")
  if class_names is not None:
    names = [str(c) for c in class_names]
  elif file_names is not None:
    names = file_names
  else:
    k = int(num_classes) if num_classes is not None else max_label + 1
    names = [str(i) for i in range(k)]
  if num_classes is not None and int(num_classes) != len(names):
    raise ValueError(f"arrays: num_classes={num_classes} but {len(names)} class names.")
  if max_label >= len(names):
    raise ValueError(f"arrays: label {max_label} >= number of classes {len(names)}.")
  if len(names) < 1:
    raise ValueError("arrays: no class (empty labels and no num_classes/class_names).")

  digest = common.fingerprint(
      {
          "input_key": input_key,
          "names": names,
          "data": {
              s: {k: common.array_digest(v) for k, v in sorted(d.items())} for s, d in data.items()
          },
      }
  )
  return ArraysConfig(
      name=f"{input_key}-{digest}",
      version=Arrays.VERSION,
      description=f"arrays ({input_key}) with splits {list(data)}.",
      data=data,
      input_key=input_key,
      class_names=names,
  )


class Arrays(
    common.ShippedBuilderMixin,
    tfds.core.GeneratorBasedBuilder,
    skip_registration=common.already_registered(_NAME),
):
  """In-memory arrays (or an .npz) -> tfds array_record dataset."""

  name = _NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(
      self,
      *,
      arrays: Any = None,
      num_classes: int | None = None,
      class_names: Any = None,
      config: ArraysConfig | None = None,
      **kwargs,
  ):
    """Builder over `arrays`.

    Args:
      arrays: a mapping of arrays / `.npz` path (split `train`) or `{split: ...}`.
        Required unless `config` is given.
      num_classes: optional number of classes.
      class_names: optional class names.
      config: a ready `ArraysConfig` (from `make_config`).
      **kwargs: `tfds.core.DatasetBuilder` arguments (`data_dir`, ...).
    """
    if config is None:
      if arrays is None:
        raise ValueError("arrays needs arrays=<mapping of arrays, .npz path, or {split: ...}>.")
      config = make_config(arrays, num_classes, class_names)
    elif not isinstance(config, ArraysConfig):
      raise TypeError(f"config must be an ArraysConfig, got {type(config).__name__}.")
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg: ArraysConfig = self.builder_config
    first = next(iter(cfg.data.values()))
    x = first[cfg.input_key]
    feats = {
        cfg.input_key: tfds.features.Tensor(shape=x.shape[1:], dtype=x.dtype),
        "label": tfds.features.ClassLabel(names=list(cfg.class_names)),
    }
    if "source_probs" in first:
      feats["source_probs"] = tfds.features.Tensor(
          shape=first["source_probs"].shape[1:], dtype=np.float32
      )
    return common.make_info(
        self,
        description=(
            "Examples from in-memory numpy arrays / an .npz file "
            f"(input '{cfg.input_key}', labels, optional source_probs), in array order."
        ),
        features=tfds.features.FeaturesDict(feats),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg: ArraysConfig = self.builder_config
    k = len(cfg.class_names)
    common.set_label_counts(
        self, {s: common.count_labels(d["labels"], k) for s, d in cfg.data.items()}
    )
    return {s: self._generate_examples(d) for s, d in cfg.data.items()}

  def _generate_examples(self, d):
    cfg: ArraysConfig = self.builder_config
    extra = [k for k in ("source_probs",) if k in d]
    for i in range(d["labels"].shape[0]):
      ex = {cfg.input_key: d[cfg.input_key][i], "label": int(d["labels"][i])}
      for k in extra:
        ex[k] = d[k][i]
      yield i, ex
