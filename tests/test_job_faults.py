"""Faults in the batch job (face_jax.jobs, scripts/score.py): kill -9 at random steps, corrupt
checkpoints, a full disk, a dead process among several, a bad batch late in the run."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from face_jax import InputError, jobs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _features(tmp_path, n=300, seed=0, probs=False):
  rng = np.random.default_rng(seed)
  y = np.arange(n) % 5
  x = (rng.normal(size=(n, 12)) + 2.0 * np.eye(12)[y]).astype(np.float32)
  xb = 1.5 * x[:, :8] + 0.3 * rng.normal(size=(n, 8))
  extra = {}
  if probs:  # source-model probabilities over 6 source classes
    logits = np.concatenate([x[:, :5], np.zeros((n, 1))], axis=1)
    p = np.exp(logits - logits.max(1, keepdims=True))
    extra = {'source_probs': (p / p.sum(1, keepdims=True)).astype(np.float32)}
  np.savez(tmp_path / 'a.npz', features=x, labels=y, **extra)
  np.savez(tmp_path / 'b.npz', features=xb, labels=y, **extra)
  return tmp_path / 'a.npz', tmp_path / 'b.npz'


def _cfg(tmp_path, **kw):
  a, b = tmp_path / 'a.npz', tmp_path / 'b.npz'
  base = dict(
      models=(f'a={a}', f'b={b}'),
      metrics=('face', 'sfda'),  # sfda: 3 passes
      batch_size=64,  # 5 steps a pass
      checkpoint_every_steps=2,
  )
  return jobs.JobConfig(**{**base, **kw})


class _Stop(Exception):
  pass


def _stopped_at(monkeypatch, step):
  """The job raises ``_Stop`` when it reports its ``step``-th step (a crash, in-process)."""
  report, count = jobs.Progress.__call__, [0]

  def call(self, p):
    if not p.done:
      count[0] += 1
      if count[0] == step:
        raise _Stop(step)
    return report(self, p)

  monkeypatch.setattr(jobs.Progress, '__call__', call)


def _steps(ckpt_dir):
  return sorted(int(p.name) for p in pathlib.Path(ckpt_dir).iterdir() if p.name.isdigit())


def test_killed_at_random_steps_resumes_bitwise(tmp_path):
  """kill -9 at a seeded random step (3 seeds; the SIGKILL harness of tests/job_worker.py):
  each resumed run's scores equal the uninterrupted run's bitwise."""
  import face_jax

  _features(tmp_path)
  face = face_jax.FaceOptions()  # what scripts/score.py passes: the FaCe flags' defaults
  fields = ('weighting', 'vc_transform', 'bc_cov', 'fairness', 'temperature')
  opts = {k: getattr(face, k) for k in fields + ('fairness_weight', 'ridge')}
  cfg = _cfg(
      tmp_path,
      models=(f'a={tmp_path}/a.npz',),
      checkpoint_every_steps=3,
      metric_options={'face': opts},
  )
  ref = jobs.run(cfg).scores
  for seed in (0, 1, 2):
    kill_at = int(np.random.default_rng(seed).integers(3, 16))  # of 3 passes x 5 steps
    out = tmp_path / f'seed{seed}'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tests' / 'job_worker.py'), str(kill_at)]
        + [f'--models=a={tmp_path}/a.npz', '--metrics=face,sfda', '--batch_size=64']
        + ['--checkpoint_every_steps=3', f'--output_dir={out}', '--noplot'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, (seed, proc.stderr[-3000:])
    assert not (out / 'results.json').exists()
    lines = []
    res = jobs.run(
        cfg, checkpoint_dir=str(out / 'checkpoints'), log=lambda f, *x: lines.append(f % x)
    )
    assert any(l.startswith('resuming from') for l in lines), (seed, kill_at, lines)
    assert res.scores == ref, (seed, kill_at)


def test_corrupt_checkpoint_is_not_loaded_and_the_one_before_is_used(tmp_path, monkeypatch):
  _features(tmp_path)
  cfg = _cfg(tmp_path)
  ref = jobs.run(cfg).scores
  ckpt = tmp_path / 'ckpt'
  _stopped_at(monkeypatch, 9)  # a's pass 2 step 4: saved after pass 1 steps 2, 4, 5, pass 2 step 2
  with pytest.raises(_Stop):
    jobs.run(cfg, checkpoint_dir=str(ckpt))
  monkeypatch.undo()
  steps = _steps(ckpt)
  assert len(steps) == 2  # two kept
  newest = ckpt / str(steps[-1])
  sums = json.loads((newest / jobs.CHECKSUMS).read_text())['files']
  # Truncate the newest step's largest file: orbax's own reads would not all notice.
  big = max(sums, key=lambda f: (newest / f).stat().st_size)
  with open(newest / big, 'r+b') as f:
    f.truncate((newest / big).stat().st_size // 2)
  lines = []
  job = jobs.prepare(cfg, checkpoint_dir=str(ckpt), log=lambda fmt, *a: lines.append(fmt % a))
  assert job.ckpt.saves == steps[0]  # the step before
  assert any('newer one(s) that failed their checksum' in l for l in lines), lines
  assert not newest.exists() and len(list((tmp_path / 'ckpt_corrupt').iterdir())) == 1
  assert job.run().scores == ref  # bitwise

  # Killed after orbax wrote a step but before its checksums: that step is not used either.
  older, newest = _steps(ckpt)
  (ckpt / str(newest) / jobs.CHECKSUMS).unlink()
  lines = []
  job = jobs.prepare(cfg, checkpoint_dir=str(ckpt), log=lambda fmt, *a: lines.append(fmt % a))
  assert job.ckpt.saves == older and _steps(ckpt) == [older], lines

  # Every step corrupt: reported, nothing loaded; --restart (restart=True) starts afresh.
  for s in _steps(ckpt):
    meta = next((ckpt / str(s)).rglob('metadata'))
    meta.write_bytes(meta.read_bytes().replace(b'"', b"'", 1))
  with pytest.raises(jobs.CheckpointCorrupt) as e:
    jobs.prepare(cfg, checkpoint_dir=str(ckpt))
  assert 'no checkpoint in' in str(e.value) and '--restart' in str(e.value)
  assert 'differ from their sha256' in str(e.value)
  assert jobs.run(cfg, checkpoint_dir=str(ckpt), restart=True).scores == ref


def test_full_disk_stops_with_the_last_checkpoint_intact(tmp_path, monkeypatch):
  from etils import epath

  _features(tmp_path)
  cfg = _cfg(tmp_path)
  ref = jobs.run(cfg).scores
  ckpt = tmp_path / 'ckpt'
  save, saves = jobs.JobCheckpoints.save, [0]
  path_type = type(epath.Path(str(tmp_path)))

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def save_on_a_filling_disk(self):
    saves[0] += 1
    if saves[0] == 6:  # the end of a's pass 2: the disk is full from here on
      monkeypatch.setattr(path_type, 'write_text', full)
      monkeypatch.setattr(path_type, 'write_bytes', full)
    return save(self)

  monkeypatch.setattr(jobs.JobCheckpoints, 'save', save_on_a_filling_disk)
  with pytest.raises(jobs.CheckpointWriteError) as e:
    jobs.run(cfg, checkpoint_dir=str(ckpt))
  msg = str(e.value)
  assert 'No space left on device' in msg and 'cannot write checkpoint 6' in msg
  assert f'{ckpt}/5, is intact' in msg and 'run the same command again' in msg
  monkeypatch.undo()
  job = jobs.prepare(cfg, checkpoint_dir=str(ckpt))
  assert job.ckpt.saves == 5 and job.ckpt.verify(5) is None
  assert job.run().scores == ref  # the fixed command resumes, bitwise
  assert not [p for p in ckpt.iterdir() if 'tmp' in p.name]  # the half-written save is gone


@pytest.mark.parametrize('what', ['features', 'source_probs'])
def test_bad_batch_late_stops_naming_it_and_the_fixed_data_resumes(tmp_path, what):
  a, b = _features(tmp_path, probs=what == 'source_probs')
  metrics = {'metrics': ('face', 'leep')} if what == 'source_probs' else {}
  cfg = _cfg(tmp_path, checkpoint_every_steps=1, **metrics)
  ref = jobs.run(cfg).scores
  good = dict(np.load(b))
  bad = dict(good, **{what: good[what].copy()})
  # b's batch 3 of 5 (rows 192..255), after all of a.
  if what == 'features':
    bad['features'][250, 3] = np.nan
    msg = 'bad input in batch 3 (rows 192:256): 1 non-finite feature values'
  else:
    bad['source_probs'][250] *= 1.5  # sums to 1.5
    msg = 'bad input in batch 3 (rows 192:256): 1 invalid source_probs rows'
  np.savez(b, **bad)
  ckpt = tmp_path / 'ckpt'
  with pytest.raises(InputError) as e:
    jobs.run(cfg, checkpoint_dir=str(ckpt))
  assert msg in str(e.value)
  last = _steps(ckpt)[-1]
  probe = jobs.prepare(cfg, checkpoint_dir=str(ckpt)).ckpt
  assert probe.verify(last) is None
  assert list(probe.meta['finished']) == ['a']
  assert probe.meta['current']['pass']['steps'] == 3  # batches 0..2 of b
  # Other data in rows already streamed: refused (another job).
  changed = dict(good, features=good['features'] + 1)
  np.savez(b, **changed)
  with pytest.raises(jobs.CheckpointMismatch, match='models.b'):
    jobs.prepare(cfg, checkpoint_dir=str(ckpt))
  # The fixed data (only the bad row changed): the same command resumes from step 3.
  np.savez(b, **good)
  lines = []
  job = jobs.prepare(cfg, checkpoint_dir=str(ckpt), log=lambda fmt, *x: lines.append(fmt % x))
  assert any('features of b changed' in l for l in lines) and job.ckpt.saves == last
  res = job.run()
  assert res.resumed == ['a'] and res.scores == ref


def _free_port():
  import socket

  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_a_dead_process_stops_the_others_within_bounded_time(tmp_path):
  """2 processes (jax.distributed): process 1 is killed mid-pass; process 0 exits non-zero
  with a message well within its heartbeat timeout."""
  _features(tmp_path)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=2')
  port = _free_port()
  procs = [
      subprocess.Popen(
          [sys.executable, str(ROOT / 'tests' / 'job_worker.py'), '3@1']
          + [f'--models=a={tmp_path}/a.npz', '--metrics=face', '--batch_size=32', '--noplot']
          + ['--checkpoint_every_steps=2', f'--output_dir={tmp_path / "out"}']
          + [f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}']
          + ['--heartbeat_timeout_seconds=10'],
          cwd=ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  try:
    procs[1].wait(timeout=300)
    died = time.monotonic()
    log0 = procs[0].communicate(timeout=60)[0]
    waited = time.monotonic() - died
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[1].returncode == -signal.SIGKILL
  assert procs[0].returncode != 0, log0[-3000:]
  assert waited < 40, waited  # heartbeat 10 s (+ start-up of the abort)
  assert 'another process probably died' in log0, log0[-3000:]
  assert 'is intact' in log0


def test_nonfinite_skip_reports_the_dropped_rows_also_after_a_resume(tmp_path, monkeypatch):
  """nonfinite='skip': rows with a NaN are left out (the scores are those of the data without
  them) and reported per model and layer; a job crashed mid-pass after those rows resumes
  with the same report and scores."""
  a, _ = _features(tmp_path)
  z = dict(np.load(a))
  x = z['features'].copy()
  bad = np.array([5, 70, 71, 200])  # batches 0, 1 and 3 of 64 rows
  x[bad, 3] = np.nan
  np.savez(tmp_path / 'nan.npz', features=x, labels=z['labels'])
  keep = np.setdiff1d(np.arange(len(x)), bad)
  np.savez(tmp_path / 'clean.npz', features=x[keep], labels=z['labels'][keep])
  base = dict(models=(f'm={tmp_path / "nan.npz"}',), nonfinite='skip', checkpoint_every_steps=2)
  ref = jobs.run(_cfg(tmp_path, **base))
  got = ref.models['m']['nonfinite_dropped']['features']
  assert got['rows'] == 4 and len(got['batches']) == 3, got
  assert [r for _, r in got['batches']] == [1, 2, 1], got
  clean = jobs.run(
      _cfg(tmp_path, models=(f'm={tmp_path / "clean.npz"}',), checkpoint_every_steps=0)
  )
  for metric in ('face', 'sfda'):
    np.testing.assert_allclose(
        ref.scores['m']['features'][metric], clean.scores['m']['features'][metric], rtol=1e-5
    )
  with pytest.raises(InputError, match='non-finite'):
    jobs.run(_cfg(tmp_path, models=base['models'], checkpoint_every_steps=0))
  # Crash in the first pass after the checkpoint of step 4 (rows 0:256 seen, 3 rows dropped).
  ckpt = tmp_path / 'ckpt'
  _stopped_at(monkeypatch, 5)
  with pytest.raises(_Stop):
    jobs.run(_cfg(tmp_path, **base), checkpoint_dir=str(ckpt))
  monkeypatch.undo()
  res = jobs.run(_cfg(tmp_path, **base), checkpoint_dir=str(ckpt))
  assert res.models['m']['nonfinite_dropped']['features'] == got
  assert res.scores == ref.scores
