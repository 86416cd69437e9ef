"""Shared helpers of the face_jax benchmarks: timing, memory, host description, JSON.

Timing on a shared machine.  Every comparison in these benchmarks is made
between functions timed in the *same* process, interleaved round by round
(``interleaved``): in each round every function runs once.  Other processes
on the machine slow some rounds down; two estimates are reported:

* the ratio of the minima (``min`` over rounds of each function's time): the
  best estimate of the undisturbed times, and what the targets are judged on;
* the median over rounds of the per-round ratio (``paired median``): both
  functions of a round saw about the same load, so this shows the typical
  ratio under the load of the run.

Memory: ``peak_rss_mb`` is read from ``/proc/self/statm`` by a sampling thread
(``RssSampler``) or, for a whole worker process, from ``VmHWM`` in
``/proc/self/status`` (``max_rss_mb``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from typing import Callable, Mapping

import numpy as np

from face_jax import reports

_PAGE = os.sysconf('SC_PAGE_SIZE')


def rss_mb() -> float:
  """Current resident set size of this process in MiB (``/proc/self/statm``)."""
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * _PAGE / 2**20


def max_rss_mb() -> float:
  """Peak resident set size of this process so far in MiB.

  Read from ``VmHWM`` in ``/proc/self/status`` (the high-water mark of this
  process's own address space).  ``getrusage(...).ru_maxrss`` is only the
  fallback: on Linux it survives ``exec`` and so, in a worker started by
  ``subprocess`` (vfork + exec), it can report the *parent's* peak.
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class RssSampler:
  """Samples this process's RSS every ``interval`` seconds in a thread.

  Use as a context manager; afterwards ``peak_mb`` is the largest sample
  (including one taken on entry and one on exit), ``start_mb``/``end_mb`` the
  first and last, and ``samples`` the (seconds since entry, MiB) pairs.
  """

  def __init__(self, interval: float = 0.02):
    self.interval = float(interval)
    self.samples: list[tuple[float, float]] = []
    self._stop = threading.Event()
    self._t0 = 0.0

  def _run(self):
    while not self._stop.wait(self.interval):
      self.samples.append((time.perf_counter() - self._t0, rss_mb()))

  def __enter__(self):
    self._t0 = time.perf_counter()
    self.samples = [(0.0, rss_mb())]
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.samples.append((time.perf_counter() - self._t0, rss_mb()))
    return False

  @property
  def peak_mb(self) -> float:
    return max(v for _, v in self.samples)

  @property
  def start_mb(self) -> float:
    return self.samples[0][1]

  @property
  def end_mb(self) -> float:
    return self.samples[-1][1]


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    min_rounds: int,
    max_rounds: int,
    budget_s: float,
    warmup: int = 1,
) -> dict[str, np.ndarray]:
  """Times every function once per round, round after round.

  Args:
    fns: name -> zero-argument callable that blocks until its work is done.
    min_rounds: rounds always run.
    max_rounds: rounds at most.
    budget_s: more rounds (up to ``max_rounds``) run while the elapsed time
      is below this.
    warmup: untimed calls of each function first (compilation, caches).

  Returns:
    name -> [rounds] seconds.
  """
  for f in fns.values():
    for _ in range(warmup):
      f()
  times = {k: [] for k in fns}
  t0 = time.perf_counter()
  rounds = 0
  while rounds < min_rounds or (rounds < max_rounds and time.perf_counter() - t0 < budget_s):
    for k, f in fns.items():
      t = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t)
    rounds += 1
  return {k: np.asarray(v) for k, v in times.items()}


def ratio_min(base: np.ndarray, other: np.ndarray) -> float:
  """min(base) / min(other): how fast ``other`` runs relative to ``base`` (1 = as fast)."""
  return float(np.min(base) / np.min(other))


def ratio_paired_median(base: np.ndarray, other: np.ndarray) -> float:
  """Median over rounds of base_r / other_r."""
  return float(np.median(np.asarray(base) / np.asarray(other)))


def blas_info() -> list[dict]:
  """The BLAS libraries numpy uses (threadpoolctl), or [] if unavailable."""
  try:
    from threadpoolctl import threadpool_info
  except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
    return []
  keep = ('internal_api', 'version', 'num_threads', 'threading_layer', 'architecture')
  return [{k: i.get(k) for k in keep} for i in threadpool_info() if i.get('user_api') == 'blas']


def host_info() -> dict:
  """A description of the machine and software the numbers were measured on."""
  import jax

  info = {
      'python': platform.python_version(),
      'platform': platform.platform(),
      'processor': _cpu_model(),
      'cpu_count': os.cpu_count(),
      'numpy': np.__version__,
      'jax': jax.__version__,
      'jax_backend': jax.default_backend(),
      'devices': [str(d.device_kind) for d in jax.devices()],
      'blas': blas_info(),
      'env': {
          k: os.environ[k]
          for k in (
              'OPENBLAS_CORETYPE',
              'OPENBLAS_L2_SIZE',
              'OPENBLAS_NUM_THREADS',
              'OMP_NUM_THREADS',
              'XLA_FLAGS',
              'JAX_PLATFORMS',
          )
          if k in os.environ
      },
      'load_average': list(os.getloadavg()),
      'mem_total_mb': _mem_total_mb(),
  }
  return info


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def _mem_total_mb() -> float | None:
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemTotal:'):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return None


def to_jsonable(obj):
  """Benchmark JSON values: ``face_jax.reports.jsonable`` with non-finite floats as None."""
  return reports.jsonable(obj, nonfinite='null')


def write_json(path: str, data: dict) -> None:
  reports.write_json(path, data, nonfinite='null')


# Worker processes print their result as one line: RESULT_PREFIX + JSON.
RESULT_PREFIX = 'RESULT '


def spawn_worker(
    script: str, name: str, args: dict, *, env: dict | None = None, timeout: float = 3600
) -> tuple[subprocess.CompletedProcess, dict | None]:
  """Runs ``script --worker name --worker_args JSON`` in a fresh Python process.

  The repository root goes first on the worker's PYTHONPATH (it measures this checkout).

  Returns:
    (the finished process, its result dict, or None when it printed none).

  Raises:
    subprocess.TimeoutExpired: no exit within ``timeout`` seconds.
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  full_env = dict(os.environ)
  full_env.update(env or {})
  full_env['PYTHONPATH'] = os.pathsep.join(
      [root] + [p for p in full_env.get('PYTHONPATH', '').split(os.pathsep) if p]
  )
  proc = subprocess.run(
      [
          sys.executable,
          os.path.abspath(script),
          '--worker',
          name,
          '--worker_args',
          json.dumps(args),
      ],
      cwd=root,
      env=full_env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_PREFIX)]
  result = json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines and proc.returncode == 0 else None
  return proc, result


def worker_or_markdown(a, workers: Mapping[str, Callable], markdown: Callable[[dict], str]) -> bool:
  """Handles a benchmark's ``--markdown JSON`` and ``--worker`` modes; True if one ran."""
  if a.markdown:
    with open(a.markdown) as f:
      print(markdown(json.load(f)), end='')
    return True
  if a.worker:
    res = workers[a.worker](json.loads(a.worker_args))
    print(RESULT_PREFIX + json.dumps(to_jsonable(res)), flush=True)
    return True
  return False


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def forward_and_stats(extractor, layer: str, engine, batches, num_classes: int):
  """(forward, forward_stats): callables timing a Flax model's forward pass alone and the
  engine's jitted step (the same forward fused with FaCe's Moments accumulation) over
  device-resident global ``batches``; each returns when its results are ready."""
  import jax  # pylint: disable=g-import-not-at-top
  from face_jax import engine as fje

  k, d = num_classes, extractor.feature_dim(layer)
  params = engine.replicate(extractor.params)
  fwd = jax.jit(extractor.feature_fn((layer,)))
  feat = fje.ModelFeaturizer(extractor.feature_fn((layer,)), (layer,))
  layout = ((layer, k, ((fje.Moments, fje.MomentsSpec(num_classes=k, dim=d)),)),)
  step = engine.build_step(layout, feat)
  pdev = engine.replicate(
      {layer: ({'shift': np.zeros((k, d), np.float32), 'weight': np.ones((k,), np.float32)},)}
  )

  def forward():
    out = None
    for b in batches:
      out = fwd(params, b)
    jax.block_until_ready(out)

  def forward_stats():
    states = engine.init_states(layout)
    for b in batches:
      states, _ = step(states, b, pdev, params)
    jax.block_until_ready(states)

  return forward, forward_stats
