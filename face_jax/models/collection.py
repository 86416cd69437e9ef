"""Model collections: a directory of `save_params` checkpoints described by a manifest.

Synopsis::

    from face_jax import models
    coll = models.load_collection('benchmarks/zoo/weights')   # the bundled zoo
    for entry in coll:                                        # manifest order
      ex = entry.build()            # FeatureExtractor; checks the weights' sha256 first
      print(entry.name, entry.preset, entry.metadata.get('source'), ex.default_layer)

    # A collection of your own: checkpoints written with models.save_params.
    ex = models.get('cnn_small', num_classes=10)
    ...                                                       # train ex.module
    models.add_to_collection('my_models', 'cnn_a', ex.params, 'cnn_small', loss='ce')

A collection is a directory holding ``manifest.json`` and the weights files::

    {
      "models": {
        "cnn_a": {
          "preset": "cnn_small",                  # required: a face_jax.models preset
          "options": {"widths": [16, 32, 64]},    # optional: keyword options of models.get
          "weights": "cnn_a.msgpack",             # optional (default "<name>.msgpack"): a
                                                  #   save_params file, relative to the directory
          "sha256": "5108f0...",                  # required: hex sha256 of the weights file
          "source": "glyphs", "loss": "ce"        # optional metadata: any other fields
        },
        ...
      },
      "recipe": {...}                             # optional: other top-level keys are kept
    }

``models.get(preset, weights=<file>, **options)`` rebuilds every entry (JSON
lists stand for tuples), and its classifier head, if the checkpoint has one,
is kept (``logits`` layer: metrics that need source probabilities use it).
Entries keep the manifest's order.  Every field other than ``preset``,
``options``, ``weights`` and ``sha256`` is the entry's ``metadata``, e.g.
``source``, ``loss``, ``source_val_accuracy`` or ``feature_layer`` (the
bundled zoo records how each model was trained there).

Errors are ``face_jax.InputError`` (a ``ValueError``): a manifest that is
missing, not JSON or malformed when the collection is loaded; a weights file
that is missing or whose sha256 differs from the manifest's when an entry is
built (or ``Collection.verify()`` checks them all).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Iterator, Mapping

from face_jax._src.errors import InputError
from face_jax.models import registry
from face_jax.models import weights as wt
from face_jax.models.extractor import FeatureExtractor

MANIFEST = 'manifest.json'
ENTRY_FIELDS = ('preset', 'options', 'weights', 'sha256')  # the rest of an entry is metadata
_SHA256 = re.compile(r'[0-9a-f]{64}')


def file_sha256(path: str | os.PathLike) -> str:
  """Hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class CollectionEntry:
  """One model of a collection.

  Attributes:
    name: the manifest key.
    preset: a ``face_jax.models`` preset.
    options: keyword options of ``models.get`` (without ``weights``).
    weights: absolute path of the weights file (``save_params`` msgpack).
    sha256: the hex sha256 the manifest records for it.
    metadata: every other manifest field (source, loss, feature_layer, ...).
  """

  name: str
  preset: str
  options: Mapping[str, Any]
  weights: str
  sha256: str
  metadata: Mapping[str, Any]

  def verify(self) -> None:
    """Checks that the weights file exists and matches the manifest's sha256.

    Raises:
      InputError: the file is missing or its sha256 differs.
    """
    if not os.path.isfile(self.weights):
      raise InputError(f'model {self.name!r}: weights file {self.weights} is missing')
    got = file_sha256(self.weights)
    if got != self.sha256:
      raise InputError(
          f'model {self.name!r}: weights file {self.weights} has sha256 {got}, but '
          f'the manifest records {self.sha256} (the file is corrupt or was replaced)'
      )

  def build(self, **overrides) -> FeatureExtractor:
    """The model's ``FeatureExtractor``, after checking the weights' sha256.

    Args:
      **overrides: ``models.get`` options that replace the manifest's (e.g.
        ``num_classes=0`` to drop the classifier head, ``precision='highest'``).

    Returns:
      ``models.get(preset, weights=<file>, **options, **overrides)``.

    Raises:
      InputError: missing or corrupt weights file; options the preset rejects.
    """
    if 'weights' in overrides:
      raise InputError(
          f'model {self.name!r}: the weights come from the collection; '
          'load them with models.get directly to use others'
      )
    self.verify()
    try:
      return registry.get(self.preset, weights=self.weights, **{**self.options, **overrides})
    except ValueError as e:
      raise InputError(
          f'model {self.name!r} ({self.preset}, options {dict(self.options)}): ' f'{e}'
      ) from e

  def load_params(self) -> dict:
    """The checkpoint's nested params (numpy arrays), after checking its sha256."""
    self.verify()
    return wt.load_params(self.weights)


@dataclasses.dataclass(frozen=True)
class Collection:
  """An ordered collection of models (``load_collection``).

  Attributes:
    path: the directory.
    entries: the models, in manifest order.
    metadata: the manifest's other top-level fields (e.g. the training recipe).
  """

  path: str
  entries: tuple[CollectionEntry, ...]
  metadata: Mapping[str, Any]

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(e.name for e in self.entries)

  def __iter__(self) -> Iterator[CollectionEntry]:
    return iter(self.entries)

  def __len__(self) -> int:
    return len(self.entries)

  def __contains__(self, name: object) -> bool:
    return name in self.names

  def __getitem__(self, name: str) -> CollectionEntry:
    for e in self.entries:
      if e.name == name:
        return e
    raise KeyError(
        f'no model {name!r} in the collection at {self.path}; ' f'models: {list(self.names)}'
    )

  def verify(self) -> None:
    """Checks every weights file against its sha256 (``InputError`` on the first bad one)."""
    for e in self.entries:
      e.verify()


def _entry(directory: str, name: Any, raw: Any, where: str) -> CollectionEntry:
  if not isinstance(name, str) or not name:
    raise InputError(f'{where}: model names must be non-empty strings, got {name!r}')
  where = f'{where}: model {name!r}'
  if not isinstance(raw, Mapping):
    raise InputError(f'{where}: expected an object, got {type(raw).__name__}')
  missing = [f for f in ('preset', 'sha256') if f not in raw]
  if missing:
    raise InputError(f'{where}: missing field(s) {missing}')
  preset = raw['preset']
  if not isinstance(preset, str) or preset.lower() not in registry.list_presets():
    raise InputError(f'{where}: unknown preset {preset!r}; presets: {registry.list_presets()}')
  options = raw.get('options', {})
  if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
    raise InputError(f'{where}: options must be an object of models.get options, got {options!r}')
  if 'weights' in options:
    raise InputError(
        f'{where}: options must not hold "weights" (use the entry\'s "weights" '
        'field, a file in the collection)'
    )
  sha = raw['sha256']
  if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
    raise InputError(f'{where}: sha256 must be 64 lower-case hex digits, got {sha!r}')
  weights = raw.get('weights', f'{name}.msgpack')
  if not isinstance(weights, str) or not weights or os.path.isabs(weights):
    raise InputError(
        f'{where}: weights must be a file name relative to the collection, ' f'got {weights!r}'
    )
  metadata = {k: v for k, v in raw.items() if k not in ENTRY_FIELDS}
  return CollectionEntry(
      name=name,
      preset=preset,
      options=dict(options),
      weights=os.path.join(directory, weights),
      sha256=sha,
      metadata=metadata,
  )


def load_collection(path: str | os.PathLike) -> Collection:
  """Reads a collection's ``manifest.json`` (see the module docstring).

  Weights files are not read here; ``CollectionEntry.build`` (or
  ``Collection.verify``) checks each against its sha256.

  Args:
    path: the collection directory (or its ``manifest.json``).

  Returns:
    The ``Collection``, entries in manifest order.

  Raises:
    InputError: no manifest, invalid JSON, or a malformed manifest or entry.
  """
  path = os.path.abspath(os.fspath(path))
  if os.path.basename(path) == MANIFEST and os.path.isfile(path):
    path = os.path.dirname(path)
  manifest = os.path.join(path, MANIFEST)
  if not os.path.isfile(manifest):
    raise InputError(f'no model collection at {path}: {MANIFEST} is missing')
  try:
    with open(manifest) as f:
      doc = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InputError(f'{manifest} is not valid JSON: {e}') from e
  if not isinstance(doc, Mapping) or not isinstance(doc.get('models'), Mapping):
    raise InputError(
        f'{manifest}: expected an object with a "models" object '
        '{name: {"preset", "sha256", ...}}'
    )
  if not doc['models']:
    raise InputError(f'{manifest}: the collection has no models')
  entries = tuple(_entry(path, n, e, manifest) for n, e in doc['models'].items())
  return Collection(
      path=path, entries=entries, metadata={k: v for k, v in doc.items() if k != 'models'}
  )


def _jsonable(v: Any) -> Any:
  if isinstance(v, tuple):
    return [_jsonable(x) for x in v]
  if isinstance(v, Mapping):
    return {k: _jsonable(x) for k, x in v.items()}
  return v


def add_to_collection(
    path: str | os.PathLike,
    name: str,
    params,
    preset: str,
    options: Mapping[str, Any] | None = None,
    **metadata,
) -> CollectionEntry:
  """Saves ``params`` as ``<name>.msgpack`` in a collection and records it in the manifest.

  Creates the directory and manifest if needed; an existing entry of the same
  name is replaced (and moves to the end of the manifest).

  Args:
    path: the collection directory.
    name: the model's name.
    params: nested params (``extractor.params`` or a ``load_params`` dict).
    preset: its ``face_jax.models`` preset.
    options: ``models.get`` options that rebuild it (without ``weights``).
    **metadata: JSON-serialisable fields to record (source, loss, ...).

  Returns:
    The new entry (as ``load_collection`` reads it back).

  Raises:
    InputError: the existing manifest is malformed, or the new entry is.
  """
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)
  manifest = os.path.join(path, MANIFEST)
  doc: dict[str, Any] = {'models': {}}
  if os.path.exists(manifest):
    load_collection(path)  # refuse to extend a malformed manifest
    with open(manifest) as f:
      doc = json.load(f)
  clash = sorted(set(metadata) & set(ENTRY_FIELDS))
  if clash:
    raise InputError(f'metadata must not hold the entry fields {clash}')
  file_name = f'{name}.msgpack'
  raw = {
      'preset': preset,
      'options': _jsonable(dict(options or {})),
      'weights': file_name,
      'sha256': '0' * 64,
      **_jsonable(metadata),
  }
  _entry(os.path.abspath(path), name, raw, manifest)  # validate before writing anything
  wt.save_params(os.path.join(path, file_name), params)
  raw['sha256'] = file_sha256(os.path.join(path, file_name))
  doc['models'].pop(name, None)
  doc['models'][name] = raw
  tmp = manifest + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(doc, f, indent=1)
    f.write('\n')
  os.replace(tmp, manifest)
  return load_collection(path)[name]
