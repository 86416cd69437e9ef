"""The main job (scripts/score.py) end to end, as a user runs it."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(args, tmp_path):
  proc = subprocess.run(
      [sys.executable, str(ROOT / 'scripts' / 'score.py'), f'--output_dir={tmp_path}'] + args,
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return proc


def test_default_ranks_the_bundled_zoo_on_digits(tmp_path):
  proc = _run([], tmp_path)
  assert 'The bundled zoo on digits' in proc.stdout and 'How well each score ranks' in proc.stdout
  res = json.loads((tmp_path / 'results.json').read_text())
  manifest = json.loads((ROOT / 'benchmarks/zoo/weights/manifest.json').read_text())['models']
  gt = json.loads((ROOT / 'benchmarks/zoo/results/ground_truth.json').read_text())['results']
  names = [r['model'] for r in res['ranking']]
  assert sorted(names) == sorted(manifest) and len(names) >= 12
  # Ranked by FaCe's default pool combination (C and F z-scored over the zoo), every registered
  # metric scored (a value or a recorded error), truth alongside.
  assert res['rank_by'] == 'face_pool_zscore' and res['target'] == 'digits'
  scores = [r['face_pool_zscore'] for r in res['ranking']]
  assert scores == sorted(scores, reverse=True)
  import face_jax

  terms = {r['model']: res['records'][r['model']]['face']['terms'] for r in res['ranking']}
  pooled = face_jax.pool_combine(
      {m: {'C': t['variance_collapse'], 'F': t['class_fairness']} for m, t in terms.items()},
      {'C': 1.0, 'F': 1.0},
      'zscore',
  )
  assert scores == pytest.approx([pooled[r['model']] for r in res['ranking']])
  assert res['metrics'] == face_jax.metric_names()
  for r in res['ranking']:
    assert r['finetuned_test_acc'] == gt['digits'][r['model']]['test_accuracy']
    for m in res['metrics']:
      rec = res['records'][r['model']][m]
      assert rec['error'] is not None or rec['value'] is not None or 'components' in rec
  from face_jax.data import targets

  assert res['labelled_images'] == sum(targets.long_tailed_budget(10))
  top = res['records'][names[0]]['face']
  assert np.isfinite(top['terms']['nc1']) and top['terms']['nc1'] > 0
  wt = res['evaluation']['face']['weighted_tau']
  assert -1.0 <= wt['low'] <= wt['estimate'] <= wt['high'] <= 1.0
  rows = list(csv.DictReader(open(tmp_path / 'ranking.csv')))
  assert [r['model'] for r in rows] == names
  # scores: {model: {layer: {metric: number | components | None}}}, as the batch job's.
  for r in res['ranking']:
    (layer,) = res['scores'][r['model']]
    assert layer == manifest[r['model']]['feature_layer']
    assert res['scores'][r['model']][layer]['face'] == r['face']
  assert res['examples_seen'][names[0]] == res['labelled_images'] and res['versions']['jax']
  n_rows = len(list(csv.DictReader(open(tmp_path / 'results.csv'))))
  assert n_rows == len(names) * len(res['metrics'])
  ev_rows = list(csv.DictReader(open(tmp_path / 'evaluation.csv')))
  assert 'face' in [r['name'] for r in ev_rows]
  assert (tmp_path / 'ranking.png').stat().st_size > 10_000
  assert (tmp_path / 'score_vs_truth.png').stat().st_size > 10_000
  assert 'examples/s' in proc.stderr  # progress and throughput are logged
  # What a person sees fits a 120-column terminal; a metric's failure is said once.
  assert max(len(line) for line in proc.stdout.splitlines()) <= 120
  assert proc.stderr.count('the energy tail has k') == 1
  assert res['timing']['compile_seconds'] <= res['timing']['wall_seconds']


def test_digits_features_demo(tmp_path):
  proc = _run(['--demo=digits_features'], tmp_path)
  assert 'Ranking by face' in proc.stdout
  res = json.loads((tmp_path / 'results.json').read_text())
  names = [r['model'] for r in res['ranking']]
  assert sorted(names) == ['gradients', 'noisy_pixels', 'pixels', 'pooled_2x2', 'random_relu']
  scores = [r['face'] for r in res['ranking']]
  assert scores == sorted(scores, reverse=True)
  # Blurring away detail (2x2 pooling) and adding noise must rank below the raw pixels.
  assert names.index('pixels') < names.index('noisy_pixels')
  assert names.index('pixels') < names.index('pooled_2x2')
  top = res['results'][names[0]]['face']
  assert top['diagnostics']['N'] == 1797 and top['diagnostics']['K'] == 10
  rows = list(csv.DictReader(open(tmp_path / 'ranking.csv')))
  assert [r['model'] for r in rows] == names
  assert (tmp_path / 'ranking.png').stat().st_size > 10_000
  assert 'examples/s' in proc.stderr  # progress and throughput are logged


def test_features_files_and_options(tmp_path):
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 500)
  good = rng.normal(size=(500, 8)) + 3 * np.eye(8)[y]
  bad = rng.normal(size=(500, 8)) + 0.2 * np.eye(8)[y]
  np.savez(tmp_path / 'good.npz', features=good, labels=y)
  np.savez(tmp_path / 'bad.npz', features=bad, labels=y)
  _run(
      [
          f'--features=g={tmp_path}/good.npz,{tmp_path}/bad.npz',
          '--bc_cov=spherical',
          '--fairness=range',
          '--dtype=float64',
          '--noplot',
      ],
      tmp_path,
  )
  res = json.loads((tmp_path / 'results.json').read_text())
  # Several models: ranked by FaCe's default pool combination, with F's share of it.
  assert res['rank_by'] == 'face_pool_zscore'
  assert [r['model'] for r in res['ranking']] == ['g', 'bad']
  c, f = (np.array([r[k] for r in res['ranking']]) for k in ('face.C', 'face.F'))
  z = lambda v: (v - v.mean()) / v.std()
  np.testing.assert_allclose([r['face_pool_zscore'] for r in res['ranking']], z(c) + z(f))
  assert all(0.0 <= r['face_pool_zscore.F_share'] <= 1.0 for r in res['ranking'])
  assert res['results']['g']['face']['options']['bc_cov'] == 'spherical'
  assert not os.path.exists(tmp_path / 'ranking.png')


def test_zoo_targets_other_than_digits_are_left_to_the_benchmark(tmp_path):
  proc = subprocess.run(
      [
          sys.executable,
          str(ROOT / 'scripts' / 'score.py'),
          '--target=greek',
          f'--output_dir={tmp_path}',
      ],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode != 0 and 'benchmarks.zoo.run' in proc.stderr
  assert not (tmp_path / 'results.json').exists()


def test_missing_file_is_a_usage_error(tmp_path):
  proc = subprocess.run(
      [
          sys.executable,
          str(ROOT / 'scripts' / 'score.py'),
          '--features=nope.npz',
          f'--output_dir={tmp_path}',
      ],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode != 0 and 'features file not found: nope.npz' in proc.stderr


def test_batch_job_ground_truth_and_start_up_errors(tmp_path):
  rng = np.random.default_rng(0)
  y = np.arange(240) % 4
  for i, name in enumerate(('a', 'b', 'c')):
    x = rng.normal(size=(240, 6)) + (1.0 + i) * np.eye(6)[y]
    np.savez(tmp_path / f'{name}.npz', features=x.astype(np.float32), labels=y)
  models = ','.join(f'{n}={tmp_path}/{n}.npz' for n in 'abc')
  (tmp_path / 'gt.csv').write_text('model,accuracy\na,0.5\nb,0.6\nc,0.7\n')
  (tmp_path / 'gt2.json').write_text(json.dumps({'a': 0.5, 'b': 0.6}))

  def job(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / 'scripts' / 'score.py'), f'--models={models}', *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )

  bad = job(f'--ground_truth={tmp_path}/gt2.json', f'--output_dir={tmp_path}/x')
  assert bad.returncode != 0 and 'does not name 1 of the 3 models' in bad.stderr
  assert not list((tmp_path / 'x' / 'checkpoints').iterdir())  # stopped before any pass
  (tmp_path / 'file').write_text('')
  bad = job(f'--output_dir={tmp_path}/file/out')
  assert bad.returncode != 0 and 'cannot be written' in bad.stderr
  # Bad data mid-run: the job stops at the batch, the last checkpoint is left intact.
  x = rng.normal(size=(240, 6)).astype(np.float32)
  x[200] = np.nan
  np.savez(tmp_path / 'nan.npz', features=x, labels=y)
  bad = subprocess.run(
      [sys.executable, str(ROOT / 'scripts' / 'score.py'), f'--models={tmp_path}/nan.npz']
      + ['--batch_size=40', '--checkpoint_every_steps=2', f'--output_dir={tmp_path}/n'],
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert bad.returncode != 0 and 'bad input in batch 5' in bad.stderr
  assert 'The last checkpoint in' in bad.stderr and 'is intact' in bad.stderr
  saved = sorted((tmp_path / 'n' / 'checkpoints').iterdir(), key=lambda p: int(p.name))
  meta = json.loads((saved[-1] / 'meta' / 'metadata').read_text())
  assert meta['current']['pass']['steps'] == 4  # batch 5 (the 6th) was never checkpointed
  ok = job(f'--ground_truth={tmp_path}/gt.csv', '--metrics=face,nc1', f'--output_dir={tmp_path}/o')
  assert ok.returncode == 0, ok.stderr[-3000:]
  res = json.loads((tmp_path / 'o' / 'results.json').read_text())
  assert [r['model'] for r in res['ranking']] == ['c', 'b', 'a']  # better separated, higher
  assert res['rank_by'] == 'face_pool_zscore'  # FaCe's default pool combination
  shares = [r['face_pool_zscore.F_share'] for r in res['ranking']]
  assert all(0.0 <= v <= 1.0 for v in shares)
  assert res['evaluation']['face']['kendall_tau']['estimate'] == 1.0
  assert res['evaluation']['face_pool_zscore']['kendall_tau']['estimate'] == 1.0
  assert (tmp_path / 'o' / 'score_vs_truth.png').exists()
  assert (tmp_path / 'o' / 'face_overlap.png').stat().st_size > 10_000
  assert set(res['records']['a']['features']['face']['overlap']) == {'0', '1', '2', '3'}
  assert max(len(line) for line in ok.stdout.splitlines()) <= 120
