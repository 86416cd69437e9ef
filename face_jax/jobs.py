"""Batch jobs: models × a dataset × layers × metrics, resumable, on one or many processes.

Synopsis::

    from face_jax import jobs

    cfg = jobs.JobConfig(models=('benchmarks/zoo/weights',), dataset='digits', split='all',
                         data_dir='/tmp/tfds', metrics=('face', 'logme'), batch_size=256)
    result = jobs.run(cfg, checkpoint_dir='out/run1/checkpoints')
    result.scores        # {model: {layer: {metric: float | {component: float} | None}}}

A model is given as one of (``resolve_models``):

- a model-collection directory (a ``manifest.json``, e.g. ``benchmarks/zoo/weights``):
  every model in it, weights checked against their sha256;
- ``[name=]preset:weights``: a ``face_jax.models`` preset with its weights (a
  ``save_params`` Flax checkpoint ``.msgpack``, a torchvision state dict, ...);
- ``[name=]preset``: a preset with the weights it loads by itself (random
  initialisation from seed 0 for the image presets);
- ``[name=]features.npz``: precomputed features (``features`` [N, D], ``labels``
  [N], optionally ``source_probs`` [N, Ks]): no dataset is read.

The dataset is a ``face_jax.data`` pipeline (a shipped builder or a tfds dataset
prepared offline).  A dataset whose input is ``features`` (e.g. the ``arrays``
builder on precomputed features, stored as array_record) is scored as it is
when no model is given: one model named after the dataset, layer ``features``.

Each model streams the dataset once per pass: one forward pass per batch
serves every requested layer (each its own stream) and every metric (all
metrics of a round share the pass).  A metric that fails on a model is
recorded with its error (``isolated`` plans); bad data stops the job.

Resumable (``checkpoint_dir``): the pass's accumulator states, its params, the
input position and the merged totals of the passes already made are saved
with orbax every ``checkpoint_every_steps`` steps and at the end of each pass
and model (atomically: orbax writes a temporary directory and renames it),
together with a fingerprint of everything that determines the scores (the
config, the weights' sha256, the dataset's name, split and size, the mesh, the
versions).  Running the same job again resumes from the last checkpoint: the
finished models are not recomputed, the plans replay the passes made from
their totals, and the current pass continues from its step, so the scores are
bitwise those of an uninterrupted run.  A checkpoint with another fingerprint
raises ``CheckpointMismatch`` naming what differs (``restart=True`` discards it);
a features file changed only in rows the checkpoint has not streamed (a bad batch
fixed) is not a difference: the checkpoint records the sha256 of the rows streamed.

After each save, the sha256 of every file of the checkpoint is recorded beside it;
a checkpoint whose files do not match is reported, never read, and set aside, and
the one before it is used (two are kept); with none intact, ``CheckpointCorrupt``.
A save that fails (full disk, lost permission) raises ``CheckpointWriteError``:
the checkpoint before it is intact.  docs/failure_modes.md lists the faults.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from absl import logging

import face_jax
from face_jax import collection_scoring
from face_jax import engine as engine_lib
from face_jax._src.errors import InputError
from face_jax.scoring import prepare_model

FEATURES_LAYER = 'features'


class CheckpointMismatch(InputError):
  """A checkpoint that another job wrote (its fingerprint differs)."""


class CheckpointCorrupt(InputError):
  """No checkpoint of the directory is intact (each fails its checksum or cannot be read)."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (full disk, lost permission); the last one is intact."""


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """What a job computes (every field that can change the scores, and how it streams).

  Attributes:
    models: model items (module docstring); empty: the dataset's own features.
    dataset: a ``face_jax.data`` dataset name, or '' (feature files only).
    split: the split read.
    data_dir: the tfds data directory ('' : tfds's default).
    dataset_options: builder options of shipped builders (``root_dir``, ``arrays``, ...).
    layers: layers scored on every network model (empty: each model's default layer).
    metrics: metric names (empty: face).
    metric_options: ``{metric: {option: value}}``.
    batch_size: rows per step per process.
    dtype: accumulation dtype.
    checkpoint_every_steps: steps between checkpoints within a pass (0: only at the
      end of each pass and model).
    one_read: the network models run together: each batch is read and decoded once
      and goes through every model in turn (one program, one pass for all models).
    nonfinite: 'raise' (a non-finite feature stops the job, naming the batch) or
      'skip' (rows holding one are left out of every statistic, counted, and reported
      per model and layer in the results' ``models`` as ``nonfinite_dropped``).
  """

  models: tuple = ()
  dataset: str = ''
  split: str = 'train'
  data_dir: str = ''
  dataset_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  layers: tuple = ()
  metrics: tuple = ('face',)
  metric_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  batch_size: int = 256
  dtype: str = 'float32'
  checkpoint_every_steps: int = 100
  one_read: bool = False
  nonfinite: str = 'raise'

  def __post_init__(self):
    if self.nonfinite not in ('raise', 'skip'):
      raise InputError(f"nonfinite must be 'raise' or 'skip', got {self.nonfinite!r}")

  def scoring_fields(self) -> dict:
    """The fields that determine the scores (the fingerprint's config)."""
    return {
        'models': list(self.models),
        'dataset': self.dataset,
        'split': self.split,
        'dataset_options': {k: str(v) for k, v in sorted(self.dataset_options.items())},
        'layers': list(self.layers),
        'metrics': list(self.metrics),
        'metric_options': json.loads(json.dumps(self.metric_options, sort_keys=True, default=str)),
        'batch_size': int(self.batch_size),
        'dtype': self.dtype,
        'one_read': bool(self.one_read),
        'nonfinite': self.nonfinite,
    }


# ---------------------------------------------------------------------------------------------
# Models.


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One model of a job.

  Attributes:
    name: its name in the results.
    kind: 'collection', 'preset' or 'features'.
    preset: the ``face_jax.models`` preset (network models).
    options: ``models.get`` options (without weights).
    weights: the weights file, or None (the preset's own).
    sha256: the weights' (or the features file's) sha256; None for a preset's own weights.
    features: the ``.npz`` file of a features model.
    metadata: collection metadata (``feature_layer``, ...).
  """

  name: str
  kind: str
  preset: str | None = None
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  weights: str | None = None
  sha256: str | None = None
  features: str | None = None
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def build(self):
    """The ``FeatureExtractor`` (network models), its weights checked first."""
    from face_jax import models  # edge import: only network models need the model code

    if self.kind == 'features':
      raise TypeError(f'{self.name} is a features file, not a network')
    if self.weights is not None and self.sha256 is not None:
      got = models.collection.file_sha256(self.weights)
      if got != self.sha256:
        raise InputError(
            f'model {self.name!r}: weights file {self.weights} has sha256 {got}, expected '
            f'{self.sha256} (the file is corrupt or was replaced)'
        )
    opts = dict(self.options)
    if self.weights is not None:
      opts['weights'] = self.weights
    try:
      return models.get(self.preset, **opts)
    except (ValueError, TypeError, OSError) as e:
      raise InputError(f'model {self.name!r} ({self.preset}): cannot be built: {e}') from e

  def load_features(self) -> dict[str, np.ndarray]:
    with np.load(self.features, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}


def _sha256(path: str) -> str:
  from face_jax.models import collection  # edge import

  return collection.file_sha256(path)


def resolve_models(items: Sequence[str]) -> list[ModelSpec]:
  """``ModelSpec``s of the model items (module docstring), in order.

  Raises:
    InputError: an unknown preset, a missing file or directory, a malformed
      collection, a features file without ``features``/``labels``, a name given twice.
  """
  from face_jax import models  # edge import

  out: list[ModelSpec] = []
  for item in items:
    item = str(item).strip()
    if not item:
      continue
    name, sep, spec = item.partition('=')
    if not sep:
      name, spec = '', item
    if os.path.isdir(spec):
      if not os.path.isfile(os.path.join(spec, models.collection.MANIFEST)):
        raise InputError(
            f'--models {item!r}: the directory {spec} has no {models.collection.MANIFEST} '
            '(a model collection: see face_jax.models.load_collection)'
        )
      coll = models.load_collection(spec)
      for e in coll:
        out.append(
            ModelSpec(
                name=e.name,
                kind='collection',
                preset=e.preset,
                options=dict(e.options),
                weights=e.weights,
                sha256=e.sha256,
                metadata=dict(e.metadata),
            )
        )
      continue
    if spec.endswith('.npz') and spec.partition(':')[0] not in models.list_presets():
      if not os.path.isfile(spec):
        raise InputError(f'--models {item!r}: features file {spec} not found')
      with np.load(spec, allow_pickle=False) as z:
        missing = [k for k in ('features', 'labels') if k not in z.files]
        if missing:
          raise InputError(f'{spec} lacks {missing}; it has {sorted(z.files)}')
      out.append(
          ModelSpec(
              name=name or os.path.splitext(os.path.basename(spec))[0],
              kind='features',
              features=os.path.abspath(spec),
              sha256=_sha256(spec),
          )
      )
      continue
    preset, _, weights = spec.partition(':')
    if preset not in models.list_presets():
      raise InputError(
          f'--models {item!r}: {spec!r} is not a collection directory, a .npz features file '
          f'or a preset; presets: {models.list_presets()}'
      )
    if weights and not os.path.isfile(weights):
      raise InputError(f'--models {item!r}: weights file {weights} not found')
    out.append(
        ModelSpec(
            name=name or preset,
            kind='preset',
            preset=preset,
            weights=os.path.abspath(weights) if weights else None,
            sha256=_sha256(weights) if weights else None,
        )
    )
  seen = set()
  for m in out:
    if m.name in seen:
      raise InputError(f'model name {m.name!r} is given twice; name them with name=...')
    seen.add(m.name)
  return out


# ---------------------------------------------------------------------------------------------
# Sources.


class _PipelineSource:
  """An engine source over a ``face_jax.data`` pipeline: ``label``, ``_mask``, ``_index``.

  ``_index`` is the global row number (this process's slice starts at its offset);
  subclasses add the model inputs of a batch (``_inputs``).  A resumed pass starts at
  its batch (``iter_from``: the grain pipeline reads from there).
  """

  reiterable = True

  def __init__(self, pipe):
    self.pipe = pipe
    self.batch_size = self.local_batch_size = pipe.batch_size
    ndev = jax.local_device_count()
    if self.batch_size % ndev:
      raise InputError(
          f'--batch_size {self.batch_size} is not a multiple of the {ndev} local devices'
      )
    self.offset = pipe.local_range[0] if pipe.local_range is not None else 0
    self._template = None

  def _inputs(self, b, i) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def _iter(self, start, it):
    seen = min(start * self.batch_size, self.pipe.num_local_examples)
    for i, b in enumerate(it, start):
      mask = np.asarray(b['_mask'], bool)
      index = np.full(mask.shape, -1, np.int32)
      index[mask] = self.offset + seen + np.arange(int(mask.sum()))
      seen += int(mask.sum())
      raw = {'label': np.asarray(b['label'], np.int32), '_mask': mask, '_index': index}
      raw.update(self._inputs(b, i))
      if self._template is None:
        self._template = {k: (v.shape, v.dtype) for k, v in raw.items()}
      yield raw, f'batch {i}'

  def __iter__(self):
    return self._iter(0, iter(self.pipe))

  def iter_from(self, start):
    return self._iter(start, self.pipe.iter_from(start))

  def padding_batch(self):
    if self._template is None:
      raise InputError('this process has no data at all; cannot build a padding batch')
    raw = {k: np.zeros(s, d) for k, (s, d) in self._template.items()}
    raw['_index'][:] = -1
    return raw


class FeatureArraysSource(_PipelineSource):
  """A pipeline of precomputed features as an engine source (stream ``features``).

  Batches carry ``features`` and ``source_probs`` when the dataset has them.
  """

  def __init__(self, pipe):
    if pipe.input_key != 'features':
      raise InputError(f'dataset {pipe.name!r} holds {pipe.input_key!r}, not features')
    super().__init__(pipe)
    spec = pipe.element_spec
    self.dim = int(np.prod(spec['features'].shape[1:]))
    self.num_classes = pipe.num_classes
    self.label_counts = pipe.label_counts()
    self.extras_shapes = {}
    if 'source_probs' in spec:
      self.extras_shapes['source_probs'] = tuple(spec['source_probs'].shape[1:])

  def _inputs(self, b, i):
    out = {'features': np.asarray(b['features'], np.float32).reshape(self.batch_size, -1)}
    if 'source_probs' in self.extras_shapes:
      out['source_probs'] = np.asarray(b['source_probs'], np.float32)
    return out


class OneReadSource(_PipelineSource):
  """A pipeline's batches for several models at once: read and decoded once per step.

  Each model's host preprocessing (``FeatureExtractor.host_preprocess``) of the
  batch's input goes under ``"<j>:<key>"`` (model ``j``); ``label``, ``_mask`` and
  ``_index`` are shared.
  """

  def __init__(self, pipe, extractors: Sequence):
    super().__init__(pipe)
    self.extractors = tuple(extractors)

  def _inputs(self, b, i):
    out = {}
    inputs = b[self.pipe.input_key]
    for j, ex in enumerate(self.extractors):
      x = [str(t) for t in inputs] if ex.input_kind == 'text' else inputs
      try:
        pre = ex.host_preprocess(x)
      except (TypeError, ValueError) as e:
        raise InputError(f'batch {i}: {e}') from e
      for k, v in dict(pre).items():
        out[f'{j}:{k}'] = np.asarray(v)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class OneReadFeaturizer:
  """Every model's featurizer on its part of a ``OneReadSource`` batch: streams ``model/layer``.

  Attributes:
    names: the models' names.
    featurizers: their ``ModelFeaturizer``s (``aux`` is the tuple of their variables).
  """

  names: tuple
  featurizers: tuple

  def __call__(self, aux, raw):
    out = {}
    shared = {k: raw[k] for k in ('label', '_mask', '_index')}
    for j, (name, feat) in enumerate(zip(self.names, self.featurizers)):
      prefix = f'{j}:'
      sub = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
      sub.update(shared)
      for layer, batch in feat(aux[j], sub).items():
        out[f'{name}/{layer}'] = batch
    return out


def open_dataset(cfg: JobConfig):
  """The job's ``face_jax.data`` pipeline (``InputError`` with the fix when it cannot be read)."""
  from face_jax import data  # edge import: the tfds pipeline

  try:
    return data.get(
        cfg.dataset,
        cfg.split,
        data_dir=cfg.data_dir or None,
        batch_size=cfg.batch_size,
        **dict(cfg.dataset_options),
    )
  except data.DatasetNotPreparedError as e:
    raise InputError(
        f'dataset {cfg.dataset!r} is not prepared under --data_dir={cfg.data_dir!r}: {e} '
        '(prepare it offline with tfds, or use a shipped builder)'
    ) from e
  except (ValueError, FileNotFoundError, TypeError, KeyError) as e:
    raise InputError(f'dataset {cfg.dataset!r} split {cfg.split!r}: {e}') from e


# ---------------------------------------------------------------------------------------------
# Checkpoints.


def fingerprint(cfg: JobConfig, specs: Sequence[ModelSpec], pipe, mesh) -> dict:
  """Everything that determines the job's scores, as a JSON-ready dict."""
  return {
      'config': cfg.scoring_fields(),
      'models': {m.name: m.sha256 or f'{m.preset} (its own weights)' for m in specs},
      'dataset': (
          {
              'name': pipe.name,
              'split': pipe.split,
              'num_examples': int(pipe.num_examples),
              'num_classes': int(pipe.num_classes),
          }
          if pipe is not None
          else None
      ),
      'mesh': {
          'devices': int(mesh.devices.size),
          'processes': int(jax.process_count()),
          'platform': str(mesh.devices.flat[0].platform),
      },
      'versions': {'face_jax': face_jax.__version__, 'jax': jax.__version__},
  }


def _differences(old, new, prefix='') -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(old) | set(new)):
      out += _differences(old.get(k), new.get(k), f'{prefix}{k}.' if prefix or k else k)
    return out
  if old != new:
    return [f'{prefix.rstrip(".")}: checkpoint {old!r}, this job {new!r}']
  return []


def _flat(leaves) -> dict:
  return {f'{i:05d}': a for i, a in enumerate(leaves)}


def _unflat(d) -> list:
  return [d[k] for k in sorted(d)]


class JobCheckpoints:
  """The job's orbax checkpoints: a JSON part (progress, finished models) and arrays.

  Only process 0 writes the JSON and replicated arrays; every process writes its
  shards of the accumulator states (orbax's multi-process save).
  """

  def __init__(
      self,
      directory: str,
      fp: dict,
      mesh,
      *,
      restart: bool = False,
      prefix_digest: Callable[[str, int], str | None] | None = None,
      log: Callable[..., None] = logging.info,
  ):
    import orbax.checkpoint as ocp  # edge import: only resumable jobs need orbax

    self.ocp = ocp
    self.directory = os.path.abspath(directory)
    self.fp = fp
    self.mesh = mesh
    if restart and os.path.isdir(self.directory):
      if jax.process_index() == 0:
        shutil.rmtree(self.directory)
      _barrier('face_jax_job_restart')
    self.manager = self._manager()
    self.meta: dict = {'fingerprint': fp, 'finished': {}, 'current': None}
    self.arrays: dict = {}
    self.saves = 0
    self.prefix_digest = prefix_digest
    self.log = log

  def _manager(self):
    ocp = self.ocp
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            # Two kept: when the newest is found corrupt, the one before it is used.
            max_to_keep=2,
            enable_async_checkpointing=False,
            create=True,
            cleanup_tmp_directories=True,  # a save that failed half-way left one
        ),
        item_handlers={
            'meta': ocp.JsonCheckpointHandler(),
            'arrays': ocp.PyTreeCheckpointHandler(),
        },
    )

  # -- integrity ------------------------------------------------------------------------------

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _write_checksums(self, step: int):
    """Process 0 records the sha256 of every file of the saved step (``CHECKSUMS``)."""
    _barrier(f'face_jax_ckpt_saved_{step}')  # every process's shards are written
    if jax.process_index() == 0:
      root = self._step_dir(step)
      sums = _tree_sha256(root)
      tmp = os.path.join(root, CHECKSUMS + '.tmp')
      with open(tmp, 'w') as f:
        json.dump({'files': sums}, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, os.path.join(root, CHECKSUMS))
    _barrier(f'face_jax_ckpt_checked_{step}')

  def verify(self, step: int) -> str | None:
    """What is wrong with the saved step (None: every file has its recorded sha256)."""
    root = self._step_dir(step)
    try:
      with open(os.path.join(root, CHECKSUMS)) as f:
        want = json.load(f)['files']
    except FileNotFoundError:
      return f'it has no {CHECKSUMS} (the job stopped while writing it)'
    except (OSError, ValueError, KeyError, TypeError) as e:
      return f'its {CHECKSUMS} cannot be read: {e}'
    try:
      got = _tree_sha256(root)
    except OSError as e:
      return f'its files cannot be read: {e}'
    missing = sorted(set(want) - set(got))
    if missing:
      return f'{len(missing)} file(s) are missing, e.g. {missing[0]}'
    bad = sorted(k for k in want if got[k] != want[k])
    if bad:
      return f'{len(bad)} file(s) differ from their sha256 at save time, e.g. {bad[0]}'
    return None

  def load(self) -> bool:
    """Reads the newest intact checkpoint (True if there was one).

    A step whose files do not match the sha256 recorded at save time (truncated,
    corrupted, or stopped before its checksums were written) is reported and never
    read; the step before it is used, and the bad ones are moved to
    ``<directory>_corrupt/``.

    Raises:
      CheckpointMismatch: the checkpoint was written by another job.
      CheckpointCorrupt: there are checkpoints but none is intact.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return False
    ocp = self.ocp
    bad, step, meta = [], None, None
    for s in steps:
      why = self.verify(s)
      if why is None:
        try:
          meta = self.manager.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
          meta = meta['meta']
        except Exception as e:  # noqa: BLE001 -- unreadable: never used, reported below
          why = f'it cannot be read: {type(e).__name__}: {e}'
      if why is None:
        step = s
        break
      bad.append((s, why))
      logging.warning('checkpoint %s is not used: %s', self._step_dir(s), why)
    if step is None:
      raise CheckpointCorrupt(
          f'no checkpoint in {self.directory} is intact; none is loaded:\n  '
          + '\n  '.join(f'step {s}: {why}' for s, why in bad)
          + '\nPass --restart to discard them and start from scratch (or choose another '
          '--output_dir).'
      )
    diff = _differences(meta.get('fingerprint'), self.fp)
    fixed = self._fixed_data(meta) if diff else []
    if fixed is None:
      raise CheckpointMismatch(
          f'the checkpoint in {self.directory} was written by another job; it is not used. '
          'What differs:\n  ' + '\n  '.join(diff) + '\nRun the same job as before to resume '
          'it, or pass --restart to discard it (or choose another --output_dir).'
      )
    for name in fixed:
      self.log(
          'the features of %s changed since the checkpoint, in rows it has not streamed '
          '(fixed data): resuming',
          name,
      )
    if bad:
      self._set_aside([s for s, _ in bad])
      self.log(
          'resuming from the intact checkpoint %s; %d newer one(s) that failed their checksum '
          'moved to %s_corrupt',
          self._step_dir(step),
          len(bad),
          self.directory,
      )
    meta['fingerprint'] = self.fp
    self.meta = meta
    self.saves = step
    cur = meta.get('current')
    if cur and cur.get('has_arrays'):
      data_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec('data'))
      item = self.manager.item_metadata(step)['arrays']
      item = dict(getattr(item, 'tree', item))

      def args_of(path, md):
        if path and path[0].key == 'states':
          return ocp.ArrayRestoreArgs(sharding=data_sharding, global_shape=md.shape)
        return ocp.RestoreArgs(restore_type=np.ndarray)

      restore_args = jax.tree_util.tree_map_with_path(args_of, dict(item))
      self.arrays = self.manager.restore(
          step,
          args=ocp.args.Composite(
              arrays=ocp.args.PyTreeRestore(item=dict(item), restore_args=restore_args)
          ),
      )['arrays']
    return True

  def _fixed_data(self, meta) -> list | None:
    """The features models whose file changed only in rows the checkpoint never streamed.

    None when anything else differs (another job): the fingerprint stands.  A
    features file may change (the rows of a bad batch fixed) when its model is
    not finished and its first pass was checkpointed before the changed rows:
    the sha256 of the rows streamed (``data_digest``) is the same.
    """
    old = meta.get('fingerprint') or {}
    if self.prefix_digest is None or _differences(
        {**old, 'models': None}, {**self.fp, 'models': None}
    ):
      return None
    before, now = old.get('models') or {}, self.fp['models']
    if list(before) != list(now):
      return None
    cur = meta.get('current') or {}
    changed = [n for n in now if before[n] != now[n]]
    for name in changed:
      if name in meta['finished'] or (cur.get('model') == name and cur.get('passes')):
        return None  # its statistics hold every row of the old file
      p = cur.get('pass') if cur.get('model') == name else None
      if p is None:
        if self.prefix_digest(name, 0) is None:
          return None  # weights, not features: the fingerprint stands
        continue
      if p.get('data_digest') is None or self.prefix_digest(name, p['steps']) != p['data_digest']:
        return None
    return changed

  def _set_aside(self, steps):
    _barrier('face_jax_ckpt_verified')  # every process has read the steps
    if jax.process_index() == 0:
      dest = self.directory + '_corrupt'
      os.makedirs(dest, exist_ok=True)
      for s in steps:
        os.replace(self._step_dir(s), os.path.join(dest, f'{s}.{time.time_ns()}'))
    _barrier('face_jax_ckpt_set_aside')
    self.manager.close()
    self.manager = self._manager()

  def save(self):
    """Saves the state (orbax), then its checksums; a failure raises ``CheckpointWriteError``."""
    ocp = self.ocp
    last = self.saves
    self.saves += 1
    if self.arrays:
      self.meta['current']['has_arrays'] = True
    elif self.meta.get('current'):
      self.meta['current']['has_arrays'] = False
    items = {'meta': ocp.args.JsonSave(self.meta)}
    if self.arrays:
      items['arrays'] = ocp.args.PyTreeSave(self.arrays)
    try:
      self.manager.save(self.saves, args=ocp.args.Composite(**items), force=True)
      self.manager.wait_until_finished()
      self._write_checksums(self.saves)
    except Exception as e:
      intact = (
          f'The last checkpoint, {self._step_dir(last)}, is intact'
          if last
          else 'No checkpoint was written before'
      )
      raise CheckpointWriteError(
          f'cannot write checkpoint {self.saves} to {self.directory}: {type(e).__name__}: {e}. '
          f'{intact}: free space or make the directory writable, then run the same command '
          'again to resume.'
      ) from e

  # -- the state of the current model ---------------------------------------------------------

  def start_model(self, name: str):
    cur = self.meta.get('current')
    if not cur or cur.get('model') != name:
      self.meta['current'] = {'model': name, 'passes': [], 'pass': None}
      self.arrays = {}

  def history(self) -> list:
    cur = self.meta['current']
    out = []
    for i, p in enumerate(cur['passes']):
      a = self.arrays['history'][f'p{i}']
      out.append(
          engine_lib.PassTotals(
              _unflat(a['params']),
              _unflat(a['totals']),
              p['steps'],
              p['examples'],
              p.get('dropped'),
          )
      )
    return out

  def resume(self):
    p = self.meta['current'].get('pass')
    if not p:
      return None
    return engine_lib.PassCheckpoint(
        p['index'],
        p['steps'],
        p['examples'],
        _unflat(self.arrays['params']),
        _unflat(self.arrays['states']),
        p.get('dropped'),
    )

  def on_step(self, cp: engine_lib.PassCheckpoint):
    cur = self.meta['current']
    cur['pass'] = {'index': cp.pass_index, 'steps': cp.steps, 'examples': cp.examples}
    if cp.dropped:
      cur['pass']['dropped'] = cp.dropped
    if self.prefix_digest is not None and cp.pass_index == 0:
      cur['pass']['data_digest'] = self.prefix_digest(cur['model'], cp.steps)
    self.arrays['params'] = _flat([np.asarray(a) for a in jax.tree.leaves(cp.params)])
    self.arrays['states'] = _flat(jax.tree.leaves(cp.states))
    self.save()

  def on_pass(self, index: int, totals: engine_lib.PassTotals):
    cur = self.meta['current']
    assert index == len(cur['passes']), (index, cur['passes'])
    cur['passes'].append({'steps': totals.steps, 'examples': totals.examples})
    if totals.dropped:
      cur['passes'][-1]['dropped'] = totals.dropped
    cur['pass'] = None
    self.arrays.pop('params', None)
    self.arrays.pop('states', None)
    self.arrays.setdefault('history', {})[f'p{index}'] = {
        'params': _flat([np.asarray(a) for a in jax.tree.leaves(totals.params)]),
        'totals': _flat([np.asarray(a) for a in jax.tree.leaves(totals.totals)]),
    }
    self.save()

  def finish_models(self, records: Mapping[str, dict]):
    self.meta['finished'].update(records)
    self.meta['current'] = None
    self.arrays = {}
    self.save()


CHECKSUMS = 'face_jax_sha256.json'


def _tree_sha256(root: str) -> dict:
  """``{relative path: sha256}`` of every file under ``root`` but ``CHECKSUMS``."""
  import hashlib

  out = {}
  for d, _, files in os.walk(root):
    for name in files:
      path = os.path.join(d, name)
      rel = os.path.relpath(path, root)
      if rel in (CHECKSUMS, CHECKSUMS + '.tmp'):
        continue
      h = hashlib.sha256()
      with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
          h.update(chunk)
      out[rel] = h.hexdigest()
  return out


class FeaturesDigest:
  """sha256 of the rows of a job's features files streamed after ``steps`` steps of a pass.

  Every process streams its slice (``face_jax.data.process_range``) from its start,
  ``min(batch_size, rows)`` rows a step; the digest covers every process's streamed
  rows, so any process computes the same.  Incremental within a run; holds each
  file's arrays once read (as the job's ``ArraySource`` does).
  """

  def __init__(self, specs: Sequence[ModelSpec], batch_size: int):
    self.files = {m.name: m.features for m in specs if m.kind == 'features'}
    self.batch_size = int(batch_size)
    self._arrays: dict = {}
    self._hashers: dict = {}

  def __call__(self, name: str, steps: int) -> str | None:
    import hashlib

    if name not in self.files:
      return None
    if name not in self._arrays:
      with np.load(self.files[name], allow_pickle=False) as z:
        self._arrays[name] = {k: np.ascontiguousarray(z[k]) for k in sorted(z.files)}
    z = self._arrays[name]
    n = len(z['labels'])
    bs = min(self.batch_size, n)
    from face_jax.data import process_range  # edge import

    parts = []
    for q in range(jax.process_count()):
      lo, hi = process_range(n, q, jax.process_count())
      upto = lo + min(int(steps) * bs, hi - lo)
      for k, a in z.items():
        pos, h = self._hashers.get((name, q, k), (lo, None))
        if h is None or pos > upto:
          pos, h = lo, hashlib.sha256(f'{k}{a.dtype}{a.shape[1:]}'.encode())
        h.update(a[pos:upto].tobytes())
        self._hashers[(name, q, k)] = (upto, h)
        parts.append(h.hexdigest())
    return hashlib.sha256(''.join(parts).encode()).hexdigest()


def _barrier(name: str):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


# ---------------------------------------------------------------------------------------------
# Progress.


def rss_mib() -> float:
  """This process's resident memory now (MiB; the peak where /proc is missing)."""
  try:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
  except (OSError, ValueError, IndexError):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Progress:
  """``PassProgress`` reports turned into a log line every ``every_seconds``."""

  def __init__(self, model: str, position: str, total: int | None, every_seconds: float, log):
    self.model, self.position, self.total = model, position, total
    self.every = float(every_seconds)
    self.log = log
    self.last = time.perf_counter()
    self.resumed: dict = {}  # {pass index: examples already counted when it was resumed}

  def __call__(self, p: engine_lib.PassProgress):
    now = time.perf_counter()
    if not p.done and now - self.last < self.every:
      return
    self.last = now
    rate = (p.examples - self.resumed.get(p.pass_index, 0)) / max(p.seconds, 1e-9)
    total = self.total
    if total:
      eta = (total - p.examples) / rate if rate > 0 else float('inf')
      seen = f'{p.examples}/{total} examples ({100.0 * p.examples / total:.0f}%)'
      eta_s = 'done' if p.done else f'ETA {eta:.0f}s'
    else:
      seen, eta_s = f'{p.examples} examples', ''
    self.log(
        '%s: pass %d: %s, %.0f examples/s, %s, RSS %.0f MiB',
        f'{self.model} {self.position}'.strip(),
        p.pass_index + 1,
        seen,
        rate,
        eta_s,
        rss_mib(),
    )


# ---------------------------------------------------------------------------------------------
# The job.


@dataclasses.dataclass
class JobResult:
  """What ``run`` returns.

  Attributes:
    records: ``{model: {layer: {metric: record}}}`` (``collection_scoring.metric_record``).
    scores: ``{model: {layer: {metric: number, {component: number} or None}}}``.
    models: ``{model: {'examples', 'passes', 'seconds', 'resumed', ...}}``.
    resumed: models taken from the checkpoint as finished.
    wall_seconds: the job's wall time (this run).
    examples: examples streamed by this run (all passes, all models).
    data_passes: passes over the data made by this run (with ``one_read``, one pass
      serves every network model).
  """

  records: dict
  scores: dict
  models: dict
  resumed: list
  wall_seconds: float
  examples: int
  data_passes: int = 0


def value_record(info, value) -> dict:
  """``collection_scoring.metric_record`` of a value, with FaCe's per-class overlaps.

  ``overlap``: ``{class label: o_k}`` of the populated classes (the per-class plot).
  """
  rec = collection_scoring.metric_record(info, value)
  if not rec.get('error') and hasattr(value, 'overlap') and hasattr(value, 'classes'):
    rec['overlap'] = {str(int(c)): float(o) for c, o in zip(value.classes, value.overlap)}
  return rec


def record_score(rec: Mapping[str, Any]):
  """A record's entry of ``scores``: its value, its components, or None (an error)."""
  if rec.get('error'):
    return None
  if rec.get('components') is not None:
    return {k: float(v) for k, v in rec['components'].items()}
  return None if rec.get('value') is None else float(rec['value'])


def startup_checks(cfg: JobConfig, specs: Sequence[ModelSpec], pipe) -> dict:
  """Checks what can be checked before any pass; returns the built extractors' layers.

  Raises:
    InputError: unknown metrics or options, layers a model lacks, a features file
      whose labels do not fit the dataset's classes, models that need a dataset.
  """
  metrics = tuple(cfg.metrics) or ('face',)
  from face_jax._src.api import route_options

  route_options(metrics, {}, cfg.metric_options)  # unknown metrics / options raise here
  layers_of = {}
  for m in specs:
    if m.kind == 'features':
      with np.load(m.features, allow_pickle=False) as z:
        f, y = z['features'], z['labels']
        if f.ndim != 2 or y.shape != (f.shape[0],):
          raise InputError(
              f'{m.features}: features must be [N, D] and labels [N], got '
              f'{f.shape} and {y.shape}'
          )
        if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
          raise InputError(f'{m.features}: labels must be integers >= 0')
        if pipe is not None and y.size and y.max() >= pipe.num_classes:
          raise InputError(
              f'{m.features}: labels reach {int(y.max())}, beyond the '
              f'{pipe.num_classes} classes of {cfg.dataset}'
          )
      if cfg.layers and tuple(cfg.layers) != (FEATURES_LAYER,):
        raise InputError(
            f'model {m.name!r} is a features file: its only layer is {FEATURES_LAYER!r}, '
            f'not {list(cfg.layers)}'
        )
      layers_of[m.name] = (FEATURES_LAYER,)
      continue
    if pipe is None:
      raise InputError(f'model {m.name!r} needs a dataset to run on: give --dataset')
    ex = m.build()
    layers = tuple(cfg.layers) or (ex.default_layer,)
    unknown = [l for l in layers if l not in ex.layer_names]
    if unknown:
      raise InputError(
          f'model {m.name!r} has no layer(s) {unknown}; its layers: {list(ex.layer_names)}'
      )
    if ex.input_kind == 'text' and pipe.input_key != 'text':
      raise InputError(f'model {m.name!r} reads text; dataset {cfg.dataset!r} has {pipe.input_key}')
    if ex.input_kind != 'text' and pipe.input_key == 'text':
      raise InputError(f'model {m.name!r} reads images; dataset {cfg.dataset!r} has text')
    layers_of[m.name] = layers
  if not specs and pipe is not None and pipe.input_key != 'features':
    raise InputError(
        f'no --models given and dataset {cfg.dataset!r} holds {pipe.input_key}, not features'
    )
  return layers_of


class Job:
  """A prepared job (``prepare``): inputs checked, checkpoint read; ``run()`` streams."""

  def __init__(self, cfg, specs, pipe, layers_of, mesh, infos, ckpt, log, log_every_seconds, t0):
    self.cfg, self.specs, self.pipe, self.layers_of = cfg, specs, pipe, layers_of
    self.mesh, self.infos, self.ckpt = mesh, infos, ckpt
    self.log, self.log_every_seconds, self.t0 = log, log_every_seconds, t0

  @property
  def model_names(self) -> list[str]:
    return [m.name for m in self.specs]

  def run(self) -> JobResult:
    """Scores every model (the finished ones of the checkpoint are taken as they are)."""
    cfg, infos, log = self.cfg, self.infos, self.log
    specs = self.specs
    records, model_info, resumed = {}, {}, []
    streamed = 0
    group = [m for m in specs if m.kind in ('collection', 'preset')] if cfg.one_read else []
    self.data_passes = 0
    self.dropped: dict = {}  # the last stream run's dropped rows (nonfinite='skip')
    for i, spec in enumerate(specs):
      if spec in group:
        if spec is group[0]:
          streamed += self._run_one_read(group, records, model_info, resumed)
        continue
      label = f'{spec.name} ({i + 1}/{len(specs)})'
      if self._take_finished([spec.name], records, model_info, resumed, label):
        continue
      t0 = time.perf_counter()
      eng = self._engine(label, None)
      recs, plans, source, featurizer, aux, total = _model_plans(
          self.cfg, spec, self.pipe, self.layers_of[spec.name], infos, eng
      )
      eng.progress.total = total
      passes, this_run, examples = self._stream(
          spec.name, eng, source, plans, featurizer, aux, recs
      )
      seconds = time.perf_counter() - t0
      records[spec.name] = {l: {m: recs[l][m] for m in infos} for l in recs}
      model_info[spec.name] = {
          'examples': examples,
          'passes': passes,
          'passes_this_run': this_run,
          'seconds_this_run': seconds,
          'layers': list(recs),
          'resumed': False,
      }
      if self.cfg.nonfinite == 'skip':
        model_info[spec.name]['nonfinite_dropped'] = {
            l: d for l, d in self.dropped.items() if l in recs
        }
      streamed += examples * this_run
      failed = sorted({m for l in recs for m, r in recs[l].items() if r.get('error')})
      log(
          '%s: %d metric(s) x %d layer(s) on %d examples in %.1fs, %d pass(es), %.0f '
          'examples/s%s',
          label,
          len(infos),
          len(recs),
          examples,
          seconds,
          passes,
          examples * this_run / max(seconds, 1e-9),
          f'; no value: {", ".join(failed)}' if failed else '',
      )
      if self.ckpt is not None:
        self.ckpt.finish_models(
            {spec.name: {'records': records[spec.name], 'info': model_info[spec.name]}}
        )
    scores = {
        model: {layer: {m: record_score(r) for m, r in recs.items()} for layer, recs in by.items()}
        for model, by in records.items()
    }
    return JobResult(
        records={m.name: records[m.name] for m in specs},
        scores={m.name: scores[m.name] for m in specs},
        models={m.name: model_info[m.name] for m in specs},
        resumed=resumed,
        wall_seconds=time.perf_counter() - self.t0,
        examples=streamed,
        data_passes=self.data_passes,
    )

  def _take_finished(self, names, records, model_info, resumed, label) -> bool:
    """Takes the models' records from the checkpoint if all of them finished there."""
    ckpt = self.ckpt
    if ckpt is None or not all(n in ckpt.meta['finished'] for n in names):
      return False
    for n in names:
      records[n] = ckpt.meta['finished'][n]['records']
      model_info[n] = {**ckpt.meta['finished'][n]['info'], 'resumed': True}
      resumed.append(n)
    self.log('%s: finished in an earlier run (checkpoint)', label)
    return True

  def _engine(self, label: str, total: int | None) -> engine_lib.Engine:
    return engine_lib.Engine(
        self.mesh,
        dtype=self.cfg.dtype,
        nonfinite=self.cfg.nonfinite,
        progress=Progress(label, '', total, self.log_every_seconds, self.log),
        progress_every=1,
    )

  def _stream(self, unit, eng, source, plans, featurizer, aux, recs) -> tuple[int, int, int]:
    """Runs ``plans`` (resumed from the checkpoint of ``unit``); their records go into ``recs``.

    ``recs`` is ``{stream: {metric: record}}``; a stream named ``model/layer`` (one
    read) goes into ``recs[model][layer]``.

    Returns:
      (passes, passes made by this run, examples per pass over every process).
    """
    cfg, ckpt = self.cfg, self.ckpt
    kw, last = {}, {'examples': 0}
    self.dropped = {}
    if ckpt is not None:
      ckpt.start_model(unit)
      resume = ckpt.resume()
      if resume is not None:
        eng.progress.resumed[resume.pass_index] = resume.examples
      kw = dict(
          history=ckpt.history(),
          resume=resume,
          checkpoint=ckpt.on_step if cfg.checkpoint_every_steps > 0 else None,
          checkpoint_every=cfg.checkpoint_every_steps,
      )
      if kw['history']:
        last['examples'] = kw['history'][-1].examples
    done_before = len(kw.get('history', ()))

    first = {'dropped': kw['history'][0].dropped if kw.get('history') else None}

    def on_pass(index, totals):
      last['examples'] = totals.examples
      if index == 0:
        first['dropped'] = totals.dropped
      if ckpt is not None:
        ckpt.on_pass(index, totals)

    if not plans:
      return 0, 0, 0
    run_ = engine_lib.run_plans(
        eng, source, plans, featurizer=featurizer, aux=aux, on_pass=on_pass, **kw
    )
    self.data_passes += run_.passes - done_before
    self.dropped = _dropped_rows(plans, first['dropped']) if cfg.nonfinite == 'skip' else {}
    for stream, vals in run_.results.items():
      name, _, layer = stream.rpartition('/')
      into = recs[name][layer] if name else recs[stream]
      for m, v in vals.items():
        if isinstance(v, engine_lib.PlanFailure):
          into[m] = collection_scoring.metric_record(self.infos[m], error=v.error)
        else:
          into[m] = value_record(self.infos[m], v)
    return run_.passes, run_.passes - done_before, _global_sum(last['examples'])

  def _run_one_read(self, group, records, model_info, resumed) -> int:
    """The network models together (``one_read``); returns the examples streamed."""
    cfg, pipe, infos = self.cfg, self.pipe, self.infos
    names = [m.name for m in group]
    label = f'one read of {len(group)} models'
    if self._take_finished(names, records, model_info, resumed, label):
      return 0
    t0 = time.perf_counter()
    eng = self._engine(label, pipe.num_local_examples)
    recs_of, extractors, feats, run_names, plans = {}, [], [], [], {}
    for spec in group:
      layers = self.layers_of[spec.name]
      recs = recs_of[spec.name] = {l: {} for l in layers}
      ex, prepared = _prepare_network(cfg, spec, pipe, layers, infos, recs)
      if prepared is None:
        continue
      extractors.append(ex)
      feats.append(prepared.featurizer)
      run_names.append(spec.name)
      for layer, ps in prepared.plans(eng.dtype, wrap=engine_lib.isolated).items():
        plans[f'{spec.name}/{layer}'] = ps
    passes, this_run, examples = self._stream(
        label,
        eng,
        OneReadSource(pipe, extractors),
        plans,
        OneReadFeaturizer(tuple(run_names), tuple(feats)),
        tuple(eng.replicate(ex.params) for ex in extractors),
        recs_of,
    )
    seconds = time.perf_counter() - t0
    finished = {}
    for n in names:
      records[n] = {l: {m: recs_of[n][l][m] for m in infos} for l in recs_of[n]}
      model_info[n] = {
          'examples': examples,
          'passes': passes,
          'passes_this_run': this_run,
          'seconds_this_run': seconds,
          'layers': list(recs_of[n]),
          'resumed': False,
          'one_read': True,
      }
      if cfg.nonfinite == 'skip':
        model_info[n]['nonfinite_dropped'] = {
            stream.rpartition('/')[2]: d
            for stream, d in self.dropped.items()
            if stream.rpartition('/')[0] == n
        }
      finished[n] = {'records': records[n], 'info': model_info[n]}
    self.log(
        '%s: %d metric(s) on %d examples in %.1fs, %d pass(es) over the data, %.0f examples/s',
        label,
        len(infos),
        examples,
        seconds,
        passes,
        examples * this_run / max(seconds, 1e-9),
    )
    if self.ckpt is not None:
      self.ckpt.finish_models(finished)
    return examples * this_run


def prepare(
    cfg: JobConfig,
    *,
    checkpoint_dir: str | None = None,
    restart: bool = False,
    log: Callable[..., None] = logging.info,
    log_every_seconds: float = 5.0,
    mesh=None,
) -> Job:
  """Checks the job's inputs and reads its checkpoint, before any pass (``Job.run`` streams).

  Args:
    cfg: the job.
    checkpoint_dir: where checkpoints go (None: not resumable).
    restart: discard an existing checkpoint first.
    log: ``log(fmt, *args)`` for progress lines.
    log_every_seconds: seconds between progress lines.
    mesh: the engine's mesh (default: every device of every process).

  Raises:
    InputError: bad input (``resolve_models``, ``open_dataset``, ``startup_checks``).
    CheckpointMismatch: ``checkpoint_dir`` holds another job's checkpoint.
  """
  t0 = time.perf_counter()
  metrics = tuple(cfg.metrics) or ('face',)
  specs = resolve_models(cfg.models)
  pipe = open_dataset(cfg) if cfg.dataset else None
  if not specs and pipe is None:
    raise InputError('nothing to score: give --models and/or --dataset')
  layers_of = startup_checks(cfg, specs, pipe)
  if not specs:  # the dataset's own features
    specs = [ModelSpec(name=cfg.dataset, kind='dataset_features')]
    layers_of = {cfg.dataset: (FEATURES_LAYER,)}
  mesh = mesh if mesh is not None else engine_lib.default_mesh()
  infos = collection_scoring.metric_infos(metrics)
  ckpt = None
  if checkpoint_dir:
    ckpt = JobCheckpoints(
        checkpoint_dir,
        fingerprint(cfg, specs, pipe, mesh),
        mesh,
        restart=restart,
        prefix_digest=FeaturesDigest(specs, cfg.batch_size),
        log=log,
    )
    if ckpt.load():
      cur = ckpt.meta.get('current')
      where = ''
      if cur:
        where = f', {cur["model"]} at pass {len(cur["passes"]) + 1}'
        if cur.get('pass'):
          where += f' step {cur["pass"]["steps"]}'
      log(
          'resuming from %s: %d model(s) finished%s',
          ckpt.directory,
          len(ckpt.meta['finished']),
          where,
      )
  return Job(cfg, specs, pipe, layers_of, mesh, infos, ckpt, log, log_every_seconds, t0)


def run(cfg: JobConfig, **kwargs) -> JobResult:
  """``prepare(cfg, **kwargs).run()``."""
  return prepare(cfg, **kwargs).run()


def _dropped_rows(plans, dropped) -> dict:
  """``{stream: {'rows', 'batches'}}`` the first pass left out (nonfinite='skip').

  ``rows`` counts every process's (one collective per stream, in the same order on
  every process); ``batches`` lists this process's batches and their rows.
  """
  dropped = dropped or {}
  out = {}
  for stream in sorted(plans):
    d = dropped.get(stream) or {'rows': 0, 'batches': []}
    out[stream] = {'rows': _global_sum(d['rows']), 'batches': [list(b) for b in d['batches']]}
  return out


def _global_sum(n: int) -> int:
  if jax.process_count() == 1:
    return int(n)
  from jax.experimental import multihost_utils

  return int(np.sum(multihost_utils.process_allgather(np.asarray(n, np.int64))))


def _prepare_network(cfg, spec, pipe, layers, infos, recs):
  """(extractor, ``prepare_model`` of its runnable metrics), or (extractor, None) if none runs.

  Metrics the network cannot run are recorded in ``recs`` (``_runnable``).
  """
  ex = spec.build()
  runnable = _runnable(spec.name, ex, layers, infos, recs)
  if not runnable:
    return ex, None
  prepared = prepare_model(
      ex,
      pipe,
      layers=layers,
      metrics=tuple(runnable),
      metric_options={m: o for m, o in cfg.metric_options.items() if m in runnable} or None,
      nonfinite=cfg.nonfinite,
  )
  return ex, prepared


def _model_plans(cfg, spec, pipe, layers, infos, eng):
  """(records of metrics refused up front, plans, source, featurizer, aux, total examples)."""
  recs = {l: {} for l in layers}
  wrap = engine_lib.isolated
  if spec.kind in ('features', 'dataset_features'):
    if spec.kind == 'features':
      z = spec.load_features()
      k = int(pipe.num_classes) if pipe is not None else int(np.max(z['labels'])) + 1
      n = len(z['labels'])
      if jax.process_count() > 1:  # each process streams its own slice of the rows
        from face_jax.data import process_range  # edge import

        lo, hi = process_range(n, jax.process_index(), jax.process_count())
        z = {key: v[lo:hi] for key, v in z.items()}
      probs = z.get('source_probs')
      extras = {'source_probs': probs} if probs is not None else {}
      source = engine_lib.ArraySource(
          z['features'],
          z['labels'],
          extras=extras,
          batch_size=min(cfg.batch_size, n),
          num_classes=k,
          feat_dtype=cfg.dtype,
      )
      total = len(z['labels'])
    else:
      source = FeatureArraysSource(pipe)
      total = pipe.num_local_examples
    skip = cfg.nonfinite == 'skip'  # rows may be dropped: class counts from the first pass
    info = engine_lib.StreamInfo(
        name=FEATURES_LAYER,
        dim=source.dim,
        num_classes=source.num_classes,
        label_counts=None if skip else source.label_counts,
        extras=source.extras_shapes,
        reiterable=True,
        nonfinite=cfg.nonfinite,
    )
    from face_jax._src.api import route_options

    _, per = route_options(tuple(infos), {}, cfg.metric_options)
    plans = {FEATURES_LAYER: {}}
    for m, inf in infos.items():
      missing = [n for n in inf.needs if n not in source.extras_shapes]
      if missing:
        recs[FEATURES_LAYER][m] = collection_scoring.metric_record(
            inf, error=f'InputError: {m} needs {missing}, which {spec.name} does not have'
        )
        continue
      plans[FEATURES_LAYER][m] = wrap(inf.plan(info, per[m], eng.dtype), m)
    if not plans[FEATURES_LAYER]:
      plans = {}
    return recs, plans, source, engine_lib.features_featurizer, None, total
  ex, prepared = _prepare_network(cfg, spec, pipe, layers, infos, recs)
  if prepared is None:
    return recs, {}, None, None, None, pipe.num_local_examples
  aux = eng.replicate(ex.params)
  return (
      recs,
      prepared.plans(eng.dtype, wrap=wrap),
      prepared.source,
      prepared.featurizer,
      aux,
      pipe.num_local_examples,
  )


def _runnable(name, ex, layers, infos, recs) -> list[str]:
  """The metrics a network can run; the others' errors go into ``recs`` (no classifier head)."""
  runnable = list(infos)
  if 'logits' not in ex.layer_names:
    for m in infos:
      if 'source_probs' in infos[m].needs:
        runnable.remove(m)
        for l in layers:
          recs[l][m] = collection_scoring.metric_record(
              infos[m],
              error=f'InputError: {m} needs source probabilities: {name} has no '
              'classifier head (a "logits" layer)',
          )
  return runnable


def score_rows(result: JobResult) -> list[dict]:
  """``results.csv`` rows: one per model × layer × metric.

  ``value`` is the score (empty for errors and pool-relative metrics),
  ``components`` the JSON of a pool-relative metric's components, ``error`` the error.
  """
  rows = []
  for model, by in result.records.items():
    for layer, recs in by.items():
      for m, rec in recs.items():
        s = record_score(rec)
        rows.append(
            {
                'model': model,
                'layer': layer,
                'metric': m,
                'value': '' if s is None or isinstance(s, dict) else s,
                'components': json.dumps(s, sort_keys=True) if isinstance(s, dict) else '',
                'error': rec.get('error') or '',
            }
        )
  return rows
