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
  assert [r['model'] for r in res['ranking']] == ['g', 'bad']
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
