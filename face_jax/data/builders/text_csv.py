"""`text_csv`: text classification examples from CSV or JSON-lines files.

>>> import face_jax.data as fd
>>> pipe = fd.get("text_csv", "train", data_dir="/tmp/tfds",
...               files={"train": "train.csv", "test": "test.jsonl"})  # doctest: +SKIP
>>> pipe.input_key                                                     # doctest: +SKIP
'text'

* `files`: a path or list of paths (one split, `train`), or `{split: path or
  list of paths}`. Files ending in `.jsonl` / `.ndjson` / `.json` are read as
  JSON lines (one object per line, blank lines skipped); every other file as
  CSV with a header row (Python's `csv` module, UTF-8, `delimiter` option,
  default ","; `.tsv` files default to tab).
* Columns `text_column` (default "text") and `label_column` (default "label").
* Labels: if every label in every split is an integer (a JSON int or a string
  such as "3"), labels are those integers and the number of classes is
  `len(class_names)` if given, else `max + 1`; names default to "0", "1", ....
  Otherwise labels are class names: `class_names` if given (order kept), else
  the sorted set of names over all splits.
* Examples keep file order (files in the given order). The config name is a
  digest of the files' contents and the options.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from face_jax.data.builders import common

_NAME = "text_csv"
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclasses.dataclass(eq=False, repr=False)
class TextCsvConfig(tfds.core.BuilderConfig):
  """Options of `TextCsv`.

  Attributes:
    texts: {split: [text, ...]} in file order.
    labels: {split: [N] int64 labels}.
    class_names: [K] class names.
  """

  texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  class_names: list[str] = dataclasses.field(default_factory=list)

  def __repr__(self) -> str:  # the texts themselves would flood logs
    sizes = {s: len(t) for s, t in self.texts.items()}
    return (
        f"TextCsvConfig(name={self.name!r}, examples={sizes}, "
        f"num_classes={len(self.class_names)})"
    )


def _read_rows(
    path: str, text_column: str, label_column: str, delimiter: str | None
) -> tuple[list[str], list[Any]]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"text_csv: file {path!r} does not exist.")
  texts, labels = [], []
  if path.lower().endswith(_JSONL_SUFFIXES):
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"text_csv: {path}:{lineno}: invalid JSON ({e}).") from e
        if not isinstance(row, dict) or text_column not in row or label_column not in row:
          raise ValueError(
              f"text_csv: {path}:{lineno}: need an object with keys "
              f"{text_column!r} and {label_column!r}."
          )
        texts.append(row[text_column])
        labels.append(row[label_column])
  else:
    delim = delimiter or ("\t" if path.lower().endswith(".tsv") else ",")
    with open(path, encoding="utf-8", newline="") as f:
      reader = csv.DictReader(f, delimiter=delim)
      if (
          reader.fieldnames is None
          or text_column not in reader.fieldnames
          or (label_column not in reader.fieldnames)
      ):
        raise ValueError(
            f"text_csv: {path}: header {reader.fieldnames} lacks "
            f"{text_column!r} or {label_column!r}."
        )
      for row in reader:
        texts.append(row[text_column])
        labels.append(row[label_column])
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise ValueError(f"text_csv: {path}: row {i}: text must be a string, got {t!r}.")
  return texts, labels


def _as_int(label: Any) -> int | None:
  if isinstance(label, bool):
    return None
  if isinstance(label, (int, np.integer)):
    return int(label)
  if isinstance(label, str):
    s = label.strip()
    if s.lstrip("-").isdigit():
      return int(s)
  return None


def make_config(
    files: Any,
    *,
    text_column: str = "text",
    label_column: str = "label",
    class_names: Any = None,
    delimiter: str | None = None,
) -> TextCsvConfig:
  """Reads the files and returns a content-addressed `TextCsvConfig`.

  Args:
    files: a path / list of paths (split `train`) or `{split: path(s)}`.
    text_column: name of the text column / JSON key.
    label_column: name of the label column / JSON key.
    class_names: optional class names (order kept).
    delimiter: CSV delimiter (default "," or tab for .tsv).

  Returns:
    The config.

  Raises:
    FileNotFoundError, ValueError: unreadable files, missing columns, bad labels.
  """
  sources = common.normalize_split_sources(
      files, kind="files", is_single=lambda x: not isinstance(x, Mapping)
  )
  paths = {s: [os.path.abspath(p) for p in common.as_path_list(v)] for s, v in sources.items()}
  texts: dict[str, list[str]] = {}
  raw_labels: dict[str, list[Any]] = {}
  for split, plist in paths.items():
    texts[split], raw_labels[split] = [], []
    for p in plist:
      t, l = _read_rows(p, text_column, label_column, delimiter)
      texts[split] += t
      raw_labels[split] += l
    if not texts[split]:
      raise ValueError(f"text_csv: split {split!r} has no example ({plist}).")

  all_raw = [l for ls in raw_labels.values() for l in ls]
  as_ints = [_as_int(l) for l in all_raw]
  labels: dict[str, np.ndarray] = {}
  if all(v is not None for v in as_ints):
    max_label = max(as_ints)
    if min(as_ints) < 0:
      raise ValueError(f"text_csv: negative label {min(as_ints)}.")
    names = (
        [str(c) for c in class_names]
        if class_names is not None
        else [str(i) for i in range(max_label + 1)]
    )
    if max_label >= len(names):
      raise ValueError(f"text_csv: label {max_label} >= number of class names {len(names)}.")
    for split, ls in raw_labels.items():
      labels[split] = np.asarray([_as_int(l) for l in ls], dtype=np.int64)
  else:
    str_labels = {s: [str(l) for l in ls] for s, ls in raw_labels.items()}
    present = sorted({l for ls in str_labels.values() for l in ls})
    names = [str(c) for c in class_names] if class_names is not None else present
    index = {n: k for k, n in enumerate(names)}
    if len(index) != len(names):
      raise ValueError(f"text_csv: duplicate class names in {names}.")
    missing = [l for l in present if l not in index]
    if missing:
      raise ValueError(f"text_csv: labels {missing[:10]} are not in class_names.")
    for split, ls in str_labels.items():
      labels[split] = np.asarray([index[l] for l in ls], dtype=np.int64)

  digest = common.fingerprint(
      {
          "files": {s: [[p, common.file_digest(p)] for p in ps] for s, ps in paths.items()},
          "text_column": text_column,
          "label_column": label_column,
          "names": names,
          "delimiter": delimiter,
      }
  )
  return TextCsvConfig(
      name=f"k{len(names)}-{digest}",
      version=TextCsv.VERSION,
      description=f"text_csv over {paths}.",
      texts=texts,
      labels=labels,
      class_names=names,
  )


class TextCsv(
    common.ShippedBuilderMixin,
    tfds.core.GeneratorBasedBuilder,
    skip_registration=common.already_registered(_NAME),
):
  """Text classification from CSV / JSON-lines files (`text`, `label`)."""

  name = _NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(
      self,
      *,
      files: Any = None,
      text_column: str = "text",
      label_column: str = "label",
      class_names: Any = None,
      delimiter: str | None = None,
      config: TextCsvConfig | None = None,
      **kwargs,
  ):
    """Builder over `files` (see the module docstring for every option).

    Args:
      files: path(s) or `{split: path(s)}`; required unless `config` is given.
      text_column: text column / key.
      label_column: label column / key.
      class_names: optional class names (order kept).
      delimiter: CSV delimiter.
      config: a ready `TextCsvConfig` (from `make_config`).
      **kwargs: `tfds.core.DatasetBuilder` arguments (`data_dir`, ...).
    """
    if config is None:
      if files is None:
        raise ValueError("text_csv needs files=<path, list of paths, or {split: paths}>.")
      config = make_config(
          files,
          text_column=text_column,
          label_column=label_column,
          class_names=class_names,
          delimiter=delimiter,
      )
    elif not isinstance(config, TextCsvConfig):
      raise TypeError(f"config must be a TextCsvConfig, got {type(config).__name__}.")
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg: TextCsvConfig = self.builder_config
    return common.make_info(
        self,
        description=(
            "Text classification examples read from CSV / JSON-lines files "
            "(columns text, label), in file order."
        ),
        features=tfds.features.FeaturesDict(
            {
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=list(cfg.class_names)),
            }
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg: TextCsvConfig = self.builder_config
    k = len(cfg.class_names)
    common.set_label_counts(self, {s: common.count_labels(l, k) for s, l in cfg.labels.items()})
    return {s: self._generate_examples(cfg.texts[s], cfg.labels[s]) for s in cfg.texts}

  def _generate_examples(self, texts, labels):
    for i, (t, l) in enumerate(zip(texts, labels)):
      yield i, {"text": t, "label": int(l)}
