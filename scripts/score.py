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

Writes ``results.json`` (every metric, every FaCe term and diagnostic, the
options, the command; for the zoo also the ground truth and the ranking
evaluation), ``ranking.csv`` and ``ranking.png`` (for the zoo also
``evaluation.csv`` and ``score_vs_truth.png``) to ``--output_dir`` and prints
the ranked table.  Progress and throughput go to the absl log.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import face_jax  # noqa: E402
from face_jax import collection_scoring  # noqa: E402
from face_jax import demo  # noqa: E402
from face_jax import reports  # noqa: E402

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
    'rank_by', None, 'Metric to rank by (default: the first of --metrics).'
)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'out/score', 'Where results are written.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 4096, 'Rows per streamed step.')
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  t0 = time.perf_counter()
  _setup_compilation()
  _log_warnings_once()
  if not _FEATURES.value and _DEMO.value == 'zoo':
    return _zoo_main(t0)
  metrics = tuple(_METRICS.value) or ('face',)
  rank_by = _RANK_BY.value or metrics[0]
  face_opts = _face_options()
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
        batch_size=_BATCH_SIZE.value,
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

  rows = reports.ranking_rows(results, rank_by=rank_by)
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
      'batch_size': _BATCH_SIZE.value,
      'devices': [str(d) for d in face_jax.default_mesh().devices.flat],
      'ranking': rows,
      'results': results,
      'timing': _timing(t0),
  }
  written = [
      reports.write_json(os.path.join(out_dir, 'results.json'), payload),
      reports.write_csv(os.path.join(out_dir, 'ranking.csv'), rows),
  ]
  if _PLOT.value:
    written.append(reports.plot_ranking(rows, os.path.join(out_dir, 'ranking.png'), metric=rank_by))
  print('\nwrote:\n' + '\n'.join(f'  {w}' for w in written))


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
  written = [
      reports.write_json(os.path.join(out_dir, 'results.json'), payload),
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


if __name__ == '__main__':
  app.run(main)
