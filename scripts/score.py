r"""Rank models by transferability on a target dataset (absl batch job).

Default (no flags): the bundled model zoo on the digits target, offline.  The
16 small pre-trained Flax models of the zoo (a model collection:
``benchmarks/zoo/weights``, read with ``face_jax.models.load_collection``) are
scored on the labelled budget of scikit-learn's real handwritten digits (20
down to 5 images per class, the data they are fine-tuned on;
``face_jax.data.targets.digits_target``) with every registered metric
(``face_jax.metric_names()``); the ranking is printed with every score next to
the fine-tuned ground truth (``benchmarks/zoo/results/ground_truth.json``: test
accuracy after full fine-tuning), together with how well each score ranks the
zoo (weighted τ, Kendall τ, Pearson, top-1 relative accuracy).  The zoo's other
targets (greek, textures) need the benchmark's procedural generators: score
them with ``python -m benchmarks.zoo.run --targets=greek,textures``.

With ``--features`` each model is a features file: an ``.npz`` with
``features`` [N, D] (float), ``labels`` [N] (int) and optionally
``source_probs`` [N, Ks].  ``--demo=digits_features`` ranks a few simple
feature maps of the digits images (``face_jax.demo``).

Examples::

    python scripts/score.py                                  # the bundled zoo on digits
    python scripts/score.py --metrics=face,logme --rank_by=logme   # the zoo, two metrics
    python scripts/score.py --features=a=feats_a.npz,b=feats_b.npz \
        --metrics=face --bc_cov=diagonal --output_dir=out/run1
    python scripts/score.py --demo=digits_features

The batch job (``--models`` and/or ``--dataset``, or a ``--config`` file that sets
them; ``face_jax.jobs``): every model (a model-collection directory, a preset with its
weights, a features ``.npz``) on a ``face_jax.data`` dataset (a shipped builder or a
tfds dataset prepared offline), every ``--layers`` layer, every metric; resumable
from ``OUTPUT_DIR/checkpoints`` (orbax) after a crash, on one or several processes
(``--coordinator_address``, ``--num_processes``, ``--process_id``)::

    python scripts/score.py --models=benchmarks/zoo/weights --dataset=digits --split=all \
        --data_dir=/tmp/tfds --metrics=face,logme --output_dir=out/run2
    python scripts/score.py --config=my_job.py --config.batch_size=512

Writes ``results.json`` (``scores``: {model: {layer: {metric: number, components or
null}}} for every kind of input; every metric, every FaCe term and diagnostic, the
options, the command, the versions, the devices, the examples seen, the wall time and
examples/s; for the zoo also the ground truth and the ranking evaluation),
``results.csv`` (one row per model x layer x metric), ``ranking.csv`` and
``ranking.png`` (with a ground truth also ``evaluation.csv`` and
``score_vs_truth.png``) to ``--output_dir`` and prints the ranked table.  Progress and
throughput go to the absl log.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
import time
import warnings

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import face_jax  # noqa: E402
from face_jax import collection_scoring  # noqa: E402
from face_jax import demo  # noqa: E402
from face_jax import reports  # noqa: E402

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'job.py')
ZOO_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks', 'zoo'
)
_FACE = face_jax.FaceOptions()  # the FaCe flags' defaults
_FACE_CHOICES = collection_scoring.FACE_VARIANT_CHOICES

_FEATURES = flags.DEFINE_list(
    'features',
    [],
    'Models to score, as name=path.npz (or path.npz: the file stem is the name). '
    'Empty: the --demo.',
)
_DEMO = flags.DEFINE_enum(
    'demo',
    'zoo',
    ['zoo', 'digits_features'],
    'Without --features: "zoo" ranks the bundled model zoo on --target '
    'against its fine-tuned ground truth; "digits_features" ranks simple '
    'feature maps of the digits images.',
)
_TARGET = flags.DEFINE_string(
    'target',
    'digits',
    "Zoo target task (--demo=zoo): digits. The zoo's greek and textures "
    'targets need its procedural generators: python -m '
    'benchmarks.zoo.run --targets=greek,textures scores them.',
)
flags.register_validator(
    'target',
    lambda t: t == 'digits',
    message='the main job scores the zoo on digits only; python -m '
    "benchmarks.zoo.run --targets=greek,textures scores the zoo's "
    'other targets',
)
_METRICS = flags.DEFINE_list(
    'metrics',
    [],
    'Metrics to compute (face_jax.metric_names()). Empty: '
    'every registered metric for the zoo, face otherwise.',
)
_N_BOOT = flags.DEFINE_integer('n_boot', 200, 'Bootstrap resamples of the zoo ranking evaluation.')
_RANK_BY = flags.DEFINE_string(
    'rank_by',
    None,
    "Score to rank by: a metric of --metrics, or one of FaCe's pool scores face_pool_minmax, "
    'face_pool_zscore, face_pool_rank. Default: when face is the first metric (or the zoo '
    "scores every metric), FaCe's pool score of its default combination (face_pool_zscore); "
    'otherwise the first of --metrics.',
)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'out/score', 'Where results are written.')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size',
    None,
    "Rows per streamed step (per process). Default: 4096 for --features, the config's "
    '(256) for --models/--dataset.',
)
_CONFIG = config_flags.DEFINE_config_file(
    'config',
    CONFIG_FILE,
    'The batch job as an ml_collections config file (get_config()); any field can be set with '
    '--config.FIELD=VALUE. The flags --models, --dataset, --split, --data_dir, --layers, '
    '--metrics, --batch_size, --output_dir, --ground_truth, --checkpoint_every_steps set the '
    'field of the same name. Without models and dataset the default main job runs.',
)
_MODELS = flags.DEFINE_list(
    'models',
    None,
    'Batch job: models to score, comma list; each a model-collection directory (every model '
    'in its manifest.json, e.g. benchmarks/zoo/weights), [name=]preset:weights (a '
    'face_jax.models preset with its weights: save_params .msgpack, torchvision .pth), '
    '[name=]preset (its own weights), or [name=]features.npz (precomputed features).',
)
_DATASET = flags.DEFINE_string(
    'dataset',
    None,
    'Batch job: the dataset, a shipped builder (digits, image_folder, arrays, text_csv, '
    'wordnet_glosses) or a tfds name prepared offline under --data_dir. A dataset of features '
    '(e.g. arrays of precomputed features, array_record) is scored as it is without --models.',
)
_SPLIT = flags.DEFINE_string('split', None, 'Batch job: the split (default: train).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Batch job: the tfds data directory.')
_DATASET_OPTIONS = flags.DEFINE_list(
    'dataset_options',
    None,
    'Batch job: builder options as key=value (root_dir=DIR for image_folder, arrays=F.npz '
    'for arrays, files=F.csv for text_csv, image_size=32, ...).',
)
_LAYERS = flags.DEFINE_list(
    'layers', None, "Batch job: layers scored on every network model (default: each model's)."
)
_GROUND_TRUTH = flags.DEFINE_string(
    'ground_truth',
    None,
    'Batch job: CSV (model,accuracy) or JSON ({model: accuracy} or {model: {"test_accuracy": '
    'x}}) of per-model accuracies: adds weighted tau, Kendall tau, Pearson, top-1 relative '
    'accuracy with bootstrap CIs and score_vs_truth.png.',
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    'checkpoint_every_steps',
    None,
    'Batch job: steps between checkpoints within a pass (also at the end of each pass and '
    'model; 0: only there). Checkpoints go to OUTPUT_DIR/checkpoints.',
)
_RESTART = flags.DEFINE_bool(
    'restart',
    False,
    'Batch job: discard the checkpoint in OUTPUT_DIR/checkpoints instead of resuming from it.',
)
_ONE_READ = flags.DEFINE_bool(
    'one_read',
    None,
    'Batch job: each batch goes through every model in turn, so the data is read and decoded '
    'once per pass for the whole zoo.',
)
_NONFINITE = flags.DEFINE_enum(
    'nonfinite',
    None,
    ['raise', 'skip'],
    "Batch job: 'raise' (default) stops at a non-finite feature, naming the batch; 'skip' "
    'leaves such rows out of every statistic and reports them per model and layer '
    '(results.json models.MODEL.nonfinite_dropped).',
)
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address',
    None,
    'Several processes: jax.distributed.initialize(coordinator_address=...), host:port of '
    'process 0.',
)
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Several processes: jax.distributed.initialize(num_processes=...).'
)
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Several processes: jax.distributed.initialize(process_id=...).'
)
_HEARTBEAT = flags.DEFINE_integer(
    'heartbeat_timeout_seconds',
    60,
    'Several processes: a process not heard from for this long (dead or hung) is taken as '
    'dead and every other process stops with an error '
    '(jax.distributed.initialize(heartbeat_timeout_seconds=...)).',
    lower_bound=1,
)
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed',
    False,
    'Call jax.distributed.initialize() even without --coordinator_address (a TPU pod slice '
    'or a cluster jax detects by itself).',
)
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'float64'], 'Accumulation dtype.')
_LOG_EVERY = flags.DEFINE_integer('log_every', 50, 'Log progress every this many steps.')
_WEIGHTING = flags.DEFINE_enum(
    'weighting', _FACE.weighting, list(_FACE_CHOICES['weighting']), 'FaCe weighting.'
)
_VC = flags.DEFINE_enum(
    'vc_transform',
    _FACE.vc_transform,
    list(_FACE_CHOICES['vc_transform']),
    'FaCe variance-collapse transform.',
)
_BC = flags.DEFINE_enum(
    'bc_cov', _FACE.bc_cov, list(_FACE_CHOICES['bc_cov']), 'FaCe class Gaussians.'
)
_FAIRNESS = flags.DEFINE_enum(
    'fairness', _FACE.fairness, list(_FACE_CHOICES['fairness']), 'FaCe fairness.'
)
_TEMPERATURE = flags.DEFINE_float(
    'temperature', _FACE.temperature, 'FaCe entropy-fairness temperature.'
)
_LAMBDA = flags.DEFINE_float('fairness_weight', _FACE.fairness_weight, 'FaCe λ.')
_RIDGE = flags.DEFINE_float('ridge', _FACE.ridge, 'FaCe pooled ridge ρ.')
_PLOT = flags.DEFINE_bool('plot', True, 'Write ranking.png.')
_COLUMNS = flags.DEFINE_list(
    'columns',
    ['nc1', 'logme', 'nleep', 'parc'],
    'Zoo ranking table: the metric columns shown after rank, model, the ground truth and the '
    'ranking score (the default fits a 120-column terminal); "all" shows every metric and '
    "FaCe's terms. results.json and ranking.csv always hold everything.",
)
_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir',
    os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
        'face_jax',
        'jax_compilation_cache',
    ),
    'JAX persistent compilation cache: compiled programs are saved here and reused by later '
    'runs (the compile time is reported apart in the log and results.json). Empty: no cache.',
)

# Seconds spent compiling (XLA backend compilation, including loads from the persistent
# cache's misses), summed from JAX's monitoring events.
_COMPILE = {'seconds': 0.0, 'programs': 0}


def _on_duration(event: str, seconds: float, **_):
  if event == '/jax/core/compile/backend_compile_duration':
    _COMPILE['seconds'] += seconds
    _COMPILE['programs'] += 1


def _log_warnings_once():
  """Library warnings go to the absl log, each distinct message once, without source lines."""
  seen = set()

  def show(message, category, filename, lineno, file=None, line=None):
    del filename, lineno, file, line
    text = f'{category.__name__}: {message}'
    if text not in seen:
      seen.add(text)
      logging.warning('%s', text)

  warnings.showwarning = show


class _QuietLibraries:
  """absl log filter: orbax's INFO lines (a dozen per checkpoint) are left out; warnings stay."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or '/orbax/' not in (record.pathname or '')


def _setup_compilation():
  """Enables the persistent compilation cache (--compilation_cache_dir) and the compile timer."""
  jax.monitoring.register_event_duration_secs_listener(_on_duration)
  if _CACHE_DIR.value:
    os.makedirs(_CACHE_DIR.value, exist_ok=True)
    jax.config.update('jax_compilation_cache_dir', _CACHE_DIR.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def _timing(t0: float) -> dict:
  wall = time.perf_counter() - t0
  logging.info(
      'wall time %.1fs, of which compiling %.1fs (%d programs compiled; persistent cache: ' '%s)',
      wall,
      _COMPILE['seconds'],
      _COMPILE['programs'],
      _CACHE_DIR.value or 'off',
  )
  return {
      'wall_seconds': wall,
      'compile_seconds': _COMPILE['seconds'],
      'programs_compiled': _COMPILE['programs'],
      'compilation_cache_dir': _CACHE_DIR.value or None,
  }


def _load_models() -> dict[str, dict[str, np.ndarray]]:
  if not _FEATURES.value:
    logging.info('--demo=digits_features: the embedded digits feature sets (scikit-learn, offline)')
    return {
        name: {'features': f, 'labels': y} for name, (f, y) in demo.digits_feature_sets().items()
    }
  models = {}
  for item in _FEATURES.value:
    name, _, path = item.rpartition('=')
    name = name or os.path.splitext(os.path.basename(path))[0]
    if name in models:
      raise app.UsageError(f'model name {name!r} given twice')
    if not os.path.exists(path):
      raise app.UsageError(f'features file not found: {path}')
    with np.load(path) as z:
      missing = [k for k in ('features', 'labels') if k not in z]
      if missing:
        raise app.UsageError(f'{path} lacks {missing}; it has {sorted(z.files)}')
      models[name] = {k: z[k] for k in z.files}
  return models


def _progress(model):
  def report(p: face_jax.PassProgress):
    logging.info(
        '%s: pass %d %s: %d steps, %d examples, %.1fs, %.0f examples/s',
        model,
        p.pass_index,
        'done' if p.done else 'running',
        p.steps,
        p.examples,
        p.seconds,
        p.examples_per_second,
    )

  return report


def _face_options() -> dict:
  return dict(
      weighting=_WEIGHTING.value,
      vc_transform=_VC.value,
      bc_cov=_BC.value,
      fairness=_FAIRNESS.value,
      temperature=_TEMPERATURE.value,
      fairness_weight=_LAMBDA.value,
      ridge=_RIDGE.value,
  )


def _init_distributed():
  """jax.distributed.initialize with --coordinator_address/--num_processes/--process_id."""
  if not (_COORDINATOR.value or _DISTRIBUTED.value):
    return
  # Cross-process collectives of CPU devices (GPUs and TPUs have their own).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
      heartbeat_timeout_seconds=_HEARTBEAT.value,
  )
  logging.info(
      'jax.distributed: process %d of %d, %d local / %d global devices',
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )


# The flags that set the config field of the same name when given.
_SHORTCUTS = {
    'models': _MODELS,
    'dataset': _DATASET,
    'split': _SPLIT,
    'data_dir': _DATA_DIR,
    'dataset_options': _DATASET_OPTIONS,
    'layers': _LAYERS,
    'metrics': _METRICS,
    'batch_size': _BATCH_SIZE,
    'output_dir': _OUTPUT_DIR,
    'ground_truth': _GROUND_TRUTH,
    'checkpoint_every_steps': _CHECKPOINT_EVERY,
    'rank_by': _RANK_BY,
    'n_boot': _N_BOOT,
    'one_read': _ONE_READ,
    'nonfinite': _NONFINITE,
}


def _job_config():
  """The config file's fields, with the shortcut flags given on the command line applied."""
  c = _CONFIG.value.copy_and_resolve_references()
  for field, flag in _SHORTCUTS.items():
    if flags.FLAGS[flag.name].present and flag.value is not None:
      v = flag.value
      c[field] = ','.join(v) if isinstance(v, list) else v
  return c


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  _init_distributed()
  t0 = time.perf_counter()
  _setup_compilation()
  _log_warnings_once()
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = _job_config()
  if config.models or config.dataset:
    return _job_main(t0, config)
  if not _FEATURES.value and _DEMO.value == 'zoo':
    return _zoo_main(t0)
  metrics = tuple(_METRICS.value) or ('face',)
  face_opts = _face_options()
  # FaCe ranks a pool by its default pool combination (FaceOptions.combine, e.g. face_pool_zscore).
  face_rank = collection_scoring.face_ranking_score(face_jax.FaceOptions(**face_opts))
  rank_by = _RANK_BY.value or (face_rank if metrics[0] == 'face' else metrics[0])
  models = _load_models()
  results = {}
  for name, arrays in models.items():
    tm = time.perf_counter()
    engine = face_jax.Engine(
        dtype=_DTYPE.value, progress=_progress(name), progress_every=_LOG_EVERY.value
    )
    out = face_jax.score(
        arrays['features'],
        arrays['labels'],
        metrics=metrics,
        source_probs=arrays.get('source_probs'),
        batch_size=_BATCH_SIZE.value or 4096,
        dtype=_DTYPE.value,
        engine=engine,
        metric_options={'face': face_opts} if 'face' in metrics else None,
    )
    dt = time.perf_counter() - tm
    n = arrays['features'].shape[0]
    logging.info(
        '%s: N=%d D=%d scored in %.2fs (%.0f examples/s, %d pass(es))',
        name,
        n,
        arrays['features'].shape[1],
        dt,
        n / dt,
        engine.passes_run,
    )
    results[name] = out

  if 'face' in metrics and face_rank != 'face':
    faces = {m: r['face'] for m, r in results.items()}
    pool = face_jax.face_pool(faces)
    pool_shares = face_jax.face_pool_shares(faces)
    ranked = {
        m: {**r, face_rank: pool[m], f'{face_rank}.F_share': pool_shares[m]}
        for m, r in results.items()
    }
  else:
    ranked = results
  rows = reports.ranking_rows(ranked, rank_by=rank_by)
  cols = ['rank', 'model'] + [c for c in rows[0] if c not in ('rank', 'model')]
  print(f'\nRanking by {rank_by} (higher = predicted more transferable):\n')
  print(reports.format_table(rows, cols))
  out_dir = _OUTPUT_DIR.value
  payload = {
      'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
      'metrics': list(metrics),
      'rank_by': rank_by,
      'face_options': face_opts,
      'dtype': _DTYPE.value,
      'batch_size': _BATCH_SIZE.value or 4096,
      'devices': [str(d) for d in face_jax.default_mesh().devices.flat],
      'ranking': rows,
      'results': results,
      'timing': _timing(t0),
  }
  infos = collection_scoring.metric_infos(metrics)
  by_layer = {
      name: {'features': {m: collection_scoring.metric_record(infos[m], v) for m, v in out.items()}}
      for name, out in results.items()
  }
  examples = {name: int(a['features'].shape[0]) for name, a in models.items()}
  payload.update(_summary(by_layer, payload['timing'], examples))
  written = [
      reports.write_json(os.path.join(out_dir, 'results.json'), payload),
      reports.write_csv(os.path.join(out_dir, 'results.csv'), _score_rows(by_layer)),
      reports.write_csv(os.path.join(out_dir, 'ranking.csv'), rows),
  ]
  if _PLOT.value:
    written.append(reports.plot_ranking(rows, os.path.join(out_dir, 'ranking.png'), metric=rank_by))
  print('\nwrote:\n' + '\n'.join(f'  {w}' for w in written))


def _summary(records: dict, timing: dict, examples: dict) -> dict:
  """The fields every results.json has: scores, versions, devices, examples, wall time, rate."""
  from face_jax import jobs

  wall = timing['wall_seconds']
  streamed = sum(examples.values())
  return {
      'scores': {
          model: {l: {m: jobs.record_score(r) for m, r in recs.items()} for l, recs in by.items()}
          for model, by in records.items()
      },
      'config': {
          name: flags.FLAGS[name].value
          for name in ('metrics', 'batch_size', 'dtype', 'output_dir', 'features', 'demo')
      },
      'versions': _versions(),
      'devices_info': _devices(),
      'examples_seen': examples,
      'wall_seconds': wall,
      'examples_per_second': streamed / wall if wall > 0 else None,
  }


def _score_rows(records: dict) -> list[dict]:
  from face_jax import jobs

  result = jobs.JobResult(records, {}, {}, [], 0.0, 0)
  return jobs.score_rows(result)


# ---------------------------------------------------------------------------------------------
# The bundled zoo.


def _zoo_main(t0: float):
  from face_jax import evaluation
  from face_jax import models
  from face_jax.data import targets

  weights_dir = os.path.join(ZOO_DIR, 'weights')
  gt_path = os.path.join(ZOO_DIR, 'results', 'ground_truth.json')
  try:
    collection = models.load_collection(weights_dir)
  except face_jax.InputError as e:
    raise app.UsageError(f'the bundled zoo is missing under {ZOO_DIR}: {e}') from e
  if not os.path.exists(gt_path):
    raise app.UsageError(f'the bundled zoo is missing under {ZOO_DIR} (results/ground_truth.json)')
  with open(gt_path) as f:
    gt = json.load(f)
  target = _TARGET.value
  infos = collection_scoring.metric_infos(_METRICS.value or None)
  face_opts = _face_options()
  # FaCe ranks a pool by its default pool combination (FaceOptions.combine, e.g. face_pool_zscore).
  face_rank = collection_scoring.face_ranking_score(face_jax.FaceOptions(**face_opts))
  rank_by = _RANK_BY.value or (face_rank if 'face' in infos else next(iter(infos)))
  split = targets.digits_target()['train']
  n, k = split.images.shape[0], len(split.class_names)
  logging.info(
      'zoo: %d models on %s (%d labelled images, %d classes), metrics %s',
      len(collection),
      target,
      n,
      k,
      list(infos),
  )

  def done(model, recs, dt):
    errors = {m: r['error'] for m, r in recs.items() if r.get('error')}
    logging.info(
        '%s: %d metrics on N=%d in %.2fs (%.0f examples/s)%s',
        model,
        len(infos),
        n,
        dt,
        n / dt,
        f'; failed: {", ".join(sorted(errors))}' if errors else '',
    )

  failures: dict[str, list[str]] = {}
  records = collection_scoring.score_collection(
      collection,
      split.images,
      split.labels,
      infos,
      num_classes=k,
      metric_options={'face': face_opts} if 'face' in infos else None,
      log=lambda model, m: failures.setdefault(m, []).append(model),
      done=done,
  )
  # Each failure once, with the models it affects (a metric undefined on this data fails
  # the same way on every model).
  for message, models_failed in failures.items():
    which = (
        f'all {len(models_failed)} models'
        if len(models_failed) == len(collection)
        else ', '.join(models_failed)
    )
    logging.warning('%s (%s)', message, which)
  truth_of = gt.get('results', {}).get(target, {})
  no_truth = [m for m in records if m not in truth_of]
  if no_truth:
    raise app.UsageError(f'no ground truth for {no_truth} on {target} in {gt_path}')
  truth = {m: float(truth_of[m]['test_accuracy']) for m in records}
  # Every score over the zoo, oriented (higher = predicted better) and as displayed.
  pools = dict.fromkeys([face_rank, collection_scoring.FACE_POOL]) if 'face' in infos else {}
  names = list(infos) + [p for p in pools if p in collection_scoring.FACE_POOLS]
  oriented, errors, missing = {}, {}, {}
  for m in names:
    try:
      s, miss = collection_scoring.available_scores(records, m)
    except ValueError as e:
      errors[m] = str(e)
      continue
    if miss:
      missing[m] = miss
      errors[m] = f'no value for {len(miss)} model(s): ' + '; '.join(
          f'{k}: {v}' for k, v in sorted(miss.items())[:2]
      )
    if s:
      oriented[m] = s
  if rank_by not in oriented:
    raise app.UsageError(f'cannot rank by {rank_by!r}: {errors.get(rank_by, "not computed")}')
  truth_rank = {m: i + 1 for i, m in enumerate(sorted(truth, key=lambda m: -truth[m]))}
  shares = {m: collection_scoring.face_pool_shares(records, m) for m in pools if m in oriented}
  rows = []
  for model in records:
    e = collection[model].metadata
    row = {'model': model, 'arch': e['arch'], 'source': e['source'], 'loss': e['loss']}
    for m in names:
      rec = records[model].get(m, {})
      if m in oriented and (m in collection_scoring.FACE_POOLS or rec.get('pool_relative')):
        row[m] = oriented[m].get(model)
      else:
        row[m] = rec.get('value')
      if m in shares:
        row[f'{m}.F_share'] = shares[m].get(model)
      if rec.get('terms'):
        row[f'{m}.C'] = rec['terms']['variance_collapse']
        row[f'{m}.F'] = rec['terms']['class_fairness']
        row[f'{m}.nc1'] = rec['terms']['nc1']
    row['finetuned_test_acc'] = truth[model]
    row['truth_rank'] = truth_rank[model]
    rows.append(row)
  rows.sort(key=lambda r: -oriented[rank_by].get(r['model'], -math.inf))  # no value: last
  for i, r in enumerate(rows, 1):
    r['rank'] = i
  if _COLUMNS.value == ['all']:
    shown = [m for m in names if m != rank_by] + [c for c in rows[0] if '.' in c]
  else:
    unknown = [c for c in _COLUMNS.value if c not in names]
    if unknown:
      raise app.UsageError(f'--columns: {unknown} not computed; choose from {names} or "all"')
    shown = [c for c in _COLUMNS.value if c != rank_by]
  cols = ['rank', 'model', 'finetuned_test_acc', 'truth_rank', rank_by] + shown
  print(
      f'\nThe bundled zoo on {target} ({n} labelled images), ranked by {rank_by} (higher =\n'
      f'predicted more transferable; metrics marked (-) are lower-is-better; --columns for more).\n'
      f'finetuned_test_acc = test accuracy after full fine-tuning (the ground truth).\n'
  )
  header = {
      m: (m + ('(-)' if not infos[m].higher_is_better else '')) if m in infos else m for m in cols
  }
  print(
      reports.format_table(
          [{header[c]: r.get(c) for c in cols} for r in rows], [header[c] for c in cols]
      )
  )
  evals = {}
  for m, s in oriented.items():
    try:  # on the models that have a value (errors list the others)
      evals[m] = evaluation.evaluate_ranking(
          s, {k: truth[k] for k in s}, n_boot=_N_BOOT.value, seed=0
      )
    except (evaluation.EvaluationInputError, evaluation.UndefinedStatisticError) as e:
      errors[m] = (errors[m] + '; ' if m in errors else '') + str(e)
  table = evaluation.ranking_table(
      evals, ('weighted_tau', 'kendall_tau', 'pearson', 'top1_relative_accuracy')
  )
  print(
      f'\nHow well each score ranks the zoo on {target} (vs fine-tuned test accuracy; '
      f'95% bootstrap CI over models):\n'
  )
  print(
      reports.format_markdown_table(
          table, ('weighted_tau', 'kendall_tau', 'pearson', 'top1_relative_accuracy'), digits=3
      )
  )
  if errors:
    print('\nNo value (details in results.json "errors"):')
    for m, e in errors.items():
      print(textwrap.shorten(f'  {m}: {e}', width=118, placeholder=' ...'))
  out_dir = _OUTPUT_DIR.value
  payload = {
      'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
      'target': target,
      'labelled_images': n,
      'metrics': list(infos),
      'rank_by': rank_by,
      'face_options': face_opts,
      'ground_truth': 'benchmarks/zoo/results/ground_truth.json',
      'ground_truth_protocol': gt.get('protocol'),
      'devices': [str(d) for d in face_jax.default_mesh().devices.flat],
      'ranking': rows,
      'records': records,
      'evaluation': evals,
      'errors': errors,
      'missing': missing,
      'timing': _timing(t0),
  }
  layer_of = {m: collection[m].metadata.get('feature_layer', 'default') for m in records}
  by_layer = {m: {layer_of[m]: recs} for m, recs in records.items()}
  payload.update(_summary(by_layer, payload['timing'], {m: n for m in records}))
  written = [
      reports.write_json(os.path.join(out_dir, 'results.json'), payload),
      reports.write_csv(os.path.join(out_dir, 'results.csv'), _score_rows(by_layer)),
      reports.write_csv(os.path.join(out_dir, 'ranking.csv'), rows),
      reports.write_csv(os.path.join(out_dir, 'evaluation.csv'), table),
  ]
  if _PLOT.value:
    written.append(
        reports.plot_ranking(
            rows,
            os.path.join(out_dir, 'ranking.png'),
            metric=rank_by,
            title=f'{rank_by} ranking of the bundled zoo on {target} (higher = predicted better)',
        )
    )
    written.append(
        reports.plot_scores_vs_truth(
            oriented[rank_by],
            {k: truth[k] for k in oriented[rank_by]},
            os.path.join(out_dir, 'score_vs_truth.png'),
            score_name=f'{rank_by} score',
            truth_name=f'{target}: fine-tuned test accuracy',
            title=f'{rank_by} vs fine-tuned accuracy ({target})',
        )
    )
  print('\nwrote:\n' + '\n'.join(f'  {w}' for w in written))


# ---------------------------------------------------------------------------------------------
# The batch job: --models / --dataset / --config.


def _split(v) -> list[str]:
  return [x.strip() for x in str(v or '').split(',') if x.strip()]


def _option_value(v: str):
  for conv in (int, float):
    try:
      return conv(v)
    except ValueError:
      pass
  return {'true': True, 'false': False}.get(v.lower(), v)


def _versions() -> dict:
  import importlib.metadata as md

  out = {'python': sys.version.split()[0]}
  for pkg in ('face_jax', 'jax', 'jaxlib', 'flax', 'numpy', 'orbax-checkpoint', 'ml_collections'):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      out[pkg] = None
  return out


def _devices() -> dict:
  return {
      'platform': jax.default_backend(),
      'process_count': jax.process_count(),
      'process_index': jax.process_index(),
      'local_devices': jax.local_device_count(),
      'devices': [str(d) for d in face_jax.default_mesh().devices.flat],
  }


def _load_ground_truth(path: str, models: list[str], dataset: str) -> dict[str, float]:
  """``{model: accuracy}`` from a CSV (model, accuracy) or JSON file; UsageError when unusable."""
  import csv

  if not os.path.isfile(path):
    raise app.UsageError(f'--ground_truth: file not found: {path}')
  try:
    if path.lower().endswith('.csv'):
      with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
      if not rows:
        raise ValueError('no rows')
      cols = list(rows[0])
      name_col = 'model' if 'model' in cols else cols[0]
      acc_col = next(
          (c for c in ('accuracy', 'test_accuracy', 'truth') if c in cols),
          [c for c in cols if c != name_col][0],
      )
      truth = {r[name_col]: float(r[acc_col]) for r in rows}
    else:
      with open(path) as f:
        obj = json.load(f)
      if isinstance(obj, dict) and isinstance(obj.get('results'), dict):
        res = obj['results']
        if dataset in res:
          obj = res[dataset]
        elif len(res) == 1:
          obj = next(iter(res.values()))
        else:
          raise ValueError(f'"results" has targets {sorted(res)}; none is {dataset!r}')
      truth = {}
      for k, v in obj.items():
        if isinstance(v, dict):
          v = v.get('test_accuracy', v.get('accuracy'))
        truth[k] = float(v)
  except (ValueError, TypeError, KeyError, IndexError, json.JSONDecodeError) as e:
    raise app.UsageError(
        f'--ground_truth {path}: not a CSV (model,accuracy) or JSON ({{model: accuracy}}) '
        f'file: {e}'
    ) from e
  missing = [m for m in models if m not in truth]
  if missing:
    raise app.UsageError(
        f'--ground_truth {path} does not name {len(missing)} of the {len(models)} models: '
        f'{missing[:5]}; it names {sorted(truth)[:5]}...'
    )
  return {m: truth[m] for m in models}


def _check_output_dir(out_dir: str):
  try:
    os.makedirs(out_dir, exist_ok=True)
    probe = os.path.join(out_dir, '.write_test')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise app.UsageError(f'--output_dir {out_dir} cannot be written: {e}') from e


def _job_main(t0: float, c):
  from face_jax import evaluation
  from face_jax import jobs

  metrics = _split(c.metrics) or ['face']
  try:
    ds_opts = dict(kv.split('=', 1) for kv in _split(c.dataset_options))
  except ValueError as e:
    raise app.UsageError(f'--dataset_options must be key=value items: {c.dataset_options}') from e
  cfg = jobs.JobConfig(
      models=tuple(_split(c.models)),
      dataset=c.dataset,
      split=c.split,
      data_dir=c.data_dir,
      dataset_options={k: _option_value(v) for k, v in ds_opts.items()},
      layers=tuple(_split(c.layers)),
      metrics=tuple(metrics),
      metric_options={'face': _face_options()} if 'face' in metrics else {},
      batch_size=int(c.batch_size),
      dtype=_DTYPE.value,
      checkpoint_every_steps=int(c.checkpoint_every_steps),
      one_read=bool(c.one_read),
      nonfinite=str(c.nonfinite),
  )
  out_dir = c.output_dir
  writer = jax.process_index() == 0
  if writer:
    _check_output_dir(out_dir)
  ckpt_dir = os.path.join(out_dir, 'checkpoints')
  try:
    job = jobs.prepare(
        cfg,
        checkpoint_dir=ckpt_dir,
        restart=_RESTART.value,
        log=logging.info,
        log_every_seconds=float(c.log_every_seconds),
    )
  except face_jax.InputError as e:
    raise app.UsageError(str(e)) from e
  # FaCe ranks a pool by its default pool combination (FaceOptions.combine, e.g. face_pool_zscore).
  face_rank = collection_scoring.face_ranking_score(
      face_jax.FaceOptions(**cfg.metric_options.get('face', {}))
  )
  rankable = list(metrics) + (list(collection_scoring.FACE_POOLS) if 'face' in metrics else [])
  if c.rank_by and c.rank_by not in rankable:
    raise app.UsageError(f'--rank_by {c.rank_by!r} is not among --metrics {metrics}')
  rank_by = c.rank_by or (face_rank if metrics[0] == 'face' else metrics[0])
  truth = _load_ground_truth(c.ground_truth, job.model_names, c.dataset) if c.ground_truth else None
  logging.info(
      'job: %d model(s) x dataset %s/%s x metrics %s, batch %d, %d process(es), %d device(s)',
      len(job.specs),
      c.dataset or '(features files)',
      c.split,
      metrics,
      cfg.batch_size,
      jax.process_count(),
      jax.device_count(),
  )
  try:
    result = job.run()
  except Exception as e:  # say what to do; the checkpoint is left as it was
    peers = ''
    if jax.process_count() > 1 and isinstance(e, jax.errors.JaxRuntimeError):
      peers = (
          f' A collective between the {jax.process_count()} processes failed: another process '
          'probably died or lost its connection (see its log); this one stops too.'
      )
    logging.error(
        'the job stopped: %s: %s.%s The last checkpoint in %s is intact: run the same command '
        'again (on every process) to resume from it.',
        type(e).__name__,
        e,
        peers,
        ckpt_dir,
    )
    raise
  infos = collection_scoring.metric_infos(metrics)
  # Pools: the i-th layer of every model (the models' default layers form one pool).
  n_pools = max(len(by) for by in result.records.values())
  rows, evals, errors = [], {}, {}
  oriented_all = {}
  for i in range(n_pools):
    pool = {m: by[list(by)[i]] for m, by in result.records.items() if len(by) > i}
    layer_of = {m: list(result.records[m])[i] for m in pool}
    layer_names = sorted(set(layer_of.values()))
    suffix = '' if n_pools == 1 else f'@{layer_names[0] if len(layer_names) == 1 else i}'
    pools = dict.fromkeys([face_rank, collection_scoring.FACE_POOL]) if 'face' in infos else {}
    names = list(infos) + [p for p in pools if p in collection_scoring.FACE_POOLS]
    oriented = {}
    for m in names:
      try:
        sc, miss = collection_scoring.available_scores(pool, m)
      except ValueError as e:
        errors[m + suffix] = str(e)
        continue
      if miss:
        errors[m + suffix] = f'no value for {len(miss)} model(s): ' + '; '.join(
            f'{k}: {v}' for k, v in sorted(miss.items())[:2]
        )
      if sc:
        oriented[m] = sc
        oriented_all[m + suffix] = sc
    shares = {m: collection_scoring.face_pool_shares(pool, m) for m in pools if m in oriented}
    for model, recs in pool.items():
      row = {'model': model, 'layer': layer_of[model]}
      if truth is not None:
        row['truth'] = truth[model]
      for m in names:
        rec = recs.get(m, {})
        if m in oriented and (m in collection_scoring.FACE_POOLS or rec.get('pool_relative')):
          row[m] = oriented[m].get(model)
        else:
          row[m] = rec.get('value')
        if m in shares:
          row[f'{m}.F_share'] = shares[m].get(model)
      row['_rank_score'] = oriented.get(rank_by, {}).get(model)  # higher = better
      rows.append(row)
  rows.sort(key=lambda r: -math.inf if r['_rank_score'] is None else -r['_rank_score'])
  for i, r in enumerate(rows, 1):
    r['rank'] = i
    del r['_rank_score']
  if truth is not None:
    for name, sc in oriented_all.items():
      try:
        evals[name] = evaluation.evaluate_ranking(
            sc, {k: truth[k] for k in sc}, n_boot=int(c.n_boot), seed=0
        )
      except (evaluation.EvaluationInputError, evaluation.UndefinedStatisticError) as e:
        errors[name] = (errors[name] + '; ' if name in errors else '') + str(e)
  # What a person sees: a compact table (--columns chooses the metrics after rank_by).
  shown = (
      [m for m in metrics if m != rank_by]
      if _COLUMNS.value == ['all']
      else [m for m in _COLUMNS.value if m in metrics and m != rank_by]
  )
  cols = ['rank', 'model', 'layer'] + (['truth'] if truth is not None else []) + [rank_by] + shown
  if writer:
    print(
        f'\n{len(result.records)} model(s) on {c.dataset or "their features"} ranked by '
        f'{rank_by} (higher = predicted more transferable; (-): lower is better)\n'
    )
    header = {m: m + ('(-)' if m in infos and not infos[m].higher_is_better else '') for m in cols}
    print(
        reports.format_table(
            [{header[k]: r.get(k) for k in cols} for r in rows], [header[k] for k in cols]
        )
    )
  table = None
  if evals:
    table = evaluation.ranking_table(
        evals, ('weighted_tau', 'kendall_tau', 'pearson', 'top1_relative_accuracy')
    )
    if writer:
      print('\nHow well each score ranks the models (vs --ground_truth; 95% bootstrap CI):\n')
      print(
          reports.format_markdown_table(
              table, ('weighted_tau', 'kendall_tau', 'pearson', 'top1_relative_accuracy'), digits=3
          )
      )
  if errors and writer:
    print('\nNo value (details in results.json "errors"):')
    for m, e in errors.items():
      print(textwrap.shorten(f'  {m}: {e}', width=118, placeholder=' ...'))
  timing = _timing(t0)
  wall = timing['wall_seconds']
  payload = {
      'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
      'config': c.to_dict(),
      'job': cfg.scoring_fields(),
      'versions': _versions(),
      'devices': _devices(),
      'metrics': metrics,
      'rank_by': rank_by,
      'scores': result.scores,
      'models': result.models,
      'examples_seen': {m: i['examples'] for m, i in result.models.items()},
      'resumed_models': result.resumed,
      'wall_seconds': wall,
      'examples_streamed': result.examples,
      'examples_per_second': result.examples / wall if wall > 0 else None,
      'data_passes': result.data_passes,
      'ranking': rows,
      'records': result.records,
      'evaluation': evals,
      'errors': errors,
      'ground_truth': c.ground_truth or None,
      'timing': timing,
  }
  if not writer:
    return
  try:
    written = [
        reports.write_json(os.path.join(out_dir, 'results.json'), payload),
        reports.write_csv(os.path.join(out_dir, 'results.csv'), jobs.score_rows(result)),
        reports.write_csv(os.path.join(out_dir, 'ranking.csv'), rows),
    ]
    if table is not None:
      written.append(reports.write_csv(os.path.join(out_dir, 'evaluation.csv'), table))
    if _PLOT.value and any(r.get(rank_by) is not None for r in rows):
      written.append(
          reports.plot_ranking(
              [r for r in rows if r.get(rank_by) is not None],
              os.path.join(out_dir, 'ranking.png'),
              metric=rank_by,
          )
      )
      overlaps = {
          f'{r["model"]} ({r["layer"]})'
          if n_pools > 1
          else r['model']: result.records[r['model']][r['layer']]['face']['overlap']
          for r in rows
          if result.records[r['model']][r['layer']].get('face', {}).get('overlap')
      }
      if overlaps:
        written.append(
            reports.plot_class_overlap(
                overlaps,
                os.path.join(out_dir, 'face_overlap.png'),
                class_names=list(job.pipe.class_names) if job.pipe is not None else None,
                title='FaCe per-class overlap (models in ranking order)',
            )
        )
      if truth is not None and rank_by in oriented_all:
        sc = oriented_all[rank_by]
        written.append(
            reports.plot_scores_vs_truth(
                sc,
                {k: truth[k] for k in sc},
                os.path.join(out_dir, 'score_vs_truth.png'),
                score_name=f'{rank_by} score',
                truth_name='ground truth',
                title=f'{rank_by} vs ground truth',
            )
        )
  except OSError as e:  # a full disk, a directory that became read-only
    logging.error(
        'the results could not be written to %s: %s. Every model is finished in the checkpoint '
        '%s: free space or make the directory writable, then run the same command again (nothing '
        'is recomputed).',
        out_dir,
        e,
        ckpt_dir,
    )
    raise
  print('\nwrote:\n' + '\n'.join(f'  {w}' for w in written))


if __name__ == '__main__':
  app.run(main)
