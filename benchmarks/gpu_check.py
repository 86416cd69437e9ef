"""One prepared GPU check: the statistics step against the card's own matmul rate.

Run on a machine with a GPU (a few minutes)::

    python benchmarks/gpu_check.py                 # grid below, writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --quick         # two configurations (~1 minute)
    python benchmarks/gpu_check.py --quick --cpu_smoke --out /tmp/g.json   # tiny, on CPU (tests)

What it measures, per (D, K, batch size):

* the card's float32 matmul rate on the same data, ``jnp.dot(X.T, X)`` jitted,
  at ``precision=HIGHEST`` (true float32, what the statistics use) and at the
  default precision (on recent NVIDIA cards XLA may use TF32 there);
* the engine's compiled statistics step (``Moments``: class counts, sums,
  squares and the upper block triangle of the scatter, HIGHEST precision,
  compensated float32 sums) on a device-resident batch: samples/s and FLOP/s
  counting 2·B·D², as a ratio against both matmul rates (same rounds);
* a whole pass (host batches -> device -> step -> one psum -> host finalise)
  for the largest configuration: the end-to-end rate including the host to
  device copies.

* the ResNet-50 forward pass alone vs forward + statistics (``resnet50_overhead``:
  random weights, 224 px, D = 2048, K = 100).

Timing: interleaved rounds, minima (see benchmarks/_bench_util.py).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import time

if '--cpu_smoke' in sys.argv:
  os.environ['JAX_PLATFORMS'] = 'cpu'

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import _bench_util as bu  # noqa: E402

SCHEMA = 'face_jax.benchmarks.gpu_check/1'

FULL_GRID = tuple(
    (d, k, b) for d in (512, 1024, 2048, 4096) for k in (100, 1000) for b in (16384, 65536)
)
QUICK_GRID = ((1024, 1000, 65536), (4096, 1000, 65536))
SMOKE_GRID = ((64, 4, 256),)


def measure(d, k, b, *, min_rounds, max_rounds, budget_s) -> dict:
  """Step vs HIGHEST and default-precision matmul of the same [b, d] float32 batch."""
  import jax
  import jax.numpy as jnp
  import face_jax
  from benchmarks import throughput as tp
  from face_jax import engine as fje

  engine = face_jax.Engine()
  spec = fje.MomentsSpec(num_classes=k, dim=d)
  x, raw, params = tp._step_inputs(d, k, b)
  xj = jax.device_put(x, jax.devices()[0])
  hi = jax.jit(lambda a: jnp.dot(a.T, a, precision=jax.lax.Precision.HIGHEST))
  de = jax.jit(lambda a: jnp.dot(a.T, a))
  fns = {
      'matmul_highest': lambda: hi(xj).block_until_ready(),
      'matmul_default': lambda: de(xj).block_until_ready(),
      'step': tp._engine_step(engine, spec, params, raw, True),
  }
  t = bu.interleaved(fns, min_rounds=min_rounds, max_rounds=max_rounds, budget_s=budget_s, warmup=2)
  flops = 2.0 * b * d * d
  th, td, ts = t['matmul_highest'], t['matmul_default'], t['step']
  return {
      'D': d,
      'K': k,
      'batch_size': b,
      'devices': jax.device_count(),
      'scatter_blocks': spec.blocks,
      'rounds': int(len(ts)),
      'step_s': float(ts.min()),
      'step_s_median': float(np.median(ts)),
      'samples_per_s': b / float(ts.min()),
      'flops_per_s': flops / float(ts.min()),
      'matmul_highest_flops_per_s': flops / float(th.min()),
      'matmul_default_flops_per_s': flops / float(td.min()),
      'ratio_highest': bu.ratio_min(th, ts),
      'ratio_default': bu.ratio_min(td, ts),
      'ratio_highest_paired_median': bu.ratio_paired_median(th, ts),
  }


def measure_pass(d, k, b, steps) -> dict:
  """A whole pass of ``steps`` host batches (transfers included)."""
  import face_jax
  import face_jax.engine  # pylint: disable=g-import-not-at-top
  from benchmarks import throughput as tp
  from face_jax import engine as fje

  x, raw, params = tp._step_inputs(d, k, b)
  spec = fje.MomentsSpec(num_classes=k, dim=d)
  req = face_jax.engine.Request(fje.Moments, spec, params)
  src = face_jax.engine.IterableSource(
      [(raw['features'], raw['label'])] * steps, num_classes=k, batch_size=b
  )
  engine = face_jax.Engine()
  engine.run_pass(src, {'features': {'m': req}})
  ts = []
  for _ in range(3):
    t = time.perf_counter()
    engine.run_pass(src, {'features': {'m': req}})
    ts.append(time.perf_counter() - t)
  return {
      'D': d,
      'K': k,
      'batch_size': b,
      'steps': steps,
      'pass_s': min(ts),
      'samples_per_s': b * steps / min(ts),
  }


def resnet50_overhead(quick: bool, cpu_smoke: bool = False) -> dict:
  """ResNet-50 forward alone vs forward + statistics step on the same device batches.

  Random weights (timing only), 224×224×3 uint8 images, K = 100 classes, the
  2048-d pooled features: (a) the jitted forward, (b) the engine's step with
  the model featurizer (forward fused with the Moments accumulation),
  interleaved rounds, ``overhead = t(b) / t(a) − 1`` (issue target ≤ 10%).
  ``cpu_smoke`` uses ``resnet_mini`` at 32 px to exercise the code on CPU.
  """

  from face_jax import models
  import face_jax

  preset, opts, size, batch, steps = (
      ('resnet_mini', dict(depth=8), 32, 64, 2)
      if cpu_smoke
      else ('resnet50', {}, 224, 128, 4 if quick else 10)
  )
  k = 100
  ex = models.get(preset, image_size=size, **opts)
  layer = ex.default_layer
  d = ex.feature_dim(layer)
  eng = face_jax.Engine()
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(steps):
    raw = {
        'image': rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        'label': rng.integers(0, k, batch).astype(np.int32),
        '_mask': np.ones(batch, bool),
        '_index': np.arange(batch, dtype=np.int32),
    }
    batches.append(eng.to_global(raw))
  forward, forward_stats = bu.forward_and_stats(ex, layer, eng, batches, k)

  forward()
  forward_stats()
  tf, ts = [], []
  for _ in range(2 if cpu_smoke else 5):
    for fn, times in ((forward, tf), (forward_stats, ts)):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
  t_f, t_s = min(tf), min(ts)
  n = batch * steps
  return {
      'status': 'ok',
      'model': preset,
      'image_size': size,
      'batch_size': batch,
      'steps': steps,
      'feature_dim': d,
      'num_classes': k,
      'forward_images_per_s': n / t_f,
      'forward_stats_images_per_s': n / t_s,
      'overhead': t_s / t_f - 1.0,
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--quick', action='store_true', help='two configurations')
  ap.add_argument(
      '--cpu_smoke',
      action='store_true',
      help='run a tiny configuration on CPU (exercises the script without a GPU)',
  )
  ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'gpu_check.json'))
  a = ap.parse_args(argv)

  import jax

  backend = jax.default_backend()
  if backend != 'gpu' and not a.cpu_smoke:
    bu.log(f'gpu_check: no GPU (JAX backend {backend!r}); use --cpu_smoke to exercise the script')
    return 2
  grid = SMOKE_GRID if a.cpu_smoke else QUICK_GRID if a.quick else FULL_GRID
  rounds = (
      dict(min_rounds=2, max_rounds=2, budget_s=0.0)
      if a.cpu_smoke
      else dict(min_rounds=5, max_rounds=30, budget_s=3.0)
  )
  res = {
      'schema': SCHEMA,
      'mode': 'cpu_smoke' if a.cpu_smoke else 'quick' if a.quick else 'full',
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'host': bu.host_info(),
      'step': [],
      'pass': None,
      'resnet50': None,
  }
  t0 = time.perf_counter()
  for d, k, b in grid:
    rec = measure(d, k, b, **rounds)
    bu.log(
        f'D={d} K={k} B={b}: {rec["samples_per_s"]:.3g} samples/s, '
        f'{rec["flops_per_s"] / 1e12:.2f} TFLOP/s; ratio vs HIGHEST matmul '
        f'{rec["ratio_highest"]:.2f}, vs default precision {rec["ratio_default"]:.2f}'
    )
    res['step'].append(rec)
    bu.write_json(a.out, res)
  d, k, b = grid[-1]
  res['pass'] = measure_pass(d, k, b, steps=4 if a.cpu_smoke else 20)
  bu.log(f'pass D={d} K={k} B={b}: {res["pass"]["samples_per_s"]:.3g} samples/s end to end')
  res['resnet50'] = resnet50_overhead(a.quick, a.cpu_smoke)
  if res['resnet50'].get('status') == 'ok':
    bu.log(
        f"{res['resnet50']['model']}: forward {res['resnet50']['forward_images_per_s']:.1f} img/s, "
        f"forward + statistics {res['resnet50']['forward_stats_images_per_s']:.1f} img/s, "
        f"overhead {100 * res['resnet50']['overhead']:+.1f}%"
    )
  res['total_seconds'] = time.perf_counter() - t0
  bu.write_json(a.out, res)
  bu.log(f'wrote {a.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
