r"""Rank models by transferability from their features on a target dataset (absl batch job).

Each model is a features file: an ``.npz`` with ``features`` [N, D] (float),
``labels`` [N] (int) and optionally ``source_probs`` [N, Ks].  Without
``--features`` the job runs on the embedded default: scikit-learn's real
handwritten digits as raw pixels and as a few simple feature maps
(``face_jax.demo``), fully offline.

Examples::

    python scripts/score.py                                  # embedded default
    python scripts/score.py --features=a=feats_a.npz,b=feats_b.npz \
        --metrics=face --bc_cov=diagonal --output_dir=out/run1

Writes ``results.json`` (every metric, every FaCe term and diagnostic, the
options and the command), ``ranking.csv`` and ``ranking.png`` to
``--output_dir`` and prints the ranked table.  Progress and throughput go to
the absl log.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import face_jax  # noqa: E402
from face_jax import demo  # noqa: E402
from face_jax import reports  # noqa: E402

_FEATURES = flags.DEFINE_list(
    'features', [], 'Models to score, as name=path.npz (or path.npz: the file stem is the name). '
    'Empty: the embedded digits default.')
_METRICS = flags.DEFINE_list('metrics', ['face'], 'Metrics to compute (face_jax.metric_names()).')
_RANK_BY = flags.DEFINE_string('rank_by', None, 'Metric to rank by (default: the first of --metrics).')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'out/score', 'Where results are written.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 4096, 'Rows per streamed step.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'float64'], 'Accumulation dtype.')
_LOG_EVERY = flags.DEFINE_integer('log_every', 50, 'Log progress every this many steps.')
_WEIGHTING = flags.DEFINE_enum('weighting', 'balanced', ['balanced', 'sample'], 'FaCe weighting.')
_VC = flags.DEFINE_enum('vc_transform', 'neg', ['neg', 'neglog'], 'FaCe variance-collapse transform.')
_BC = flags.DEFINE_enum('bc_cov', 'pooled', ['pooled', 'diagonal', 'spherical'], 'FaCe class Gaussians.')
_FAIRNESS = flags.DEFINE_enum('fairness', 'std', ['std', 'range', 'entropy'], 'FaCe fairness.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.1, 'FaCe entropy-fairness temperature.')
_LAMBDA = flags.DEFINE_float('fairness_weight', 1.0, 'FaCe λ.')
_RIDGE = flags.DEFINE_float('ridge', 1e-3, 'FaCe pooled ridge ρ.')
_PLOT = flags.DEFINE_bool('plot', True, 'Write ranking.png.')


def _load_models() -> dict[str, dict[str, np.ndarray]]:
  if not _FEATURES.value:
    logging.info('no --features: using the embedded digits feature sets (scikit-learn, offline)')
    return {name: {'features': f, 'labels': y} for name, (f, y) in demo.digits_feature_sets().items()}
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
    logging.info('%s: pass %d %s: %d steps, %d examples, %.1fs, %.0f examples/s', model,
                 p.pass_index, 'done' if p.done else 'running', p.steps, p.examples, p.seconds,
                 p.examples_per_second)
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  metrics = tuple(_METRICS.value)
  rank_by = _RANK_BY.value or metrics[0]
  face_opts = dict(weighting=_WEIGHTING.value, vc_transform=_VC.value, bc_cov=_BC.value,
                   fairness=_FAIRNESS.value, temperature=_TEMPERATURE.value,
                   fairness_weight=_LAMBDA.value, ridge=_RIDGE.value)
  models = _load_models()
  results = {}
  for name, arrays in models.items():
    t0 = time.perf_counter()
    engine = face_jax.Engine(dtype=_DTYPE.value, progress=_progress(name),
                             progress_every=_LOG_EVERY.value)
    out = face_jax.score(arrays['features'], arrays['labels'], metrics=metrics,
                         source_probs=arrays.get('source_probs'), batch_size=_BATCH_SIZE.value,
                         dtype=_DTYPE.value, engine=engine,
                         metric_options={'face': face_opts} if 'face' in metrics else None)
    dt = time.perf_counter() - t0
    n = arrays['features'].shape[0]
    logging.info('%s: N=%d D=%d scored in %.2fs (%.0f examples/s, %d pass(es))', name, n,
                 arrays['features'].shape[1], dt, n / dt, engine.passes_run)
    results[name] = out

  rows = reports.ranking_rows(results, rank_by=rank_by)
  cols = ['rank', 'model'] + [c for c in rows[0] if c not in ('rank', 'model')]
  print(f'\nRanking by {rank_by} (higher = predicted more transferable):\n')
  print(reports.format_table(rows, cols))
  out_dir = _OUTPUT_DIR.value
  payload = {
      'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
      'metrics': list(metrics), 'rank_by': rank_by, 'face_options': face_opts,
      'dtype': _DTYPE.value, 'batch_size': _BATCH_SIZE.value,
      'devices': [str(d) for d in face_jax.default_mesh().devices.flat],
      'ranking': rows, 'results': results,
  }
  written = [reports.write_json(os.path.join(out_dir, 'results.json'), payload),
             reports.write_csv(os.path.join(out_dir, 'ranking.csv'), rows)]
  if _PLOT.value:
    written.append(reports.plot_ranking(rows, os.path.join(out_dir, 'ranking.png'), metric=rank_by))
  print('\nwrote ' + ', '.join(written))


if __name__ == '__main__':
  app.run(main)
