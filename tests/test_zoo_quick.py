"""The zoo validity benchmark: harness pieces, and `run.py --quick` end to end.

The quick run scores a subset of the committed zoo on digits with every
registered metric and checks the structure of every output; it must never
touch the committed results.
"""

import hashlib
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import face_jax
from face_jax import collection_scoring as cs
from benchmarks.zoo import analysis
from benchmarks.zoo import datasets
from benchmarks.zoo import harness
from benchmarks.zoo import run
from benchmarks.zoo import stages
from benchmarks.zoo import training
from benchmarks.zoo import zoo

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'zoo' / 'results'
WEIGHTS = ROOT / 'benchmarks' / 'zoo' / 'weights'


def _digest(folder: pathlib.Path) -> str:
  h = hashlib.sha256()
  for p in sorted(folder.rglob('*')):
    if p.is_file():
      h.update(p.name.encode())
      h.update(p.read_bytes())
  return h.hexdigest()


def _blobs(seed=0, n=240, d=12, k=4, spread=3.0):
  rng = np.random.default_rng(seed)
  y = np.arange(n) % k
  x = rng.normal(size=(n, d)) + spread * np.eye(d)[y]
  return x, y


def test_zoo_spans_the_three_axes():
  assert len(zoo.ZOO) >= 12 and len({s.name for s in zoo.ZOO}) == len(zoo.ZOO)
  assert {s.arch for s in zoo.ZOO} == set(zoo.ARCHS)
  assert {s.source for s in zoo.ZOO} == set(datasets.SOURCES)
  assert {s.loss for s in zoo.ZOO} == set(training.LOSSES)
  manifest = json.loads((WEIGHTS / 'manifest.json').read_text())['models']
  assert set(manifest) == {s.name for s in zoo.ZOO}
  total = 0
  for s in zoo.ZOO:
    path = pathlib.Path(zoo.weights_path(str(WEIGHTS), s))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest[s.name]['sha256']
    assert manifest[s.name]['num_params'] <= 300_000
    total += path.stat().st_size
  assert total < 15e6
  gt = json.loads((RESULTS / 'ground_truth.json').read_text())
  for t in datasets.TARGETS:
    for s in zoo.ZOO:
      e = gt['results'][t][s.name]
      assert e['chosen_lr'] in zoo.FINETUNE_LRS and 0 < e['test_accuracy'] <= 1
      assert e['weights_sha256'] == manifest[s.name]['sha256']


def test_variant_terms_match_face_score():
  x, y = _blobs()
  x = x.astype(np.float32).astype(np.float64)  # the harness accumulates float32 features in float64
  terms = harness.face_variant_terms(x.astype(np.float32), y)
  assert len(terms) == 60 and next(iter(terms)) == harness.variant_key(harness.DEFAULT_VARIANT)
  for key, t in terms.items():
    opts = dict(zip(harness.ABLATION_AXES, key.split('/')))
    r = face_jax.face_score(x, y, **opts)
    assert math.isclose(t['C'], r.variance_collapse, rel_tol=1e-9, abs_tol=1e-12), key
    assert math.isclose(t['F'], r.class_fairness, rel_tol=1e-9, abs_tol=1e-12), key
    assert math.isclose(t['nc1'], r.nc1, rel_tol=1e-9), key


def test_oriented_scores_orientation_pool_and_errors():
  rec = lambda v, hib=True: {
      'value': v,
      'error': None,
      'higher_is_better': hib,
      'pool_relative': False,
  }
  records = {
      'a': {'m': rec(1.0), 'low': rec(3.0, False)},
      'b': {'m': rec(2.0), 'low': rec(1.0, False)},
  }
  assert harness.oriented_scores(records, 'm') == {'a': 1.0, 'b': 2.0}
  assert harness.oriented_scores(records, 'low') == {'a': -3.0, 'b': -1.0}
  records['b']['m'] = {**rec(None), 'error': 'InputError: boom'}
  with pytest.raises(ValueError, match='boom'):
    harness.oriented_scores(records, 'm')
  face = lambda c, f: {
      'value': c + f,
      'error': None,
      'higher_is_better': True,
      'pool_relative': False,
      'terms': {'variance_collapse': c, 'class_fairness': f, 'nc1': -c},
  }
  pool = harness.oriented_scores(
      {
          'a': {'face': face(-2.0, -0.1)},
          'b': {'face': face(-1.0, -0.3)},
          'c': {'face': face(-1.5, -0.2)},
      },
      harness.FACE_POOL,
  )
  assert pool == pytest.approx({'a': 1.0, 'b': 1.0, 'c': 1.0})


def test_leave_one_target_out_selects_on_the_other_targets():
  # Candidate A is best on t1 and t2 but worst on t3; B the reverse on t3 only.
  ts = ('t1', 't2', 't3')
  tau = {('A', 'C+F'): (0.9, 0.8, -0.5), ('B', 'pool_zscore'): (0.1, 0.2, 0.7)}
  point = {k: {t: {k[1]: v} for t, v in zip(ts, vals)} for k, vals in tau.items()}
  boots = {k: {t: np.full(20, v) for t, v in zip(ts, vals)} for k, vals in tau.items()}
  base = {
      'ref': {
          'per_target': dict(zip(ts, (0.5, 0.5, 0.5))),
          'boots': {t: np.full(20, 0.5) for t in ts},
      }
  }
  out = analysis.leave_one_target_out(point, boots, ts, base)
  fam = out['families']['all']
  # Held out t1: on (t2, t3) A has mean 0.15, B 0.45, so B is selected and scored on t1.
  assert fam['folds']['t1']['selected'] == {'variant': 'B', 'combine': 'pool_zscore'}
  assert fam['folds']['t1']['held_out_weighted_tau'] == pytest.approx(0.1)
  assert fam['folds']['t3']['selected'] == {'variant': 'A', 'combine': 'sum'}
  assert fam['folds']['t3']['held_out_weighted_tau'] == pytest.approx(-0.5)
  assert fam['held_out_mean'] == pytest.approx((0.1 + 0.2 - 0.5) / 3)
  assert fam['held_out_mean_low'] == pytest.approx(fam['held_out_mean'])  # constant resamples
  assert fam['versus_baselines']['ref']['delta'] == pytest.approx(fam['held_out_mean'] - 0.5)
  assert fam['selected_on_all_targets']['variant'] == 'A'  # mean 0.4 vs 0.333
  assert out['families']['sum']['candidates'] == 1
  assert 'error' in analysis.leave_one_target_out(point, boots, ('t1',))


def test_replicate_weighted_tau():
  def entry(quality, noise):
    # Two LRs, four seeds; the better LR (by validation) is 0.01 for every half.
    runs = []
    for lr, shift in ((1e-3, -0.1), (1e-2, 0.0)):
      seeds = [
          {
              'seed': s,
              'val_accuracy': quality + shift + noise[s],
              'val_loss': 1.0,
              'test_accuracy': quality + shift + noise[s],
          }
          for s in range(4)
      ]
      runs.append({'lr': lr, 'seeds': seeds})
    return {'runs': runs}

  rng = np.random.default_rng(0)
  exact = {f'm{i}': entry(0.1 * i, [0.0] * 4) for i in range(6)}
  out = analysis.replicate_weighted_tau(exact, n_boot=20)
  assert out['estimate'] == pytest.approx(1.0) and out['seeds'] == [0, 1, 2, 3]
  assert [p['halves'] for p in out['per_split']] == [
      [[0, 1], [2, 3]],
      [[0, 2], [1, 3]],
      [[0, 3], [1, 2]],
  ]
  noisy = {f'm{i}': entry(0.01 * i, list(rng.normal(0, 0.2, 4))) for i in range(6)}
  assert analysis.replicate_weighted_tau(noisy, n_boot=20)['estimate'] < 0.9
  two = {m: {'runs': [{**r, 'seeds': r['seeds'][:2]} for r in e['runs']]} for m, e in exact.items()}
  assert 'error' in analysis.replicate_weighted_tau(two)


def test_per_class_subset_is_deterministic():
  ds = datasets.Dataset(
      np.arange(60, dtype=np.uint8).reshape(60, 1, 1, 1).repeat(32, 1).repeat(32, 2),
      (np.arange(60) % 3).astype(np.int32),
      ('a', 'b', 'c'),
  )
  a = stages.per_class_subset(ds, 4, seed=1)
  b = stages.per_class_subset(ds, 4, seed=1)
  assert np.array_equal(a.images, b.images) and np.bincount(a.labels).tolist() == [4, 4, 4]
  with pytest.raises(ValueError, match='has 20 < 21'):
    stages.per_class_subset(ds, 21, seed=1)
  c = stages.per_class_subset(ds, [2, 5, 3], seed=1)
  assert np.bincount(c.labels).tolist() == [2, 5, 3]
  assert set(c.images[:, 0, 0, 0]) <= set(ds.images[:, 0, 0, 0]) and np.all(
      np.diff(c.images[:, 0, 0, 0].astype(int)) > 0
  )  # a subset, in dataset order


def test_target_budget_is_long_tailed():
  for k in (8, 10, 24):
    b = zoo.target_budget(k)
    assert len(b) == k and max(b) == zoo.TARGET_TRAIN_MAX and min(b) == zoo.TARGET_TRAIN_MIN
    assert b == zoo.target_budget(k) and b != sorted(b, reverse=True)  # seeded, not label order


def test_run_quick(tmp_path):
  before = _digest(RESULTS)
  out = tmp_path / 'out'
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'benchmarks.zoo.run',
          '--quick',
          f'--out_dir={out}',
          f'--cache_dir={tmp_path / "cache"}',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  assert _digest(RESULTS) == before  # the committed results are untouched
  names = face_jax.metric_names()
  scores = json.loads((out / 'scores.json').read_text())
  assert set(scores['scores']) == {'digits'}
  assert set(scores['scores']['digits']) == set(run.QUICK_MODELS)
  for model, recs in scores['scores']['digits'].items():
    for m in names:  # every registered metric: a value, pool components or a recorded error
      r = recs[m]
      assert r['error'] is not None or r['value'] is not None or 'components' in r, (model, m)
    assert len(scores['face_variants']['digits'][model]) == len(harness.ablation_variants()) == 60
  ev = json.loads((out / 'evaluation.json').read_text())['targets']['digits']
  assert set(ev['truth']) == set(run.QUICK_MODELS)
  for m in names + [harness.FACE_POOL, analysis.REFERENCE]:
    rep = ev['scores'][m]
    assert 'error' in rep or set(analysis.STATS) <= set(rep), m
  face = ev['scores']['face']
  assert face['weighted_tau']['n_boot'] == 100
  assert (
      face['weighted_tau']['low']
      <= face['weighted_tau']['estimate']
      <= face['weighted_tau']['high']
  )
  abl = json.loads((out / 'ablation.json').read_text())
  assert len(abl['variants']) == 60 and abl['default'] == 'balanced/neg/pooled/std'
  # The 'face' records are face_jax's default variant; their sum ranks as the ablation's C + F.
  ours = harness.variant_key(analysis.FACE_JAX_DEFAULT)
  default = next(v for v in abl['variants'] if v['key'] == ours)
  assert default['per_target']['digits']['C+F'] == pytest.approx(face['weighted_tau']['estimate'])
  pooled = ev['scores'][cs.face_ranking_score()]['weighted_tau']['estimate']
  assert default['per_target']['digits']['pool_zscore'] == pytest.approx(pooled)
  assert 'error' in abl['leave_one_target_out']  # one target: nothing to hold out
  nc1 = json.loads((out / 'nc1_pre_vs_post.json').read_text())['targets']['digits']
  assert set(nc1['models']) == set(run.QUICK_MODELS)
  assert 'estimate' in nc1['pre_vs_post']['spearman']
  for f in ('evaluation.csv', 'ablation.csv', 'ablation.md', 'summary.md', 'timings.json'):
    assert (out / f).stat().st_size > 100, f
  for f in ('face_vs_truth_digits.png', 'weighted_tau.png', 'ablation.png', 'nc1_pre_vs_post.png'):
    assert (out / f).stat().st_size > 10_000, f
  timings = json.loads((out / 'timings.json').read_text())
  assert set(timings) == {'score', 'evaluate'}


def test_quick_refuses_the_committed_results_dir():
  with pytest.raises(SystemExit, match='must not write'):
    run.main(['--quick', f'--out_dir={RESULTS}'])
