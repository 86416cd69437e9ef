r"""Images/s of the input pipeline, the model forward pass, and forward + statistics.

For each model (the small CNN and ResNet-50 by default), on CPU:

  (a) pipeline: a tfds array_record dataset read through face_jax.data (grain), with the
      model's host preprocessing;
  (b) forward: the jitted feature function alone on device-resident batches;
  (c) forward + statistics: the engine's jitted step (the same forward pass fused with
      the sharded accumulation of FaCe's statistics: class counts and sums, per-class
      squares, the D×D scatter) on the same batches;
  (d) end to end: ``face_jax.score_model`` over the pipeline (read + forward + statistics
      + finalisation).

The statistics overhead is time(c)/time(b) − 1, measured in the same process
with interleaved repeats (median). Targets (issue): ≤ 10% at D = 2048, K = 100
(ResNet-50's pooled features, 100 classes); the pipeline keeps up with the
forward pass of the small CNN.

    python benchmarks/model_throughput.py --quick
    python benchmarks/model_throughput.py --out benchmarks/results/model_throughput.json

JSON schema (one entry per model under ``models``): ``model``, ``image_size``,
``channels``, ``feature_dim`` (D), ``num_classes`` (K), ``batch_size``,
``num_examples``, ``pipeline_images_per_s``, ``forward_images_per_s``,
``forward_stats_images_per_s``, ``stats_overhead`` (fraction),
``end_to_end_images_per_s``, ``pipeline_keeps_up`` (bool), ``repeats``; plus
``machine`` (cpu count, jax version, devices) and ``quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import face_jax  # noqa: E402
from face_jax import data, models  # noqa: E402
from benchmarks import _bench_util as bu  # noqa: E402

CONFIGS = {
    # name: (preset, options, stored image size, channels, K, batch, N full, N quick)
    'cnn_small': ('cnn_small', {}, 32, 1, 100, 256, 8192, 2048),
    'resnet50': ('resnet50', {}, 224, 3, 100, 32, 256, 64),
    # --smoke only (schema check in the test suite): tiny and fast.
    'cnn_tiny': ('cnn_tiny', {}, 16, 1, 10, 64, 256, 256),
}


def _median_time(fn, repeats):
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return float(np.median(ts))


def bench_model(name, quick, repeats, data_dir):
  preset, opts, size, channels, k, batch, n_full, n_quick = CONFIGS[name]
  n = n_quick if quick else n_full
  rng = np.random.default_rng(0)
  labels = rng.integers(0, k, n)
  images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
  pipe = data.get(
      'arrays',
      'train',
      data_dir=data_dir,
      batch_size=batch,
      arrays={'image': images, 'labels': labels},
      num_classes=k,
  )
  ex = models.get(preset, image_size=size, **opts)
  d = ex.feature_dim()
  layer = ex.default_layer

  # (a) the pipeline alone (+ the model's host preprocessing).
  def read():
    for b in pipe:
      ex.host_preprocess(b['image'])

  read()
  t_pipe = _median_time(read, repeats)

  # Device-resident batches for (b) and (c).
  eng = face_jax.Engine()
  src_batches = []
  from face_jax.scoring import ModelInputSource

  src = ModelInputSource(
      lambda: iter(pipe),
      extractor=ex,
      input_key='image',
      batch_size=batch,
      num_classes=k,
      label_counts=pipe.label_counts(),
      num_batches=pipe.num_batches,
  )
  for raw, _ in src:
    src_batches.append(eng.to_global(raw))
  forward, forward_stats = bu.forward_and_stats(ex, layer, eng, src_batches, k)

  forward()
  forward_stats()
  tf, ts = [], []
  for _ in range(repeats):  # interleaved: the same machine conditions
    tf.append(_median_time(forward, 1))
    ts.append(_median_time(forward_stats, 1))
  t_fwd, t_fs = float(np.median(tf)), float(np.median(ts))

  # (d) end to end.
  face_jax.score_model(ex, pipe)  # warm-up: compiles
  t0 = time.perf_counter()
  face_jax.score_model(ex, pipe)
  t_e2e = time.perf_counter() - t0

  ex_n = pipe.num_examples
  return {
      'model': name,
      'image_size': size,
      'channels': channels,
      'feature_dim': d,
      'num_classes': k,
      'batch_size': batch,
      'num_examples': ex_n,
      'pipeline_images_per_s': ex_n / t_pipe,
      'forward_images_per_s': ex_n / t_fwd,
      'forward_stats_images_per_s': ex_n / t_fs,
      'stats_overhead': t_fs / t_fwd - 1.0,
      'end_to_end_images_per_s': ex_n / t_e2e,
      'pipeline_keeps_up': t_pipe <= t_fwd,
      'repeats': repeats,
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--quick', action='store_true', help='small N, 3 repeats (~1-2 min)')
  ap.add_argument(
      '--smoke', action='store_true', help='cnn_tiny only, 1 repeat (schema check, ~20 s)'
  )
  ap.add_argument(
      '--models', default='cnn_small,resnet50', help='comma-separated: ' + ','.join(CONFIGS)
  )
  ap.add_argument('--repeats', type=int, default=None)
  ap.add_argument(
      '--out',
      default=None,
      help='JSON output (default: benchmarks/results/' 'model_throughput[_quick].json)',
  )
  args = ap.parse_args(argv)
  if args.smoke:
    args.quick, args.models = True, 'cnn_tiny'
  repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 5)
  out = args.out or os.path.join(
      os.path.dirname(os.path.abspath(__file__)),
      'results',
      'model_throughput_quick.json' if args.quick else 'model_throughput.json',
  )
  results = []
  with tempfile.TemporaryDirectory() as data_dir:
    for name in args.models.split(','):
      r = bench_model(name, args.quick, repeats, data_dir)
      results.append(r)
      print(
          f"{name:10s} D={r['feature_dim']:5d} K={r['num_classes']}  pipeline "
          f"{r['pipeline_images_per_s']:9.1f}/s  forward {r['forward_images_per_s']:8.1f}/s  "
          f"forward+stats {r['forward_stats_images_per_s']:8.1f}/s  overhead "
          f"{100 * r['stats_overhead']:+.1f}%  end-to-end {r['end_to_end_images_per_s']:8.1f}/s  "
          f"pipeline keeps up: {r['pipeline_keeps_up']}",
          flush=True,
      )
  payload = {
      'quick': args.quick,
      'smoke': args.smoke,
      'machine': {
          'cpu_count': os.cpu_count(),
          'platform': platform.platform(),
          'jax': jax.__version__,
          'devices': [str(d) for d in jax.devices()],
      },
      'models': results,
      'command': ' '.join(['python', 'benchmarks/model_throughput.py'] + (argv or sys.argv[1:])),
  }
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(payload, f, indent=1)
  print('wrote', out)


if __name__ == '__main__':
  main()
