"""Speed and memory of the face_jax streaming engine, against the machine's own matmul rate.

Usage (from the repository root)::

    python benchmarks/throughput.py --quick        # a subset, <= ~2 minutes
    python benchmarks/throughput.py                # the full grid (~30 min on 2 CPU cores)
    python benchmarks/throughput.py --smoke        # a tiny configuration (tests)
    python benchmarks/throughput.py --sections=step,finalise --out=/tmp/t.json

Sections (``--sections``, default all):

* ``step``: the engine's compiled statistics step (``Moments`` of FaCe: class
  counts, sums, squares and the pooled scatter, compensated float32) on a
  device-resident batch, for a grid of D, K and batch sizes.  Reported as
  samples/s and FLOP/s counting only the 2·B·D² of the scatter, and as a ratio
  against the matmul rate of the same data measured in the same rounds:
  numpy ``X.T @ X`` (a symmetric rank-k BLAS call, half the flops) and a jitted
  ``jnp.dot(X.T, X, precision=HIGHEST)``.  ``matmul_flops_per_s`` is the faster
  of the two; ``ratio`` = flops_per_s / matmul_flops_per_s.
* ``breakdown``: jitted micro-variants of the step's parts (centring, class
  sums by segment_sum vs one-hot matmul, health counters, compensation, scatter
  block counts) against the same two matmuls.
* ``memory``: peak RSS of a worker process streaming N generated samples
  (D = 512) through ``face_jax.score``; it should not grow with N.
* ``finalise``: host finalisation time of every registered metric (FaCe: all
  variants) vs D and K, timed apart from streaming.
* ``versus``: streamed float32 face_jax against in-memory float64 numpy
  (``face_jax.dense`` and a dense FaCe) on N = 200,000, D = 1024, K = 100:
  time and peak memory, each side in its own process.
* ``devices``: the same step and a whole pass on 1 vs 8 fake CPU devices
  (``--xla_force_host_platform_device_count``), each in its own process.

The JSON schema and the measured results are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Benchmark this checkout's face_jax (not an installed copy).
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import _bench_util as bu  # noqa: E402

SCHEMA = 'face_jax.benchmarks.throughput/1'
SECTIONS = ('step', 'breakdown', 'memory', 'finalise', 'versus', 'devices')
TARGET_STEP_RATIO = 0.7  # step rate / matmul rate, CPU, D >= 512
TARGET_FINALISE_S = 10.0  # FaCe finalisation, D = 2048, K = 1000, CPU


# -- the JSON schema (documented field by field in benchmarks/README.md) ----------------

_F, _I, _S, _B, _L, _D = float, int, str, bool, list, dict
STEP_FIELDS = {
    'D': _I,
    'K': _I,
    'batch_size': _I,
    'devices': _I,
    'dtype': _S,
    'compensated': _B,
    'scatter_blocks': _I,
    'scatter_kernel': _S,
    'rounds': _I,
    'step_s': _F,
    'step_s_median': _F,
    'numpy_matmul_s': _F,
    'jax_matmul_s': _F,
    'samples_per_s': _F,
    'flops_per_s': _F,
    'numpy_matmul_flops_per_s': _F,
    'jax_matmul_flops_per_s': _F,
    'matmul_flops_per_s': _F,
    'matmul_baseline': _S,
    'ratio': _F,
    'ratio_numpy': _F,
    'ratio_jax': _F,
    'ratio_paired_median': _F,
    'peak_rss_mb': _F,
}
BREAKDOWN_FIELDS = {
    'D': _I,
    'K': _I,
    'batch_size': _I,
    'devices': _I,
    'auto_scatter_blocks': _I,
    'scatter_kernel': _S,
    'rounds': _I,
    'parts': _D,
}
BREAKDOWN_PART_FIELDS = {
    'time_s': _F,
    'time_s_median': _F,
    'ratio_numpy': _F,
    'ratio_jax': _F,
    'fraction_of_step': _F,
}
MEMORY_FIELDS = {
    'N': _I,
    'D': _I,
    'K': _I,
    'batch_size': _I,
    'warmup_s': _F,
    'stream_s': _F,
    'finalise_s': _F,
    'samples_per_s': _F,
    'passes': _I,
    'rss_before_stream_mb': _F,
    'rss_sampled_peak_mb': _F,
    'rss_end_mb': _F,
    'peak_rss_mb': _F,
    'rss_growth_mb': _F,
}
FINALISE_FIELDS = {
    'metric': _S,
    'options': _D,
    'D': _I,
    'K': _I,
    'N': _I,
    'passes': _I,
    'stream_s': _F,
    'stat_finalize_s': _F,
    'plan_s': _F,
    'finalise_s': _F,
    'plan_s_1_blas_thread': _F,
    'blas_threads': _I,
    'value': (float, type(None)),
}
VERSUS_FIELDS = {
    'N': _I,
    'D': _I,
    'K': _I,
    'batch_size': _I,
    'stream': _D,
    'dense': _D,
    'summary': _D,
}
VERSUS_STREAM_FIELDS = {
    'side': _S,
    'N': _I,
    'D': _I,
    'K': _I,
    'batch_size': _I,
    'metrics': _L,
    'warmup_s': _F,
    'generate_s': _F,
    'time_s': _F,
    'rss_before_mb': _F,
    'rss_sampled_peak_mb': _F,
    'peak_rss_mb': _F,
    'values': _D,
}
VERSUS_DENSE_FIELDS = {
    'side': _S,
    'N': _I,
    'D': _I,
    'K': _I,
    'metrics': _L,
    'prepare_s': _F,
    'rss_with_data_mb': _F,
    'time_s': _F,
    'per_metric': _D,
    'peak_rss_mb': _F,
}
VERSUS_DENSE_METRIC_FIELDS = {'time_s': _F, 'rss_sampled_peak_mb': _F, 'value': _F}
VERSUS_SUMMARY_FIELDS = {
    'common_metrics': _L,
    'dense_time_common_s': _F,
    'stream_time_s': _F,
    'time_ratio_dense_over_stream': (float, type(None)),
    'peak_rss_ratio_dense_over_stream': _F,
    'value_rel_diff': _D,
}
DEVICES_FIELDS = {'runs': _L, 'comparison': _L}
DEVICES_RUN_FIELDS = {'devices': _I, 'step': _L, 'pass': _L, 'peak_rss_mb': _F}
DEVICES_PASS_FIELDS = {
    'D': _I,
    'K': _I,
    'batch_size': _I,
    'devices': _I,
    'steps': _I,
    'pass_s': _F,
    'pass_s_median': _F,
    'samples_per_s': _F,
}
DEVICES_COMPARISON_FIELDS = {
    'D': _I,
    'K': _I,
    'batch_size': _I,
    'devices': _L,
    'step_samples_per_s': _L,
    'step_speed_ratio': _F,
    'pass_samples_per_s': _L,
    'pass_speed_ratio': _F,
}
TOP_FIELDS = {
    'schema': _S,
    'mode': _S,
    'sections': _L,
    'created': _S,
    'host': _D,
    'timing': _D,
    'targets': _D,
    'section_seconds': _D,
    'summary': _D,
    'total_seconds': _F,
}


# -- configurations -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rounds:
  min_rounds: int
  max_rounds: int
  budget_s: float


@dataclasses.dataclass(frozen=True)
class Config:
  """What each mode measures."""

  step_grid: tuple  # (D, K, batch_size) triples
  breakdown_grid: tuple  # (D, K, batch_size) triples
  block_counts: tuple  # scatter block counts swept in ``breakdown``
  rounds: Rounds
  memory_n: tuple
  memory_dim: int
  memory_classes: int
  memory_batch: int
  finalise_grid: tuple  # (D, K, all_variants) triples
  versus: tuple  # (N, D, K, batch_size)
  dense_metrics: tuple  # in-memory float64 metrics timed in ``versus``
  devices_grid: tuple  # (D, K, batch_size) triples
  devices_pass_steps: int


def _grid(ds, ks, bs):
  return tuple((d, k, b) for d in ds for k in ks for b in bs)


FULL = Config(
    step_grid=_grid((256, 512, 1024, 2048), (10, 100, 1000), (1024, 4096, 16384)),
    breakdown_grid=_grid((512, 1024, 2048), (10, 1000), (4096,)),
    block_counts=(1, 2, 4, 8),
    rounds=Rounds(min_rounds=5, max_rounds=61, budget_s=4.0),
    memory_n=(100_000, 300_000, 1_000_000, 3_000_000, 10_000_000),
    memory_dim=512,
    memory_classes=100,
    memory_batch=8192,
    finalise_grid=tuple((d, k, True) for d in (256, 512, 1024, 2048) for k in (10, 100, 1000)),
    versus=(200_000, 1024, 100, 8192),
    dense_metrics=('face', 'hscore', 'reg_hscore', 'nc1', 'logme'),
    devices_grid=_grid((512, 1024), (10, 1000), (4096, 16384)),
    devices_pass_steps=20,
)

QUICK = Config(
    step_grid=_grid((512, 1024), (10, 1000), (4096,)),
    breakdown_grid=((512, 100, 4096),),
    block_counts=(2, 4, 8),
    rounds=Rounds(min_rounds=5, max_rounds=31, budget_s=2.5),
    memory_n=(100_000, 1_000_000),
    memory_dim=512,
    memory_classes=100,
    memory_batch=8192,
    finalise_grid=((512, 100, False), (2048, 1000, False)),
    versus=(20_000, 1024, 100, 8192),
    dense_metrics=('face', 'nc1'),
    devices_grid=((512, 100, 4096),),
    devices_pass_steps=8,
)

SMOKE = Config(
    step_grid=((64, 4, 256),),
    breakdown_grid=((64, 4, 256),),
    block_counts=(2,),
    rounds=Rounds(min_rounds=2, max_rounds=2, budget_s=0.0),
    memory_n=(2_048, 8_192),
    memory_dim=32,
    memory_classes=4,
    memory_batch=512,
    finalise_grid=((32, 4, False),),
    versus=(2_000, 32, 4, 512),
    dense_metrics=('face', 'hscore', 'reg_hscore', 'nc1', 'logme'),
    devices_grid=((32, 4, 256),),
    devices_pass_steps=2,
)

MODES = {'full': FULL, 'quick': QUICK, 'smoke': SMOKE}


# FaCe variants timed in ``finalise``: the default and every single-option change
# away from it (every other value of every option of face.FaceOptions).
def _face_variants() -> tuple:
  import face_jax  # pylint: disable=g-import-not-at-top

  d = face_jax.FaceOptions()
  out = [{}]
  for name, allowed in face_jax.FaceOptions.CHOICES.items():
    out += [{name: v} for v in allowed if v != getattr(d, name)]
  return tuple(out)


FACE_VARIANTS = _face_variants()
METRIC_VARIANTS = {'face': FACE_VARIANTS}

# ``finalise``: every one-pass metric.  TransRate's
# per-class scatter holds K·D² numbers: it is timed only where that stays under
# TRANSRATE_MAX_ELEMENTS (1 GiB of float32).
ONE_PASS_METRICS = (
    'face',
    'nc1',
    'vci',
    'logme',
    'nce',
    'hscore',
    'reg_hscore',
    'gbc',
    'transrate',
)
TRANSRATE_MAX_ELEMENTS = 2**28


def _finalise_metrics(d: int, k: int) -> list:
  from face_jax import engine

  names = [m for m in ONE_PASS_METRICS if m in engine.names()]
  return [m for m in names if m != 'transrate' or k * d * d <= TRANSRATE_MAX_ELEMENTS]


# ``versus``: metrics with an in-memory float64 implementation (the reference repositories'
# way); the streamed side computes those of them that are registered.
DENSE_METRICS = ('face', 'hscore', 'reg_hscore', 'nc1', 'logme')


# -- data ---------------------------------------------------------------------------


def _class_means(seed: int, k: int, d: int) -> np.ndarray:
  return np.random.default_rng(seed).normal(0.0, 1.0, size=(k, d)).astype(np.float32)


def _chunk(seed: int, index: int, start: int, rows: int, means: np.ndarray):
  """Deterministic chunk ``index`` of a generated dataset: x = class mean + N(0, 1), y = i mod K."""
  k, d = means.shape
  y = (np.arange(start, start + rows) % k).astype(np.int32)
  rng = np.random.default_rng((seed, index))
  x = rng.standard_normal((rows, d), dtype=np.float32)
  x += means[y]
  return x, y


# -- the step -------------------------------------------------------------------------


def _engine_step(engine, spec, params_host, raw, compensated=True):
  """The engine's own compiled step for one ``Moments`` request, on a device-resident batch.

  Returns a zero-argument callable running one step (state donated, as in a
  pass) and blocking until it is done.
  """
  import jax
  import face_jax
  from face_jax import engine as fje

  layout = (('features', spec.num_classes, ((fje.Moments, spec),)),)
  if engine.compensated != compensated:
    engine = face_jax.Engine(engine.mesh, compensated=compensated)
  step = engine.build_step(layout)
  states = [engine.init_states(layout)]
  params = engine.replicate(
      {'features': ({k: np.asarray(v, np.float32) for k, v in params_host.items()},)}
  )
  batch = engine.to_global(raw)

  def run():
    states[0], health = step(states[0], batch, params, None)
    jax.block_until_ready((states[0], health))

  return run


def _step_inputs(d, k, b, seed=0):
  means = _class_means(seed, k, d)
  x, _ = _chunk(seed, 0, 0, b, means)
  y = np.random.default_rng(seed + 1).integers(0, k, b).astype(np.int32)
  raw = {
      'features': x,
      'label': y,
      '_mask': np.ones(b, bool),
      '_index': np.arange(b, dtype=np.int32),
  }
  params = {'shift': means, 'weight': np.ones(k, np.float32)}
  return x, raw, params


def _matmul_fns(x):
  """numpy ``x.T @ x`` and a jitted HIGHEST-precision ``jnp.dot(x.T, x)`` on a device copy."""
  import jax
  import jax.numpy as jnp

  xj = jax.device_put(x, jax.devices()[0])
  mm = jax.jit(lambda a: jnp.dot(a.T, a, precision=jax.lax.Precision.HIGHEST))
  return {'numpy_matmul': lambda: x.T @ x, 'jax_matmul': lambda: mm(xj).block_until_ready()}


def _rates(times, flops, rows):
  """Summary numbers of interleaved timings with ``numpy_matmul``, ``jax_matmul`` and ``step``."""
  tn, tj, ts = times['numpy_matmul'], times['jax_matmul'], times['step']
  best = tn if tn.min() <= tj.min() else tj
  return {
      'rounds': int(len(ts)),
      'step_s': float(ts.min()),
      'step_s_median': float(np.median(ts)),
      'numpy_matmul_s': float(tn.min()),
      'jax_matmul_s': float(tj.min()),
      'samples_per_s': rows / float(ts.min()),
      'flops_per_s': flops / float(ts.min()),
      'numpy_matmul_flops_per_s': flops / float(tn.min()),
      'jax_matmul_flops_per_s': flops / float(tj.min()),
      'matmul_flops_per_s': flops / float(best.min()),
      'matmul_baseline': 'numpy' if best is tn else 'jax',
      'ratio': bu.ratio_min(best, ts),
      'ratio_numpy': bu.ratio_min(tn, ts),
      'ratio_jax': bu.ratio_min(tj, ts),
      'ratio_paired_median': bu.ratio_paired_median(np.minimum(tn, tj), ts),
  }


def _kernel_name(spec, rows: int) -> str:
  """Which code a ``Moments`` step on ``rows`` rows per device runs here: ``cpu_kernel`` or ``xla``."""
  import jax
  from face_jax import engine as fje

  cpu = jax.default_backend() == 'cpu' and fje.Moments.uses_cpu_kernel(spec, rows)
  return 'cpu_kernel' if cpu else 'xla'


def measure_step(d, k, b, rounds: Rounds, *, compensated=True, blocks=None) -> dict:
  """One configuration of the ``step`` section (also run by the ``devices`` workers)."""
  import jax
  import face_jax
  from face_jax import engine as fje

  ndev = jax.device_count()
  engine = face_jax.Engine()
  spec = fje.MomentsSpec(num_classes=k, dim=d, scatter_blocks=blocks)
  x, raw, params = _step_inputs(d, k, b)
  fns = dict(_matmul_fns(x))
  fns['step'] = _engine_step(engine, spec, params, raw, compensated)
  with bu.RssSampler() as rss:
    times = bu.interleaved(
        fns, min_rounds=rounds.min_rounds, max_rounds=rounds.max_rounds, budget_s=rounds.budget_s
    )
  rec = {
      'D': d,
      'K': k,
      'batch_size': b,
      'devices': ndev,
      'dtype': 'float32',
      'compensated': compensated,
      'scatter_blocks': spec.blocks,
      'scatter_kernel': _kernel_name(spec, b // ndev),
  }
  rec.update(_rates(times, 2.0 * b * d * d, b))
  rec['peak_rss_mb'] = rss.peak_mb
  return rec


def section_step(cfg: Config) -> list:
  out = []
  for d, k, b in cfg.step_grid:
    rec = measure_step(d, k, b, cfg.rounds)
    bu.log(
        f'step D={d} K={k} B={b}: {rec["samples_per_s"]:.3g} samples/s, '
        f'{rec["flops_per_s"] / 1e9:.1f} GFLOP/s, ratio {rec["ratio"]:.2f} '
        f'(numpy {rec["ratio_numpy"]:.2f}, jax {rec["ratio_jax"]:.2f}, '
        f'paired median {rec["ratio_paired_median"]:.2f})'
    )
    out.append(rec)
  return out


# -- breakdown ------------------------------------------------------------------------


def _breakdown_fns(d, k, b, block_counts):
  """Jitted micro-variants of the step's parts, each returning when its outputs are ready."""
  import jax
  import jax.numpy as jnp
  import face_jax
  from face_jax import engine as fje

  hi = jax.lax.Precision.HIGHEST
  engine = face_jax.Engine()
  spec = fje.MomentsSpec(num_classes=k, dim=d)
  x, raw, params = _step_inputs(d, k, b)
  dev = jax.devices()[0]
  xj = jax.device_put(x, dev)
  yj = jax.device_put(raw['label'], dev)
  mj = jax.device_put(raw['_mask'], dev)
  pj = jax.device_put({kk: np.asarray(v, np.float32) for kk, v in params.items()}, dev)
  batch = fje.Batch(xj, yj, mj)
  bounds = fje.block_bounds(d, spec.blocks)
  cols = list(zip(bounds[:-1], bounds[1:]))

  def ready(f, *args):
    return lambda: jax.block_until_ready(f(*args))

  def centre(x, y, m, shift):  # the per-block centring of Moments.from_batch, alone
    return [jnp.where(m[:, None], x[:, lo:hi] - shift[:, lo:hi][y], 0.0) for lo, hi in cols]

  def sums_segment(z, y):
    return jax.ops.segment_sum(z, y, num_segments=k), jax.ops.segment_sum(z * z, y, num_segments=k)

  def sums_one_hot(z, y):
    oh = jax.nn.one_hot(y, k, dtype=z.dtype)
    return jnp.dot(oh.T, z, precision=hi), jnp.dot(oh.T, z * z, precision=hi)

  state = jax.tree.map(lambda a: a + 1.0, fje.Moments.empty(spec))
  lo_state = fje.Moments.empty(spec)

  xla = fje.MomentsSpec(num_classes=k, dim=d, scatter_kernel='xla')
  fns = dict(_matmul_fns(x))
  fns['health'] = ready(jax.jit(lambda b: fje.health_counts(b, k)), batch)
  # The default code (on CPU: the cpu_moments kernels where they are available).
  fns['from_batch'] = ready(jax.jit(lambda p, bt: fje.Moments.from_batch(spec, p, bt)), pj, batch)
  fns['step_uncompensated'] = _engine_step(engine, spec, params, raw, compensated=False)
  fns['step'] = _engine_step(engine, spec, params, raw, compensated=True)
  # The XLA code (what GPUs and TPUs run) and its parts.
  fns['upper_scatter_bare'] = ready(jax.jit(lambda x: fje.upper_scatter(x, spec.blocks)), xj)
  fns['centre'] = ready(jax.jit(centre), xj, yj, mj, pj['shift'])
  fns['class_sums_segment_sum'] = ready(jax.jit(sums_segment), xj, yj)
  fns['class_sums_one_hot'] = ready(jax.jit(sums_one_hot), xj, yj)
  fns['two_sum_state'] = ready(
      jax.jit(lambda h, l, c: jax.tree.map(fje.two_sum, h, l, c)), state, lo_state, state
  )
  fns['from_batch_no_scatter'] = ready(
      jax.jit(
          lambda p, bt: fje.Moments.from_batch(
              fje.MomentsSpec(num_classes=k, dim=d, scatter=False), p, bt
          )
      ),
      pj,
      batch,
  )
  fns['from_batch_xla'] = ready(
      jax.jit(lambda p, bt: fje.Moments.from_batch(xla, p, bt)), pj, batch
  )
  fns['step_xla'] = _engine_step(engine, xla, params, raw, compensated=True)
  for nb in block_counts:
    if nb != spec.blocks and nb <= d:
      sp = fje.MomentsSpec(num_classes=k, dim=d, scatter_blocks=nb, scatter_kernel='xla')
      fns[f'step_xla_blocks_{nb}'] = _engine_step(engine, sp, params, raw, compensated=True)
  return fns, spec.blocks


def section_breakdown(cfg: Config) -> list:
  from face_jax import engine as fje

  out = []
  for d, k, b in cfg.breakdown_grid:
    fns, auto_blocks = _breakdown_fns(d, k, b, cfg.block_counts)
    times = bu.interleaved(
        fns,
        min_rounds=cfg.rounds.min_rounds,
        max_rounds=cfg.rounds.max_rounds,
        budget_s=2 * cfg.rounds.budget_s,
    )
    tn, tj, ts = times['numpy_matmul'], times['jax_matmul'], times['step']
    parts = {}
    for name, t in times.items():
      parts[name] = {
          'time_s': float(t.min()),
          'time_s_median': float(np.median(t)),
          'ratio_numpy': bu.ratio_min(tn, t),
          'ratio_jax': bu.ratio_min(tj, t),
          'fraction_of_step': float(t.min() / ts.min()),
      }
    rec = {
        'D': d,
        'K': k,
        'batch_size': b,
        'devices': 1,
        'auto_scatter_blocks': auto_blocks,
        'scatter_kernel': _kernel_name(fje.MomentsSpec(num_classes=k, dim=d), b),
        'rounds': int(len(ts)),
        'parts': parts,
    }
    bu.log(
        f'breakdown D={d} K={k} B={b}: '
        + ', '.join(f'{n} {p["time_s"] * 1e3:.1f} ms' for n, p in parts.items())
    )
    out.append(rec)
  return out


# -- memory (worker processes) ------------------------------------------------------------


def worker_memory(args: dict) -> dict:
  """Streams ``n`` generated samples through FaCe's plan (one pass, sample weighting); reports RSS.

  The plan is driven like ``face_jax.score`` does (``_drive_plan``), so the
  stream time and the host finalisation are timed apart.
  """
  import warnings
  import face_jax
  import face_jax.engine  # pylint: disable=g-import-not-at-top
  from face_jax import engine

  n, d, k, b = args['n'], args['dim'], args['num_classes'], args['batch_size']
  means = _class_means(0, k, d)
  pool = [_chunk(0, i, 0, b, means)[0] for i in range(4)]  # 4 noise blocks, reused

  def batches(total):
    def gen():
      done, i = 0, 0
      rng = np.random.default_rng(1)
      while done < total:
        rows = min(b, total - done)
        y = rng.integers(0, k, rows).astype(np.int32)
        yield pool[i % len(pool)][:rows] + means[y], y
        done += rows
        i += 1

    return gen

  mi = engine.get('face')
  options = mi.options(weighting='sample')

  def run(total):
    src = face_jax.engine.IterableSource(batches(total), num_classes=k, batch_size=b)
    info = face_jax.engine.StreamInfo(
        name='features', dim=d, num_classes=k, label_counts=None, extras={}, reiterable=True
    )
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      return _drive_plan(face_jax.Engine(), src, mi.plan(info, options, 'float32'), {})

  t = time.perf_counter()
  run(2 * b)  # compile once (same shapes)
  warmup_s = time.perf_counter() - t
  rss_before = bu.rss_mb()
  with bu.RssSampler(0.05) as rss:
    _, stream_s, stat_s, plan_s, passes = run(n)
  return {
      'N': n,
      'D': d,
      'K': k,
      'batch_size': b,
      'warmup_s': warmup_s,
      'stream_s': stream_s,
      'finalise_s': stat_s + plan_s,
      'samples_per_s': n / stream_s,
      'passes': passes,
      'rss_before_stream_mb': rss_before,
      'rss_sampled_peak_mb': rss.peak_mb,
      'rss_end_mb': rss.end_mb,
      'peak_rss_mb': bu.max_rss_mb(),
      'rss_growth_mb': rss.peak_mb - rss_before,
  }


def section_memory(cfg: Config) -> list:
  out = []
  for n in cfg.memory_n:
    rec = run_worker(
        'memory',
        {
            'n': n,
            'dim': cfg.memory_dim,
            'num_classes': cfg.memory_classes,
            'batch_size': cfg.memory_batch,
        },
    )
    bu.log(
        f'memory N={n:.0e}: peak RSS {rec["peak_rss_mb"]:.0f} MB (sampled during the stream '
        f'{rec["rss_sampled_peak_mb"]:.0f}, before {rec["rss_before_stream_mb"]:.0f}), '
        f'{rec["samples_per_s"]:.3g} samples/s streaming, finalise {rec["finalise_s"]:.2f} s'
    )
    out.append(rec)
  return out


# -- finalise -------------------------------------------------------------------------------


@contextlib.contextmanager
def _timed_finalize(classes, acc: list):
  """Times every ``Statistic.finalize`` call of ``classes`` (appends seconds to ``acc``)."""
  saved = {}
  for c in classes:
    saved[c] = c.__dict__.get('finalize')
    orig = c.finalize

    def wrapped(self, spec, params, _orig=orig):
      t = time.perf_counter()
      out = _orig(self, spec, params)
      acc.append(time.perf_counter() - t)
      return out

    c.finalize = wrapped
  try:
    yield
  finally:
    for c, f in saved.items():
      if f is None:
        del c.finalize
      else:
        c.finalize = f


def _drive_plan(engine, source, gen, cache: dict):
  """Runs one metric plan like ``plan.run_plans``, timing streaming and host work apart.

  ``cache`` maps a round's request keys to (finalised statistics, stream seconds,
  statistic-finalize seconds), so variants that ask for identical statistics
  stream once.
  """
  stream_s = stat_s = plan_s = 0.0
  passes = 0
  t = time.perf_counter()
  try:
    reqs = next(gen)
  except StopIteration as stop:
    return stop.value, stream_s, stat_s, time.perf_counter() - t, passes
  plan_s += time.perf_counter() - t
  while True:
    key = tuple(sorted((name, r.key()) for name, r in reqs.items()))
    if key not in cache:
      acc: list = []
      with _timed_finalize({r.stat for r in reqs.values()}, acc):
        t = time.perf_counter()
        out = engine.run_pass(source, {'features': dict(reqs)})['features']
        secs = time.perf_counter() - t
      cache[key] = (out, secs - sum(acc), sum(acc))
    out, s_secs, f_secs = cache[key]
    stream_s += s_secs
    stat_s += f_secs
    passes += 1
    t = time.perf_counter()
    try:
      reqs = gen.send({name: out[name] for name in reqs})
    except StopIteration as stop:
      plan_s += time.perf_counter() - t
      return stop.value, stream_s, stat_s, plan_s, passes
    plan_s += time.perf_counter() - t


def section_finalise(cfg: Config) -> list:
  import warnings
  import face_jax
  import face_jax.engine  # pylint: disable=g-import-not-at-top
  from face_jax import engine as engine_api
  from threadpoolctl import threadpool_limits

  blas_threads = max([i['num_threads'] for i in bu.blas_info()] or [0])
  # Untimed warm-up of every metric's host code on a tiny stream (imports, first calls).
  xw, yw = _chunk(0, 0, 0, 64, 3.0 * _class_means(0, 3, 8))
  wsrc = face_jax.engine.ArraySource(xw, yw)
  winfo = face_jax.engine.StreamInfo(
      name='features', dim=8, num_classes=3, label_counts=wsrc.label_counts
  )
  for name in _finalise_metrics(8, 3):
    mi = engine_api.get(name)
    if not mi.needs:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        _drive_plan(face_jax.Engine(), wsrc, mi.plan(winfo, mi.options(), 'float32'), {})
  out = []
  for d, k, all_variants in cfg.finalise_grid:
    n = max(10 * k, 2 * d, 2000)
    means = 3.0 * _class_means(0, k, d)
    x, y = _chunk(0, 0, 0, n, means)
    extras = {}
    names = _finalise_metrics(d, k)
    if any('source_probs' in engine_api.get(m).needs for m in names):
      logits = np.random.default_rng(2).normal(size=(n, 100))
      p = np.exp(logits - logits.max(1, keepdims=True))
      extras['source_probs'] = (p / p.sum(1, keepdims=True)).astype(np.float32)
    src = face_jax.engine.ArraySource(x, y, extras=extras, batch_size=4096)
    info = face_jax.engine.StreamInfo(
        name='features',
        dim=d,
        num_classes=k,
        label_counts=src.label_counts,
        extras=src.extras_shapes,
        reiterable=True,
    )
    engine = face_jax.Engine()
    cache: dict = {}
    for name in names:
      mi = engine_api.get(name)
      variants = METRIC_VARIANTS.get(name, ({},))
      for opts in (variants if all_variants else variants[:1]):
        options = mi.options(**opts)
        with warnings.catch_warnings():
          warnings.simplefilter('ignore')
          value, stream_s, stat_s, plan_s, passes = _drive_plan(
              engine, src, mi.plan(info, options, 'float32'), cache
          )
          # The same host work with numpy's BLAS limited to one thread (statistics cached):
          # multi-threaded OpenBLAS calls slow down badly when other processes share the cores.
          with threadpool_limits(1, user_api='blas'):
            plan_1 = _drive_plan(engine, src, mi.plan(info, options, 'float32'), cache)[3]
        score = getattr(value, 'score', value)
        rec = {
            'metric': name,
            'options': opts,
            'D': d,
            'K': k,
            'N': n,
            'passes': passes,
            'stream_s': stream_s,
            'stat_finalize_s': stat_s,
            'plan_s': plan_s,
            'finalise_s': stat_s + plan_s,
            'plan_s_1_blas_thread': plan_1,
            'blas_threads': blas_threads,
            'value': score if isinstance(score, (int, float)) or score is None else None,
        }
        bu.log(
            f'finalise {name} {opts or "default"} D={d} K={k}: {rec["finalise_s"]:.3f} s '
            f'(statistics {stat_s:.3f} s + metric {plan_s:.3f} s, metric with 1 BLAS thread '
            f'{plan_1:.3f} s; streaming {stream_s:.2f} s)'
        )
        out.append(rec)
  return out


# -- versus (worker processes) ------------------------------------------------------------


def _gen_chunks(n, d, k, b, seed, timer: list):
  """Callable returning the generator of the ``versus`` dataset's chunks; adds generation time to timer[0]."""
  means = 3.0 * _class_means(seed, k, d)

  def gen():
    for i, lo in enumerate(range(0, n, b)):
      t = time.perf_counter()
      x, y = _chunk(seed, i, lo, min(b, n - lo), means)
      timer[0] += time.perf_counter() - t
      yield x, y

  return gen


def worker_versus_stream(args: dict) -> dict:
  """face_jax.score on streamed float32 chunks (never all in memory)."""
  import face_jax

  n, d, k, b = args['n'], args['dim'], args['num_classes'], args['batch_size']
  metrics = [m for m in DENSE_METRICS if m in face_jax.metric_names()]
  timer = [0.0]
  t = time.perf_counter()
  face_jax.score(
      _gen_chunks(min(n, 2 * b), d, k, b, 0, timer), num_classes=k, batch_size=b, metrics=metrics
  )  # compilation (same shapes), reported apart
  warmup_s = time.perf_counter() - t
  timer = [0.0]
  rss_before = bu.rss_mb()
  with bu.RssSampler(0.05) as rss:
    t = time.perf_counter()
    res = face_jax.score(
        _gen_chunks(n, d, k, b, 0, timer), num_classes=k, batch_size=b, metrics=metrics
    )
    total = time.perf_counter() - t
  values = {m: getattr(v, 'score', v) for m, v in res.items()}
  return {
      'side': 'face_jax streamed float32',
      'N': n,
      'D': d,
      'K': k,
      'batch_size': b,
      'metrics': metrics,
      'warmup_s': warmup_s,
      'generate_s': timer[0],
      'time_s': total - timer[0],
      'rss_before_mb': rss_before,
      'rss_sampled_peak_mb': rss.peak_mb,
      'peak_rss_mb': bu.max_rss_mb(),
      'values': {m: (float(v) if isinstance(v, (int, float)) else None) for m, v in values.items()},
  }


def _dense_face(x: np.ndarray, y: np.ndarray, k: int):
  """FaCe the usual way: in-memory float64 class statistics, then the same host finalisation."""
  import face_jax
  from face_jax import engine

  counts = np.bincount(y, minlength=k).astype(np.float64)
  sums = np.zeros((k, x.shape[1]))
  np.add.at(sums, y, x)
  means = sums / counts[:, None]
  r = x - means[y]
  var = np.zeros_like(sums)
  np.add.at(var, y, r * r)
  var /= counts[:, None]
  w = engine.balanced_weights(counts)
  rw = r * np.sqrt(w)[y][:, None]
  within = rw.T @ rw
  mom = engine.ClassMoments(
      counts=counts, sums=sums, means=means, var_diag=var, within_scatter=within, weight=w
  )
  return face_jax.face_from_moments(mom).score


def worker_versus_dense(args: dict) -> dict:
  """The same metrics on the whole dataset in memory, float64 (face_jax.dense / dense FaCe)."""
  from face_jax import dense

  n, d, k, b = args['n'], args['dim'], args['num_classes'], args['batch_size']
  timer = [0.0]
  t = time.perf_counter()
  parts = list(_gen_chunks(n, d, k, b, 0, timer)())
  x = np.concatenate([p[0] for p in parts]).astype(np.float64)
  y = np.concatenate([p[1] for p in parts]).astype(np.int64)
  del parts
  prepare_s = time.perf_counter() - t
  rss_data = bu.rss_mb()
  fns = {
      'face': lambda: _dense_face(x, y, k),
      'hscore': lambda: dense.hscore(x, y),
      'reg_hscore': lambda: dense.reg_hscore(x, y),
      'nc1': lambda: dense.nc1(x, y),
      'logme': lambda: dense.logme(x, y),
  }
  per = {}
  for m in args['metrics']:
    with bu.RssSampler(0.05) as rss:
      t = time.perf_counter()
      v = fns[m]()
      secs = time.perf_counter() - t
    per[m] = {'time_s': secs, 'rss_sampled_peak_mb': rss.peak_mb, 'value': float(v)}
  return {
      'side': 'in-memory float64 numpy',
      'N': n,
      'D': d,
      'K': k,
      'metrics': list(args['metrics']),
      'prepare_s': prepare_s,
      'rss_with_data_mb': rss_data,
      'time_s': sum(p['time_s'] for p in per.values()),
      'per_metric': per,
      'peak_rss_mb': bu.max_rss_mb(),
  }


def section_versus(cfg: Config) -> dict:
  n, d, k, b = cfg.versus
  args = {'n': n, 'dim': d, 'num_classes': k, 'batch_size': b}
  stream = run_worker('versus_stream', args)
  dense_rec = run_worker('versus_dense', dict(args, metrics=list(cfg.dense_metrics)))
  common = [m for m in stream['metrics'] if m in dense_rec['per_metric']]
  dense_common_s = sum(dense_rec['per_metric'][m]['time_s'] for m in common)
  summary = {
      'common_metrics': common,
      'dense_time_common_s': dense_common_s,
      'stream_time_s': stream['time_s'],
      'time_ratio_dense_over_stream': dense_common_s / stream['time_s'] if common else None,
      'peak_rss_ratio_dense_over_stream': dense_rec['peak_rss_mb'] / stream['peak_rss_mb'],
      'value_rel_diff': {
          m: abs(stream['values'][m] - dense_rec['per_metric'][m]['value'])
          / max(abs(dense_rec['per_metric'][m]['value']), 1e-300)
          for m in common
          if stream['values'].get(m) is not None
      },
  }
  bu.log(
      f'versus N={n} D={d} K={k}: streamed {common} {stream["time_s"]:.2f} s, peak RSS '
      f'{stream["peak_rss_mb"]:.0f} MB; dense {dense_common_s:.2f} s (all {len(cfg.dense_metrics)} '
      f'metrics {dense_rec["time_s"]:.2f} s), peak RSS {dense_rec["peak_rss_mb"]:.0f} MB'
  )
  return {
      'N': n,
      'D': d,
      'K': k,
      'batch_size': b,
      'stream': stream,
      'dense': dense_rec,
      'summary': summary,
  }


# -- devices (worker processes) ------------------------------------------------------------


def worker_devices(args: dict) -> dict:
  """Step grid and a whole pass on ``jax.device_count()`` (fake) devices."""
  import jax
  import face_jax
  import face_jax.engine  # pylint: disable=g-import-not-at-top
  from face_jax import engine as fje

  want = args['devices']
  if jax.device_count() != want:
    raise RuntimeError(f'expected {want} devices, got {jax.device_count()}')
  rounds = Rounds(**args['rounds'])
  steps, passes = [], []
  for d, k, b in args['grid']:
    steps.append(measure_step(d, k, b, rounds))
    # A whole pass: host batches -> sharded global arrays -> step -> one psum -> finalise.
    x, raw, params = _step_inputs(d, k, b)
    batches = [(raw['features'], raw['label'])] * args['pass_steps']
    spec = fje.MomentsSpec(num_classes=k, dim=d)
    req = face_jax.engine.Request(fje.Moments, spec, params)
    engine = face_jax.Engine()
    src = face_jax.engine.IterableSource(batches, num_classes=k, batch_size=b)
    engine.run_pass(src, {'features': {'m': req}})  # compile
    ts = []
    for _ in range(max(2, rounds.min_rounds)):
      t = time.perf_counter()
      engine.run_pass(src, {'features': {'m': req}})
      ts.append(time.perf_counter() - t)
    rows = b * args['pass_steps']
    passes.append(
        {
            'D': d,
            'K': k,
            'batch_size': b,
            'devices': want,
            'steps': args['pass_steps'],
            'pass_s': float(min(ts)),
            'pass_s_median': float(np.median(ts)),
            'samples_per_s': rows / float(min(ts)),
        }
    )
  return {'devices': want, 'step': steps, 'pass': passes, 'peak_rss_mb': bu.max_rss_mb()}


def section_devices(cfg: Config, counts) -> dict:
  rounds = dataclasses.asdict(cfg.rounds)
  runs = {}
  for c in counts:
    env = {
        'XLA_FLAGS': (
            os.environ.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count={c}'
        ).strip(),
        'JAX_PLATFORMS': 'cpu',
    }
    runs[c] = run_worker(
        'devices',
        {
            'devices': c,
            'grid': [list(g) for g in cfg.devices_grid],
            'rounds': rounds,
            'pass_steps': cfg.devices_pass_steps,
        },
        env=env,
    )
  base = min(counts)
  overhead = []
  for c in counts:
    if c == base:
      continue
    for s1, sc, p1, pc in zip(
        runs[base]['step'], runs[c]['step'], runs[base]['pass'], runs[c]['pass']
    ):
      overhead.append(
          {
              'D': s1['D'],
              'K': s1['K'],
              'batch_size': s1['batch_size'],
              'devices': [base, c],
              'step_samples_per_s': [s1['samples_per_s'], sc['samples_per_s']],
              'step_speed_ratio': sc['samples_per_s'] / s1['samples_per_s'],
              'pass_samples_per_s': [p1['samples_per_s'], pc['samples_per_s']],
              'pass_speed_ratio': pc['samples_per_s'] / p1['samples_per_s'],
          }
      )
      o = overhead[-1]
      bu.log(
          f'devices D={o["D"]} K={o["K"]} B={o["batch_size"]}: {c} vs {base} devices: step '
          f'{o["step_speed_ratio"]:.2f}x, pass {o["pass_speed_ratio"]:.2f}x the speed'
      )
  return {'runs': [runs[c] for c in counts], 'comparison': overhead}


# -- driver -----------------------------------------------------------------------------------

WORKERS = {
    'memory': worker_memory,
    'versus_stream': worker_versus_stream,
    'versus_dense': worker_versus_dense,
    'devices': worker_devices,
}


def run_worker(name: str, args: dict, env: dict | None = None, timeout: float = 3600) -> dict:
  """Runs ``name`` in a fresh Python process (clean peak RSS, its own XLA flags)."""
  proc, result = bu.spawn_worker(__file__, name, args, env=env, timeout=timeout)
  if result is None:
    raise RuntimeError(
        f'worker {name} {args} failed (exit {proc.returncode}):\n'
        f'{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}'
    )
  return result


def _summary(res: dict) -> dict:
  """Targets of the benchmarks issue, judged on this run."""
  out = {}
  steps = [r for r in res.get('step', []) if r['D'] >= 512]
  if steps:
    worst = min(steps, key=lambda r: r['ratio'])
    out['step_ratio_min_D_ge_512'] = worst['ratio']
    out['step_ratio_median_D_ge_512'] = float(np.median([r['ratio'] for r in steps]))
    out['step_target'] = TARGET_STEP_RATIO
    out['step_target_met_everywhere'] = bool(worst['ratio'] >= TARGET_STEP_RATIO)
    out['step_configs_below_target'] = [
        {k: r[k] for k in ('D', 'K', 'batch_size', 'ratio', 'ratio_numpy', 'ratio_jax')}
        for r in steps
        if r['ratio'] < TARGET_STEP_RATIO
    ]
  mem = res.get('memory', [])
  if len(mem) >= 2:
    out['memory_peak_rss_mb_by_N'] = {str(r['N']): r['peak_rss_mb'] for r in mem}
    out['memory_peak_rss_spread_mb'] = max(r['peak_rss_mb'] for r in mem) - min(
        r['peak_rss_mb'] for r in mem
    )
  fin = [
      r
      for r in res.get('finalise', [])
      if r['metric'] == 'face' and r['D'] == 2048 and r['K'] == 1000
  ]
  if fin:
    worst = max(fin, key=lambda r: r['finalise_s'])
    worst1 = max(fin, key=lambda r: r['stat_finalize_s'] + r['plan_s_1_blas_thread'])
    out['face_finalise_s_D2048_K1000_max'] = worst['finalise_s']
    out['face_finalise_s_D2048_K1000_max_variant'] = worst['options']
    out['face_finalise_s_D2048_K1000_max_1_blas_thread'] = (
        worst1['stat_finalize_s'] + worst1['plan_s_1_blas_thread']
    )
    out['face_finalise_s_D2048_K1000_max_1_blas_thread_variant'] = worst1['options']
    out['face_finalise_target_s'] = TARGET_FINALISE_S
    out['face_finalise_target_met'] = bool(
        out['face_finalise_s_D2048_K1000_max'] <= TARGET_FINALISE_S
    )
    out['face_finalise_target_met_1_blas_thread'] = bool(
        out['face_finalise_s_D2048_K1000_max_1_blas_thread'] <= TARGET_FINALISE_S
    )
  if 'versus' in res:
    out['versus'] = res['versus']['summary']
  if 'devices' in res:
    out['devices_step_speed_ratio'] = [c['step_speed_ratio'] for c in res['devices']['comparison']]
    out['devices_pass_speed_ratio'] = [c['pass_speed_ratio'] for c in res['devices']['comparison']]
  return out


def markdown(res: dict) -> str:
  """Markdown tables of a results JSON (what benchmarks/README.md shows)."""
  lines = []
  h = res['host']
  lines.append(
      f"Mode `{res['mode']}`, {res['created']}, {h['processor']} ({h['cpu_count']} cores), "
      f"jax {h['jax']} ({h['jax_backend']}), numpy {h['numpy']} "
      f"({', '.join(b['internal_api'] + ' ' + str(b['version']) + ' ' + str(b['architecture']) + ' x' + str(b['num_threads']) for b in h['blas'])}), "
      f"load average at start {h['load_average'][0]:.1f}"
      + (f", at end {h['load_average_end'][0]:.1f}" if 'load_average_end' in h else '')
      + (f", total {res['total_seconds']:.0f} s" if 'total_seconds' in res else '')
      + '.'
  )
  if res.get('step'):
    lines += [
        '',
        '| D | K | batch | samples/s | GFLOP/s | numpy GFLOP/s | jax GFLOP/s | ratio | '
        'vs numpy | vs jax | paired median | peak RSS MB |',
        '|' + '---|' * 12,
    ]
    for r in res['step']:
      lines.append(
          f"| {r['D']} | {r['K']} | {r['batch_size']} | {r['samples_per_s']:.3g} | "
          f"{r['flops_per_s'] / 1e9:.1f} | {r['numpy_matmul_flops_per_s'] / 1e9:.1f} | "
          f"{r['jax_matmul_flops_per_s'] / 1e9:.1f} | **{r['ratio']:.2f}** | "
          f"{r['ratio_numpy']:.2f} | {r['ratio_jax']:.2f} | {r['ratio_paired_median']:.2f} | "
          f"{r['peak_rss_mb']:.0f} |"
      )
  for b in res.get('breakdown', []):
    lines += [
        '',
        f"Breakdown D={b['D']}, K={b['K']}, batch {b['batch_size']} "
        f"(auto blocks {b['auto_scatter_blocks']}, {b['rounds']} rounds):",
        '',
        '| part | ms (min) | ms (median) | vs numpy | vs jax | fraction of step |',
        '|---|---|---|---|---|---|',
    ]
    for name, p in b['parts'].items():
      lines.append(
          f"| {name} | {p['time_s'] * 1e3:.2f} | {p['time_s_median'] * 1e3:.2f} | "
          f"{p['ratio_numpy']:.2f} | {p['ratio_jax']:.2f} | {p['fraction_of_step']:.2f} |"
      )
  if res.get('memory'):
    lines += [
        '',
        '| N | D | K | batch | peak RSS MB | RSS before stream MB | sampled peak MB | '
        'stream s | samples/s | finalise s |',
        '|' + '---|' * 10,
    ]
    for r in res['memory']:
      lines.append(
          f"| {r['N']:,} | {r['D']} | {r['K']} | {r['batch_size']} | {r['peak_rss_mb']:.0f} | "
          f"{r['rss_before_stream_mb']:.0f} | {r['rss_sampled_peak_mb']:.0f} | "
          f"{r['stream_s']:.1f} | {r['samples_per_s']:.3g} | {r['finalise_s']:.2f} |"
      )
  if res.get('finalise'):
    lines += [
        '',
        '| metric | options | D | K | N | finalise s | statistics s | metric s | '
        'metric s, 1 BLAS thread | stream s |',
        '|' + '---|' * 10,
    ]
    for r in res['finalise']:
      o = ', '.join(f'{k}={v}' for k, v in r['options'].items()) or 'default'
      lines.append(
          f"| {r['metric']} | {o} | {r['D']} | {r['K']} | {r['N']} | {r['finalise_s']:.2f} | "
          f"{r['stat_finalize_s']:.2f} | {r['plan_s']:.2f} | {r['plan_s_1_blas_thread']:.2f} | "
          f"{r['stream_s']:.2f} |"
      )
  if res.get('versus'):
    v = res['versus']
    st, de = v['stream'], v['dense']
    lines += [
        '',
        f"N = {v['N']:,}, D = {v['D']}, K = {v['K']}:",
        '',
        '| side | metrics | time s | peak RSS MB | notes |',
        '|---|---|---|---|---|',
        f"| face_jax streamed float32 | {', '.join(st['metrics'])} | {st['time_s']:.2f} | "
        f"{st['peak_rss_mb']:.0f} | + {st['warmup_s']:.1f} s compile run, "
        f"{st['generate_s']:.1f} s data generation excluded |",
    ]
    for m, p in de['per_metric'].items():
      lines.append(
          f"| in-memory float64 | {m} | {p['time_s']:.2f} | {p['rss_sampled_peak_mb']:.0f} "
          f'(sampled) | |'
      )
    lines.append(
        f"| in-memory float64 | all of the above | {de['time_s']:.2f} | {de['peak_rss_mb']:.0f} | "
        f"data in memory: {de['rss_with_data_mb']:.0f} MB, {de['prepare_s']:.1f} s to generate |"
    )
    sm = v['summary']
    if sm.get('time_ratio_dense_over_stream') is not None:
      lines.append('')
      lines.append(
          f"Common metrics {sm['common_metrics']}: dense / streamed time "
          f"{sm['time_ratio_dense_over_stream']:.2f}, dense / streamed peak RSS "
          f"{sm['peak_rss_ratio_dense_over_stream']:.2f}; relative difference of the values "
          + ', '.join(f'{m} {d:.1e}' for m, d in sm['value_rel_diff'].items())
          + '.'
      )
  if res.get('devices'):
    lines += [
        '',
        '| D | K | batch | step samples/s (1 / 8 dev) | step 8 vs 1 | pass samples/s (1 / 8 dev) '
        '| pass 8 vs 1 |',
        '|' + '---|' * 7,
    ]
    for c in res['devices']['comparison']:
      lines.append(
          f"| {c['D']} | {c['K']} | {c['batch_size']} | {c['step_samples_per_s'][0]:.3g} / "
          f"{c['step_samples_per_s'][1]:.3g} | {c['step_speed_ratio']:.2f} | "
          f"{c['pass_samples_per_s'][0]:.3g} / {c['pass_samples_per_s'][1]:.3g} | "
          f"{c['pass_speed_ratio']:.2f} |"
      )
  return '\n'.join(lines) + '\n'


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  mode = ap.add_mutually_exclusive_group()
  mode.add_argument('--quick', action='store_true', help='a subset in <= ~2 minutes')
  mode.add_argument('--smoke', action='store_true', help='tiny configurations (tests), < 30 s')
  ap.add_argument(
      '--sections',
      default=','.join(SECTIONS),
      help=f'comma-separated subset of {",".join(SECTIONS)}',
  )
  ap.add_argument('--devices', default='1,8', help='fake CPU device counts for the devices section')
  ap.add_argument(
      '--out',
      default=None,
      help='JSON output (default benchmarks/results/' 'throughput[_quick|_smoke].json)',
  )
  ap.add_argument(
      '--markdown',
      default=None,
      metavar='JSON',
      help='print the tables of a results JSON as markdown and exit',
  )
  ap.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  ap.add_argument('--worker_args', default=None, help=argparse.SUPPRESS)
  a = ap.parse_args(argv)

  if bu.worker_or_markdown(a, WORKERS, markdown):
    return 0

  mode_name = 'smoke' if a.smoke else 'quick' if a.quick else 'full'
  cfg = MODES[mode_name]
  sections = [s.strip() for s in a.sections.split(',') if s.strip()]
  bad = [s for s in sections if s not in SECTIONS]
  if bad:
    ap.error(f'unknown sections {bad}; valid: {SECTIONS}')
  counts = sorted({int(c) for c in a.devices.split(',')})
  out_path = a.out or str(
      ROOT
      / 'benchmarks'
      / 'results'
      / ('throughput.json' if mode_name == 'full' else f'throughput_{mode_name}.json')
  )

  import jax

  res = {
      'schema': SCHEMA,
      'mode': mode_name,
      'sections': sections,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'host': bu.host_info(),
      'timing': {
          'estimator': 'min over interleaved rounds (ratio = ratio of minima); '
          'ratio_paired_median = median over rounds of per-round ratios'
      },
      'targets': {
          'step_ratio_cpu_D_ge_512': TARGET_STEP_RATIO,
          'face_finalise_s_D2048_K1000_cpu': TARGET_FINALISE_S,
      },
  }
  t_all = time.perf_counter()
  seconds = {}
  for s in sections:
    t = time.perf_counter()
    bu.log(f'== {s} ({mode_name})')
    if s == 'step':
      res['step'] = section_step(cfg)
    elif s == 'breakdown':
      res['breakdown'] = section_breakdown(cfg)
    elif s == 'memory':
      res['memory'] = section_memory(cfg)
    elif s == 'finalise':
      res['finalise'] = section_finalise(cfg)
    elif s == 'versus':
      res['versus'] = section_versus(cfg)
    elif s == 'devices':
      res['devices'] = section_devices(cfg, counts)
    seconds[s] = time.perf_counter() - t
    res['section_seconds'] = seconds
    res['summary'] = _summary(res)
    bu.write_json(out_path, res)  # partial results survive an interrupted run
  res['total_seconds'] = time.perf_counter() - t_all
  res['host']['load_average_end'] = list(os.getloadavg())
  res['summary'] = _summary(res)
  bu.write_json(out_path, res)
  bu.log(f'wrote {out_path} ({res["total_seconds"]:.0f} s)')
  print(json.dumps(bu.to_jsonable(res['summary']), indent=1))
  del jax
  return 0


if __name__ == '__main__':
  sys.exit(main())
