r"""The published transferability benchmarks, scored from your own feature files.

The field's standard benchmarks (11 supervised ImageNet models on 11 targets, 12 self-supervised
ResNet-50s, TLlib's 10 models on 8 targets) publish the fine-tuned accuracy of every model and the
weighted Kendall τ of the usual scores (``benchmarks/published/``, with sources). This harness
takes the features a user extracted for ONE target, one file per model, scores every metric on
each, and sets face_jax's weighted τ (and the other ``face_jax.evaluation`` measures, with
bootstrap intervals) beside the published rows of that target.

Usage::

    python benchmarks/published_harness.py --features_dir=feats/cifar10 \
        --benchmark=supervised11 --target=cifar10 --output_dir=out/published_cifar10

``--features_dir`` holds ``<model>.npz`` files with ``features`` [N, D] (the penultimate layer),
``labels`` [N] (int, 0..K-1) and optionally ``source_probs`` [N, Ks] (the softmax of the model's
source classifier head). File names are the rows of the benchmark's fine-tune table, matched
case-insensitively, with spaces, hyphens and underscores equivalent (``inception_v3.npz`` is
TLlib's ``Inception V3``).

Default metrics: every registered metric (``face_jax.metric_names()``), the ones that need
``source_probs`` only when every file has them. A metric that fails on a model records its error
and the others go on (``face_jax.collection_scoring.score_features``); pool-relative metrics
(NCTI, ETran) and FaCe's pool score are combined over the models that have a value
(``collection_scoring.available_scores``).

Writes ``results.json`` (everything), ``results.csv`` (the comparison table), ``scores.csv`` (one
row per model) and ``results.md`` to ``--output_dir``, and prints the comparison table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import os
import re
import sys
import time
from typing import Any, Callable, Mapping, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from face_jax import collection_scoring as cs  # noqa: E402
from face_jax import evaluation  # noqa: E402
from face_jax import reports  # noqa: E402

SCHEMA = 'face_jax.benchmarks.published/1'
PUBLISHED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'published')
MIN_MODELS = 3


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """One published benchmark: its ground truth and its published weighted-τ table.

  Attributes:
    finetune: CSV of fine-tuned accuracies (rows = models, columns = targets), in
      ``PUBLISHED_DIR``.
    published: CSV of published weighted τ (rows = methods, columns = targets).
    source: where the published weighted τ comes from (``PUBLISHED_DIR``/README.md).
  """

  finetune: str
  published: str
  source: str


BENCHMARKS: dict[str, Benchmark] = {
    'supervised11': Benchmark(
        'finetune_accuracy_supervised11.csv',
        'weighted_tau_supervised11_sfda_readme.csv',
        'TencentARC/SFDA readme.md',
    ),
    'selfsupervised12': Benchmark(
        'finetune_accuracy_selfsupervised12.csv',
        'weighted_tau_selfsupervised_ped_readme.csv',
        'lixiaotong97/PED README.md',
    ),
    'tllib10': Benchmark(
        'finetune_accuracy_tllib10.csv',
        'weighted_tau_tllib10_readme.csv',
        'thuml/Transfer-Learning-Library examples/model_selection/README.md',
    ),
}

# The published tables' name of each face_jax metric that has a published row.
PUBLISHED_NAMES: dict[str, str] = {
    'gbc': 'GBC',
    'hscore': 'H-score',
    'leep': 'LEEP',
    'logme': 'LogME',
    'nce': 'NCE',
    'nleep': 'NLEEP',
    'parc': 'PARC',
    'sfda': 'SFDA',
}

# Target names of the published-τ tables that differ from the fine-tune tables' (name_key form).
TARGET_ALIASES: dict[str, str] = {'voc': 'voc2007'}

MEASURES = evaluation.METRICS
MEASURE_TITLES = {
    'weighted_tau': 'weighted τ',
    'kendall_tau': 'Kendall τ',
    'spearman': 'Spearman ρ',
    'pearson': 'Pearson r',
    'top1_relative_accuracy': 'top-1 rel. acc.',
}


class HarnessError(ValueError):
  """A bad command line or feature directory (the message says what is wrong and what is valid)."""


def name_key(name: str) -> str:
  """The matching form of a model or target name: lower case, ``[ _-]+`` as one ``_``."""
  return re.sub(r'[\s_\-]+', '_', name.strip().lower())


@dataclasses.dataclass(frozen=True)
class Table:
  """A published CSV table.

  Attributes:
    rows: row names (models or methods) in file order.
    columns: column names (targets) in file order.
    values: ``{row: {column: value}}``.
  """

  rows: tuple[str, ...]
  columns: tuple[str, ...]
  values: dict[str, dict[str, float]]


def read_table(path: str) -> Table:
  """Reads a published CSV (header: a label, then one column per target)."""
  with open(path, newline='') as f:
    lines = list(csv.reader(f))
  header, body = lines[0], [r for r in lines[1:] if r]
  columns = tuple(c.strip() for c in header[1:])
  values = {r[0].strip(): {c: float(v) for c, v in zip(columns, r[1:])} for r in body}
  return Table(tuple(values), columns, values)


def benchmark_tables(benchmark: str, published_dir: str = PUBLISHED_DIR) -> tuple[Table, Table]:
  """(fine-tune accuracies, published weighted τ) of a benchmark."""
  if benchmark not in BENCHMARKS:
    raise HarnessError(f'unknown benchmark {benchmark!r}; valid: {sorted(BENCHMARKS)}')
  b = BENCHMARKS[benchmark]
  return (
      read_table(os.path.join(published_dir, b.finetune)),
      read_table(os.path.join(published_dir, b.published)),
  )


def resolve_target(finetune: Table, target: str, benchmark: str = '') -> str:
  """The fine-tune table's column named ``target`` (case-insensitive).

  Raises:
    HarnessError: no such column (the message lists the valid ones).
  """
  by_key = {name_key(c): c for c in finetune.columns}
  key = name_key(target)
  if key not in by_key:
    raise HarnessError(
        f'unknown target {target!r} for benchmark {benchmark or "?"}; valid targets: '
        f'{", ".join(finetune.columns)}'
    )
  return by_key[key]


def published_column(published: Table, target: str) -> dict[str, float]:
  """``{method: published weighted τ}`` on ``target`` ({} when the table has no such column)."""
  key = name_key(target)
  for c in published.columns:
    if TARGET_ALIASES.get(name_key(c), name_key(c)) == key:
      return {m: published.values[m][c] for m in published.rows}
  return {}


def feature_files(features_dir: str) -> dict[str, str]:
  """``{file stem: path}`` of the ``*.npz`` files in ``features_dir``, sorted by stem."""
  if not os.path.isdir(features_dir):
    raise HarnessError(f'--features_dir {features_dir!r} is not a directory')
  stems = sorted(f[:-4] for f in os.listdir(features_dir) if f.endswith('.npz'))
  if not stems:
    raise HarnessError(f'no <model>.npz files in {features_dir!r}')
  return {s: os.path.join(features_dir, s + '.npz') for s in stems}


def match_models(stems: Sequence[str], finetune: Table, benchmark: str = '') -> dict[str, str]:
  """``{table row: file stem}`` of the feature files, matched by ``name_key``.

  Raises:
    HarnessError: a file that is no row of the table, two files for one row, or fewer than
      ``MIN_MODELS`` files.
  """
  by_key = {name_key(r): r for r in finetune.rows}
  unknown = [s for s in stems if name_key(s) not in by_key]
  if unknown:
    raise HarnessError(
        f'feature file(s) {", ".join(s + ".npz" for s in unknown)} name no model of benchmark '
        f'{benchmark or "?"}; its models: {", ".join(finetune.rows)} (case-insensitive; spaces, '
        'hyphens and underscores are equivalent)'
    )
  out: dict[str, str] = {}
  for s in stems:
    row = by_key[name_key(s)]
    if row in out:
      raise HarnessError(f'two feature files for model {row!r}: {out[row]}.npz and {s}.npz')
    out[row] = s
  if len(out) < MIN_MODELS:
    raise HarnessError(
        f'a ranking needs at least {MIN_MODELS} models; {len(out)} feature file(s) found '
        f'({", ".join(out.values())})'
    )
  return {r: out[r] for r in finetune.rows if r in out}


def load_features(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """``(features [N, D], labels [N] int, source_probs [N, Ks] or None)`` of one file.

  Raises:
    HarnessError: missing arrays or shapes that do not fit together.
  """
  with np.load(path) as z:
    missing = [k for k in ('features', 'labels') if k not in z.files]
    if missing:
      raise HarnessError(f'{path}: no {" or ".join(missing)} array (has: {z.files})')
    x = np.asarray(z['features'])
    y = np.asarray(z['labels'])
    p = np.asarray(z['source_probs']) if 'source_probs' in z.files else None
  if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
    raise HarnessError(f'{path}: features must be [N, D] and labels [N]; got {x.shape}, {y.shape}')
  if not np.issubdtype(y.dtype, np.integer) or y.min(initial=0) < 0:
    raise HarnessError(f'{path}: labels must be integers 0..K-1 (got dtype {y.dtype})')
  if p is not None and (p.ndim != 2 or p.shape[0] != x.shape[0]):
    raise HarnessError(f'{path}: source_probs must be [N, Ks] with N = {x.shape[0]}; got {p.shape}')
  return x, y.astype(np.int32), p


def has_source_probs(path: str) -> bool:
  """Whether a feature file holds ``source_probs`` (reads only its index)."""
  with np.load(path) as z:
    return 'source_probs' in z.files


def select_metrics(requested: Sequence[str] | None, paths: Mapping[str, str]) -> list[str]:
  """The metrics to compute: ``requested``, or every registered one the files allow.

  Raises:
    HarnessError: an unknown metric, or a requested metric that needs ``source_probs`` while a
      file has none.
  """
  without = [m for m, p in paths.items() if not has_source_probs(p)]
  known = list(cs.metric_infos())
  if requested is None:
    return [m for m in known if not (cs.metric_info(m).needs and without)]
  bad = [m for m in requested if m not in known]
  if bad:
    raise HarnessError(f'unknown metric(s) {bad}; registered: {", ".join(known)}')
  needy = [m for m in requested if cs.metric_info(m).needs]
  if needy and without:
    raise HarnessError(
        f'metric(s) {needy} need source_probs, which the file(s) of {", ".join(without)} lack'
    )
  return list(requested)


def score_files(
    paths: Mapping[str, str],
    metrics: Sequence[str],
    *,
    batch_size: int = 512,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, dict[str, dict]], dict[str, float]]:
  """Every metric on every model's stored features, with failure isolation.

  A metric that fails on a model records its error (the others go on) and runs alone for the
  following models (``collection_scoring.score_features`` with one ``suspects`` set).

  Args:
    paths: ``{model: .npz path}``.
    metrics: metric names.
    batch_size: examples per streamed step.
    log: callback for progress and per-metric errors.

  Returns:
    ``({model: {metric: record}}, {model: seconds})``.
  """
  infos = cs.metric_infos(metrics)
  records: dict[str, dict[str, dict]] = {}
  seconds: dict[str, float] = {}
  suspects: set = set()
  counts = None
  for model, path in paths.items():
    x, y, p = load_features(path)
    c = np.bincount(y)
    if counts is not None and not np.array_equal(c, counts):
      log(f'warning: {model}: class counts differ from the first file (is it the same target?)')
    counts = c if counts is None else counts
    recs = cs.score_features(
        x,
        y,
        infos,
        source_probs=p,
        batch_size=batch_size,
        suspects=suspects,
        log=lambda msg, model=model: log(f'{model}: {msg}'),
    )
    seconds[model] = recs.pop('_seconds')
    records[model] = recs
    log(f'{model}: N={x.shape[0]} D={x.shape[1]} scored in {seconds[model]:.1f} s')
  return records, seconds


def score_rows(metrics: Sequence[str]) -> list[str]:
  """The rows evaluated: the metrics, then FaCe's pool scores when FaCe is among them.

  FaCe's default pool ranking (``cs.face_ranking_score()``, pool z-score) and its pool
  min–max score.
  """
  if 'face' not in metrics:
    return list(metrics)
  return list(metrics) + list(dict.fromkeys([cs.face_ranking_score(), cs.FACE_POOL]))


def evaluate(
    records: Mapping[str, Mapping[str, dict]],
    rows: Sequence[str],
    truth: Mapping[str, float],
    *,
    n_boot: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
  """Each row's oriented scores and its ``evaluation.evaluate_ranking`` report (or error).

  Returns:
    ``{row: {'scores': {model: score}, 'missing': {model: why}, 'report': report or None,
    'error': None or text}}``.
  """
  out = {}
  for row in rows:
    scores, missing = cs.available_scores(records, row)
    ev: dict[str, Any] = {'scores': scores, 'missing': missing, 'report': None, 'error': None}
    if len(scores) < MIN_MODELS:
      ev['error'] = f'{len(scores)} model(s) with a value (a ranking needs {MIN_MODELS})'
    else:
      try:
        ev['report'] = evaluation.evaluate_ranking(
            scores, {m: truth[m] for m in scores}, n_boot=n_boot, seed=seed
        )
      except (evaluation.EvaluationInputError, evaluation.UndefinedStatisticError) as e:
        ev['error'] = cs.error_text(e)
    out[row] = ev
  return out


_STAT_SUFFIXES = (('estimate', ''), ('low', '_low'), ('high', '_high'))


def _cell(stat: Mapping[str, Any] | None, digits: int = 3) -> str:
  if stat is None:
    return '–'
  s = f'{stat["estimate"]:.{digits}f}'
  if stat.get('low') is not None and stat.get('high') is not None:
    s += f' [{stat["low"]:.{digits}f}, {stat["high"]:.{digits}f}]'
  return s


def comparison_rows(
    published: Mapping[str, float], evals: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
  """One row per method: the published rows first (with face_jax's value where it has the
  method), then face_jax's other metrics.

  Each row: ``method``, ``published_weighted_tau``, ``face_jax_metric``, ``n_models``, and per
  measure ``<m>``, ``<m>_low``, ``<m>_high`` (None where absent), ``error``.
  """
  ours = {PUBLISHED_NAMES.get(r, r): r for r in evals}
  names = list(published) + [n for n in ours if n not in published]
  rows = []
  for name in names:
    metric = ours.get(name)
    ev = evals.get(metric) if metric else None
    rep = ev['report'] if ev else None
    row: dict[str, Any] = {
        'method': name,
        'published_weighted_tau': published.get(name),
        'face_jax_metric': metric,
        'n_models': rep['n_models'] if rep else (len(ev['scores']) if ev else None),
    }
    for m in MEASURES:
      stat = rep[m] if rep else None
      row[m] = stat['estimate'] if stat else None
      row[f'{m}_low'] = stat['low'] if stat else None
      row[f'{m}_high'] = stat['high'] if stat else None
    row['error'] = ev['error'] if ev else None
    rows.append(row)
  return rows


def comparison_markdown(rows: Sequence[Mapping[str, Any]], alpha: float = 0.05) -> str:
  """The comparison table: rows = methods; published weighted τ beside face_jax's measures."""
  pct = f'{100 * (1 - alpha):g}%'
  header = ['method', 'published weighted τ', 'face_jax metric'] + [
      f'{MEASURE_TITLES.get(m, m)} [{pct} CI]' for m in MEASURES
  ]
  header.append('models')
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for r in rows:
    pub = r['published_weighted_tau']
    cells = [
        r['method'],
        '–' if pub is None else f'{pub:.3f}',
        r['face_jax_metric'] or '–',
    ]
    stats = [
        None if r[m] is None else {k: r[f'{m}{s}'] for k, s in _STAT_SUFFIXES} for m in MEASURES
    ]
    if r['error'] and stats[0] is None:  # no ranking: the reason instead of the first measure
      cells += [r['error'].replace('|', '\\|')] + ['–'] * (len(MEASURES) - 1)
    else:
      cells += [_cell(stat) for stat in stats]
    cells.append('–' if r['n_models'] is None else str(r['n_models']))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def score_table_rows(
    evals: Mapping[str, Mapping[str, Any]], truth: Mapping[str, float]
) -> list[dict[str, Any]]:
  """One row per model: its fine-tune accuracy and every row's oriented score."""
  return [
      {'model': m, 'finetune_accuracy': t, **{r: ev['scores'].get(m) for r, ev in evals.items()}}
      for m, t in truth.items()
  ]


def markdown(res: Mapping[str, Any]) -> str:
  """``results.md``: the comparison table, what it compares, errors and the per-model scores."""
  n_table = res['n_models_in_table']
  n = len(res['models'])
  lines = [
      f'# {res["benchmark"]}, target {res["target"]}: face_jax beside the published weighted τ',
      '',
      f'Published weighted τ: {res["published_source"]} (all {n_table} models of the benchmark). '
      f'face_jax: {n} model(s) from `{res["features_dir"]}` '
      f'({", ".join(res["models"])}), against the published fine-tune accuracies; higher = '
      f'better for every score (lower-is-better metrics negated); bootstrap over models, '
      f'{res["n_boot"]} resamples, seed {res["seed"]}.',
      '',
  ]
  if n < n_table:
    lines += [
        f'Only {n} of the {n_table} models are present: the published figures rank all '
        f'{n_table}, so the two columns are not directly comparable.',
        '',
    ]
  if not res['published']:
    lines += [f'The published table has no column for {res["target"]}.', '']
  lines += [comparison_markdown(res['comparison']), '']
  errs = [
      f'- {model} / {metric}: {rec["error"]}'
      for model, recs in res['records'].items()
      for metric, rec in recs.items()
      if rec.get('error')
  ]
  if errs:
    lines += ['## Metric errors', ''] + errs + ['']
  rows = res['score_rows']
  cols = list(rows[0])
  lines += ['## Scores (oriented: higher = better)', '']
  lines += ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  for r in rows:
    lines.append(
        '| '
        + ' | '.join(
            '–' if r[c] is None else (f'{r[c]:.6g}' if c != 'model' else r[c]) for c in cols
        )
        + ' |'
    )
  return '\n'.join(lines) + '\n'


def run(
    features_dir: str,
    benchmark: str,
    target: str,
    output_dir: str,
    *,
    metrics: Sequence[str] | None = None,
    batch_size: int = 512,
    n_boot: int = 1000,
    seed: int = 0,
    published_dir: str = PUBLISHED_DIR,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Scores the feature files, evaluates against the published table, writes the outputs.

  Returns:
    The ``results.json`` content.

  Raises:
    HarnessError: bad benchmark, target, files, model names or metrics.
  """
  t0 = time.perf_counter()
  finetune, published_tab = benchmark_tables(benchmark, published_dir)
  column = resolve_target(finetune, target, benchmark)
  files = feature_files(features_dir)
  models = match_models(list(files), finetune, benchmark)
  paths = {m: files[s] for m, s in models.items()}
  names = select_metrics(metrics, paths)
  truth = {m: finetune.values[m][column] for m in models}
  log(f'{benchmark} / {column}: {len(models)} models, metrics {", ".join(names)}')
  records, seconds = score_files(paths, names, batch_size=batch_size, log=log)
  evals = evaluate(records, score_rows(names), truth, n_boot=n_boot, seed=seed)
  published = published_column(published_tab, column)
  comparison = comparison_rows(published, evals)
  res: dict[str, Any] = {
      'schema': SCHEMA,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'benchmark': benchmark,
      'target': column,
      'features_dir': features_dir,
      'finetune_table': BENCHMARKS[benchmark].finetune,
      'published_table': BENCHMARKS[benchmark].published,
      'published_source': BENCHMARKS[benchmark].source,
      'n_models_in_table': len(finetune.rows),
      'models': list(models),
      'files': {m: os.path.basename(p) for m, p in paths.items()},
      'truth': truth,
      'metrics': names,
      'n_boot': n_boot,
      'seed': seed,
      'records': records,
      'seconds': seconds,
      'scores': {r: ev['scores'] for r, ev in evals.items()},
      'missing': {r: ev['missing'] for r, ev in evals.items() if ev['missing']},
      'evaluation': {r: ev['report'] or {'error': ev['error']} for r, ev in evals.items()},
      'published': published,
      'comparison': comparison,
      'score_rows': score_table_rows(evals, truth),
  }
  res['total_seconds'] = time.perf_counter() - t0
  os.makedirs(output_dir, exist_ok=True)
  reports.write_json(os.path.join(output_dir, 'results.json'), res)
  reports.write_csv(os.path.join(output_dir, 'results.csv'), comparison)
  reports.write_csv(os.path.join(output_dir, 'scores.csv'), res['score_rows'])
  with open(os.path.join(output_dir, 'results.md'), 'w') as f:
    f.write(markdown(res))
  return res


def main(argv=None) -> dict[str, Any]:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--features_dir', required=True, help='one <model>.npz per model, one target')
  ap.add_argument('--benchmark', required=True, choices=sorted(BENCHMARKS))
  ap.add_argument('--target', required=True, help="a column of the benchmark's fine-tune table")
  ap.add_argument(
      '--metrics',
      default=None,
      help='comma-separated metric names (default: every registered metric the files allow)',
  )
  ap.add_argument('--output_dir', required=True)
  ap.add_argument('--batch_size', type=int, default=512)
  ap.add_argument('--n_boot', type=int, default=1000, help='bootstrap resamples (0: none)')
  ap.add_argument('--seed', type=int, default=0)
  a = ap.parse_args(argv)
  metrics = [m.strip() for m in a.metrics.split(',') if m.strip()] if a.metrics else None
  try:
    res = run(
        a.features_dir,
        a.benchmark,
        a.target,
        a.output_dir,
        metrics=metrics,
        batch_size=a.batch_size,
        n_boot=a.n_boot,
        seed=a.seed,
    )
  except HarnessError as e:
    ap.error(str(e))
  print()
  print(markdown(res).split('\n## ')[0].rstrip())
  print(f'\nwrote results.json, results.csv, scores.csv, results.md to {a.output_dir}')
  return res


if __name__ == '__main__':
  main()
