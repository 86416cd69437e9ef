"""End-to-end test of benchmarks/published_harness.py on generated feature files.

Five fake "models" named like rows of the supervised-11 fine-tune table, with seeded Gaussian
class features of different class separation, go through the harness for target CIFAR10. The
test checks the machinery (files written, published rows shown, weighted τ recomputed from the
written scores and the published accuracies, failure isolation, error messages), not the numbers.
"""

import contextlib
import csv
import io
import json
import os

import numpy as np
import pytest

import face_jax
from benchmarks import published_harness as ph
from face_jax import evaluation

MODELS = ('resnet34', 'ResNet50', 'resnet101', 'densenet121', 'mobilenet_v2')
METRICS = ('face', 'logme', 'hscore', 'nc1', 'leep', 'etran')
N, D, K, KS = 300, 16, 10, 20
SHORT = 'mobilenet_v2'  # has 180 examples: ETran refuses N < 200, the other metrics go on


def _write_model(path, seed, separation, n):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % K
  means = separation * rng.standard_normal((K, D))
  features = (means[labels] + rng.standard_normal((n, D))).astype(np.float32)
  logits = features @ rng.standard_normal((D, KS)) * 0.5
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
  np.savez(path, features=features, labels=labels, source_probs=probs)


@pytest.fixture(scope='module')
def features_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('features')
  for i, name in enumerate(MODELS):
    _write_model(
        d / f'{name}.npz', seed=i, separation=0.3 + 0.25 * i, n=180 if name == SHORT else N
    )
  return d


@pytest.fixture(scope='module')
def harness_run(features_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp('out')
  argv = [
      f'--features_dir={features_dir}',
      '--benchmark=supervised11',
      '--target=CIFAR10',
      f'--metrics={",".join(METRICS)}',
      f'--output_dir={out}',
      '--n_boot=50',
      '--batch_size=128',
  ]
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    res = ph.main(argv)
  return res, out, printed.getvalue()


def _published_accuracy(model):
  with open(os.path.join(ph.PUBLISHED_DIR, 'finetune_accuracy_supervised11.csv')) as f:
    rows = {r['model']: float(r['cifar10']) for r in csv.DictReader(f)}
  return rows[model]


def test_writes_its_outputs_and_shows_the_published_rows(harness_run):
  _, out, printed = harness_run
  for name in ('results.json', 'results.csv', 'scores.csv', 'results.md'):
    assert (out / name).is_file(), name
  data = json.loads((out / 'results.json').read_text())
  assert data['schema'] == ph.SCHEMA
  assert data['target'] == 'cifar10' and data['benchmark'] == 'supervised11'
  assert data['models'] == ['resnet34', 'resnet50', 'resnet101', 'densenet121', 'mobilenet_v2']
  assert data['files']['resnet50'] == 'ResNet50.npz'
  assert data['metrics'] == list(METRICS)
  assert data['published'] == {
      'LEEP': 0.824,
      'LogME': 0.852,
      'NLEEP': 0.806,
      'PARC': 0.845,
      'SFDA': 0.949,
  }
  # The comparison table: the published rows first, then face_jax's own metrics.
  methods = [r['method'] for r in data['comparison']]
  assert methods[:5] == ['LEEP', 'LogME', 'NLEEP', 'PARC', 'SFDA']
  assert set(methods[5:]) == {
      'face',
      'H-score',
      'nc1',
      'etran',
      'face_pool_zscore',
      'face_pool_minmax',
  }
  by_method = {r['method']: r for r in data['comparison']}
  assert by_method['LogME']['face_jax_metric'] == 'logme'
  assert by_method['NLEEP']['face_jax_metric'] is None
  assert by_method['H-score']['face_jax_metric'] == 'hscore'
  assert by_method['H-score']['published_weighted_tau'] is None
  markdown = (out / 'results.md').read_text()
  for line in ('| LEEP | 0.824 | leep |', '| LogME | 0.852 | logme |', '| SFDA | 0.949 | – |'):
    assert line in printed, line
    assert line in markdown, line
  with open(out / 'results.csv') as f:
    assert [r['method'] for r in csv.DictReader(f)] == methods


def test_weighted_tau_is_recomputed_from_the_written_scores(harness_run):
  res, out, _ = harness_run
  with open(out / 'scores.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['model'] for r in rows] == res['models']
  checked = 0
  for metric, report in res['evaluation'].items():
    if 'error' in report:
      continue
    scores = {r['model']: float(r[metric]) for r in rows if r[metric] != ''}
    truth = {m: _published_accuracy(m) for m in scores}
    assert report['weighted_tau']['estimate'] == evaluation.weighted_tau(scores, truth), metric
    assert report['kendall_tau']['estimate'] == evaluation.kendall_tau(scores, truth), metric
    row = next(r for r in res['comparison'] if r['face_jax_metric'] == metric)
    assert row['weighted_tau'] == report['weighted_tau']['estimate']
    assert row['weighted_tau_low'] <= row['weighted_tau_high']
    checked += 1
  assert checked == len(METRICS) + 2  # every metric and FaCe's two pool scores


def test_a_failing_metric_costs_only_its_own_record(harness_run):
  res, _, _ = harness_run
  recs = res['records']
  assert recs[SHORT]['etran']['error'].startswith('InputError')
  assert all(recs[SHORT][m]['error'] is None for m in METRICS if m != 'etran')
  assert all(recs[m]['etran']['error'] is None for m in res['models'] if m != SHORT)
  # ETran is pool-relative: its score is formed over the four models that have a value.
  assert sorted(res['scores']['etran']) == sorted(m for m in res['models'] if m != SHORT)
  assert res['evaluation']['etran']['n_models'] == 4
  assert SHORT in res['missing']['etran']


def test_stored_source_probs_reach_the_metrics(harness_run, features_dir):
  res, _, _ = harness_run
  with np.load(features_dir / 'resnet34.npz') as z:
    x, y, p = z['features'], z['labels'], z['source_probs']
  direct = face_jax.score(x, y, source_probs=p, metrics=('leep', 'logme'), batch_size=128)
  rec = res['records']['resnet34']
  np.testing.assert_allclose(rec['leep']['value'], float(direct['leep']), rtol=1e-5)
  np.testing.assert_allclose(rec['logme']['value'], float(direct['logme']), rtol=1e-6)


def test_default_metrics_need_source_probs_in_every_file(tmp_path, features_dir):
  for name in MODELS[:3]:
    with np.load(features_dir / f'{name}.npz') as z:
      arrays = dict(z)
    if name == MODELS[0]:
      del arrays['source_probs']
    np.savez(tmp_path / f'{name}.npz', **arrays)
  paths = ph.feature_files(str(tmp_path))
  names = ph.select_metrics(None, paths)
  assert 'face' in names and 'logme' in names
  assert not any(face_jax.engine.get(m).needs for m in names)
  assert set(names) == {m for m in face_jax.metric_names() if not face_jax.engine.get(m).needs}
  with pytest.raises(ph.HarnessError, match=r"\['leep'\] need source_probs.*resnet34"):
    ph.select_metrics(['face', 'leep'], paths)


def test_error_messages(features_dir, tmp_path):
  out = str(tmp_path / 'out')
  with pytest.raises(ph.HarnessError, match='unknown target .imagenet.*aircraft, caltech101'):
    ph.run(str(features_dir), 'supervised11', 'imagenet', out)
  with pytest.raises(SystemExit):
    ph.main(
        [
            f'--features_dir={features_dir}',
            '--benchmark=supervised11',
            '--target=x',
            f'--output_dir={out}',
        ]
    )

  odd = tmp_path / 'odd'
  odd.mkdir()
  for name in ('resnet34', 'resnet50', 'vgg16'):
    (odd / f'{name}.npz').write_bytes((features_dir / 'resnet101.npz').read_bytes())
  with pytest.raises(ph.HarnessError, match=r'vgg16\.npz name no model.*resnet34, resnet50'):
    ph.run(str(odd), 'supervised11', 'cifar10', out)

  few = tmp_path / 'few'
  few.mkdir()
  for name in ('resnet34', 'resnet50'):
    (few / f'{name}.npz').write_bytes((features_dir / 'resnet101.npz').read_bytes())
  with pytest.raises(ph.HarnessError, match='at least 3 models; 2 feature file'):
    ph.run(str(few), 'supervised11', 'cifar10', out)
  assert not os.path.exists(out)


def test_tables_of_every_benchmark_fit_together():
  for name in ph.BENCHMARKS:
    finetune, published = ph.benchmark_tables(name)
    assert len({ph.name_key(r) for r in finetune.rows}) == len(finetune.rows)
    for column in finetune.columns:
      assert ph.resolve_target(finetune, column.upper(), name) == column
    matched = [c for c in finetune.columns if ph.published_column(published, c)]
    assert len(matched) == len(published.columns), (name, matched)
  ft, pub = ph.benchmark_tables('selfsupervised12')
  assert ph.published_column(pub, 'voc2007')['SFDA'] == 0.568
  assert ph.published_column(pub, 'sun397') == {}
  ft, _ = ph.benchmark_tables('tllib10')
  assert ph.match_models(['inception_v3', 'mobilenet-v2', 'resnet50'], ft) == {
      'Inception V3': 'inception_v3',
      'ResNet50': 'resnet50',
      'MobileNet V2': 'mobilenet-v2',
  }
