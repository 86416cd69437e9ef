r"""The batch job's one read: ``--one_read`` against one read of the data per model.

A zoo of models (the bundled zoo's first ``--models`` models, default all 16) is scored
by ``face_jax.jobs`` on an ``image_folder`` dataset of PNG files (scikit-learn's digits,
upscaled to 32×32 with pixel noise, ``--images`` of them), whose records are decoded
from PNG on every read: a real cost per read.  Both ways run in this process,
interleaved, ``--repeats`` times each after one warm-up run of each (the warm-up compiles
the programs; JAX's persistent compilation cache, in a temporary directory, serves the
timed runs):

  per_model: every model streams the dataset itself (one read per model and pass);
  one_read:  each batch is read and decoded once and goes through every model in turn.

The raw read rate of the same pipeline (decode only, no model) is measured in the same
run.  The scores of both ways must agree (relative 1e-5); the JSON records the largest
relative difference.

    python benchmarks/batch_job.py --quick
    python benchmarks/batch_job.py --out benchmarks/results/batch_job.json

JSON schema: ``models``, ``images``, ``batch_size``, ``metrics``, ``repeats``,
``per_model_seconds`` and ``one_read_seconds`` (every timed run), ``speedup`` (median
per-model / median one-read), ``data_passes`` (per way), ``read_images_per_s`` (decode
only), ``max_relative_difference``; plus ``machine`` and ``quick``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from face_jax import data, jobs  # noqa: E402
from benchmarks import _bench_util as bu  # noqa: E402

ZOO = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'zoo', 'weights')


def _write_images(root: str, n: int) -> None:
  """n PNG files in root/<class>/: the digits, 32x32 grayscale, with pixel noise."""
  from PIL import Image
  from sklearn.datasets import load_digits

  d = load_digits()
  rng = np.random.default_rng(0)
  for i in range(n):
    j = i % len(d.target)
    img = np.kron(d.images[j] / 16.0, np.ones((4, 4)))
    img = np.clip(255 * img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    folder = os.path.join(root, f'digit_{d.target[j]}')
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(img).save(os.path.join(folder, f'{i:06d}.png'))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--quick', action='store_true', help='small sizes (the test suite)')
  p.add_argument('--models', type=int, default=16)
  p.add_argument('--images', type=int, default=4000)
  p.add_argument('--batch_size', type=int, default=256)
  p.add_argument('--repeats', type=int, default=2)
  p.add_argument('--metrics', default='face,logme')
  p.add_argument('--out', default='')
  a = p.parse_args(argv)
  if a.quick:
    a.models, a.images, a.repeats = 2, 256, 1
  tmp = tempfile.mkdtemp(prefix='face_jax_batch_job_')
  jax.config.update('jax_compilation_cache_dir', os.path.join(tmp, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  root = os.path.join(tmp, 'images')
  _write_images(root, a.images)
  data_dir = os.path.join(tmp, 'tfds')
  opts = {'root_dir': root, 'image_size': 32, 'channels': 1}
  pipe = data.get('image_folder', 'train', data_dir=data_dir, batch_size=a.batch_size, **opts)
  t0 = time.perf_counter()
  n = sum(int(b['_mask'].sum()) for b in pipe)
  read_rate = n / (time.perf_counter() - t0)
  # A collection of the zoo's first --models models (their presets need the manifest's
  # options: in_channels, widths, ...).
  from face_jax import models

  coll = models.load_collection(ZOO)
  names = list(coll.names)[: a.models]
  sub = os.path.join(tmp, 'zoo')
  for name in names:
    e = coll[name]
    models.add_to_collection(sub, name, e.load_params(), e.preset, dict(e.options))
  base = jobs.JobConfig(
      models=(sub,),
      dataset='image_folder',
      split='train',
      data_dir=data_dir,
      dataset_options=opts,
      metrics=tuple(a.metrics.split(',')),
      batch_size=a.batch_size,
      checkpoint_every_steps=0,
  )
  quiet = lambda *args: None  # noqa: E731
  ways = {
      'per_model': base,
      'one_read': dataclasses.replace(base, one_read=True),
  }
  results = {k: jobs.run(cfg, log=quiet) for k, cfg in ways.items()}  # warm-up (compiles)
  seconds = {k: [] for k in ways}
  for _ in range(a.repeats):
    for k, cfg in ways.items():
      t0 = time.perf_counter()
      results[k] = jobs.run(cfg, log=quiet)
      seconds[k].append(time.perf_counter() - t0)
  diff = 0.0
  one, each = results['one_read'].scores, results['per_model'].scores
  for model, by in each.items():
    for layer, ms in by.items():
      for metric, v in ms.items():
        if isinstance(v, float):
          w = one[model][layer][metric]
          diff = max(diff, abs(w - v) / max(abs(v), 1e-30))
  out = {
      'models': len(names),
      'images': a.images,
      'batch_size': a.batch_size,
      'metrics': a.metrics.split(','),
      'repeats': a.repeats,
      'per_model_seconds': seconds['per_model'],
      'one_read_seconds': seconds['one_read'],
      'speedup': float(np.median(seconds['per_model']) / np.median(seconds['one_read'])),
      'data_passes': {k: r.data_passes for k, r in results.items()},
      'read_images_per_s': read_rate,
      'max_relative_difference': diff,
      'machine': bu.host_info(),
      'quick': bool(a.quick),
  }
  print(
      f'{len(names)} models, {a.images} PNG images: per-model reads '
      f'{np.median(seconds["per_model"]):.1f}s, one read {np.median(seconds["one_read"]):.1f}s '
      f'({out["speedup"]:.2f}x); decode only {read_rate:.0f} images/s; scores agree to '
      f'{diff:.1e}'
  )
  if a.out:
    bu.write_json(a.out, out)
  shutil.rmtree(tmp, ignore_errors=True)
  return out


if __name__ == '__main__':
  main()
