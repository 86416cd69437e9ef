"""The stages of the zoo benchmark: pretrain, finetune (ground truth), score.

Each stage reads and writes JSON next to its artefacts and skips work whose
result is already there (unless ``force``); entries are keyed by the sha256 of
the weights they were computed from, so re-training a model invalidates its
ground truth and scores.  The evaluate stage is in ``benchmarks.zoo.analysis``.

Synopsis::

    from benchmarks.zoo import stages
    data = stages.Data(cache_dir)                      # the zoo datasets (built once, cached)
    stages.pretrain(zoo.ZOO, data, weights_dir)        # weights/*.msgpack + manifest.json
    stages.finetune(zoo.ZOO, data, weights_dir, 'ground_truth.json')
    stages.score(zoo.ZOO, data, weights_dir, 'scores.json', metrics=None)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

import face_jax
from face_jax import models
from face_jax import reports
from face_jax.data import targets

from benchmarks.zoo import analysis
from benchmarks.zoo import datasets
from benchmarks.zoo import harness
from benchmarks.zoo import training
from benchmarks.zoo import zoo

log = logging.getLogger('zoo')

# Which split of a target the pre-trained models are scored on (and the NC1s are measured on).
SCORE_SPLIT = 'train'
BUDGET_TEXT = (
    f'a long-tailed subset of the target train split, {zoo.TARGET_TRAIN_MAX} down to '
    f'{zoo.TARGET_TRAIN_MIN} examples per class (zoo.target_budget, seed '
    f'{zoo.TARGET_SUBSET_SEED}); val and test: the full splits'
)


class Data:
  """Lazy access to the zoo datasets (``benchmarks.zoo.datasets.load`` with an .npz cache)."""

  def __init__(self, cache_dir: str | None):
    self.cache_dir = cache_dir
    self._splits: dict[str, dict] = {}

  def __getitem__(self, name: str) -> dict[str, datasets.Dataset]:
    if name not in self._splits:
      t0 = time.perf_counter()
      self._splits[name] = datasets.load(name, cache_dir=self.cache_dir)
      log.info(
          'dataset %s: %s (%.1fs)',
          name,
          {s: d.images.shape[0] for s, d in self._splits[name].items()},
          time.perf_counter() - t0,
      )
    return self._splits[name]


per_class_subset = targets.per_class_subset


def target_splits(data: Data, name: str) -> dict[str, datasets.Dataset]:
  """A target task: ``train`` = the labelled budget (``targets.labelled_budget``: a long-tailed
  subset of the dataset's train split), ``val`` and ``test`` = the full splits."""
  return targets.labelled_budget(data[name], zoo.TARGET_SUBSET_SEED)


def _count(counts: dict | None, key: str) -> None:
  if counts is not None:
    counts[key] = counts.get(key, 0) + 1


def read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def fingerprint(obj: Any) -> str:
  """A short hash of a JSON-able object (the settings a cached result depends on)."""
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def num_params(extractor) -> int:
  from flax import nnx

  return int(sum(np.size(v) for v in jax.tree.leaves(nnx.state(extractor.module, nnx.Param))))


# ---------------------------------------------------------------------------------------------
# Pre-training.


def pretrain(
    specs: Sequence[zoo.ModelSpec],
    data: Data,
    weights_dir: str,
    *,
    force: bool = False,
    counts: dict | None = None,
) -> dict:
  """Pre-trains every model on its source; writes ``<name>.msgpack`` and ``manifest.json``.

  ``counts`` (optional) receives ``{'computed': n, 'cached': m}``.

  Returns:
    The manifest ``{'models': {name: entry}, ...}``.
  """
  os.makedirs(weights_dir, exist_ok=True)
  path = os.path.join(weights_dir, 'manifest.json')
  manifest = read_json(path) or {'models': {}}
  manifest['recipe'] = {
      'optimizer': 'AdamW (optax scale_by_adam b1=0.9 b2=0.999 eps=1e-8 + add_decayed_weights), '
      'linear warm-up (min(50 steps, 10%)) then cosine to 0',
      'epochs': zoo.PRETRAIN_EPOCHS,
      'batch_size': zoo.PRETRAIN_BATCH,
      'weight_decay': zoo.PRETRAIN_WEIGHT_DECAY,
      'lr': zoo.PRETRAIN_LR,
      'label_smoothing': training.LABEL_SMOOTHING,
      'losses': {
          'ce': 'softmax cross-entropy',
          'ls': 'cross-entropy, label smoothing 0.1',
          'mse': 'squared error of the logits to the one-hot target (sum over classes)',
      },
      'augmentation': 'none (the generators randomise pose, stroke, contrast and noise)',
      'source_accuracy': 'top-1 accuracy of the source head on the source val split',
  }
  for i, spec in enumerate(specs):
    wpath = zoo.weights_path(weights_dir, spec)
    entry = manifest['models'].get(spec.name)
    if not force and entry and os.path.exists(wpath) and entry.get('sha256') == sha256(wpath):
      log.info('[pretrain %d/%d] %s: cached', i + 1, len(specs), spec.name)
      _count(counts, 'cached')
      continue
    _count(counts, 'computed')
    src = data[spec.source]
    tr, va = src['train'], src['val']
    ex = zoo.new_model(spec, len(tr.class_names))
    cfg = zoo.pretrain_config(spec)
    log.info(
        '[pretrain %d/%d] %s: %s on %s (%d images), %s loss, %d epochs',
        i + 1,
        len(specs),
        spec.name,
        spec.preset,
        spec.source,
        tr.images.shape[0],
        spec.loss,
        cfg.epochs,
    )
    c0, t0 = time.process_time(), time.perf_counter()
    res = training.train(
        ex, tr.images, tr.labels, cfg, log=lambda m: log.info('  %s %s', spec.name, m)
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    acc = training.accuracy(ex, va.images, va.labels)
    models.save_params(wpath, ex.params)
    manifest['models'][spec.name] = {
        'arch': spec.arch,
        'preset': spec.preset,
        'options': spec.options,
        'source': spec.source,
        'loss': spec.loss,
        'seed': spec.seed,
        'num_params': num_params(ex),
        'feature_layer': ex.default_layer,
        'feature_dim': ex.feature_dim(),
        'source_classes': len(tr.class_names),
        'epochs': cfg.epochs,
        'lr': cfg.lr,
        'batch_size': cfg.batch_size,
        'steps': res.steps,
        'source_val_accuracy': acc,
        'source_train_accuracy_last_epoch': res.train_accuracy_last_epoch,
        'final_loss': res.final_loss,
        'train_seconds': wall,
        'train_cpu_seconds': cpu,
        'weights_bytes': os.path.getsize(wpath),
        'sha256': sha256(wpath),
    }
    log.info(
        '[pretrain %d/%d] %s: source val acc %.4f, %.0fs (cpu %.0fs)',
        i + 1,
        len(specs),
        spec.name,
        acc,
        wall,
        cpu,
    )
    reports.write_json(path, manifest)
  reports.write_json(path, manifest)
  return manifest


# ---------------------------------------------------------------------------------------------
# Fine-tuning (ground truth).


def _ce_loss(logits: np.ndarray, labels: np.ndarray) -> float:
  z = logits - logits.max(1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  return float(-logp[np.arange(labels.size), labels].mean())


def _nc1(features: np.ndarray, labels: np.ndarray, k: int) -> float:
  """NC1 = Tr(Σ_W Σ_B^†)/K, balanced weighting (FaCe's NC1), float64."""
  return float(face_jax.face_score(np.asarray(features, np.float64), labels, num_classes=k).nc1)


def finetune_one(
    spec: zoo.ModelSpec,
    target: Mapping[str, datasets.Dataset],
    weights_dir: str,
    *,
    lrs: Sequence[float] = zoo.FINETUNE_LRS,
    epochs: int = zoo.FINETUNE_EPOCHS,
    seeds: Sequence[int] = zoo.FINETUNE_SEEDS,
    label: str = '',
    previous: Mapping | None = None,
) -> dict:
  """Full fine-tuning of one model on one target over the learning-rate grid.

  For every LR and seed the pre-trained body gets a fresh head (initialised
  from the seed, which also orders the batches) and every parameter is trained.
  The LR with the best validation accuracy (mean over seeds) is chosen (ties:
  the lower validation cross-entropy, then the smaller LR); its test accuracy
  (mean over seeds) is the ground truth.  NC1 of the fine-tuned default-layer
  features is measured on the target's train subset and test split (geometric
  mean over seeds).  ``previous``: an entry of the same weights and protocol made
  with fewer seeds; its (LR, seed) runs are kept and only the missing seeds run.

  Returns:
    ``{'runs': [per LR: {..., 'seeds': [per seed]}], 'chosen_lr', 'val_accuracy',
    'test_accuracy', 'nc1_train', 'nc1_test', 'seconds', 'cpu_seconds'}``.
  """
  tr, va, te = target['train'], target['val'], target['test']
  k = len(tr.class_names)
  runs = []
  done = {(r['lr'], s['seed']): s for r in (previous or {}).get('runs', []) for s in r['seeds']}
  for lr in lrs:
    per_seed = []
    for seed in seeds:
      if (lr, seed) in done:
        per_seed.append(done[(lr, seed)])
        continue
      ft = zoo.for_finetuning(spec, weights_dir, k, seed)
      c0, t0 = time.process_time(), time.perf_counter()
      res = training.train(ft, tr.images, tr.labels, zoo.finetune_config(lr, epochs, seed))
      out_va = training.predict(ft, va.images, layer=ft.default_layer)
      out_te = training.predict(ft, te.images, layer=ft.default_layer)
      out_tr = training.predict(ft, tr.images, layer=ft.default_layer)
      per_seed.append(
          {
              'seed': seed,
              'val_accuracy': float(np.mean(out_va['logits'].argmax(1) == va.labels)),
              'val_loss': _ce_loss(out_va['logits'], va.labels),
              'test_accuracy': float(np.mean(out_te['logits'].argmax(1) == te.labels)),
              'train_accuracy': float(np.mean(out_tr['logits'].argmax(1) == tr.labels)),
              'nc1_train': _nc1(out_tr[ft.default_layer], tr.labels, k),
              'nc1_test': _nc1(out_te[ft.default_layer], te.labels, k),
              'final_train_loss': res.final_loss,
              'seconds': time.perf_counter() - t0,
              'cpu_seconds': time.process_time() - c0,
          }
      )
    mean = lambda key: float(np.mean([r[key] for r in per_seed]))
    gmean = lambda key: float(np.exp(np.mean([np.log(r[key]) for r in per_seed])))
    run = {
        'lr': lr,
        'val_accuracy': mean('val_accuracy'),
        'val_loss': mean('val_loss'),
        'test_accuracy': mean('test_accuracy'),
        'train_accuracy': mean('train_accuracy'),
        'nc1_train': gmean('nc1_train'),
        'nc1_test': gmean('nc1_test'),
        'seconds': sum(r['seconds'] for r in per_seed),
        'cpu_seconds': sum(r['cpu_seconds'] for r in per_seed),
        'seeds': per_seed,
    }
    log.info(
        '  %s lr %g: val %.4f test %.4f (train %.4f) nc1 %.3g (%.0fs)',
        label,
        lr,
        run['val_accuracy'],
        run['test_accuracy'],
        run['train_accuracy'],
        run['nc1_train'],
        run['seconds'],
    )
    runs.append(run)
  best = min(runs, key=lambda r: (-r['val_accuracy'], r['val_loss'], r['lr']))
  return {
      'runs': runs,
      'chosen_lr': best['lr'],
      'val_accuracy': best['val_accuracy'],
      'test_accuracy': best['test_accuracy'],
      'nc1_train': best['nc1_train'],
      'nc1_test': best['nc1_test'],
      'seconds': sum(r['seconds'] for r in runs),
      'cpu_seconds': sum(r['cpu_seconds'] for r in runs),
  }


def finetune(
    specs: Sequence[zoo.ModelSpec],
    data: Data,
    weights_dir: str,
    path: str,
    *,
    targets: Sequence[str] = datasets.TARGETS,
    force: bool = False,
    counts: dict | None = None,
) -> dict:
  """Ground truth of every (model, target); writes ``path`` (JSON) after every model.

  ``counts`` (optional) receives ``{'computed': n, 'cached': m}``.
  """
  gt = read_json(path) or {}
  gt['protocol'] = {
      'what': 'full fine-tuning of every parameter, fresh linear head, cross-entropy',
      'optimizer': 'AdamW, linear warm-up then cosine to 0',
      'lrs': list(zoo.FINETUNE_LRS),
      'epochs': zoo.FINETUNE_EPOCHS,
      'batch_size': zoo.FINETUNE_BATCH,
      'weight_decay': zoo.FINETUNE_WEIGHT_DECAY,
      'seeds': list(zoo.FINETUNE_SEEDS),
      'selection': 'best val accuracy, mean over seeds (ties: lower val cross-entropy, then '
      'smaller LR)',
      'ground_truth': 'test accuracy of the chosen LR (mean over seeds)',
      'train_split': BUDGET_TEXT,
      'nc1': 'NC1 = Tr(Sigma_W Sigma_B^+)/K (balanced) of the fine-tuned default-layer features '
      'on the target train subset (nc1_train; the data it was fine-tuned and scored on) '
      'and on the test split (nc1_test)',
  }
  results = gt.setdefault('results', {})
  proto = fingerprint(gt['protocol'])
  seeds = list(zoo.FINETUNE_SEEDS)
  manifest = read_json(os.path.join(weights_dir, 'manifest.json')).get('models', {})
  n = len(specs) * len(targets)
  i = 0
  for spec in specs:
    if spec.name not in manifest:
      raise FileNotFoundError(f'{spec.name} is not pre-trained (run the pretrain stage)')
    wsha = manifest[spec.name]['sha256']
    for t in targets:
      i += 1
      entry = results.get(t, {}).get(spec.name)
      if (
          not force
          and entry
          and entry.get('weights_sha256') == wsha
          and entry.get('protocol') == proto
      ):
        log.info('[finetune %d/%d] %s -> %s: cached', i, n, spec.name, t)
        _count(counts, 'cached')
        continue
      # An entry of the same protocol with a subset of the seeds keeps its runs.
      old_seeds = sorted({s['seed'] for r in (entry or {}).get('runs', []) for s in r['seeds']})
      previous = (
          entry
          if not force
          and entry
          and entry.get('weights_sha256') == wsha
          and set(old_seeds) < set(seeds)
          and entry.get('protocol') == fingerprint({**gt['protocol'], 'seeds': old_seeds})
          else None
      )
      log.info(
          '[finetune %d/%d] %s -> %s%s',
          i,
          n,
          spec.name,
          t,
          f' (seeds {old_seeds} kept)' if previous else '',
      )
      _count(counts, 'computed')
      entry = finetune_one(
          spec,
          target_splits(data, t),
          weights_dir,
          label=f'{spec.name} -> {t}',
          previous=previous,
      )
      entry['weights_sha256'] = wsha
      entry['protocol'] = proto
      results.setdefault(t, {})[spec.name] = entry
      log.info(
          '[finetune %d/%d] %s -> %s: lr %g, test acc %.4f (%.0fs)',
          i,
          n,
          spec.name,
          t,
          entry['chosen_lr'],
          entry['test_accuracy'],
          entry['seconds'],
      )
      reports.write_json(path, gt)
  # The seeds behind every entry, and the replicate ceiling of every target
  # (analysis.replicate_weighted_tau).
  for res in gt['results'].values():
    for entry in res.values():
      entry['seeds'] = sorted({s['seed'] for r in entry['runs'] for s in r['seeds']})
  gt['replicate_weighted_tau'] = {
      t: analysis.replicate_weighted_tau(res) for t, res in gt['results'].items()
  }
  reports.write_json(path, gt)
  return gt


# ---------------------------------------------------------------------------------------------
# Scoring.


def score(
    specs: Sequence[zoo.ModelSpec],
    data: Data,
    weights_dir: str,
    path: str,
    *,
    targets: Sequence[str] = datasets.TARGETS,
    metrics: Sequence[str] | None = None,
    force: bool = False,
    counts: dict | None = None,
) -> dict:
  """Every metric (default: every registered one) and every FaCe variant's terms, per (model, target).

  The pre-trained models (with their source heads, for metrics that need
  source probabilities) are scored on the target's ``SCORE_SPLIT`` split.
  Writes ``path`` (JSON) after every model.  ``counts`` (optional) receives
  ``{'computed': n, 'cached': m}``.  A cached (model, target) entry of the same
  weights and data is completed rather than redone: only the metrics it lacks,
  FaCe's record when ``FaceOptions()``'s defaults changed (the record keeps the
  options it was made with), and the FaCe variant terms when the ablation grid
  gained variants.
  """
  infos = harness.metric_infos(metrics)
  out = read_json(path) or {}
  out['split'] = f'{SCORE_SPLIT}: {BUDGET_TEXT} (the fine-tuning data)'
  data_key = fingerprint(
      [SCORE_SPLIT, zoo.TARGET_TRAIN_MAX, zoo.TARGET_TRAIN_MIN, zoo.TARGET_SUBSET_SEED]
  )
  out['metrics'] = {
      n: {
          'higher_is_better': i.higher_is_better,
          'pool_relative': i.pool_relative,
          'summary': i.summary,
      }
      for n, i in infos.items()
  }
  scores = out.setdefault('scores', {})
  variants = out.setdefault('face_variants', {})
  manifest = read_json(os.path.join(weights_dir, 'manifest.json')).get('models', {})
  n = len(specs) * len(targets)
  i = 0
  suspects = {t: set() for t in targets}  # metrics that failed on this target: run them alone
  face_options = dataclasses.asdict(face_jax.FaceOptions())
  grid = [harness.variant_key(v) for v in harness.ablation_variants()]
  for spec in specs:
    if spec.name not in manifest:
      raise FileNotFoundError(f'{spec.name} is not pre-trained (run the pretrain stage)')
    wsha = manifest[spec.name]['sha256']
    ex = None
    for t in targets:
      i += 1
      old = scores.get(t, {}).get(spec.name)
      valid = (
          not force and old and old.get('weights_sha256') == wsha and old.get('data') == data_key
      )
      todo = {
          m: info
          for m, info in infos.items()
          if not valid or m not in old or (m == 'face' and old[m].get('options') != face_options)
      }
      have_terms = valid and set(grid) <= set(variants.get(t, {}).get(spec.name, {}))
      if not todo and have_terms:
        log.info('[score %d/%d] %s on %s: cached', i, n, spec.name, t)
        _count(counts, 'cached')
        continue
      _count(counts, 'computed')
      if ex is None:
        ex = zoo.load_pretrained(spec, weights_dir)
      split = target_splits(data, t)[SCORE_SPLIT]
      t0 = time.perf_counter()
      recs = dict(old) if valid else {}
      if todo:
        recs.update(
            harness.score_extractor(
                ex,
                split.images,
                split.labels,
                todo,
                num_classes=len(split.class_names),
                suspects=suspects[t],
                log=lambda m: log.warning('  %s on %s: %s', spec.name, t, m),
            )
        )
      if 'face' in todo:
        recs['face']['options'] = face_options
      recs = {m: recs[m] for m in (*infos, *(k for k in recs if k not in infos))}
      recs['weights_sha256'] = wsha
      recs['data'] = data_key
      if not have_terms:
        feats = ex.embed(split.images, batch_size=512)[ex.default_layer]
        variants.setdefault(t, {})[spec.name] = harness.face_variant_terms(
            feats, split.labels, len(split.class_names)
        )
      scores.setdefault(t, {})[spec.name] = recs
      errors = {m: r['error'] for m, r in recs.items() if isinstance(r, dict) and r.get('error')}
      log.info(
          '[score %d/%d] %s on %s: %d metrics%s (%.1fs)',
          i,
          n,
          spec.name,
          t,
          len(todo),
          f', errors: {errors}' if errors else '',
          time.perf_counter() - t0,
      )
    reports.write_json(path, out)
  reports.write_json(path, out)
  return out
