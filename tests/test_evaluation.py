"""Tests for face_jax.evaluation: SciPy oracles, tie handling, bootstrap, reports, plots."""

import csv
import doctest
import json
import math

import numpy as np
import pytest
from scipy import stats

from face_jax import evaluation as ev
from face_jax import reports

# SciPy computes the weighted tau with an O(n log n) merge sort; we sum pairs
# directly.  Both are float64 sums of O(n) terms of size O(1), so they agree to
# a few ulps times n; 1e-12 is the tolerance the task sets.
TOL = 1e-12


def _random_pair(rng, n, kind):
  """Scores and truth with a controlled amount of ties."""
  if kind == "continuous":
    return rng.normal(size=n), rng.normal(size=n)
  if kind == "ties":  # few distinct values: many ties in x, y and jointly
    return (
        rng.integers(0, rng.integers(2, 6), n).astype(float),
        rng.integers(0, rng.integers(2, 6), n).astype(float),
    )
  if kind == "duplicates":  # exact (x, y) duplicates: tests lexsort tie-breaking
    base_x, base_y = rng.normal(size=max(2, n // 3)), rng.normal(size=max(2, n // 3))
    pick = rng.integers(0, base_x.size, n)
    return base_x[pick], base_y[pick]
  if kind == "mixed":  # ties in x only, continuous y correlated with x
    x = np.round(rng.normal(size=n), 1)
    return x, x + 0.5 * rng.normal(size=n)
  raise ValueError(kind)


_KINDS = ("continuous", "ties", "duplicates", "mixed")


def _weighers():
  return {
      "default": None,
      "constant": lambda r: 1.0,
      "hyper_sq": lambda r: 1.0 / (r + 1) ** 2,
      "exp": lambda r: math.exp(-0.3 * r),
      "zero_tail": lambda r: 1.0 if r < 5 else 0.25,
  }


def _options(rng, n):
  """All option combinations the task asks for, including rank arrays."""
  rank_int = rng.integers(0, n, n)  # with ties
  rank_perm = rng.permutation(n)
  rank_float = rng.normal(size=n)
  for wname, weigher in _weighers().items():
    for additive in (True, False):
      for rname, rank in (
          ("True", True),
          ("None", None),
          ("False", False),
          ("int", rank_int),
          ("perm", rank_perm),
          ("float", rank_float),
      ):
        yield f"{wname}/{additive}/{rname}", dict(weigher=weigher, additive=additive, rank=rank)


def _assert_matches_scipy(x, y, kw):
  expected = stats.weightedtau(x, y, **kw).statistic
  if np.isnan(expected):
    with pytest.raises(ev.UndefinedStatisticError):
      ev.weighted_tau(x, y, **kw)
    return 0
  got = ev.weighted_tau(x, y, **kw)
  assert isinstance(got, float)
  assert abs(got - expected) <= TOL, (x, y, kw, got, expected)
  return 1


@pytest.mark.parametrize("kind", _KINDS)
def test_weighted_tau_matches_scipy_random(kind):
  rng = np.random.default_rng(hash(kind) % 2**32)
  checked = 0
  for trial in range(12):
    n = int(rng.integers(2, 30)) if trial else 2
    x, y = _random_pair(rng, n, kind)
    for _, kw in _options(rng, n):
      checked += _assert_matches_scipy(x, y, kw)
  assert checked > 500


def test_weighted_tau_larger_and_blocked(monkeypatch):
  # Force many row blocks in the pair sums.
  monkeypatch.setattr(ev, "_PAIR_BLOCK_ELEMENTS", 257)
  rng = np.random.default_rng(7)
  for kind in _KINDS:
    x, y = _random_pair(rng, 300, kind)
    for kw in (
        dict(),
        dict(rank=None),
        dict(additive=False),
        dict(rank=False),
        dict(weigher=lambda r: 1.0 / (r + 1) ** 0.5, additive=False, rank=None),
    ):
      _assert_matches_scipy(x, y, kw)


def test_weighted_tau_scipy_docstring_values():
  x = [12, 2, 1, 12, 2]
  y = [1, 4, 7, 1, 0]
  assert ev.weighted_tau(x, y) == pytest.approx(-0.56694968153682723, abs=TOL)
  assert ev.weighted_tau(x, y, additive=False) == pytest.approx(-0.62205716951801038, abs=TOL)
  assert ev.weighted_tau(x, y, weigher=lambda r: 1) == pytest.approx(-0.47140452079103173, abs=TOL)
  assert ev.weighted_tau(x, y, rank=None) == pytest.approx(-0.4157652301037516, abs=TOL)
  assert ev.weighted_tau(y, x, rank=None) == pytest.approx(-0.7181341329699028, abs=TOL)


def test_weighted_tau_integer_inputs_and_perfect_orders():
  assert ev.weighted_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
  assert ev.weighted_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0, abs=1e-15)
  x = np.array([3, 1, 2, 5], dtype=np.int32)
  y = np.array([0.1, 0.5, 0.2, 0.9])
  assert ev.weighted_tau(x, y) == pytest.approx(stats.weightedtau(x, y).statistic, abs=TOL)


def test_weighted_tau_weights_the_top():
  # Swapping the two best models costs more than swapping the two worst.
  truth = np.arange(10.0)
  top_swap = truth.copy()
  top_swap[[8, 9]] = top_swap[[9, 8]]
  bottom_swap = truth.copy()
  bottom_swap[[0, 1]] = bottom_swap[[1, 0]]
  assert ev.weighted_tau(top_swap, truth) < ev.weighted_tau(bottom_swap, truth) < 1.0
  assert ev.kendall_tau(top_swap, truth) == ev.kendall_tau(bottom_swap, truth)


def test_mapping_inputs_order_independent():
  rng = np.random.default_rng(3)
  names = [f"m{i}" for i in range(12)]
  s = rng.integers(0, 4, 12).astype(float)
  t = rng.integers(0, 4, 12).astype(float)
  scores = dict(zip(names, s))
  truth = dict(zip(reversed(names), t[::-1]))  # same pairs, other insertion order
  order = sorted(names)
  xs = np.array([scores[k] for k in order])
  ys = np.array([truth[k] for k in order])
  for fn in (ev.weighted_tau, ev.kendall_tau, ev.spearman, ev.pearson, ev.top1_relative_accuracy):
    assert fn(scores, truth) == fn(xs, ys)
  shuffled = dict(sorted(scores.items(), key=lambda kv: kv[1]))
  assert ev.weighted_tau(shuffled, truth, rank=None) == ev.weighted_tau(xs, ys, rank=None)
  # A rank mapping is aligned by model.
  rank_map = {k: i for i, k in enumerate(reversed(order))}
  assert ev.weighted_tau(scores, truth, rank=rank_map) == pytest.approx(
      stats.weightedtau(xs, ys, rank=np.arange(12)[::-1]).statistic, abs=TOL
  )


@pytest.mark.parametrize("kind", _KINDS)
def test_kendall_pearson_spearman_match_scipy(kind):
  rng = np.random.default_rng(11 + len(kind))
  for trial in range(40):
    n = int(rng.integers(2, 40)) if trial else 2
    x, y = _random_pair(rng, n, kind)
    x = x * 10.0 ** rng.integers(-3, 4) + rng.normal() * 100  # scale / offset
    cases = (
        (ev.kendall_tau, lambda a, b: stats.kendalltau(a, b).statistic),
        (ev.pearson, lambda a, b: stats.pearsonr(a, b).statistic),
        (ev.spearman, lambda a, b: stats.spearmanr(a, b).statistic),
    )
    for ours, ref in cases:
      if np.all(x == x[0]) or np.all(y == y[0]):
        with pytest.raises(ev.UndefinedStatisticError):
          ours(x, y)
        continue
      expected = ref(x, y)
      assert abs(ours(x, y) - expected) <= TOL, (ours.__name__, x, y)


def test_undefined_statistics_raise_not_nan():
  x = [1.0, 1.0, 1.0]
  y = [0.2, 0.5, 0.1]
  for fn in (ev.weighted_tau, ev.kendall_tau, ev.pearson, ev.spearman):
    with pytest.raises(ev.UndefinedStatisticError, match="undefined"):
      fn(x, y)
    with pytest.raises(ev.UndefinedStatisticError):
      fn(y, x)
  with pytest.raises(ev.UndefinedStatisticError):
    ev.weighted_tau([1, 2, 3], [3, 1, 2], weigher=lambda r: 0.0)


def test_top1_relative_accuracy():
  assert ev.top1_relative_accuracy([0.1, 0.9, 0.5], [0.8, 0.6, 0.9]) == pytest.approx(0.6 / 0.9)
  assert ev.top1_relative_accuracy([3, 2, 1], [0.9, 0.5, 0.9]) == 1.0
  # Tied top scores: mean truth of the tied models (expected value of a random pick).
  assert ev.top1_relative_accuracy([5, 5, 1], [0.4, 0.8, 1.0]) == pytest.approx(0.6)
  with pytest.raises(ev.EvaluationInputError, match="positive"):
    ev.top1_relative_accuracy([1, 2], [-0.5, 0.0])


def test_input_errors_name_models():
  with pytest.raises(
      ev.EvaluationInputError, match=r"only in scores: \['c'\].*only in truth: \['d'\]"
  ):
    ev.weighted_tau({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "d": 3})
  with pytest.raises(ev.EvaluationInputError, match=r"non-finite score for model\(s\) vit=nan"):
    ev.kendall_tau({"resnet": 1.0, "vit": float("nan")}, {"resnet": 1.0, "vit": 2.0})
  with pytest.raises(ev.EvaluationInputError, match=r"non-finite truth for model\(s\) 1=inf"):
    ev.spearman([1.0, 2.0, 3.0], [1.0, np.inf, 2.0])
  with pytest.raises(ev.EvaluationInputError, match="at least 2"):
    ev.pearson([1.0], [2.0])
  with pytest.raises(ev.EvaluationInputError, match="at least 3"):
    ev.bootstrap_ci(ev.kendall_tau, [1.0, 2.0], [2.0, 1.0])
  with pytest.raises(ev.EvaluationInputError, match="both be mappings"):
    ev.weighted_tau({"a": 1, "b": 2}, [1, 2])
  with pytest.raises(ev.EvaluationInputError, match="different lengths"):
    ev.weighted_tau([1, 2, 3], [1, 2])
  with pytest.raises(ev.EvaluationInputError, match="1-D"):
    ev.weighted_tau(np.ones((2, 2)), np.ones((2, 2)))
  with pytest.raises(ev.EvaluationInputError, match="rank has 2 entries"):
    ev.weighted_tau([1, 2, 3], [1, 2, 3], rank=[0, 1])
  with pytest.raises(ev.EvaluationInputError, match="non-negative"):
    ev.weighted_tau([1, 2, 3], [1, 3, 2], weigher=lambda r: -1.0)
  with pytest.raises(ev.EvaluationInputError, match="real numbers"):
    ev.pearson(["a", "b"], [1, 2])


def _manual_bootstrap(fn, x, y, n_boot, alpha, seed):
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, x.size, size=(n_boot, x.size))
  vals, skipped = [], 0
  for b in range(n_boot):
    xb, yb = x[idx[b]], y[idx[b]]
    if np.all(xb == xb[0]) or np.all(yb == yb[0]):
      skipped += 1
      continue
    vals.append(fn(xb, yb))
  return np.quantile(vals, [alpha / 2, 1 - alpha / 2]), skipped


def test_bootstrap_ci_reference_and_determinism():
  rng = np.random.default_rng(5)
  x = rng.normal(size=8)
  y = x + rng.normal(size=8)
  res = ev.bootstrap_ci(ev.spearman, x, y, n_boot=300, alpha=0.1, seed=4)
  (lo, hi), skipped = _manual_bootstrap(
      lambda a, b: stats.spearmanr(a, b).statistic, x, y, 300, 0.1, 4
  )
  assert res.estimate == ev.spearman(x, y)
  assert res.low == pytest.approx(lo, abs=1e-12) and res.high == pytest.approx(hi, abs=1e-12)
  assert res.n_skipped == skipped
  assert res.n_boot == 300 and res.alpha == 0.1
  est, low, high = res  # unpacks as a triple
  assert low <= high
  assert ev.bootstrap_ci(ev.spearman, x, y, n_boot=300, alpha=0.1, seed=4) == res
  assert ev.bootstrap_ci(ev.spearman, x, y, n_boot=300, alpha=0.1, seed=5) != res


def test_bootstrap_ci_degenerate_resamples_are_skipped_and_counted():
  x = np.array([0.1, 0.2, 0.3])
  y = np.array([0.5, 0.7, 0.6])
  res = ev.bootstrap_ci(ev.kendall_tau, x, y, n_boot=500, seed=0)
  _, skipped = _manual_bootstrap(ev.kendall_tau, x, y, 500, 0.05, 0)
  # With 3 models, 3/27 of resamples draw one model only (and are undefined).
  assert res.n_skipped == skipped
  assert 20 < res.n_skipped < 110
  assert -1.0 <= res.low <= res.high <= 1.0
  # A user statistic returning NaN (SciPy style) is also skipped, not propagated.
  res_nan = ev.bootstrap_ci(lambda a, b: stats.kendalltau(a, b).statistic, x, y, n_boot=500, seed=0)
  assert res_nan.n_skipped == res.n_skipped
  assert res_nan.low == pytest.approx(res.low) and res_nan.high == pytest.approx(res.high)
  with pytest.raises(ev.UndefinedStatisticError, match="undefined on"):
    ev.bootstrap_ci(ev.kendall_tau, x, y, n_boot=500, seed=0, max_skipped_fraction=0.0)
  with pytest.raises(ev.UndefinedStatisticError):
    ev.bootstrap_ci(ev.kendall_tau, [1.0, 1.0, 1.0], y, n_boot=50)
  with pytest.raises(ev.EvaluationInputError, match="n_boot"):
    ev.bootstrap_ci(ev.kendall_tau, x, y, n_boot=1)
  with pytest.raises(ev.EvaluationInputError, match="alpha"):
    ev.bootstrap_ci(ev.kendall_tau, x, y, alpha=1.5)


def test_bootstrap_other_errors_propagate():
  def broken(a, b):
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError, match="boom"):
    ev.bootstrap_ci(broken, [1, 2, 3], [1, 2, 3])


def _zoo(n=9, seed=0):
  rng = np.random.default_rng(seed)
  names = [f"model_{i}" for i in range(n)]
  truth = {k: float(v) for k, v in zip(names, rng.uniform(0.5, 0.95, n))}
  scores = {k: truth[k] + float(rng.normal(scale=0.05)) for k in names}
  return scores, truth


def test_evaluate_ranking_report_and_tables(tmp_path):
  scores, truth = _zoo()
  rep = ev.evaluate_ranking(scores, truth, n_boot=200, seed=1)
  json.dumps(rep)  # JSON-serialisable
  assert rep["n_models"] == 9 and rep["models"] == sorted(scores)
  assert rep["top1_models"] == [max(scores, key=scores.get)]
  assert rep["best_models"] == [max(truth, key=truth.get)]
  for m in ev.METRICS:
    r = rep[m]
    assert r["low"] <= r["high"] and r["n_boot"] == 200
  assert rep["weighted_tau"]["estimate"] == ev.weighted_tau(scores, truth)
  assert rep["pearson"]["estimate"] == ev.pearson(scores, truth)
  ci = ev.bootstrap_ci(ev.spearman, scores, truth, n_boot=200, seed=1)
  assert rep["spearman"] == ci.to_dict()

  rep0 = ev.evaluate_ranking(scores, truth, n_boot=0)
  assert rep0["kendall_tau"]["low"] is None
  rows = ev.ranking_table({"score_a": rep, "score_b": rep0})
  assert rows[0]["name"] == "score_a" and rows[1]["weighted_tau_low"] is None
  path = reports.write_csv(tmp_path / "t.csv", rows)
  with open(path) as f:
    read = list(csv.DictReader(f))
  assert float(read[0]["kendall_tau"]) == pytest.approx(rep["kendall_tau"]["estimate"])
  assert read[1]["kendall_tau_low"] == ""
  md = reports.format_markdown_table(rows)
  assert md.splitlines()[0].startswith("| name | n | weighted_tau")
  assert f"{rep['spearman']['estimate']:.3f} [" in md

  with pytest.raises(ev.EvaluationInputError, match="at least 3"):
    ev.evaluate_ranking({"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 0.6})
  with pytest.raises(ev.EvaluationInputError, match="mappings"):
    ev.evaluate_ranking([1, 2, 3], [1, 2, 3])
  with pytest.raises(ev.UndefinedStatisticError):
    ev.evaluate_ranking({k: 0.0 for k in scores}, truth, n_boot=10)


def test_plot_scores_vs_truth(tmp_path):
  scores, truth = _zoo(6)
  path = reports.plot_scores_vs_truth(scores, truth, tmp_path / "p.png", title="zoo")
  with open(path, "rb") as f:
    data = f.read()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
  # Undefined correlations are written as such, not as nan.
  path2 = reports.plot_scores_vs_truth({k: 1.0 for k in scores}, truth, tmp_path / "q.png")
  with open(path2, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_doctests():
  failures, attempted = doctest.testmod(ev)
  assert attempted >= 5 and failures == 0


def test_plot_labels_never_overlap():
  """Crowded points: every name written is clear of the others, of the points and of the box."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(0, 0.02, 12), [1.0, 2.0, 3.0]])
  y = np.concatenate([rng.normal(0.9, 0.01, 12), [0.5, 0.6, 0.7]])
  names = [f"model-number-{i}" for i in range(x.size)]
  fig = Figure(figsize=(5, 4), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  ax.scatter(x, y)
  box = ax.text(0.98, 0.02, "stats", transform=ax.transAxes, ha="right", va="bottom")
  fig.tight_layout()
  reports.place_labels(fig, ax, names, x, y, avoid=[box])
  r = fig.canvas.get_renderer()
  labels = [t for t in ax.texts if t is not box]
  boxes = [t.get_window_extent(r) for t in labels]
  assert 3 <= len(labels) < x.size  # the isolated ones fit, the cluster cannot all fit
  assert {"model-number-12", "model-number-13", "model-number-14"} <= {t.get_text() for t in labels}
  for i, a in enumerate(boxes):
    assert not a.overlaps(box.get_window_extent(r))
    for b in boxes[i + 1 :]:
      assert not a.overlaps(b)
