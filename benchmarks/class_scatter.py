r"""Per-class statistics at one-pass cost: TransRate's ``ClassScatter`` against ``Moments``.

Both statistics stream the same in-memory features through the engine (one pass each,
float32, compensated, the engine's default path on this machine: the CPU kernels where they
apply); the figure is the ratio of their pass times, measured in one process, rounds
interleaved, minimum over rounds (and the paired median). Compilation is timed apart (the
first pass of each). Memory: the peak RSS of a ``ClassScatter`` pass over the RSS just
before it, against the compensated accumulator's own size (2·K·D²·4 bytes).

Usage::

    python benchmarks/class_scatter.py                  # N=50000, D=1024, K=100 (the target)
    python benchmarks/class_scatter.py --quick          # a small configuration (tests)

Writes ``benchmarks/results/class_scatter[_quick].json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import _bench_util as bu  # noqa: E402
from face_jax import engine as fje  # noqa: E402

SCHEMA = 'face_jax.benchmarks.class_scatter/1'
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def _features(n: int, d: int, k: int, seed: int):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, k, n).astype(np.int32)
  means = rng.standard_normal((k, d)).astype(np.float32)
  x = rng.standard_normal((n, d), dtype=np.float32) + means[y]
  return x, y


def _pass(engine, stat, spec, params, x, y, batch):
  req = fje.Request(stat, spec, params)
  src = fje.ArraySource(x, y, batch_size=batch)
  return lambda: engine.run_pass(src, {'features': {'s': req}})


def class_scatter_vs_moments(n, d, k, batch, rounds, seed=0) -> dict:
  x, y = _features(n, d, k, seed)
  eng = fje.Engine()
  shift = {'shift': fje.FIRST_BATCH_SHIFT}
  cs = _pass(eng, fje.ClassScatter, fje.ClassScatterSpec(num_classes=k, dim=d), shift, x, y, batch)
  mo = _pass(
      eng,
      fje.Moments,
      fje.MomentsSpec(num_classes=k, dim=d),
      {**shift, 'weight': np.ones(k)},
      x,
      y,
      batch,
  )
  compile_s = {}
  for name, fn in (('class_scatter', cs), ('moments', mo)):
    t = time.perf_counter()
    fn()
    compile_s[name] = time.perf_counter() - t  # the first pass: compilation + one pass
  with bu.RssSampler() as rss:
    cs()
  times = bu.interleaved(
      {'moments': mo, 'class_scatter': cs},
      min_rounds=rounds,
      max_rounds=rounds,
      budget_s=0.0,
      warmup=0,
  )
  accumulator_mb = 2 * k * d * d * 4 / 2**20
  return {
      'n': n,
      'dim': d,
      'num_classes': k,
      'batch_size': batch,
      'uses_cpu_kernel': fje.ClassScatter.uses_cpu_kernel(fje.ClassScatterSpec(k, d), batch),
      'first_pass_s': compile_s,
      'pass_s': {name: v.tolist() for name, v in times.items()},
      'ratio_min': float(np.min(times['class_scatter']) / np.min(times['moments'])),
      'ratio_paired_median': bu.ratio_paired_median(times['class_scatter'], times['moments']),
      'peak_rss_over_start_mb': rss.peak_mb - rss.start_mb,
      'accumulator_mb': accumulator_mb,
      'memory_target_mb': accumulator_mb + 256,
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--quick', action='store_true', help='N=4000, D=128, K=20, 2 rounds')
  ap.add_argument('--n', type=int, default=50000)
  ap.add_argument('--dim', type=int, default=1024)
  ap.add_argument('--num_classes', type=int, default=100)
  ap.add_argument('--batch_size', type=int, default=8192)
  ap.add_argument('--rounds', type=int, default=3)
  ap.add_argument('--out', default=None)
  a = ap.parse_args(argv)
  if a.quick:
    a.n, a.dim, a.num_classes, a.batch_size, a.rounds = 4000, 128, 20, 1024, 2
  t0 = time.perf_counter()
  res = {
      'schema': SCHEMA,
      'command': ' '.join(['python', 'benchmarks/class_scatter.py'] + (argv or sys.argv[1:])),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'host': bu.host_info(),
      'class_scatter_vs_moments': class_scatter_vs_moments(
          a.n, a.dim, a.num_classes, a.batch_size, a.rounds
      ),
  }
  res['total_seconds'] = time.perf_counter() - t0
  out = a.out or os.path.join(
      RESULTS, 'class_scatter_quick.json' if a.quick else 'class_scatter.json'
  )
  bu.write_json(out, res)
  c = res['class_scatter_vs_moments']
  print(
      f'ClassScatter / Moments pass time: {c["ratio_min"]:.2f} (min), '
      f'{c["ratio_paired_median"]:.2f} (paired median); peak RSS +{c["peak_rss_over_start_mb"]:.0f} '
      f'MiB (accumulator {c["accumulator_mb"]:.0f} MiB); wrote {out}'
  )
  return res


if __name__ == '__main__':
  main()
