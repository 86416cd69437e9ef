"""The batch job (scripts/score.py --models/--dataset, face_jax.jobs): resume after SIGKILL."""

import csv
import dataclasses
import json
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests import processes

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = 'face,sfda,ncti,leep,nleep,logme'  # sfda: 3 passes, ncti and leep: 2


def _features(tmp_path):
  rng = np.random.default_rng(0)
  y = np.arange(300) % 5
  x = (rng.normal(size=(300, 12)) + 2.0 * np.eye(12)[y]).astype(np.float32)
  probs = rng.dirichlet(np.ones(7), size=300).astype(np.float32)
  np.savez(tmp_path / 'a.npz', features=x, labels=y, source_probs=probs)
  np.savez(tmp_path / 'b.npz', features=1.5 * x[:, :8] + 0.3 * rng.normal(size=(300, 8)), labels=y)
  return f'a={tmp_path}/a.npz,b={tmp_path}/b.npz'


def _job(out, models, kill_at=0, extra=(), check=True):
  proc = subprocess.run(
      [
          sys.executable,
          str(ROOT / 'tests' / 'job_worker.py'),
          str(kill_at),
          f'--models={models}',
          f'--metrics={METRICS}',
          '--batch_size=64',  # 5 steps a pass
          '--checkpoint_every_steps=2',
          f'--output_dir={out}',
          '--noplot',
          *extra,
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  if check:
    want = -signal.SIGKILL if kill_at else 0
    assert proc.returncode == want, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc


def test_killed_job_resumes_to_the_uninterrupted_scores(tmp_path):
  models = _features(tmp_path)
  _job(tmp_path / 'ref', models)
  ref = json.loads((tmp_path / 'ref' / 'results.json').read_text())
  out = tmp_path / 'killed'
  # 15 steps a model (3 passes of 5). Each run is killed at its n-th step: a's pass 1 step 3
  # (a checkpoint at step 2), a's pass 2 step 3 (mid-pass of sfda/ncti/leep), b's pass 1
  # step 2 (before its first checkpoint: b restarts from a's end), b's pass 3 step 2.
  for kill_at in (3, 6, 10, 12):
    _job(out, models, kill_at)
    assert not (out / 'results.json').exists()
  proc = _job(out, models)
  res = json.loads((out / 'results.json').read_text())
  assert 'resuming from' in proc.stderr
  assert 'examples/s' in proc.stderr and 'RSS' in proc.stderr  # progress lines
  assert res['scores'] == ref['scores']  # bitwise: the same JSON numbers
  assert res['resumed_models'] == ['a']  # a finished model is not recomputed
  assert res['models']['b']['passes'] == 3 and res['models']['b']['passes_this_run'] == 1
  assert res['examples_seen'] == {'a': 300, 'b': 300}
  # The structure: {model: {layer: {metric: number | {component: number} | None}}}.
  a = res['scores']['a']['features']
  assert set(a) == set(METRICS.split(','))
  assert isinstance(a['face'], float) and set(a['ncti']) == {'s_seli', 's_ncc', 'vc'}
  assert res['scores']['b']['features']['leep'] is None  # b has no source_probs: its error
  assert 'source_probs' in res['records']['b']['features']['leep']['error']
  rows = list(csv.DictReader(open(out / 'results.csv')))
  assert len(rows) == 2 * 6 and {r['model'] for r in rows} == {'a', 'b'}
  assert res['examples_per_second'] > 0 and res['devices']['process_count'] == 1
  assert res['versions']['face_jax'] and res['config']['checkpoint_every_steps'] == 2

  # Another job in the same directory: refused, with what differs; --restart discards.
  proc = _job(out, models, extra=('--metrics=face',), check=False)
  assert proc.returncode != 0
  assert 'config.metrics' in proc.stderr and '--restart' in proc.stderr
  assert json.loads((out / 'results.json').read_text())['scores'] == ref['scores']
  _job(out, models, extra=('--metrics=face', '--restart'))
  res = json.loads((out / 'results.json').read_text())
  assert res['scores']['a']['features'] == {'face': ref['scores']['a']['features']['face']}
  assert res['resumed_models'] == []


def test_models_on_a_dataset_one_forward_pass_for_every_layer(tmp_path):
  import face_jax
  from face_jax import jobs, models

  data_dir = str(tmp_path / 'tfds')
  cfg = jobs.JobConfig(
      models=('cnn_tiny',),
      dataset='digits',
      split='all',
      data_dir=data_dir,
      layers=('block2', 'pool'),
      metrics=('face', 'logme'),
      batch_size=512,
      checkpoint_every_steps=0,
  )
  lines = []
  result = jobs.run(cfg, log=lambda fmt, *a: lines.append(fmt % a), log_every_seconds=0)
  info = result.models['cnn_tiny']
  assert info['passes'] == 1 and info['examples'] == 1797  # both layers, both metrics
  assert any('pass 1: 1797/1797 examples (100%)' in l and 'RSS' in l for l in lines)
  want = face_jax.score_model(
      models.get('cnn_tiny'),
      'digits',
      split='all',
      data_dir=data_dir,
      layers=('block2', 'pool'),
      metrics=('face', 'logme'),
      batch_size=512,
  )
  for layer in ('block2', 'pool'):
    got = result.scores['cnn_tiny'][layer]
    assert got['face'] == want[layer]['face'].score and got['logme'] == want[layer]['logme']
  # --one_read: every batch read once and run through both models in turn, same scores.
  zoo = dataclasses.replace(cfg, models=('cnn_tiny', 'm=mlp'), layers=(), metrics=('face', 'sfda'))
  each = jobs.run(zoo)
  once = jobs.run(dataclasses.replace(zoo, one_read=True))
  assert each.data_passes == 2 * 3 and once.data_passes == 3  # SFDA: 3 passes
  assert once.models['m']['one_read'] and once.models['m']['passes'] == 3
  for model in ('cnn_tiny', 'm'):
    for layer, got in once.scores[model].items():
      for metric, v in got.items():
        np.testing.assert_allclose(v, each.scores[model][layer][metric], rtol=1e-6)
  # Inputs that do not fit the dataset are refused at start-up.
  np.savez(tmp_path / 'k12.npz', features=np.ones((12, 3), np.float32), labels=np.arange(12))
  (tmp_path / 'garbage.msgpack').write_bytes(b'not a checkpoint')
  for change, message in [
      (dict(layers=('block9',)), "has no layer(s) ['block9']"),
      (dict(models=(f'{tmp_path}/k12.npz',), layers=()), 'beyond the 10 classes of digits'),
      (dict(dataset='no_such_dataset'), 'no_such_dataset'),
      (dict(models=(f'cnn_tiny:{tmp_path}/garbage.msgpack',)), 'cannot be built'),
  ]:
    with pytest.raises(face_jax.InputError) as e:
      jobs.prepare(dataclasses.replace(cfg, **change))
    assert message in str(e.value), (change, str(e.value))


def test_bad_input_is_refused_before_any_pass(tmp_path):
  from face_jax import InputError, jobs

  np.savez(tmp_path / 'f.npz', features=np.ones((10, 3), np.float32), labels=np.arange(10) % 2)
  np.savez(tmp_path / 'nolabels.npz', features=np.ones((10, 3), np.float32))
  (tmp_path / 'empty').mkdir()
  cases = [
      (dict(models=('nope.npz',)), 'features file nope.npz not found'),
      (dict(models=(f'{tmp_path}/nolabels.npz',)), "lacks ['labels']"),
      (dict(models=(str(tmp_path / 'empty'),)), 'has no manifest.json'),
      (dict(models=('resnet_huge',)), 'is not a collection directory'),
      (dict(models=('cnn_tiny:missing.msgpack',)), 'weights file missing.msgpack not found'),
      (dict(models=(f'x={tmp_path}/f.npz', f'x={tmp_path}/f.npz')), 'given twice'),
      (dict(models=(f'{tmp_path}/f.npz',), metrics=('facey',)), 'facey'),
      (dict(models=(f'{tmp_path}/f.npz',), layers=('pool',)), "only layer is 'features'"),
      (dict(models=('cnn_tiny',)), 'needs a dataset'),
      (dict(models=(), dataset=''), 'nothing to score'),
  ]
  for kwargs, message in cases:
    with pytest.raises(InputError) as e:
      jobs.prepare(jobs.JobConfig(**kwargs))
    assert message in str(e.value), (kwargs, str(e.value))


def _free_port():
  import socket

  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_killed_and_resumed_equal_one_process(tmp_path):
  """2 processes x 4 fake CPU devices (jax.distributed), killed mid-pass and resumed, vs 1 x 8."""
  import os

  models = _features(tmp_path)
  common = [f'--models={models}', '--metrics=face,sfda,ncti,logme', '--noplot']

  def env(devices):
    e = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    e['JAX_PLATFORMS'] = 'cpu'
    e['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
    return e

  def two(out, kill_at):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / 'tests' / 'job_worker.py'),
                str(kill_at),
                *common,
                '--batch_size=32',  # per process: 150 rows, 5 steps a pass
                '--checkpoint_every_steps=2',
                f'--output_dir={out}',
                f'--coordinator_address=localhost:{port}',
                '--num_processes=2',
                f'--process_id={i}',
            ],
            cwd=ROOT,
            env=env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = processes.communicate_all(procs, timeout=600)
    want = -signal.SIGKILL if kill_at else 0
    for p, log in zip(procs, logs):
      assert p.returncode == want, log[-5000:]
    return logs

  out = tmp_path / 'two'
  two(out, 8)  # both processes at pass 2, step 3 (a checkpoint at step 2)
  logs = two(out, 0)
  assert all('at pass 2 step 2' in log for log in logs)
  res = json.loads((out / 'results.json').read_text())
  assert res['devices']['process_count'] == 2 and len(res['devices']['devices']) == 8
  one = subprocess.run(
      [sys.executable, str(ROOT / 'scripts' / 'score.py'), *common, '--batch_size=64']
      + [f'--output_dir={tmp_path / "one"}'],
      cwd=ROOT,
      env=env(8),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert one.returncode == 0, one.stderr[-4000:]
  ref = json.loads((tmp_path / 'one' / 'results.json').read_text())
  assert ref['devices']['process_count'] == 1 and len(ref['devices']['devices']) == 8
  assert res['examples_seen'] == ref['examples_seen'] == {'a': 300, 'b': 300}

  def flat(s):
    return {
        (m, l, k, c): v
        for m, by in s.items()
        for l, ms in by.items()
        for k, x in ms.items()
        for c, v in (x.items() if isinstance(x, dict) else [('', x)])
    }

  got, want = flat(res['scores']), flat(ref['scores'])
  assert got.keys() == want.keys()
  for key, v in want.items():
    np.testing.assert_allclose(got[key], v, rtol=1e-6, err_msg=str(key))


def test_config_file_with_overrides(tmp_path):
  """--config FILE (ml_collections), --config.FIELD overrides, shortcut flags win."""
  models = _features(tmp_path)
  (tmp_path / 'my_job.py').write_text(
      'import importlib.util, os\n'
      f'spec = importlib.util.spec_from_file_location("job", {str(ROOT / "scripts/configs/job.py")!r})\n'
      'job = importlib.util.module_from_spec(spec)\n'
      'spec.loader.exec_module(job)\n'
      'def get_config():\n'
      '  c = job.get_config()\n'
      f'  c.models = {models!r}\n'
      '  c.metrics = "face,logme,sfda"\n'
      '  c.batch_size = 100\n'
      f'  c.output_dir = {str(tmp_path / "from_config")!r}\n'
      '  return c\n'
  )
  proc = subprocess.run(
      [
          sys.executable,
          str(ROOT / 'scripts' / 'score.py'),
          f'--config={tmp_path}/my_job.py',
          '--config.metrics=face,nc1',
          '--config.checkpoint_every_steps=1',
          '--batch_size=150',
          '--noplot',
      ],
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  res = json.loads((tmp_path / 'from_config' / 'results.json').read_text())
  assert res['config']['metrics'] == 'face,nc1' and res['config']['batch_size'] == 150
  assert res['config']['checkpoint_every_steps'] == 1 and res['job']['batch_size'] == 150
  assert set(res['scores']['a']['features']) == {'face', 'nc1'}


def test_feature_dataset_streamed_killed_and_resumed(tmp_path):
  """A dataset of features (arrays builder, array_record) scored as it is; resumed mid-pass."""
  from face_jax import jobs

  _features(tmp_path)
  data_dir = str(tmp_path / 'tfds')
  cfg = jobs.JobConfig(
      dataset='arrays',
      split='train',
      data_dir=data_dir,
      dataset_options={'arrays': str(tmp_path / 'a.npz')},
      metrics=('face', 'sfda', 'nleep', 'leep'),
      batch_size=64,
      checkpoint_every_steps=2,
  )
  ref = jobs.run(cfg)
  assert list(ref.scores) == ['arrays'] and ref.models['arrays']['examples'] == 300
  # The same rows from the .npz in memory: the same numbers.
  direct = jobs.run(dataclasses.replace(cfg, dataset='', models=(f'arrays={tmp_path}/a.npz',)))
  assert direct.scores == ref.scores
  args = [
      '--dataset=arrays',
      f'--dataset_options=arrays={tmp_path}/a.npz',
      f'--data_dir={data_dir}',
      '--split=train',
      '--metrics=face,sfda,nleep,leep',
      '--batch_size=64',
      '--checkpoint_every_steps=2',
      f'--output_dir={tmp_path}/out',
      '--noplot',
  ]
  for kill_at in (8, 0):  # pass 2, step 3: resumed at step 2 (the pipeline reads from there)
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tests' / 'job_worker.py'), str(kill_at), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == (-signal.SIGKILL if kill_at else 0), proc.stderr[-4000:]
  assert 'at pass 2 step 2' in proc.stderr
  res = json.loads((tmp_path / 'out' / 'results.json').read_text())
  assert res['scores'] == ref.scores
