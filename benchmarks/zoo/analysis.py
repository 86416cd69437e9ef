"""The evaluate stage: how well each score ranks the zoo, the FaCe ablation, NC1 before/after.

Synopsis::

    from benchmarks.zoo import analysis
    summary = analysis.evaluate(scores, ground_truth, manifest, out_dir, n_boot=1000)

Inputs are the JSON documents written by ``benchmarks.zoo.stages`` (scores,
ground truth) and the weights manifest.  Outputs (in ``out_dir``):

- ``evaluation.json`` / ``evaluation.csv``: per target and per score, weighted
  τ (primary; Vigna 2015, hyperbolic weigher, as ``scipy.stats.weightedtau``),
  Kendall τ_b, Spearman ρ, Pearson r and top-1 relative accuracy, each with a
  95% percentile bootstrap interval over models (``face_jax.evaluation``); a
  score that errors on a target is recorded with its error.
- ``ablation.json`` / ``ablation.csv`` / ``ablation.md``: weighted τ of every FaCe
  variant as C alone, F alone, C + F (λ = 1) and C̃ + F̃ (pool min–max), per
  target and averaged over targets with a paired bootstrap interval of the mean.
- ``nc1_pre_vs_post.json``: NC1 of the pre-trained features vs NC1 of the same
  models after fine-tuning, rank-correlated across the zoo per target.
- plots: ``face_vs_truth_<target>.png``, ``weighted_tau.png``, ``ablation.png``,
  ``nc1_pre_vs_post.png``; and ``summary.md`` (the tables of the README).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.stats

import face_jax
from face_jax import collection_scoring
from face_jax import evaluation as ev
from face_jax import reports

from benchmarks.zoo import harness

log = logging.getLogger('zoo')

REFERENCE = 'source_val_accuracy'  # a naive reference predictor, not a transferability metric
STATS = ev.METRICS
COMBOS = ('C', 'F', 'C+F', 'pool', 'pool_zscore', 'pool_rank')
COMBO_NAMES = {
    'C': 'C alone',
    'F': 'F alone',
    'C+F': 'C + F (λ=1)',
    'pool': 'C̃ + F̃ (pool min–max)',
    'pool_zscore': 'C̃ + F̃ (pool z-score)',
    'pool_rank': 'C̃ + F̃ (pool rank)',
}
# The ablation's combinations that are FaCe scores, by their ``FaceOptions.combine`` name: the
# candidates of the leave-one-target-out selection (C alone and F alone are diagnostics).
COMBO_OPTION = {
    'C+F': 'sum',
    'pool': 'pool_minmax',
    'pool_zscore': 'pool_zscore',
    'pool_rank': 'pool_rank',
}
_NORMALISE = {'pool': 'minmax', 'pool_zscore': 'zscore', 'pool_rank': 'rank'}
DEFAULT_KEY = harness.variant_key(harness.DEFAULT_VARIANT)
FACE_JAX_DEFAULT = {
    f: getattr(face_jax.FaceOptions(), f)
    for f in ('weighting', 'vc_transform', 'bc_cov', 'fairness')
}
FACE_JAX_DEFAULT_COMBO = {v: k for k, v in COMBO_OPTION.items()}[face_jax.FaceOptions().combine]
# A score is evaluated on the models that have a value for it when some do not (marked
# "partial"), as long as at least MIN_MODELS remain.
MIN_MODELS = 5


def truth_of(gt: Mapping, target: str, models: Sequence[str]) -> dict[str, float]:
  """``{model: test accuracy at the chosen LR}`` for the models of one target."""
  res = gt['results'][target]
  missing = [m for m in models if m not in res]
  if missing:
    raise KeyError(f'no ground truth for {missing} on {target} (run the finetune stage)')
  return {m: float(res[m]['test_accuracy']) for m in models}


def score_names(scores: Mapping) -> list[str]:
  """The scores evaluated: every scored metric, FaCe's pool min–max score, the reference."""
  names = list(scores['metrics'])
  if 'face' in names:
    i = names.index('face') + 1
    names[i:i] = list(harness.FACE_POOLS)
  return names + [REFERENCE]


def _scores_for(name: str, records: Mapping, manifest: Mapping):
  """(scores of the models with a value, {model: reason} of the others)."""
  if name == REFERENCE:
    return {m: float(manifest[m]['source_val_accuracy']) for m in records}, {}
  return harness.available_scores(records, name)


def _report(scores: Mapping[str, float], truth: Mapping[str, float], n_boot: int, seed: int):
  try:
    return ev.evaluate_ranking(scores, truth, n_boot=n_boot, seed=seed)
  except (ev.EvaluationInputError, ev.UndefinedStatisticError) as e:
    return {'error': f'{type(e).__name__}: {e}'}


def evaluate_scores(
    scores: Mapping, gt: Mapping, manifest: Mapping, *, n_boot: int = 1000, seed: int = 0
) -> dict:
  """Per target and score: the ranking report (or the error)."""
  out = {}
  for t, records in scores['scores'].items():
    records = {m: r for m, r in records.items()}
    truth = truth_of(gt, t, list(records))
    per = {}
    for name in score_names(scores):
      try:
        s, missing = _scores_for(name, records, manifest)
      except (ValueError, KeyError) as e:
        per[name] = {'error': f'{type(e).__name__}: {e}'}
        continue
      if len(s) < MIN_MODELS:
        reasons = '; '.join(f'{m}: {r}' for m, r in sorted(missing.items())[:3])
        per[name] = {
            'error': f'{len(missing)} of {len(records)} models have no value ' f'({reasons})',
            'missing': missing,
        }
        continue
      rep = _report(s, {m: truth[m] for m in s}, n_boot, seed)
      if 'error' not in rep:
        rep['scores'] = s
      if missing:
        rep['missing'] = missing  # evaluated on the other models only
      per[name] = rep
    out[t] = {'truth': truth, 'scores': per}
  return out


def evaluation_rows(evals: Mapping) -> list[dict]:
  """Flat CSV rows: one per (target, score), then the mean weighted τ over targets per score."""
  rows = []
  names: list[str] = []
  for t, e in evals.items():
    for name, rep in e['scores'].items():
      if name not in names:
        names.append(name)
      row: dict[str, Any] = {
          'target': t,
          'score': name,
          'n_models': rep.get('n_models'),
          'n_missing': len(rep.get('missing', {})),
          'error': rep.get('error', ''),
      }
      for s in STATS:
        st = rep.get(s) or {}
        row[s] = st.get('estimate')
        row[f'{s}_low'] = st.get('low')
        row[f'{s}_high'] = st.get('high')
      rows.append(row)
  for name in names:
    vals = [
        e['scores'][name]['weighted_tau']['estimate']
        for e in evals.values()
        if 'weighted_tau' in e['scores'].get(name, {})
    ]
    row = {
        'target': 'mean',
        'score': name,
        'n_models': None,
        'n_missing': None,
        'error': '' if len(vals) == len(evals) else f'defined on {len(vals)}/{len(evals)} targets',
    }
    for s in STATS:
      row[s] = float(np.mean(vals)) if (s == 'weighted_tau' and vals) else None
      row[f'{s}_low'] = row[f'{s}_high'] = None
    rows.append(row)
  return rows


# ---------------------------------------------------------------------------------------------
# Ablation.


def _combo_values(terms: Mapping[str, Mapping[str, float]], combo: str) -> dict[str, float]:
  if combo == 'C':
    return {m: v['C'] for m, v in terms.items()}
  if combo == 'F':
    return {m: v['F'] for m, v in terms.items()}
  if combo == 'C+F':
    return {m: v['C'] + v['F'] for m, v in terms.items()}
  return face_jax.pool_combine(
      {m: {'C': v['C'], 'F': v['F']} for m, v in terms.items()},
      {'C': 1.0, 'F': 1.0},
      _NORMALISE[combo],
  )


def _wtau(x: np.ndarray, y: np.ndarray) -> float | None:
  try:
    return ev.weighted_tau(x, y)
  except (ev.UndefinedStatisticError, ev.EvaluationInputError):
    return None


def _boot_taus(
    x: np.ndarray, y: np.ndarray, idx: np.ndarray, cache: dict | None = None
) -> np.ndarray:
  """Weighted τ of (x, y) on every bootstrap draw (rows of ``idx``); NaN where undefined.

  Weighted τ depends on x only through its ranks, so ``cache`` (per target and
  draws) keys the result by x's ranks: variants that rank the models alike are
  resampled once.
  """
  key = tuple(scipy.stats.rankdata(x)) if cache is not None else None
  if key is not None and key in cache:
    return cache[key]
  out = np.full(idx.shape[0], np.nan)
  for b in range(idx.shape[0]):
    v = _wtau(x[idx[b]], y[idx[b]])
    if v is not None:
      out[b] = v
  if key is not None:
    cache[key] = out
  return out


def _quantiles(a: np.ndarray) -> tuple[float | None, float | None]:
  a = a[np.isfinite(a)]
  if a.size < 2:
    return None, None
  lo, hi = np.quantile(a, [0.025, 0.975])
  return float(lo), float(hi)


def ablation(
    variants: Mapping,
    gt: Mapping,
    *,
    n_boot: int = 500,
    seed: int = 0,
    baselines: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> dict:
  """Weighted τ of every FaCe variant × combination, per target and averaged over targets.

  The interval of the mean over targets is a paired percentile bootstrap: each
  resample draws models with replacement independently per target, with the
  same draws for every variant and combination, and averages the per-target
  weighted τ (resamples where it is undefined on a target are skipped).

  Args:
    variants: ``{target: {model: {variant_key: {'C', 'F', 'nc1'}}}}``.
    gt: the ground truth document.
    n_boot: resamples (0: no intervals).
    seed: resampling seed.
    baselines: ``{score: {target: {model: oriented score}}}``: other scores to
      compare the leave-one-target-out selection with, on the same draws.

  Every variant × combination is also compared with the default score (the
  default variant as C + F): ``delta_vs_default`` (difference of the means),
  its paired bootstrap interval and ``p_better_than_default`` (the fraction of
  resamples in which it is higher).  ``leave_one_target_out`` holds the
  selection of ``leave_one_target_out``.

  Returns:
    ``{'targets': [...], 'variants': [{'key', axes..., 'per_target': {t: {combo: τ}},
    'mean': {combo: τ}, 'mean_low', 'mean_high', 'delta_vs_default', 'delta_low',
    'delta_high', 'p_better_than_default': {combo: ...}}], 'leave_one_target_out': {...},
    'n_boot', 'seed'}``.
  """
  targets = list(variants)
  rng = np.random.default_rng(seed)
  models = {t: sorted(variants[t]) for t in targets}
  truth = {t: truth_of(gt, t, models[t]) for t in targets}
  idx = {t: rng.integers(0, len(models[t]), size=(n_boot, len(models[t]))) for t in targets}
  caches: dict[str, dict] = {t: {} for t in targets}
  keys = list(next(iter(next(iter(variants.values())).values())))
  out = []
  # {key: {combo: {target: [n_boot] weighted τ}}} on the shared draws (NaN: undefined).
  per_target_boots: dict[str, dict[str, dict[str, np.ndarray]]] = {}
  for key in keys:
    axes = dict(zip(harness.ABLATION_AXES, key.split('/')))
    entry: dict[str, Any] = {
        'key': key,
        **axes,
        'per_target': {},
        'mean': {},
        'mean_low': {},
        'mean_high': {},
    }
    per_target_boots[key] = {c: {} for c in COMBOS}
    for t in targets:
      terms = {m: variants[t][m][key] for m in models[t]}
      y = np.array([truth[t][m] for m in models[t]])
      entry['per_target'][t] = {}
      for c in COMBOS:
        try:
          vals = _combo_values(terms, c)
        except ValueError:
          vals = None
        x = None if vals is None else np.array([vals[m] for m in models[t]], np.float64)
        if x is None or not np.all(np.isfinite(x)):
          entry['per_target'][t][c] = None
          per_target_boots[key][c][t] = np.full(n_boot, np.nan)
          continue
        entry['per_target'][t][c] = _wtau(x, y)
        per_target_boots[key][c][t] = _boot_taus(x, y, idx[t], caches[t])
    for c in COMBOS:
      per = [entry['per_target'][t][c] for t in targets]
      ok = all(v is not None for v in per)
      entry['mean'][c] = float(np.mean(per)) if ok else None
      boot = np.mean([per_target_boots[key][c][t] for t in targets], axis=0)
      if ok and n_boot:
        entry['mean_low'][c], entry['mean_high'][c] = _quantiles(boot)
      else:
        entry['mean_low'][c] = entry['mean_high'][c] = None
    out.append(entry)
  # Paired differences to the default variant's C + F (the same resamples for every variant).
  mean_boot = lambda key, c: np.mean([per_target_boots[key][c][t] for t in targets], axis=0)
  ref_boot = mean_boot(DEFAULT_KEY, 'C+F')
  ref_mean = next(e for e in out if e['key'] == DEFAULT_KEY)['mean']['C+F']
  for entry in out:
    entry['delta_vs_default'], entry['delta_low'], entry['delta_high'] = {}, {}, {}
    entry['p_better_than_default'] = {}
    for c in COMBOS:
      ok = entry['mean'][c] is not None and ref_mean is not None
      entry['delta_vs_default'][c] = entry['mean'][c] - ref_mean if ok else None
      d = mean_boot(entry['key'], c) - ref_boot
      d = d[np.isfinite(d)]
      if ok and d.size >= 2:
        entry['delta_low'][c], entry['delta_high'][c] = _quantiles(d)
        entry['p_better_than_default'][c] = float(np.mean(d > 0))
      else:
        entry['delta_low'][c] = entry['delta_high'][c] = entry['p_better_than_default'][c] = None
  base_boots = {}
  for name, per_t in (baselines or {}).items():
    if not all(t in per_t for t in targets):
      continue
    base_boots[name] = {
        'per_target': {},
        'boots': {},
    }
    for t in targets:
      x = np.array([per_t[t].get(m, np.nan) for m in models[t]], np.float64)
      y = np.array([truth[t][m] for m in models[t]])
      have = np.isfinite(x)
      base_boots[name]['per_target'][t] = _wtau(x[have], y[have])
      boots = np.full(n_boot, np.nan)
      for b in range(n_boot):
        sel = idx[t][b][have[idx[t][b]]]  # the draw, restricted to the models with a value
        v = _wtau(x[sel], y[sel])
        if v is not None:
          boots[b] = v
      base_boots[name]['boots'][t] = boots
  loto = leave_one_target_out(
      {(e['key'], c): e['per_target'] for e in out for c in COMBO_OPTION},
      {(k, c): per_target_boots[k][c] for k in keys for c in COMBO_OPTION},
      targets,
      base_boots,
  )
  return {
      'targets': targets,
      'n_models': {t: len(models[t]) for t in targets},
      'n_boot': n_boot,
      'seed': seed,
      'default': DEFAULT_KEY,
      'reference_for_deltas': f"{DEFAULT_KEY} as C + F (the specification's default FaCe score)",
      'variants': out,
      'leave_one_target_out': loto,
      'fairness_share': fairness_shares(variants),
  }


def fairness_shares(variants: Mapping, key: str | None = None) -> dict:
  """F's share of FaCe's score under each combination, per target (``face_pool_shares``).

  For the variant ``key`` (default: face_jax's default variant), per combination
  ("sum": the model's own |F|/(|C| + |F|); a pool combination: the same with the
  pool-normalised terms) and target: the median, min and max over the models,
  and the median over every model × target pair.

  Args:
    variants: ``{target: {model: {variant_key: {'C', 'F', 'nc1'}}}}``.
    key: the variant.

  Returns:
    ``{'variant': key, 'per_combination': {combine: {'per_target': {t: {'median', 'min',
    'max'}}, 'median': x}}}``.
  """
  key = key or harness.variant_key(FACE_JAX_DEFAULT)
  out = {}
  for combine in COMBO_OPTION.values():
    per_target, every = {}, []
    for t, by_model in variants.items():
      records = {
          m: {'face': {'terms': {'variance_collapse': v[key]['C'], 'class_fairness': v[key]['F']}}}
          for m, v in by_model.items()
      }
      if combine == 'sum':  # FaCeResult.fairness_share of each model
        shares = {}
        for m, v in by_model.items():
          c, f = abs(v[key]['C']), abs(v[key]['F'])
          shares[m] = f / (c + f) if c + f > 0 else 0.0
      else:
        shares = collection_scoring.face_pool_shares(records, f'face_{combine}')
      x = np.array(list(shares.values()), np.float64)
      per_target[t] = {'median': float(np.median(x)), 'min': float(x.min()), 'max': float(x.max())}
      every.extend(x.tolist())
    out[combine] = {'per_target': per_target, 'median': float(np.median(every))}
  return {'variant': key, 'per_combination': out}


def _select(train_taus: np.ndarray) -> np.ndarray:
  """Index of the best candidate by mean τ over the training targets (first on ties).

  ``train_taus``: [candidates, training targets, ...]; a candidate undefined
  (NaN) on a training target is not eligible.
  """
  m = np.mean(train_taus, axis=1)
  m = np.where(np.isfinite(m), m, -np.inf)
  return np.argmax(m, axis=0)


def leave_one_target_out(
    point: Mapping[tuple, Mapping[str, Mapping[str, float | None]]],
    boots: Mapping[tuple, Mapping[str, np.ndarray]],
    targets: Sequence[str],
    baselines: Mapping[str, Mapping[str, Mapping]] | None = None,
) -> dict:
  """Leave-one-target-out selection of FaCe's variant and combination, with nested bootstrap.

  For each target t, the candidate (variant key, combination) with the best mean
  weighted τ over the *other* targets is selected (ties: the first in grid
  order, the specification's default first, sum before the pool combinations)
  and evaluated on t.  ``held_out_mean`` is the mean of those held-out τ.  The
  nested bootstrap redoes the selection inside every resample (the same model
  draws per target for every candidate and baseline), so its interval includes
  the variability of the choice.  The selection is run over every candidate
  (``all``) and within each combination (a single model's score can only be
  the sum).  Baselines are compared on the same draws: paired difference of the
  held-out mean to each baseline's mean over targets.

  Args:
    point: ``{(key, combo): {target: {combo: τ}}}``, the ablation's per-target τ.
    boots: ``{(key, combo): {target: [n_boot] τ}}`` on shared draws.
    targets: the targets.
    baselines: ``{score: {'per_target': {t: τ}, 'boots': {t: [n_boot]}}}``.

  Returns:
    A JSON-ready dict (see ``docs/face_ablation.md``).
  """
  if len(targets) < 2:
    return {'error': f'needs at least 2 targets, got {list(targets)}'}
  cands = list(point)
  families = {'all': cands}
  for c in COMBO_OPTION:
    if any(k[1] == c for k in cands):
      families[COMBO_OPTION[c]] = [k for k in cands if k[1] == c]
  tau = {
      k: np.array(
          [np.nan if point[k][t][k[1]] is None else point[k][t][k[1]] for t in targets], np.float64
      )
      for k in cands
  }
  n_boot = len(next(iter(boots[cands[0]].values())))
  result: dict[str, Any] = {
      'rule': 'for each held-out target, the candidate (variant, combination) with the best '
      'mean weighted tau over the other targets (ties: the first in grid order); '
      'evaluated on the held-out target',
      'n_boot': n_boot,
      'families': {},
  }
  for fam, ks in families.items():
    pt = np.stack([tau[k] for k in ks])  # [C, T]
    bt = np.stack([np.stack([boots[k][t] for t in targets]) for k in ks])  # [C, T, B]
    folds = {}
    held_boot = np.zeros((len(targets), n_boot))
    for j, t in enumerate(targets):
      others = [i for i in range(len(targets)) if i != j]
      sel = int(_select(pt[:, others]))
      sel_b = _select(bt[:, others, :])  # [B]
      held_boot[j] = bt[sel_b, j, np.arange(n_boot)]
      lo, hi = _quantiles(held_boot[j])
      picks = [ks[i] for i in sel_b]
      top = max(set(picks), key=picks.count)
      folds[t] = {
          'selected': {
              'variant': ks[sel][0],
              'combine': COMBO_OPTION[ks[sel][1]],
          },
          'train_mean_weighted_tau': float(np.mean(pt[sel, others])),
          'held_out_weighted_tau': None if np.isnan(pt[sel, j]) else float(pt[sel, j]),
          'held_out_low': lo,
          'held_out_high': hi,
          'bootstrap_selection_stability': float(picks.count(ks[sel]) / n_boot),
          'bootstrap_most_selected': {
              'variant': top[0],
              'combine': COMBO_OPTION[top[1]],
              'fraction': float(picks.count(top) / n_boot),
          },
      }
    held = [folds[t]['held_out_weighted_tau'] for t in targets]
    mean_boot = np.mean(held_boot, axis=0)
    lo, hi = _quantiles(mean_boot)
    # Selected on every target (the choice this rule makes for the library's default).
    sel_all = ks[int(_select(pt[:, :, None])[0])]
    entry = {
        'candidates': len(ks),
        'folds': folds,
        'held_out_mean': None if any(v is None for v in held) else float(np.mean(held)),
        'held_out_mean_low': lo,
        'held_out_mean_high': hi,
        'selected_on_all_targets': {
            'variant': sel_all[0],
            'combine': COMBO_OPTION[sel_all[1]],
            'in_sample_mean_weighted_tau': float(np.mean(pt[ks.index(sel_all)])),
        },
        'versus_baselines': {},
    }
    for name, b in (baselines or {}).items():
      per = [b['per_target'][t] for t in targets]
      base_mean = None if any(v is None for v in per) else float(np.mean(per))
      d = mean_boot - np.mean([b['boots'][t] for t in targets], axis=0)
      d = d[np.isfinite(d)]
      dlo, dhi = _quantiles(d)
      entry['versus_baselines'][name] = {
          'baseline_mean_weighted_tau': base_mean,
          'baseline_per_target': per,
          'delta': None
          if base_mean is None or entry['held_out_mean'] is None
          else entry['held_out_mean'] - base_mean,
          'delta_low': dlo,
          'delta_high': dhi,
          'p_face_better': float(np.mean(d > 0)) if d.size else None,
      }
    result['families'][fam] = entry
  return result


def ablation_rows(abl: Mapping) -> list[dict]:
  rows = []
  for v in abl['variants']:
    row = {'variant': v['key'], **{a: v[a] for a in harness.ABLATION_AXES}}
    for c in COMBOS:
      for t in abl['targets']:
        row[f'{c}:{t}'] = v['per_target'][t][c]
      row[f'{c}:mean'] = v['mean'][c]
      row[f'{c}:mean_low'] = v['mean_low'][c]
      row[f'{c}:mean_high'] = v['mean_high'][c]
      row[f'{c}:delta_vs_default'] = v['delta_vs_default'][c]
      row[f'{c}:delta_low'] = v['delta_low'][c]
      row[f'{c}:delta_high'] = v['delta_high'][c]
      row[f'{c}:p_better_than_default'] = v['p_better_than_default'][c]
    rows.append(row)
  return rows


def _f(v, d=3) -> str:
  return '—' if v is None else f'{v:+.{d}f}'


def ablation_markdown(abl: Mapping) -> str:
  """Markdown: every variant sorted by mean weighted τ of C + F, with C, F and pool columns."""
  ts = abl['targets']
  head = (
      ['variant (weighting/vc/bc_cov/fairness)']
      + [f'C+F {t}' for t in ts]
      + [
          'C+F mean [95% CI]',
          'C+F − spec default [95% CI]',
          'C alone mean',
          'F alone mean',
          'pool min–max mean',
          'pool min–max − spec default [95% CI]',
          'pool z-score mean',
          'pool rank mean',
      ]
  )
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  key = lambda v: -math.inf if v['mean']['C+F'] is None else v['mean']['C+F']
  for v in sorted(abl['variants'], key=key, reverse=True):
    name = (
        v['key']
        + (' (spec default)' if v['key'] == abl['default'] else '')
        + (
            f' (face_jax default, {COMBO_NAMES[FACE_JAX_DEFAULT_COMBO]})'
            if v['key'] == harness.variant_key(FACE_JAX_DEFAULT)
            else ''
        )
    )
    ci = f"{_f(v['mean']['C+F'])} [{_f(v['mean_low']['C+F'])}, {_f(v['mean_high']['C+F'])}]"
    delta = lambda c: (
        f"{_f(v['delta_vs_default'][c])} [{_f(v['delta_low'][c])}, " f"{_f(v['delta_high'][c])}]"
    )
    cells = (
        [name]
        + [_f(v['per_target'][t]['C+F']) for t in ts]
        + [
            ci,
            delta('C+F'),
            _f(v['mean']['C']),
            _f(v['mean']['F']),
            _f(v['mean']['pool']),
            delta('pool'),
            _f(v['mean']['pool_zscore']),
            _f(v['mean']['pool_rank']),
        ]
    )
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def loto_markdown(loto: Mapping) -> str:
  """Markdown: per selection family, the held-out τ of each fold and the comparison to baselines."""
  if 'error' in loto:
    return f"Leave-one-target-out selection: not run ({loto['error']})."
  lines = [
      '| candidates | held-out target | selected on the other targets (variant, combine) | '
      'their mean τ | held-out τ [95% nested CI] | selection stability |',
      '|---|---|---|---|---|---|',
  ]
  for fam, e in loto['families'].items():
    for t, f in e['folds'].items():
      sel = f['selected']
      ci = f"[{_f(f['held_out_low'])}, {_f(f['held_out_high'])}]"
      lines.append(
          f"| {fam} ({e['candidates']}) | {t} | {sel['variant']}, {sel['combine']} | "
          f"{_f(f['train_mean_weighted_tau'])} | {_f(f['held_out_weighted_tau'])} {ci} | "
          f"{f['bootstrap_selection_stability']:.2f} |"
      )
    ci = f"[{_f(e['held_out_mean_low'])}, {_f(e['held_out_mean_high'])}]"
    sel = e['selected_on_all_targets']
    lines.append(
        f"| {fam} | **mean over held-out targets** | (on all targets: {sel['variant']}, "
        f"{sel['combine']}; in-sample {_f(sel['in_sample_mean_weighted_tau'])}) | | "
        f"**{_f(e['held_out_mean'])}** {ci} | |"
    )
  fams = list(loto['families'])
  lines += [
      '',
      'Held-out FaCe (each selection rule: the mean over its held-out targets) minus each '
      "score's mean weighted τ, paired on the same model draws [95% nested bootstrap "
      "interval]; the face* rows are FaCe at the library's default (chosen on these targets, "
      'so in-sample).',
      '',
      '| score | mean weighted τ | ' + ' | '.join(f'Δ {fam}' for fam in fams) + ' |',
      '|---|---|' + '---|' * len(fams),
  ]
  rows = loto['families']['all']['versus_baselines']
  order = sorted(rows, key=lambda n: -(rows[n]['baseline_mean_weighted_tau'] or -math.inf))
  for n in order:
    cells = []
    for fam in fams:
      r = loto['families'][fam]['versus_baselines'][n]
      cells.append(f"{_f(r['delta'])} [{_f(r['delta_low'])}, {_f(r['delta_high'])}]")
    mean = rows[n]['baseline_mean_weighted_tau']
    lines.append(f'| {n} | {_f(mean)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------
# Replicate ceiling of the ground truth.


def _half_truth(entry: Mapping, half: Sequence[int]) -> float:
  """Ground truth from a subset of the seeds: the LR chosen on their mean val accuracy (ties:
  lower mean val cross-entropy, then the smaller LR), its mean test accuracy over them."""
  rows = []
  for r in entry['runs']:
    per = [s for s in r['seeds'] if s['seed'] in half]
    if len(per) != len(half):
      raise KeyError(f"LR {r['lr']} lacks seeds {sorted(set(half) - {s['seed'] for s in per})}")
    val = float(np.mean([s['val_accuracy'] for s in per]))
    loss = float(np.mean([s['val_loss'] for s in per]))
    rows.append((-val, loss, r['lr'], float(np.mean([s['test_accuracy'] for s in per]))))
  return min(rows)[3]


def replicate_weighted_tau(
    results: Mapping[str, Mapping], *, n_boot: int = 1000, seed: int = 0
) -> dict:
  """How well the ground truth agrees with itself: weighted τ between two disjoint halves of seeds.

  For every split of the fine-tuning seeds into two halves of equal size, each
  half gives a ground truth per model (``_half_truth``: the LR chosen on that
  half's validation accuracy, its mean test accuracy), and the weighted τ
  between the two halves' ground truths is computed over the models.  The
  estimate is the mean over the splits; its interval a percentile bootstrap over
  models (the same draw for every split).  It is the ceiling a score can be
  expected to reach against a ground truth made from half the seeds (the full
  ground truth, from all seeds, is somewhat less noisy).

  Args:
    results: ``{model: ground-truth entry}`` of one target.

  Returns:
    ``{'estimate', 'low', 'high', 'per_split': [{'halves', 'weighted_tau'}], 'seeds',
    'n_models', 'n_boot', 'seed'}``, or ``{'error': ...}`` with fewer than 4 common seeds.
  """
  import itertools

  models = sorted(results)
  common = None
  for m in models:
    got = {s['seed'] for r in results[m]['runs'] for s in r['seeds']}
    common = got if common is None else common & got
  seeds = sorted(common or ())
  if len(seeds) < 4:
    return {'error': f'needs at least 4 seeds per model, have {seeds}'}
  half = len(seeds) // 2
  splits = [
      (list(a), [x for x in seeds[: 2 * half] if x not in a])
      for a in itertools.combinations(seeds[: 2 * half], half)
      if seeds[0] in a
  ]
  pairs = [
      (
          np.array([_half_truth(results[m], a) for m in models]),
          np.array([_half_truth(results[m], b) for m in models]),
      )
      for a, b in splits
  ]
  per_split = [
      {'halves': [a, b], 'weighted_tau': _wtau(x, y)} for (a, b), (x, y) in zip(splits, pairs)
  ]
  est = [p['weighted_tau'] for p in per_split]
  rng = np.random.default_rng(seed)
  boots = []
  for _ in range(n_boot):
    idx = rng.integers(0, len(models), size=len(models))
    vals = [_wtau(x[idx], y[idx]) for x, y in pairs]
    if all(v is not None for v in vals):
      boots.append(float(np.mean(vals)))
  lo, hi = _quantiles(np.array(boots)) if boots else (None, None)
  return {
      'estimate': None if any(v is None for v in est) else float(np.mean(est)),
      'low': lo,
      'high': hi,
      'per_split': per_split,
      'seeds': seeds,
      'n_models': len(models),
      'n_boot': n_boot,
      'seed': seed,
  }


# ---------------------------------------------------------------------------------------------
# NC1 before / after fine-tuning.

_CORR_FNS = {
    'weighted_tau': ev.weighted_tau,
    'kendall_tau': ev.kendall_tau,
    'spearman': ev.spearman,
    'pearson': ev.pearson,
}


def correlations(
    x: Mapping[str, float], y: Mapping[str, float], names: Sequence[str], *, n_boot: int, seed: int
) -> dict:
  """Rank/linear correlations of two ``{model: value}`` maps with bootstrap intervals.

  Returns:
    ``{stat: {'estimate', 'low', 'high', ...}}``, or ``{stat: {'error': ...}}`` where
    a statistic is undefined.
  """
  models = sorted(x)
  xa = np.array([x[m] for m in models], np.float64)
  ya = np.array([y[m] for m in models], np.float64)
  out = {}
  for n in names:
    fn = _CORR_FNS[n]
    try:
      if n_boot:
        out[n] = ev.bootstrap_ci(fn, xa, ya, n_boot=n_boot, seed=seed).to_dict()
      else:
        out[n] = {'estimate': float(fn(xa, ya)), 'low': None, 'high': None}
    except (ev.EvaluationInputError, ev.UndefinedStatisticError) as e:
      out[n] = {'error': f'{type(e).__name__}: {e}'}
  return out


def nc1_pre_vs_post(variants: Mapping, gt: Mapping, *, n_boot: int = 1000, seed: int = 0) -> dict:
  """NC1 of the pre-trained features vs NC1 after fine-tuning, per target, across the zoo.

  ``pre``: balanced NC1 of the pre-trained default-layer features on the target
  train split (the split the models are scored on).  ``post``: the same
  quantity for the fine-tuned model (chosen LR) on the same split; ``post_test``:
  on the test split.  Correlations are computed on log NC1 (Pearson) and on
  ranks (Kendall τ_b, Spearman ρ, and weighted τ, with bootstrap intervals).
  """
  out = {'definition': nc1_pre_vs_post.__doc__.split('\n\n')[1].strip(), 'targets': {}}
  for t, per_model in variants.items():
    models = sorted(per_model)
    pre = {m: per_model[m][DEFAULT_KEY]['nc1'] for m in models}
    g = gt['results'][t]
    post = {m: g[m]['nc1_train'] for m in models}
    post_test = {m: g[m]['nc1_test'] for m in models}
    acc = {m: g[m]['test_accuracy'] for m in models}
    entry: dict[str, Any] = {
        'models': {
            m: {
                'nc1_pre': pre[m],
                'nc1_post': post[m],
                'nc1_post_test': post_test[m],
                'test_accuracy': acc[m],
            }
            for m in models
        }
    }
    finite = all(math.isfinite(v) and v > 0 for d in (pre, post, post_test) for v in d.values())
    if not finite:
      entry['error'] = 'non-finite or zero NC1'
      out['targets'][t] = entry
      continue
    lpre = {m: math.log(v) for m, v in pre.items()}
    for name, other in (('post', post), ('post_test', post_test)):
      lo = {m: math.log(v) for m, v in other.items()}
      entry[f'pre_vs_{name}'] = correlations(lpre, lo, tuple(_CORR_FNS), n_boot=n_boot, seed=seed)
    # How each NC1 ranks the fine-tuned accuracy (lower NC1 = more collapsed = predicted better).
    for name, d in (('pre', pre), ('post', post)):
      entry[f'neg_nc1_{name}_vs_accuracy'] = correlations(
          {m: -math.log(v) for m, v in d.items()},
          acc,
          ('weighted_tau', 'kendall_tau', 'spearman'),
          n_boot=n_boot,
          seed=seed,
      )
    out['targets'][t] = entry
  return out


# ---------------------------------------------------------------------------------------------
# Plots.


def _figure(w, h):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(w, h), dpi=110)
  FigureCanvasAgg(fig)
  return fig


def plot_weighted_tau(evals: Mapping, path: str) -> str:
  """Grouped bars: weighted τ (95% CI) of every score, one bar per target."""
  targets = list(evals)
  names = []
  for e in evals.values():
    names += [n for n in e['scores'] if n not in names]
  fig = _figure(max(6.0, 0.75 * len(names) + 2.5), 4.4)
  ax = fig.add_subplot(1, 1, 1)
  width = 0.8 / max(len(targets), 1)
  colors = ['#4C72B0', '#DD8452', '#55A868', '#C44E52', '#8172B2']
  for j, t in enumerate(targets):
    xs, ys, lo, hi = [], [], [], []
    for i, n in enumerate(names):
      rep = evals[t]['scores'].get(n, {})
      if 'weighted_tau' not in rep:
        continue
      w = rep['weighted_tau']
      xs.append(i + (j - (len(targets) - 1) / 2) * width)
      ys.append(w['estimate'])
      lo.append(w['estimate'] - (w['low'] if w['low'] is not None else w['estimate']))
      hi.append((w['high'] if w['high'] is not None else w['estimate']) - w['estimate'])
    ax.bar(
        xs,
        ys,
        width,
        yerr=[lo, hi],
        capsize=2,
        color=colors[j % len(colors)],
        label=t,
        error_kw={'lw': 0.8},
    )
  ax.axhline(0.0, color='grey', lw=0.8)
  ax.set_xticks(range(len(names)), names, rotation=35, ha='right', fontsize=8)
  ax.set_ylabel('weighted τ vs fine-tuned test accuracy')
  ax.set_ylim(-1.05, 1.05)
  ax.set_title('How well each score ranks the zoo (95% bootstrap CI over models)', fontsize=10)
  ax.legend(fontsize=8, ncol=len(targets), loc='lower left')
  ax.grid(True, axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  return path


def plot_ablation(abl: Mapping, path: str) -> str:
  """Heat map: mean weighted τ over targets of every variant (rows) × combination (columns)."""
  vs = sorted(
      abl['variants'], key=lambda v: (v['weighting'], v['vc_transform'], v['bc_cov'], v['fairness'])
  )
  cols = [(c, None) for c in COMBOS] + [('C+F', t) for t in abl['targets']]
  m = np.array(
      [
          [
              np.nan
              if (v['mean'][c] if t is None else v['per_target'][t][c]) is None
              else (v['mean'][c] if t is None else v['per_target'][t][c])
              for c, t in cols
          ]
          for v in vs
      ]
  )
  fig = _figure(2.0 + 0.95 * len(cols), 1.2 + 0.26 * len(vs))
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(m, cmap='RdBu', vmin=-1, vmax=1, aspect='auto')
  for i in range(m.shape[0]):
    for j in range(m.shape[1]):
      if np.isfinite(m[i, j]):
        ax.text(
            j,
            i,
            f'{m[i, j]:+.2f}',
            ha='center',
            va='center',
            fontsize=6.5,
            color='white' if abs(m[i, j]) > 0.6 else 'black',
        )
  labels = [
      COMBO_NAMES[c].replace(' (pool min–max)', '\n(pool)') + ('\nmean' if t is None else f'\n{t}')
      for c, t in cols
  ]
  ax.set_xticks(range(len(cols)), labels, fontsize=7)
  ax.set_yticks(
      range(len(vs)),
      [v['key'] + (' *' if v['key'] == abl['default'] else '') for v in vs],
      fontsize=7,
  )
  ax.xaxis.tick_top()
  fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label='weighted τ')
  ax.set_title('FaCe ablation: weighted τ vs fine-tuned accuracy (* = default)', fontsize=9, pad=28)
  fig.tight_layout()
  fig.savefig(path)
  return path


def _est(d: Mapping, stat: str, digits: int = 2) -> str:
  v = d.get(stat, {}).get('estimate')
  return 'undefined' if v is None else f'{v:+.{digits}f}'


def plot_nc1(nc1: Mapping, path: str) -> str:
  """One log–log panel per target: pre-trained NC1 vs fine-tuned NC1 (train split)."""
  ts = [t for t, e in nc1['targets'].items() if 'error' not in e]
  fig = _figure(4.2 * max(len(ts), 1), 4.0)
  for j, t in enumerate(ts):
    e = nc1['targets'][t]
    ax = fig.add_subplot(1, max(len(ts), 1), j + 1)
    ms = sorted(e['models'])
    x = np.array([e['models'][m]['nc1_pre'] for m in ms])
    y = np.array([e['models'][m]['nc1_post'] for m in ms])
    acc = np.array([e['models'][m]['test_accuracy'] for m in ms])
    sc = ax.scatter(x, y, c=acc, cmap='viridis', s=30, zorder=3)
    for m, xi, yi in zip(ms, x, y):
      ax.annotate(m, (xi, yi), xytext=(2, 2), textcoords='offset points', fontsize=5)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('NC1 of pre-trained features')
    ax.set_ylabel('NC1 after fine-tuning')
    p = e['pre_vs_post']
    ax.set_title(
        f"{t}: Kendall τ {_est(p, 'kendall_tau')}, Spearman ρ {_est(p, 'spearman')}", fontsize=9
    )
    ax.grid(True, alpha=0.3, which='both')
    fig.colorbar(sc, ax=ax, fraction=0.05, label='fine-tuned test accuracy')
  fig.tight_layout()
  fig.savefig(path)
  return path


# ---------------------------------------------------------------------------------------------
# Markdown summary.


def zoo_table(manifest: Mapping, gt: Mapping, models: Sequence[str]) -> str:
  targets = list(gt['results'])
  head = ['model', 'arch', 'source', 'loss', 'params', 'source val acc'] + [
      f'{t} test acc (lr)' for t in targets
  ]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for m in models:
    e = manifest[m]
    cells = [
        m,
        e['arch'],
        e['source'],
        e['loss'],
        f"{e['num_params']:,}",
        f"{e['source_val_accuracy']:.3f}",
    ]
    for t in targets:
      g = gt['results'][t].get(m)
      cells.append('—' if g is None else f"{g['test_accuracy']:.3f} ({g['chosen_lr']:g})")
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def weighted_tau_table(evals: Mapping) -> str:
  targets = list(evals)
  names = []
  for e in evals.values():
    names += [n for n in e['scores'] if n not in names]
  head = (
      ['score']
      + [f'{t} weighted τ [95% CI]' for t in targets]
      + ['mean', 'Kendall τ (mean)', 'Pearson (mean)', 'top-1 rel. acc (mean)']
  )
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for n in names:
    cells, wt, kt, pr, top = [n], [], [], [], []
    for t in targets:
      rep = evals[t]['scores'].get(n, {})
      if 'weighted_tau' not in rep:
        cells.append('error')
        continue
      w = rep['weighted_tau']
      ci = '' if w['low'] is None else f" [{w['low']:+.2f}, {w['high']:+.2f}]"
      mark = f" (n={rep['n_models']})" if rep.get('missing') else ''
      cells.append(f"{w['estimate']:+.3f}{ci}{mark}")
      wt.append(w['estimate'])
      kt.append(rep['kendall_tau']['estimate'])
      pr.append(rep['pearson']['estimate'])
      top.append(rep['top1_relative_accuracy']['estimate'])
    full = len(wt) == len(targets)
    cells += [
        f'{np.mean(wt):+.3f}' if full else '—',
        f'{np.mean(kt):+.3f}' if full else '—',
        f'{np.mean(pr):+.3f}' if full else '—',
        f'{np.mean(top):.3f}' if full else '—',
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def nc1_table(nc1: Mapping) -> str:
  head = [
      'target',
      'pre vs post (train): Kendall τ',
      'Spearman ρ [95% CI]',
      'Pearson (log)',
      'pre vs post (test): Spearman ρ',
      '−NC1 pre vs acc: Kendall τ',
      '−NC1 post vs acc: Kendall τ',
  ]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for t, e in nc1['targets'].items():
    if 'error' in e:
      lines.append(f'| {t} | {e["error"]} |' + ' |' * (len(head) - 2))
      continue
    p, pt = e['pre_vs_post'], e['pre_vs_post_test']
    s = p['spearman']
    ci = '' if s.get('low') is None else f" [{s['low']:+.2f}, {s['high']:+.2f}]"
    lines.append(
        '| '
        + ' | '.join(
            [
                t,
                _est(p, 'kendall_tau', 3),
                _est(p, 'spearman', 3) + ci,
                _est(p, 'pearson', 3),
                _est(pt, 'spearman', 3),
                _est(e['neg_nc1_pre_vs_accuracy'], 'kendall_tau', 3),
                _est(e['neg_nc1_post_vs_accuracy'], 'kendall_tau', 3),
            ]
        )
        + ' |'
    )
  return '\n'.join(lines)


def evaluate(
    scores: Mapping,
    gt: Mapping,
    manifest: Mapping,
    out_dir: str,
    *,
    n_boot: int = 1000,
    ablation_boot: int = 500,
    seed: int = 0,
) -> dict:
  """Writes every evaluation output (see the module docstring) to ``out_dir``.

  Returns:
    ``{'evaluation': ..., 'ablation': ..., 'nc1': ..., 'files': [...]}``.
  """
  os.makedirs(out_dir, exist_ok=True)
  manifest = manifest.get('models', manifest)
  files = []
  evals = evaluate_scores(scores, gt, manifest, n_boot=n_boot, seed=seed)
  files.append(
      reports.write_json(
          os.path.join(out_dir, 'evaluation.json'),
          {
              'split_scored': scores.get('split'),
              'n_boot': n_boot,
              'seed': seed,
              'reference': {
                  REFERENCE: 'the source val '
                  'accuracy of each model: a naive predictor for context, '
                  'not a transferability metric'
              },
              'targets': evals,
          },
      )
  )
  files.append(reports.write_csv(os.path.join(out_dir, 'evaluation.csv'), evaluation_rows(evals)))
  baselines = {
      name: {t: e['scores'][name]['scores'] for t, e in evals.items()}
      for name in score_names(scores)
      if all('scores' in e['scores'].get(name, {}) for e in evals.values())
  }
  abl = ablation(scores['face_variants'], gt, n_boot=ablation_boot, seed=seed, baselines=baselines)
  files.append(reports.write_json(os.path.join(out_dir, 'ablation.json'), abl))
  files.append(reports.write_csv(os.path.join(out_dir, 'ablation.csv'), ablation_rows(abl)))
  with open(os.path.join(out_dir, 'ablation.md'), 'w') as f:
    f.write(loto_markdown(abl['leave_one_target_out']) + '\n\n' + ablation_markdown(abl) + '\n')
  files.append(os.path.join(out_dir, 'ablation.md'))
  nc1 = nc1_pre_vs_post(scores['face_variants'], gt, n_boot=n_boot, seed=seed)
  files.append(reports.write_json(os.path.join(out_dir, 'nc1_pre_vs_post.json'), nc1))
  # Plots.
  for t, e in evals.items():
    rep = e['scores'].get('face', {})
    if 'scores' in rep:
      files.append(
          reports.plot_scores_vs_truth(
              rep['scores'],
              e['truth'],
              os.path.join(out_dir, f'face_vs_truth_{t}.png'),
              score_name='FaCe score (default variant)',
              truth_name=f'{t}: fine-tuned test accuracy',
              title=f'FaCe vs fine-tuned accuracy on {t}',
          )
      )
  files.append(plot_weighted_tau(evals, os.path.join(out_dir, 'weighted_tau.png')))
  files.append(plot_ablation(abl, os.path.join(out_dir, 'ablation.png')))
  files.append(plot_nc1(nc1, os.path.join(out_dir, 'nc1_pre_vs_post.png')))
  models = sorted(next(iter(scores['scores'].values())))
  md = [
      '## Zoo',
      '',
      zoo_table(manifest, gt, models),
      '',
      '## Weighted τ per target',
      '',
      weighted_tau_table(evals),
      '',
      '## FaCe: leave-one-target-out selection (held-out weighted τ)',
      '',
      loto_markdown(abl['leave_one_target_out']),
      '',
      '## FaCe ablation (weighted τ)',
      '',
      ablation_markdown(abl),
      '',
      '## NC1 before vs after fine-tuning',
      '',
      nc1_table(nc1),
      '',
  ]
  with open(os.path.join(out_dir, 'summary.md'), 'w') as f:
    f.write('\n'.join(md))
  files.append(os.path.join(out_dir, 'summary.md'))
  return {'evaluation': evals, 'ablation': abl, 'nc1': nc1, 'files': files}
