"""face_jax against the authors' own implementations: time, memory and values, side by side.

Usage (from the repository root)::

    python benchmarks/versus_reference.py --references_dir=/path/to/refs          # full size
    python benchmarks/versus_reference.py --references_dir=/path/to/refs --quick  # ~2 minutes
    python benchmarks/versus_reference.py --markdown benchmarks/results/versus_reference.json

``--references_dir`` holds the authors' repositories checked out at the commits
in ``REFERENCES`` (subdirectories ``LogME``, ``Transfer-Learning-Library``,
``SFDA``, ``NCTI``); their code is never part of this repository.  A reference
that is missing (or fails to import) is recorded as ``not available: <why>``
and only the face_jax side runs.

Data: seeded N x D float32 features with K Gaussian classes (anisotropic noise),
labels, and source-model probabilities [N, Ks] (softmax of a seeded linear map
of the features), written once to .npy files in a temporary directory that
every worker memory-maps and copies into memory before it is measured.

Every measurement runs in its own Python process: the reference function of a
metric, ``face_jax.score(..., metrics=(metric,))``, or one ``face_jax.score``
call computing all eight metrics.  Rounds interleave them (reference m,
face_jax m, reference m', ...) and repeat (``--rounds``); the minimum over
rounds is reported with every value.  A face_jax worker first calls
``face_jax.score`` on the first ``--warmup_rows`` rows with the same batch size
(compilation, reported apart as ``compile_s``), then times the call on the
full data.  Memory: the peak resident set size of the worker during the timed
call over its RSS just before it (``VmHWM`` reset through
``/proc/self/clear_refs``, and an RSS sampling thread).

The JSON schema and how to get the references are in benchmarks/README.md
("Against the authors' code").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.util
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Benchmark this checkout's face_jax (not an installed copy).
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import _bench_util as bu  # noqa: E402

SCHEMA = 'face_jax.benchmarks.versus_reference/1'
METRICS = ('logme', 'hscore', 'reg_hscore', 'transrate', 'leep', 'nce', 'sfda', 'ncti')
SOURCE_METRICS = ('leep', 'nce')  # need source_probs
NCTI_COMPONENTS = ('s_seli', 's_ncc', 'vc')
EXACT_PCA_SOLVERS = ('full', 'covariance_eigh')
REFERENCE_SEED = 1  # the authors' evaluation scripts call fix_python_seed(1) first
_CHUNK = 8192  # generation chunk: fixes the data for a given (N, D, K, Ks, seed)

# The authors' repositories (directory under --references_dir -> origin and pinned commit).
REFERENCES = {
    'LogME': {
        'repository': 'https://github.com/thuml/LogME',
        'commit': '56551ca94a3295bcc37e6a01b1291911af985f07',
    },
    'Transfer-Learning-Library': {
        'repository': 'https://github.com/thuml/Transfer-Learning-Library',
        'commit': 'c4aa59eb565650a552b809411601d0589efbbfe4',
    },
    'SFDA': {
        'repository': 'https://github.com/TencentARC/SFDA',
        'commit': '3b7edf76bd682acb1eba4f4c5eb7ea7f3f7f6c59',
    },
    'NCTI': {
        'repository': 'https://github.com/BUserName/NCTI',
        'commit': 'b18d39514a3f2a7a949500b467a38b93de1428e4',
    },
}

# metric -> (reference directory, the exact call timed).  x: [N, D] float32 features,
# y: [N] int64 labels, p: [N, Ks] float32 source probabilities.
REFERENCE_CALLS = {
    'logme': ('LogME', 'LogME.py::LogME(regression=False).fit(x, y)'),
    'hscore': ('Transfer-Learning-Library', 'tllib/ranking/hscore.py::h_score(x, y)'),
    'reg_hscore': (
        'Transfer-Learning-Library',
        'tllib/ranking/hscore.py::regularized_h_score(x, y)',
    ),
    'transrate': (
        'Transfer-Learning-Library',
        'tllib/ranking/transrate.py::transrate(x, y)  (eps=1e-4)',
    ),
    'leep': ('LogME', 'LEEP.py::LEEP(p, y)'),
    'nce': ('LogME', 'NCE.py::NCE(np.argmax(p, axis=1), y)  (argmax timed too)'),
    'sfda': (
        'SFDA',
        "metrics.py::SFDA_Score(x, y)  (on the worker's own copy of x: it " 'overwrites its input)',
    ),
    'ncti': ('NCTI', 'metrics.py::NCTI_Score(x, y) -> (s_seli, s_ncc, vc)'),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """The data and the repetitions of one run."""

  n: int = 50_000
  dim: int = 1024
  num_classes: int = 100
  source_classes: int = 1000
  rounds: int = 2
  warmup_rows: int = 2000
  batch_size: int = 8192
  seed: int = 0


QUICK = Config(n=3000, dim=64, num_classes=10, source_classes=50, rounds=1, warmup_rows=500)


# -- data ---------------------------------------------------------------------------------


def _data_chunks(cfg: Config):
  """Yields (features [b, D] float32, labels [b] int64, source_probs [b, Ks] float32)."""
  n, d, k, ks = cfg.n, cfg.dim, cfg.num_classes, cfg.source_classes
  rng = np.random.default_rng([cfg.seed, 0])
  # Noise s.d. decays as j^-1/4 over the dimensions; class means ~ N(0, (3 / sqrt(D))² ·
  # noise variance): two classes are ~4 noise s.d. apart (whitened) at any D, so that no
  # metric saturates.
  noise_sd = (1.0 + np.arange(d)) ** -0.25
  means = rng.normal(size=(k, d)) * noise_sd * (3.0 / np.sqrt(d))
  offset = rng.normal(size=d) * 0.5
  prior = 1.0 + rng.uniform(size=k) * 2.0  # class frequencies within 1:3
  prior /= prior.sum()
  # Source logits, a seeded linear map of the features: each source class is a random mix of
  # the target classes' directions (so P(y | z) is informative), plus a random projection.
  mix = rng.normal(size=(k, ks)) * 2.0
  w = (means.T / np.mean(np.sum(means * means, axis=1))) @ mix
  w += rng.normal(size=(d, ks)) / np.sqrt(np.sum(noise_sd * noise_sd))
  bias = rng.normal(size=ks) * 0.5
  for i, lo in enumerate(range(0, n, _CHUNK)):
    rows = min(_CHUNK, n - lo)
    r = np.random.default_rng([cfg.seed, 1 + i])
    y = r.choice(k, size=rows, p=prior)
    if i == 0:
      y[: min(k, rows)] = np.arange(min(k, rows))  # every class occurs
    x = offset + means[y] + r.normal(size=(rows, d)) * noise_sd
    logits = (x - offset) @ w + bias
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    yield x.astype(np.float32), y.astype(np.int64), p.astype(np.float32)


def make_data(cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The benchmark's data in memory: (features [N, D] f32, labels [N] i64, probs [N, Ks] f32)."""
  parts = list(_data_chunks(cfg))
  return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))


def write_data(cfg: Config, directory: str) -> dict[str, str]:
  """Writes the data chunk by chunk to ``features.npy``, ``labels.npy``, ``source_probs.npy``."""
  shapes = {
      'features': ((cfg.n, cfg.dim), np.float32),
      'labels': ((cfg.n,), np.int64),
      'source_probs': ((cfg.n, cfg.source_classes), np.float32),
  }
  paths = {k: os.path.join(directory, f'{k}.npy') for k in shapes}
  out = {
      k: np.lib.format.open_memmap(paths[k], mode='w+', dtype=t, shape=s)
      for k, (s, t) in shapes.items()
  }
  lo = 0
  for x, y, p in _data_chunks(cfg):
    hi = lo + len(y)
    out['features'][lo:hi], out['labels'][lo:hi], out['source_probs'][lo:hi] = x, y, p
    lo = hi
  for a in out.values():
    a.flush()
  del out
  return paths


def _load(paths: dict, names) -> dict[str, np.ndarray]:
  """Memory-maps the .npy files and copies them into this process's memory."""
  return {k: np.array(np.load(paths[k], mmap_mode='r')) for k in names}


# -- measurement inside a worker ------------------------------------------------------------


def _reset_peak_rss() -> bool:
  """Resets this process's ``VmHWM`` to its current RSS (Linux ``clear_refs`` 5)."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _timed(fn) -> tuple[object, dict]:
  """Calls ``fn()`` once: (its value, {time_s, rss_before_mb, peak_rss_over_start_mb})."""
  rss_before = bu.rss_mb()
  hwm_reset = _reset_peak_rss()
  with bu.RssSampler(0.01) as rss:
    t = time.perf_counter()
    value = fn()
    secs = time.perf_counter() - t
  peak = max(rss.peak_mb, bu.max_rss_mb() if hwm_reset else 0.0)
  return value, {
      'time_s': secs,
      'rss_before_mb': rss_before,
      'peak_rss_over_start_mb': peak - rss_before,
      'vmhwm_reset': hwm_reset,
  }


def _load_file_module(path: pathlib.Path, name: str):
  """Imports one source file as a module (without its package's ``__init__``)."""
  spec = importlib.util.spec_from_file_location(name, str(path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _recording_pca(pca_cls, record: dict, solver: str | None):
  """A scikit-learn PCA that records the solver it used (and, with ``solver``, forces it)."""

  class RecordingPCA(pca_cls):

    def fit_transform(self, X, y=None):
      if solver is not None:
        self.svd_solver = solver
      out = super().fit_transform(X, y)
      record['pca_solver'] = getattr(self, '_fit_svd_solver', self.svd_solver)
      return out

  return RecordingPCA


def _reference_fn(metric: str, ref_dir: pathlib.Path, exact_pca: bool, record: dict):
  """Imports the reference of ``metric`` (untimed) and returns fn(x, y, p) -> value."""
  if metric in ('logme', 'leep', 'nce', 'sfda', 'ncti'):
    sys.path.insert(0, str(ref_dir))  # their modules import siblings (``utils``, ...)
  if metric == 'logme':
    from LogME import LogME  # pylint: disable=g-import-not-at-top  # compiles its numba code

    return lambda x, y, p: LogME(regression=False).fit(x, y)
  if metric == 'leep':
    from LEEP import LEEP  # pylint: disable=g-import-not-at-top

    return lambda x, y, p: LEEP(p, y)
  if metric == 'nce':
    from NCE import NCE  # pylint: disable=g-import-not-at-top

    return lambda x, y, p: NCE(np.argmax(p, axis=1), y)
  if metric in ('hscore', 'reg_hscore', 'transrate'):
    # tllib/__init__.py imports every sub-package (torch, timm, ...); the ranking files
    # need only numpy and scikit-learn, so each is loaded on its own.
    ranking = ref_dir / 'tllib' / 'ranking'
    if metric == 'transrate':
      mod = _load_file_module(ranking / 'transrate.py', 'tllib_ranking_transrate')
      return lambda x, y, p: mod.transrate(x, y)
    mod = _load_file_module(ranking / 'hscore.py', 'tllib_ranking_hscore')
    fn = mod.h_score if metric == 'hscore' else mod.regularized_h_score
    return lambda x, y, p: fn(x, y)
  import metrics as ref_metrics  # pylint: disable=g-import-not-at-top

  if metric == 'sfda':
    return lambda x, y, p: ref_metrics.SFDA_Score(x, y)
  ref_metrics.PCA = _recording_pca(ref_metrics.PCA, record, 'full' if exact_pca else None)
  return lambda x, y, p: tuple(float(v) for v in ref_metrics.NCTI_Score(x, y))


def worker_reference(args: dict) -> dict:
  """One reference function on the full data, in this fresh process."""
  metric = args['metric']
  record = {}
  try:
    fn = _reference_fn(metric, pathlib.Path(args['ref_dir']), args.get('exact_pca', False), record)
  except Exception as e:  # pylint: disable=broad-except  # any import failure is reported
    return {'status': f'not available: {type(e).__name__}: {e}'}
  # The worker's own in-memory copies (SFDA_Score overwrites its X with the ConfMix features).
  data = _load(
      args['paths'], ('labels', 'source_probs' if metric in SOURCE_METRICS else 'features')
  )
  x, y, p = data.get('features'), data['labels'], data.get('source_probs')
  random.seed(REFERENCE_SEED)
  np.random.seed(REFERENCE_SEED)
  try:
    with contextlib.redirect_stdout(sys.stderr):  # the references print diagnostics
      value, rec = _timed(lambda: fn(x, y, p))
  except Exception as e:  # pylint: disable=broad-except
    return {'status': f'failed: {type(e).__name__}: {e}'}
  rec.update(status='ok', value=_plain(value), **record)
  return rec


def worker_face_jax(args: dict) -> dict:
  """``face_jax.score`` of ``args['metrics']``: a warm-up (compile) call, then the timed one."""
  import face_jax  # pylint: disable=g-import-not-at-top

  metrics = tuple(args['metrics'])
  names = ['features', 'labels'] + (['source_probs'] if set(metrics) & set(SOURCE_METRICS) else [])
  data = _load(args['paths'], names)
  k, b, w = args['num_classes'], args['batch_size'], args['warmup_rows']

  def call(rows):
    kw = {'source_probs': data['source_probs'][:rows]} if 'source_probs' in data else {}
    return face_jax.score(
        data['features'][:rows],
        data['labels'][:rows],
        metrics=metrics,
        num_classes=k,
        batch_size=b,
        **kw,
    )

  t = time.perf_counter()
  call(w)
  compile_s = time.perf_counter() - t
  res, rec = _timed(lambda: call(None))
  rec.update(
      compile_s=compile_s,
      values={m: _plain(res[m]) for m in metrics},
      face_jax_file=face_jax.__file__,
  )
  return rec


def _plain(v):
  """A metric value as JSON: a float, or NCTI's components as {s_seli, s_ncc, vc}."""
  if hasattr(v, 'components'):
    return {c: float(x) for c, x in v.components().items()}
  if isinstance(v, tuple):
    return dict(zip(NCTI_COMPONENTS, (float(x) for x in v)))
  return float(v)


WORKERS = {'reference': worker_reference, 'face_jax': worker_face_jax}


def run_worker(name: str, args: dict, timeout: float) -> dict:
  """Runs ``name`` in a fresh Python process; its result, or {'status': 'failed: ...'}."""
  try:
    proc, result = bu.spawn_worker(__file__, name, args, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {'status': f'failed: no result within {timeout:.0f} s'}
  if result is None:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['']
    return {
        'status': f'failed: exit {proc.returncode}: {tail[0][:300]}',
        'stderr_tail': proc.stderr[-3000:],
    }
  return result


# -- references: where, which commit ---------------------------------------------------------


def _commit_of(directory: pathlib.Path, override: str | None) -> tuple[str | None, str]:
  """(commit, where it was read): git metadata, a COMMIT file, or ``--reference_commits``."""
  if (directory / '.git').exists():
    proc = subprocess.run(
        ['git', '-C', str(directory), 'rev-parse', 'HEAD'], capture_output=True, text=True
    )
    if proc.returncode == 0:
      return proc.stdout.strip(), 'git'
  if (directory / 'COMMIT').is_file():
    return (directory / 'COMMIT').read_text().strip(), 'COMMIT file'
  if override:
    return override, '--reference_commits'
  return None, 'unknown'


def reference_info(references_dir: str | None, overrides: dict[str, str]) -> dict:
  """Per reference: directory present?, the commit it holds, and the pinned commit."""
  out = {}
  for name, ref in REFERENCES.items():
    rec = {
        'repository': ref['repository'],
        'pinned_commit': ref['commit'],
        'commit': None,
        'commit_source': None,
        'matches_pinned': None,
    }
    d = pathlib.Path(references_dir) / name if references_dir else None
    if d is None:
      rec['status'] = 'not available: no --references_dir'
    elif not d.is_dir():
      rec['status'] = f'not available: no directory {name} under --references_dir'
    elif not any(d.iterdir()):
      rec['status'] = f'not available: directory {name} is empty'
    else:
      rec['status'] = 'ok'
      rec['commit'], rec['commit_source'] = _commit_of(d, overrides.get(name))
      rec['matches_pinned'] = rec['commit'] == ref['commit'] if rec['commit'] else None
    out[name] = rec
  return out


# -- the run ----------------------------------------------------------------------------------


def _rel_diff(a, ref):
  """|a - ref| / |ref| (per component for NCTI); None if either side is missing."""
  if a is None or ref is None:
    return None
  if isinstance(ref, dict):
    return {c: _rel_diff(a[c], ref[c]) for c in ref}
  return abs(a - ref) / max(abs(ref), 1e-300)


def _side_summary(rounds: list[dict], value_key: str) -> dict:
  ok = [r for r in rounds if r.get('status', 'ok') == 'ok']
  if not ok:
    return {'times_s': [], 'time_s': None, 'peak_rss_over_start_mb': None, value_key: None}
  out = {
      'times_s': [r['time_s'] for r in ok],
      'time_s': min(r['time_s'] for r in ok),
      'peak_rss_over_start_mb': max(r['peak_rss_over_start_mb'] for r in ok),
      'rss_before_mb': ok[-1]['rss_before_mb'],
      value_key: ok[-1][value_key],
  }
  if 'compile_s' in ok[0]:
    out['compile_s'] = [r['compile_s'] for r in ok]
  return out


def _ratio(a, b):
  return a / b if a is not None and b else None


def _metric_call(m: str) -> str:
  src = ', source_probs=p' if m in SOURCE_METRICS else ''
  return f"face_jax.score(x, y{src}, metrics=('{m}',), num_classes=K, batch_size=B)"


def run(
    cfg: Config, references_dir: str | None, overrides: dict, timeout: float, data_dir: str
) -> dict:
  """Generates the data, runs every worker round by round, and summarises."""
  refs = reference_info(references_dir, overrides)
  t = time.perf_counter()
  paths = write_data(cfg, data_dir)
  generate_s = time.perf_counter() - t
  common = {
      'paths': paths,
      'num_classes': cfg.num_classes,
      'batch_size': min(cfg.batch_size, cfg.n),
      'warmup_rows': min(cfg.warmup_rows, cfg.n),
  }
  ref_rounds = {m: [] for m in METRICS}
  exact_rounds = []
  fj_rounds = {m: [] for m in METRICS}
  all_rounds = []
  status = {m: refs[REFERENCE_CALLS[m][0]]['status'] for m in METRICS}
  for r in range(cfg.rounds):
    for m in METRICS:
      ref_name = REFERENCE_CALLS[m][0]
      if status[m] == 'ok':
        args = {
            'metric': m,
            'paths': paths,
            'ref_dir': str(pathlib.Path(references_dir) / ref_name),
        }
        rec = run_worker('reference', args, timeout)
        if rec['status'].startswith('not available'):
          status[m] = rec['status']
        else:
          ref_rounds[m].append(rec)
        _log_rec(f'round {r + 1} reference {m}', rec)
        if m == 'ncti' and status[m] == 'ok':
          rec = run_worker('reference', dict(args, exact_pca=True), timeout)
          exact_rounds.append(rec)
          _log_rec(f'round {r + 1} reference {m} (PCA svd_solver=full)', rec)
      rec = run_worker('face_jax', dict(common, metrics=[m]), timeout)
      if rec.get('status', 'ok') != 'ok':
        raise RuntimeError(f'face_jax worker {m} {rec["status"]}\n{rec.get("stderr_tail", "")}')
      fj_rounds[m].append(rec)
      _log_rec(f'round {r + 1} face_jax {m}', rec)
    rec = run_worker('face_jax', dict(common, metrics=list(METRICS)), timeout)
    if rec.get('status', 'ok') != 'ok':
      raise RuntimeError(f'face_jax worker (all) {rec["status"]}\n{rec.get("stderr_tail", "")}')
    all_rounds.append(rec)
    _log_rec(f'round {r + 1} face_jax all eight', rec)

  per_metric = {}
  for m in METRICS:
    ref_name, call = REFERENCE_CALLS[m]
    failed = [x['status'] for x in ref_rounds[m] if x['status'] != 'ok']
    ref_status = (
        status[m]
        if status[m] != 'ok'
        else (failed[0] if failed and len(failed) == len(ref_rounds[m]) else 'ok')
    )
    ref = dict(
        reference=ref_name, call=call, status=ref_status, **_side_summary(ref_rounds[m], 'value')
    )
    fj_values = [{'status': 'ok', **x, 'value': x['values'][m]} for x in fj_rounds[m]]
    fj = dict(call=_metric_call(m), **_side_summary(fj_values, 'value'))
    rec = {
        'reference': ref,
        'face_jax': fj,
        'time_ratio_reference_over_face_jax': _ratio(ref['time_s'], fj['time_s']),
        'rel_diff': _rel_diff(fj['value'], ref['value']),
    }
    if m == 'ncti':
      rec['reference_pca_solver'] = next(
          (x.get('pca_solver') for x in ref_rounds[m] if x['status'] == 'ok'), None
      )
      rec['reference_pca_exact'] = (
          None
          if rec['reference_pca_solver'] is None
          else rec['reference_pca_solver'] in EXACT_PCA_SOLVERS
      )
      ex = dict(
          call=call + " with sklearn PCA(svd_solver='full')",
          status=(exact_rounds[-1]['status'] if exact_rounds else ref_status),
          **_side_summary(exact_rounds, 'value'),
      )
      rec['reference_exact_pca'] = ex
      rec['rel_diff_exact_pca'] = _rel_diff(fj['value'], ex['value'])
    per_metric[m] = rec

  fj_all = _side_summary([{'status': 'ok', **x} for x in all_rounds], 'values')
  ref_times = [per_metric[m]['reference']['time_s'] for m in METRICS]
  ref_sum = (
      sum(t for t in ref_times if t is not None) if all(t is not None for t in ref_times) else None
  )
  all_eight = {
      'call': 'face_jax.score(x, y, source_probs=p, metrics='
      + repr(METRICS)
      + ', num_classes=K, batch_size=B)',
      'face_jax': fj_all,
      'face_jax_single_metric_sum_s': sum(per_metric[m]['face_jax']['time_s'] for m in METRICS),
      'reference_sum_s': ref_sum,
      'time_ratio_reference_sum_over_face_jax': _ratio(ref_sum, fj_all['time_s']),
      'rel_diff': {
          m: _rel_diff(fj_all['values'][m], per_metric[m]['reference']['value']) for m in METRICS
      },
  }
  return {
      'data': {
          'N': cfg.n,
          'D': cfg.dim,
          'K': cfg.num_classes,
          'Ks': cfg.source_classes,
          'seed': cfg.seed,
          'generate_s': generate_s,
          'batch_size': common['batch_size'],
          'warmup_rows': common['warmup_rows'],
          'rounds': cfg.rounds,
      },
      'references': refs,
      'per_metric': per_metric,
      'all_eight': all_eight,
  }


def _log_rec(what: str, rec: dict) -> None:
  if rec.get('status', 'ok') != 'ok':
    bu.log(f'{what}: {rec["status"]}')
  else:
    extra = f', compile {rec["compile_s"]:.2f} s' if 'compile_s' in rec else ''
    bu.log(
        f'{what}: {rec["time_s"]:.3f} s{extra}, '
        f'peak RSS +{rec["peak_rss_over_start_mb"]:.0f} MB'
    )


# -- reporting ---------------------------------------------------------------------------------


def _fmt(v, spec='.3g', none='–'):
  return none if v is None else format(v, spec)


def _fmt_diff(d) -> str:
  if d is None:
    return '–'
  if isinstance(d, dict):
    return ', '.join(f'{c} {_fmt(v, ".1e")}' for c, v in d.items())
  return _fmt(d, '.1e')


def markdown(res: dict) -> str:
  """The results as Markdown: the setup, one row per metric, the all-eight call."""
  d, h = res['data'], res['host']
  lines = [
      f"Mode `{res['mode']}`, {res['created']}: N = {d['N']:,}, D = {d['D']}, K = {d['K']}, "
      f"Ks = {d['Ks']}, float32, {d['rounds']} round(s), minimum reported; "
      f"{h['processor']} ({h['cpu_count']} cores), jax {h['jax']}, numpy {h['numpy']}, "
      f"load average at start {h['load_average'][0]:.1f}.",
      '',
      '| reference | commit run | status |',
      '|---|---|---|',
  ]
  for name, r in res['references'].items():
    commit = (r['commit'] or '?')[:12] + (
        '' if r['matches_pinned'] in (True, None) else f" (pinned {r['pinned_commit'][:12]})"
    )
    lines.append(f"| {name} | {commit if r['commit'] else '–'} | {r['status']} |")
  lines += [
      '',
      '| metric | reference call | reference s | face_jax s | reference / face_jax '
      '| face_jax compile s | peak RSS +MB (ref / face_jax) | relative difference |',
      '|' + '---|' * 8,
  ]
  for m, r in res['per_metric'].items():
    ref, fj = r['reference'], r['face_jax']
    ref_s = _fmt(ref['time_s'], '.2f') if ref['status'] == 'ok' else ref['status'].split(':')[0]
    lines.append(
        f"| {m} | `{ref['call']}` | {ref_s} | {_fmt(fj['time_s'], '.2f')} | "
        f"{_fmt(r['time_ratio_reference_over_face_jax'], '.2f')} | "
        f"{_fmt(min(fj['compile_s']), '.1f')} | "
        f"{_fmt(ref['peak_rss_over_start_mb'], '.0f')} / "
        f"{_fmt(fj['peak_rss_over_start_mb'], '.0f')} | {_fmt_diff(r['rel_diff'])} |"
    )
  a = res['all_eight']
  lines.append(
      f'| all eight, one call | sum of the references | '
      f"{_fmt(a['reference_sum_s'], '.2f')} "
      f"| {_fmt(a['face_jax']['time_s'], '.2f')} | "
      f"{_fmt(a['time_ratio_reference_sum_over_face_jax'], '.2f')} | "
      f"{_fmt(min(a['face_jax']['compile_s']), '.1f')} | – / "
      f"{_fmt(a['face_jax']['peak_rss_over_start_mb'], '.0f')} | |"
  )
  n = res['per_metric'].get('ncti')
  if n and n['reference']['status'] == 'ok':
    lines += [
        '',
        f"NCTI: the reference's PCA(64) used svd_solver='{n['reference_pca_solver']}' "
        f"({'exact' if n['reference_pca_exact'] else 'randomized, seeded by np.random'}); "
        f"face_jax's PCA is exact. Against the reference with PCA(svd_solver='full'): "
        f"{_fmt_diff(n['rel_diff_exact_pca'])} "
        f"({_fmt(n['reference_exact_pca']['time_s'], '.2f')} s).",
    ]
  lines += [
      '',
      f"face_jax run alone per metric: {a['face_jax_single_metric_sum_s']:.2f} s in all; "
      'compile time is the warm-up call on the first '
      f"{d['warmup_rows']:,} rows (same batch size, {d['batch_size']}).",
  ]
  return '\n'.join(lines) + '\n'


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument(
      '--references_dir',
      default=None,
      help='directory holding LogME/, Transfer-Learning-Library/, SFDA/, NCTI/',
  )
  ap.add_argument(
      '--reference_commits',
      default='',
      help='NAME=COMMIT,... for checkouts without git metadata or a COMMIT file',
  )
  ap.add_argument(
      '--quick',
      action='store_true',
      help=f'a small configuration: N={QUICK.n}, D={QUICK.dim}, K={QUICK.num_classes}, '
      f'Ks={QUICK.source_classes}, {QUICK.rounds} round',
  )
  default = Config()
  ap.add_argument('--n', type=int, default=None, help=f'samples (default {default.n})')
  ap.add_argument('--dim', type=int, default=None, help=f'feature dimension ({default.dim})')
  ap.add_argument(
      '--num_classes', type=int, default=None, help=f'target classes K ({default.num_classes})'
  )
  ap.add_argument(
      '--source_classes',
      type=int,
      default=None,
      help=f'source classes Ks ({default.source_classes})',
  )
  ap.add_argument('--rounds', type=int, default=None, help=f'rounds ({default.rounds})')
  ap.add_argument(
      '--warmup_rows',
      type=int,
      default=None,
      help=f'rows of the compile call ({default.warmup_rows})',
  )
  ap.add_argument(
      '--batch_size',
      type=int,
      default=None,
      help=f'face_jax batch size (default {default.batch_size}, at most N)',
  )
  ap.add_argument('--seed', type=int, default=None, help='data seed (0)')
  ap.add_argument('--timeout', type=float, default=3600.0, help='seconds per worker process')
  ap.add_argument(
      '--out',
      default=None,
      help='JSON output (default benchmarks/results/'
      'versus_reference[_quick].json; the Markdown goes beside it as .md)',
  )
  ap.add_argument(
      '--markdown',
      default=None,
      metavar='JSON',
      help='print the table of a results JSON as Markdown and exit',
  )
  ap.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  ap.add_argument('--worker_args', default=None, help=argparse.SUPPRESS)
  a = ap.parse_args(argv)

  if bu.worker_or_markdown(a, WORKERS, markdown):
    return 0

  base = QUICK if a.quick else default
  cfg = dataclasses.replace(
      base,
      **{
          f.name: getattr(a, f.name)
          for f in dataclasses.fields(Config)
          if getattr(a, f.name) is not None
      },
  )
  overrides = dict(kv.split('=', 1) for kv in a.reference_commits.split(',') if kv.strip())
  mode = 'quick' if a.quick else 'full'
  out = a.out or str(
      ROOT
      / 'benchmarks'
      / 'results'
      / ('versus_reference.json' if mode == 'full' else 'versus_reference_quick.json')
  )
  res = {
      'schema': SCHEMA,
      'mode': mode,
      'command': [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:],
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'host': bu.host_info(),
      'timing': 'each measurement in its own process; minimum over interleaved rounds; '
      'face_jax compile time (warm-up call) reported apart',
  }
  t = time.perf_counter()
  data_dir = tempfile.mkdtemp(prefix='versus_reference_')
  try:
    res.update(run(cfg, a.references_dir, overrides, a.timeout, data_dir))
  finally:
    shutil.rmtree(data_dir, ignore_errors=True)
  res['total_seconds'] = time.perf_counter() - t
  res['host']['load_average_end'] = list(os.getloadavg())
  bu.write_json(out, res)
  md = markdown(res)
  with open(os.path.splitext(out)[0] + '.md', 'w') as f:
    f.write(md)
  print(md, end='')
  bu.log(f'wrote {out} ({res["total_seconds"]:.0f} s)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
