r"""The validity benchmark: does a transferability score pick the model that fine-tunes best?

Stages (``--stage``, comma-separated or ``all``):

  pretrain   pre-train every zoo model on its source   -> weights/*.msgpack, weights/manifest.json
  finetune   full fine-tuning on every target (LR grid) -> results/ground_truth.json
  score      every registered metric + every FaCe variant on the pre-trained features
                                                        -> <out_dir>/scores.json
  evaluate   rankings vs ground truth, ablation, NC1    -> <out_dir>/evaluation.*, ablation.*,
                                                           nc1_pre_vs_post.json, *.png, summary.md
  all        the four in order

Work that exists is skipped (weights by their manifest entry, ground truth and
scores by the sha256 of the weights they came from) unless ``--force``.

Examples::

    python -m benchmarks.zoo.run --stage=all                 # the full run (see README.md)
    python -m benchmarks.zoo.run --stage=score,evaluate      # re-score with the metrics registered now
    python -m benchmarks.zoo.run --quick --out_dir=/tmp/zoo_quick   # a few minutes: subset, committed weights

``--quick`` uses the committed weights and ground truth (read-only), scores a
subset of models on the digits target with every registered metric and fewer
bootstrap resamples, and writes only to ``--out_dir`` (never to the committed
results).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time

if __package__ in (None, ''):  # run as a script: make the repository importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

from face_jax import reports  # noqa: E402

from benchmarks.zoo import analysis  # noqa: E402
from benchmarks.zoo import datasets  # noqa: E402
from benchmarks.zoo import stages  # noqa: E402
from benchmarks.zoo import zoo  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS_DIR = os.path.join(HERE, 'weights')
RESULTS_DIR = os.path.join(HERE, 'results')
GROUND_TRUTH = os.path.join(RESULTS_DIR, 'ground_truth.json')
STAGES = ('pretrain', 'finetune', 'score', 'evaluate')
# The --quick subset: four architecture families, both sources and all three losses.
QUICK_MODELS = (
    'mlp-glyphs-ce',
    'cnn_small-glyphs-ce',
    'cnn_small-glyphs-mse',
    'resnet8-shapes-ls',
    'vit_mini-shapes-ce',
)
QUICK_TARGETS = ('digits',)

log = logging.getLogger('zoo')


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog='python -m benchmarks.zoo.run',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1],
  )
  p.add_argument('--stage', default='all', help='comma-separated subset of %s, or all' % (STAGES,))
  p.add_argument(
      '--quick',
      action='store_true',
      help='score + evaluate a subset on digits with the committed weights and ground '
      'truth, into --out_dir (default: a new temporary directory)',
  )
  p.add_argument('--force', action='store_true', help='redo work that exists')
  p.add_argument('--models', default='', help='comma-separated zoo model names (default: all)')
  p.add_argument('--targets', default='', help='comma-separated targets (default: all)')
  p.add_argument(
      '--metrics',
      default='',
      help='comma-separated metrics (default: every ' 'registered metric, face_jax.metric_names())',
  )
  p.add_argument('--weights_dir', default=WEIGHTS_DIR)
  p.add_argument('--ground_truth', default=GROUND_TRUTH)
  p.add_argument(
      '--out_dir',
      default=None,
      help=f'scores and evaluation outputs (default: '
      f'{RESULTS_DIR}; with --quick a temporary directory)',
  )
  p.add_argument(
      '--cache_dir',
      default=os.path.join(tempfile.gettempdir(), 'face_jax_zoo_data'),
      help='dataset .npz cache',
  )
  p.add_argument('--n_boot', type=int, default=1000, help='bootstrap resamples of the evaluation')
  p.add_argument(
      '--ablation_boot', type=int, default=500, help='bootstrap resamples of the ablation means'
  )
  return p.parse_args(argv)


def _split(s: str) -> list[str]:
  return [x for x in (v.strip() for v in s.split(',')) if x]


def main(argv=None) -> int:
  args = parse_args(argv)
  logging.basicConfig(
      level=logging.INFO,
      format='%(asctime)s %(levelname)s %(message)s',
      datefmt='%H:%M:%S',
      stream=sys.stderr,
  )
  names = _split(args.models) or (list(QUICK_MODELS) if args.quick else [s.name for s in zoo.ZOO])
  specs = [zoo.spec(n) for n in names]
  targets = _split(args.targets) or list(QUICK_TARGETS if args.quick else datasets.TARGETS)
  unknown = [t for t in targets if t not in datasets.TARGETS]
  if unknown:
    raise SystemExit(f'unknown target(s) {unknown}; targets: {list(datasets.TARGETS)}')
  metrics = _split(args.metrics) or None
  want = list(STAGES) if args.stage == 'all' else _split(args.stage)
  bad = [s for s in want if s not in STAGES]
  if bad:
    raise SystemExit(f'unknown stage(s) {bad}; stages: {list(STAGES)} or all')
  if args.quick:
    if any(s in want for s in ('pretrain', 'finetune')) and args.stage != 'all':
      raise SystemExit('--quick runs only score and evaluate (on the committed weights)')
    want = ['score', 'evaluate']
    out_dir = args.out_dir or tempfile.mkdtemp(prefix='zoo_quick_')
    if os.path.realpath(out_dir) == os.path.realpath(RESULTS_DIR):
      raise SystemExit('--quick must not write into the committed results directory')
    n_boot, ablation_boot = min(args.n_boot, 100), min(args.ablation_boot, 50)
  else:
    out_dir = args.out_dir or RESULTS_DIR
    n_boot, ablation_boot = args.n_boot, args.ablation_boot
  os.makedirs(out_dir, exist_ok=True)
  data = stages.Data(args.cache_dir)
  log.info(
      'zoo benchmark: stages %s, %d models, targets %s, out_dir %s, %s, jax %s on %s',
      want,
      len(specs),
      targets,
      out_dir,
      platform.node(),
      jax.__version__,
      jax.devices()[0].platform,
  )
  timings_path = os.path.join(out_dir, 'timings.json')
  timings = stages.read_json(timings_path)
  scores_path = os.path.join(out_dir, 'scores.json')
  total0 = time.perf_counter()
  for stage in want:
    t0, c0 = time.perf_counter(), time.process_time()
    counts: dict = {}
    if stage == 'pretrain':
      stages.pretrain(specs, data, args.weights_dir, force=args.force, counts=counts)
    elif stage == 'finetune':
      stages.finetune(
          specs,
          data,
          args.weights_dir,
          args.ground_truth,
          targets=targets,
          force=args.force,
          counts=counts,
      )
    elif stage == 'score':
      stages.score(
          specs,
          data,
          args.weights_dir,
          scores_path,
          targets=targets,
          metrics=metrics,
          force=args.force,
          counts=counts,
      )
    else:
      scores = stages.read_json(scores_path)
      if not scores:
        raise SystemExit(f'no scores at {scores_path}: run the score stage first')
      # Evaluate exactly the requested models and targets.
      scores['scores'] = {
          t: {m: r for m, r in scores['scores'][t].items() if m in names}
          for t in targets
          if t in scores['scores']
      }
      scores['face_variants'] = {
          t: {m: v for m, v in scores['face_variants'][t].items() if m in names}
          for t in scores['scores']
      }
      gt = stages.read_json(args.ground_truth)
      manifest = stages.read_json(os.path.join(args.weights_dir, 'manifest.json'))
      out = analysis.evaluate(
          scores, gt, manifest, out_dir, n_boot=n_boot, ablation_boot=ablation_boot
      )
      log.info('wrote %s', ', '.join(os.path.relpath(f, out_dir) for f in out['files']))
      _print_summary(out['evaluation'])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    log.info(
        'stage %s done in %.1fs (cpu %.1fs)%s', stage, wall, cpu, f' {counts}' if counts else ''
    )
    if counts and not counts.get('computed') and stage in timings:
      # Everything was cached: keep the measurement of the run that did the work.
      timings[stage]['last_cached_run_seconds'] = round(wall, 1)
    else:
      timings[stage] = {
          'seconds': round(wall, 1),
          'cpu_seconds': round(cpu, 1),
          'models': len(specs),
          'targets': targets,
          **counts,
          'finished': time.strftime('%Y-%m-%d %H:%M:%S'),
          'load_average_1min_at_end': round(os.getloadavg()[0], 2),
      }
    reports.write_json(timings_path, timings)
  log.info(
      'all requested stages done in %.1fs; outputs in %s', time.perf_counter() - total0, out_dir
  )
  print(
      json.dumps(
          {
              'out_dir': out_dir,
              'stages': want,
              'timings': {s: timings[s] for s in want if s in timings},
          }
      )
  )
  return 0


def _print_summary(evals) -> None:
  for t, e in evals.items():
    print(f'\n{t}: weighted τ of each score vs fine-tuned test accuracy')
    for name, rep in e['scores'].items():
      if 'weighted_tau' in rep:
        w = rep['weighted_tau']
        ci = '' if w['low'] is None else f" [{w['low']:+.2f}, {w['high']:+.2f}]"
        part = (
            f" (on {rep['n_models']} models; {len(rep['missing'])} without a value)"
            if rep.get('missing')
            else ''
        )
        print(f'  {name:22s} {w["estimate"]:+.3f}{ci}{part}')
      else:
        print(f'  {name:22s} {rep["error"][:100]}')


if __name__ == '__main__':
  sys.exit(main())
