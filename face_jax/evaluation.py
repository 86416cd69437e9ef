"""Evaluating a transferability score by how well it ranks a model zoo.

A transferability score is judged by how well its ranking of pre-trained
models agrees with the ranking by ground truth (usually the accuracy each
model reaches after fine-tuning on the target task).  This module holds the
usual measures, with bootstrap confidence intervals over models, a one-call
report and its table rows (``face_jax.reports`` writes them: CSV, Markdown, the
score-vs-truth plot).

Synopsis::

    from face_jax import evaluation

    scores = {"resnet18": -1.9, "vit_tiny": -0.7, "mlp": -3.2, "cnn": -1.1}
    truth = {"resnet18": 0.81, "vit_tiny": 0.88, "mlp": 0.52, "cnn": 0.85}

    evaluation.weighted_tau(scores, truth)          # 1.0: same ranking
    report = evaluation.evaluate_ranking(scores, truth, n_boot=1000, seed=0)
    report["weighted_tau"]                          # {"estimate": ..., "low": ..., ...}
    rows = evaluation.ranking_table({"FaCe": report})

    from face_jax import reports
    reports.write_csv("zoo.csv", rows)
    reports.plot_scores_vs_truth(scores, truth, "zoo.png")

Conventions:

* Higher is better for both the score and the ground truth.
* Every function accepts either two mappings ``{model: value}`` with the same
  keys (aligned by key; models are processed in the order of ``sorted(keys,
  key=str)``, so the result does not depend on insertion order) or two 1-D
  array-likes of the same length (aligned by position).
* Values must be finite.  A non-finite value raises ``EvaluationInputError``
  naming the model (or its index).
* A statistic that is undefined for the given values (for instance any
  correlation when all scores are equal) raises ``UndefinedStatisticError``.
  Unlike SciPy, which returns NaN there, no function in this module returns
  NaN.

References:
  S. Vigna, "A weighted correlation index for rankings with ties", WWW 2015
  (weighted Kendall tau).  M. G. Kendall, "The treatment of ties in ranking
  problems", Biometrika 1945 (tau-b).  B. Efron and R. Tibshirani, "An
  Introduction to the Bootstrap", 1993, ch. 13 (percentile intervals).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "BootstrapCI",
    "EvaluationInputError",
    "METRICS",
    "UndefinedStatisticError",
    "aligned_pair",
    "bootstrap_ci",
    "evaluate_ranking",
    "kendall_tau",
    "pearson",
    "ranking_table",
    "spearman",
    "top1_relative_accuracy",
    "weighted_tau",
]

# Number of pair entries processed at once by the O(n^2) pair sums; bounds the
# temporary memory to a few tens of MiB whatever the number of models.
_PAIR_BLOCK_ELEMENTS = 1 << 20


class EvaluationInputError(ValueError):
  """Bad input: mismatched model sets, wrong shapes, too few models, non-finite values."""


class UndefinedStatisticError(ValueError):
  """The statistic is undefined for these values (e.g. all scores are equal)."""


# ---------------------------------------------------------------------------
# Input handling.


def aligned_pair(
    scores: Any, truth: Any, *, min_models: int, what: str
) -> tuple[list[Any], np.ndarray, np.ndarray]:
  """Aligns scores and truth.

  Args:
    scores: mapping model -> value, or 1-D array-like [n].
    truth: same kind as ``scores``.
    min_models: smallest accepted number of models.
    what: name of the calling function, used in error messages.

  Returns:
    (names, x, y): model names (or integer positions) [n], float64 scores
    [n] and float64 truths [n].

  Raises:
    EvaluationInputError: on any problem, with a message naming the models.
  """
  s_map = isinstance(scores, Mapping)
  t_map = isinstance(truth, Mapping)
  if s_map != t_map:
    raise EvaluationInputError(
        f"{what}: scores and truth must both be mappings {{model: value}} or "
        f"both be arrays; got {type(scores).__name__} and {type(truth).__name__}."
    )
  if s_map:
    s_keys, t_keys = set(scores), set(truth)
    if s_keys != t_keys:
      only_s = sorted(map(str, s_keys - t_keys))
      only_t = sorted(map(str, t_keys - s_keys))
      raise EvaluationInputError(
          f"{what}: scores and truth must cover the same models; only in "
          f"scores: {only_s}; only in truth: {only_t}."
      )
    names = sorted(scores, key=str)
    if len({str(k) for k in names}) != len(names):
      raise EvaluationInputError(f"{what}: model keys must have distinct str() forms.")
    x = [scores[k] for k in names]
    y = [truth[k] for k in names]
  else:
    x, y = scores, truth
    names = None
  try:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise EvaluationInputError(f"{what}: values must be real numbers ({e}).") from e
  if x.ndim != 1 or y.ndim != 1:
    raise EvaluationInputError(
        f"{what}: scores and truth must be 1-D; got shapes {x.shape} and {y.shape}."
    )
  if x.shape != y.shape:
    raise EvaluationInputError(
        f"{what}: scores and truth have different lengths {x.size} and {y.size}."
    )
  if names is None:
    names = list(range(x.size))
  if x.size < min_models:
    raise EvaluationInputError(f"{what}: needs at least {min_models} models, got {x.size}.")
  for label, arr in (("score", x), ("truth", y)):
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
      which = ", ".join(f"{names[i]!s}={arr[i]}" for i in bad[:10])
      raise EvaluationInputError(f"{what}: non-finite {label} for model(s) {which}.")
  return names, x, y


def _is_constant(a: np.ndarray) -> bool:
  return bool(np.all(a == a[0]))


# ---------------------------------------------------------------------------
# Weighted Kendall tau (Vigna 2015), as in scipy.stats.weightedtau.


def _pair_sums(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, additive: bool
) -> tuple[float, float, float]:
  """Weighted pair sums over all unordered pairs {i, j}, i != j.

  With the pair weight ``w_ij = w_i + w_j`` (additive) or ``w_i * w_j``:

    num = sum_{i<j} w_ij sgn(x_i - x_j) sgn(y_i - y_j)
    tx  = sum_{i<j} w_ij [x_i != x_j]
    ty  = sum_{i<j} w_ij [y_i != y_j]

  O(n^2) time in blocks of rows, O(_PAIR_BLOCK_ELEMENTS) memory.

  Args:
    x: [n] float64.
    y: [n] float64.
    w: [n] float64 non-negative element weights.
    additive: pair weight rule.

  Returns:
    (num, tx, ty) as Python floats.
  """
  n = x.size
  rows = max(1, _PAIR_BLOCK_ELEMENTS // max(n, 1))
  num = tx = ty = 0.0
  cols = np.arange(n)
  for start in range(0, n, rows):
    stop = min(n, start + rows)
    i = np.arange(start, stop)[:, None]
    upper = cols[None, :] > i  # [b, n]: each unordered pair once
    sx = np.sign(x[start:stop, None] - x[None, :])
    sy = np.sign(y[start:stop, None] - y[None, :])
    if additive:
      wij = w[start:stop, None] + w[None, :]
    else:
      wij = w[start:stop, None] * w[None, :]
    wij = np.where(upper, wij, 0.0)
    num += float(np.sum(wij * sx * sy))
    tx += float(np.sum(wij * np.abs(sx)))
    ty += float(np.sum(wij * np.abs(sy)))
  return num, tx, ty


def _tau_from_sums(num: float, tx: float, ty: float, what: str) -> float:
  if not (tx > 0.0 and ty > 0.0):
    raise UndefinedStatisticError(
        f"{what} is undefined: the total weight of pairs not tied in the "
        f"scores ({tx}) or in the truth ({ty}) is zero (constant values, or a "
        "weigher that gives zero weight to every untied pair)."
    )
  tau = num / math.sqrt(tx) / math.sqrt(ty)
  # Rounding can push |tau| a few ulps above 1; clamp like SciPy does.
  return min(1.0, max(-1.0, tau))


def _lexicographic_rank(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Decreasing lexicographic rank by (x, y): 0 for the largest x (ties by y).

  Matches SciPy's convention exactly, including exact (x, y) duplicates:
  elements are sorted increasingly by (x, y) with a stable sort, the order is
  reversed, and rank[i] is the position of element i in the reversed order
  (so among exact duplicates the one with the larger index ranks first).

  Args:
    x: [n] primary key.
    y: [n] secondary key.

  Returns:
    [n] int64 ranks, a permutation of 0..n-1.
  """
  order = np.lexsort((y, x))[::-1]
  rank = np.empty(x.size, dtype=np.int64)
  rank[order] = np.arange(x.size)
  return rank


def _element_weights(rank: np.ndarray, weigher: Callable[[int], float] | None) -> np.ndarray:
  if weigher is None:
    return 1.0 / (rank.astype(np.float64) + 1.0)
  w = np.empty(rank.size, dtype=np.float64)
  for i, r in enumerate(rank.tolist()):
    try:
      w[i] = float(weigher(int(r)))
    except (TypeError, ValueError) as e:
      raise EvaluationInputError(
          f"weighted_tau: weigher({r}) did not return a real number ({e})."
      ) from e
    if not (math.isfinite(w[i]) and w[i] >= 0.0):
      raise EvaluationInputError(
          f"weighted_tau: weigher({r}) returned {w[i]}; weights must be finite " "and non-negative."
      )
  return w


def _weighted_tau_one(
    x: np.ndarray,
    y: np.ndarray,
    rank: np.ndarray,
    weigher: Callable[[int], float] | None,
    additive: bool,
) -> float:
  w = _element_weights(rank, weigher)
  num, tx, ty = _pair_sums(x, y, w, additive)
  return _tau_from_sums(num, tx, ty, "weighted_tau")


def weighted_tau(
    scores: Any,
    truth: Any,
    *,
    weigher: Callable[[int], float] | None = None,
    additive: bool = True,
    rank: Any = True,
) -> float:
  r"""Weighted Kendall tau (Vigna 2015), same definition as ``scipy.stats.weightedtau``.

  Each element i gets a weight ``w_i = weigher(r_i)`` from a rank ``r_i``
  (0 = most important).  A pair {i, j} weighs ``w_i + w_j`` (``additive``) or
  ``w_i * w_j``.  Then

  .. math::

     \tau_w = \frac{\sum_{i<j} w_{ij}\,\mathrm{sgn}(x_i-x_j)\,\mathrm{sgn}(y_i-y_j)}
                   {\sqrt{\sum_{i<j} w_{ij}[x_i\ne x_j]}\;\sqrt{\sum_{i<j} w_{ij}[y_i\ne y_j]}}

  so a pair tied in either variable adds nothing to the numerator, and ties
  in x (in y) shrink the first (second) denominator factor: Vigna's
  tau-b-like handling of ties, which is exactly what SciPy computes.  The
  result is clamped to [-1, 1] against rounding.

  ``rank`` (as in SciPy 1.17):

  * ``True`` (default): the mean of the values obtained with the decreasing
    lexicographic rank by (scores, truth) and by (truth, scores).
  * ``None``: the decreasing lexicographic rank by (scores, truth): rank 0
    for the highest score, ties broken by the higher truth; exact
    duplicates are ordered as SciPy orders them (see ``_lexicographic_rank``).
  * ``False``: element positions 0..n-1 are the ranks (for mappings, the
    positions in ``sorted(keys, key=str)`` order).
  * an array-like [n] of real numbers (or a mapping model -> number when the
    inputs are mappings): reduced to dense ranks first (0 for the smallest
    value; equal values share a rank), as SciPy 1.17 does.

  Computed directly over all pairs in O(n^2) time (fine for model zoos of up
  to a few thousand models); SciPy's O(n log n) merge sort gives the same
  value up to rounding (tests check 1e-12).

  Args:
    scores: mapping model -> score, or array-like [n].
    truth: mapping model -> ground truth, or array-like [n].
    weigher: maps a non-negative int rank to a non-negative weight; called
      once per element with a Python int.  Default: hyperbolic ``1/(r+1)``.
    additive: add (True) or multiply (False) the two element weights.
    rank: see above.

  Returns:
    The weighted tau as a Python float in [-1, 1].

  Raises:
    EvaluationInputError: mismatched models, fewer than 2 models, non-finite
      values, a bad ``rank`` array or weigher output.
    UndefinedStatisticError: scores or truth constant (SciPy returns NaN), or
      every untied pair has weight zero.

  >>> weighted_tau([1, 2, 3, 4], [10, 20, 30, 40])
  1.0
  """
  names, x, y = aligned_pair(scores, truth, min_models=2, what="weighted_tau")
  if not isinstance(additive, (bool, np.bool_)):
    raise EvaluationInputError(f"weighted_tau: additive must be a bool, got {additive!r}.")
  additive = bool(additive)
  if isinstance(rank, (bool, np.bool_)) and bool(rank):
    t1 = _weighted_tau_one(x, y, _lexicographic_rank(x, y), weigher, additive)
    t2 = _weighted_tau_one(y, x, _lexicographic_rank(y, x), weigher, additive)
    return (t1 + t2) / 2.0
  if rank is None:
    r = _lexicographic_rank(x, y)
  elif isinstance(rank, (bool, np.bool_)):  # False
    r = np.arange(x.size, dtype=np.int64)
  else:
    if isinstance(rank, Mapping):
      if not isinstance(scores, Mapping) or set(rank) != set(names):
        raise EvaluationInputError(
            "weighted_tau: a rank mapping needs mapping inputs with the same models."
        )
      rank = [rank[k] for k in names]
    try:
      rank_arr = np.asarray(rank, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
      raise EvaluationInputError(f"weighted_tau: rank must be numeric ({e}).") from e
    if rank_arr.size != x.size:
      raise EvaluationInputError(
          f"weighted_tau: rank has {rank_arr.size} entries for {x.size} models."
      )
    if not np.all(np.isfinite(rank_arr)):
      raise EvaluationInputError("weighted_tau: rank must be finite.")
    r = np.unique(rank_arr, return_inverse=True)[1].astype(np.int64).ravel()
  return _weighted_tau_one(x, y, r, weigher, additive)


def kendall_tau(scores: Any, truth: Any) -> float:
  r"""Kendall's tau-b (Kendall 1945), as ``scipy.stats.kendalltau`` (default variant 'b').

  .. math::

     \tau_b = \frac{n_c - n_d}{\sqrt{(n_0 - n_1)(n_0 - n_2)}}

  with n_c / n_d the concordant / discordant pairs, n_0 = n(n-1)/2, and n_1
  (n_2) the pairs tied in the scores (truth).

  Args:
    scores: mapping model -> score, or array-like [n].
    truth: mapping model -> ground truth, or array-like [n].

  Returns:
    tau-b as a Python float in [-1, 1].

  Raises:
    EvaluationInputError: see ``weighted_tau``.
    UndefinedStatisticError: scores or truth constant.

  >>> round(kendall_tau([1, 2, 3], [1, 3, 2]), 12)
  0.333333333333
  """
  _, x, y = aligned_pair(scores, truth, min_models=2, what="kendall_tau")
  num, tx, ty = _pair_sums(x, y, np.ones_like(x), additive=False)
  return _tau_from_sums(num, tx, ty, "kendall_tau")


def pearson(scores: Any, truth: Any) -> float:
  """Pearson's linear correlation coefficient, computed in float64.

  Args:
    scores: mapping model -> score, or array-like [n].
    truth: mapping model -> ground truth, or array-like [n].

  Returns:
    r as a Python float in [-1, 1] (clamped against rounding).

  Raises:
    EvaluationInputError: see ``weighted_tau``.
    UndefinedStatisticError: scores or truth constant (exact equality).

  >>> round(pearson([1, 2, 3], [2, 4, 6.5]), 6)
  0.997949
  """
  _, x, y = aligned_pair(scores, truth, min_models=2, what="pearson")
  return _pearson(x, y, "pearson")


def _pearson(x: np.ndarray, y: np.ndarray, what: str) -> float:
  if _is_constant(x) or _is_constant(y):
    raise UndefinedStatisticError(f"{what} is undefined: scores or truth are constant.")
  # Scale first so that huge or tiny magnitudes neither overflow nor underflow.
  dx = x - x.mean()
  dy = y - y.mean()
  dx = dx / np.max(np.abs(dx))
  dy = dy / np.max(np.abs(dy))
  r = float(np.dot(dx, dy) / (np.linalg.norm(dx) * np.linalg.norm(dy)))
  return min(1.0, max(-1.0, r))


def _average_ranks(a: np.ndarray) -> np.ndarray:
  """Ranks 1..n with ties given their average rank (``scipy.stats.rankdata``).

  Args:
    a: [n] values.

  Returns:
    [n] float64 ranks.
  """
  order = np.argsort(a, kind="stable")
  sorted_a = a[order]
  # Group boundaries of equal values in sorted order.
  new_group = np.concatenate(([True], sorted_a[1:] != sorted_a[:-1]))
  starts = np.flatnonzero(new_group)
  ends = np.concatenate((starts[1:], [a.size]))  # exclusive
  avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1..end
  group_of = np.cumsum(new_group) - 1
  ranks = np.empty(a.size, dtype=np.float64)
  ranks[order] = avg[group_of]
  return ranks


def spearman(scores: Any, truth: Any) -> float:
  """Spearman's rank correlation: Pearson's r of the average ranks (ties averaged).

  Args:
    scores: mapping model -> score, or array-like [n].
    truth: mapping model -> ground truth, or array-like [n].

  Returns:
    rho as a Python float in [-1, 1].

  Raises:
    EvaluationInputError: see ``weighted_tau``.
    UndefinedStatisticError: scores or truth constant.

  >>> round(spearman([1, 2, 3], [1, 3, 2]), 12)
  0.5
  """
  _, x, y = aligned_pair(scores, truth, min_models=2, what="spearman")
  if _is_constant(x) or _is_constant(y):
    raise UndefinedStatisticError("spearman is undefined: scores or truth are constant.")
  return _pearson(_average_ranks(x), _average_ranks(y), "spearman")


def top1_relative_accuracy(scores: Any, truth: Any) -> float:
  """Truth of the top-scored model divided by the best truth ("Rel@1").

  Ties: when several models share the highest score, the mean of their truths
  is used, i.e. the expected value when the tie is broken uniformly at
  random.  Ties in the truth need no rule (only the maximum is used).

  Args:
    scores: mapping model -> score, or array-like [n].
    truth: mapping model -> ground truth, or array-like [n]; must have a
      positive maximum (e.g. accuracies), otherwise the ratio is meaningless.

  Returns:
    A Python float; in (0, 1] when every truth is non-negative, 1.0 when the
    top-scored model is (one of) the best.

  Raises:
    EvaluationInputError: see ``weighted_tau``; also a non-positive best truth.

  >>> top1_relative_accuracy([0.1, 0.9, 0.5], [0.8, 0.6, 0.9])
  0.6666666666666666
  """
  _, x, y = aligned_pair(scores, truth, min_models=2, what="top1_relative_accuracy")
  best = float(np.max(y))
  if not best > 0.0:
    raise EvaluationInputError(
        f"top1_relative_accuracy: the best truth must be positive, got {best}."
    )
  top = x == np.max(x)
  return float(np.mean(y[top])) / best


# ---------------------------------------------------------------------------
# Bootstrap.


@dataclasses.dataclass(frozen=True)
class BootstrapCI:
  """A point estimate with a percentile bootstrap interval.

  Unpacks as ``estimate, low, high = bootstrap_ci(...)``.

  Attributes:
    estimate: the statistic on the full (not resampled) set of models.
    low: the alpha/2 quantile of the bootstrap distribution.
    high: the 1 - alpha/2 quantile.
    alpha: 1 - coverage of the interval.
    n_boot: resamples drawn.
    n_skipped: resamples skipped because the statistic was undefined on them
      (see ``bootstrap_ci``); the quantiles use ``n_boot - n_skipped`` values.
  """

  estimate: float
  low: float
  high: float
  alpha: float
  n_boot: int
  n_skipped: int

  def __iter__(self) -> Iterator[float]:
    return iter((self.estimate, self.low, self.high))

  def to_dict(self) -> dict[str, float | int]:
    return dataclasses.asdict(self)


def bootstrap_ci(
    fn: Callable[[np.ndarray, np.ndarray], float],
    scores: Any,
    truth: Any,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    max_skipped_fraction: float = 0.5,
) -> BootstrapCI:
  """Percentile bootstrap interval of ``fn(scores, truth)``, resampling models.

  Each resample draws n models with replacement (``numpy.random.default_rng
  (seed).integers``), so the same seed gives the same resamples for every
  ``fn``: intervals of different statistics are paired.  The interval is
  ``[q(alpha/2), q(1 - alpha/2)]`` of the resampled values (``np.quantile``,
  linear interpolation) (Efron & Tibshirani 1993, ch. 13).

  Degenerate resamples: a resample can make the statistic undefined, e.g. if
  it draws one model n times (all scores equal).  Such a resample (``fn``
  raises ``UndefinedStatisticError`` or returns a non-finite value) is
  skipped and counted in ``n_skipped``; the interval is conditional on a
  defined statistic.  With n models at least n / n^n of the resamples are of
  one model only (11% for n = 3, under 1% for n >= 5).  If more than
  ``max_skipped_fraction`` of the resamples are skipped, or fewer than 2
  remain, ``UndefinedStatisticError`` is raised instead.  Any other exception
  from ``fn`` propagates.

  Args:
    fn: statistic, called as ``fn(scores [n] float64, truth [n] float64)``.
    scores: mapping model -> score, or array-like [n]; n >= 3.
    truth: mapping model -> ground truth, or array-like [n].
    n_boot: number of resamples, >= 2.
    alpha: 1 - coverage, in (0, 1).
    seed: resampling seed.
    max_skipped_fraction: in [0, 1).

  Returns:
    A ``BootstrapCI`` (unpacks as ``(estimate, low, high)``).

  Raises:
    EvaluationInputError: bad inputs or options.
    UndefinedStatisticError: the statistic is undefined on the full data, or
      too many resamples were degenerate.
  """
  _, x, y = aligned_pair(scores, truth, min_models=3, what="bootstrap_ci")
  if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
    raise EvaluationInputError(f"bootstrap_ci: n_boot must be an int >= 2, got {n_boot!r}.")
  if not 0.0 < alpha < 1.0:
    raise EvaluationInputError(f"bootstrap_ci: alpha must be in (0, 1), got {alpha}.")
  if not 0.0 <= max_skipped_fraction < 1.0:
    raise EvaluationInputError(
        f"bootstrap_ci: max_skipped_fraction must be in [0, 1), got {max_skipped_fraction}."
    )
  estimate = float(fn(x, y))
  if not math.isfinite(estimate):
    raise UndefinedStatisticError(f"bootstrap_ci: the statistic is {estimate} on the full data.")
  n = x.size
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n, size=(int(n_boot), n))
  values = []
  skipped = 0
  for b in range(int(n_boot)):
    try:
      v = float(fn(x[idx[b]], y[idx[b]]))
    except UndefinedStatisticError:
      skipped += 1
      continue
    if not math.isfinite(v):
      skipped += 1
      continue
    values.append(v)
  if skipped > max_skipped_fraction * n_boot or len(values) < 2:
    raise UndefinedStatisticError(
        f"bootstrap_ci: the statistic was undefined on {skipped} of {n_boot} "
        f"resamples of {n} models (limit {max_skipped_fraction:.0%})."
    )
  low, high = np.quantile(np.asarray(values), [alpha / 2.0, 1.0 - alpha / 2.0])
  return BootstrapCI(
      estimate=estimate,
      low=float(low),
      high=float(high),
      alpha=float(alpha),
      n_boot=int(n_boot),
      n_skipped=skipped,
  )


# ---------------------------------------------------------------------------
# Report, table, plot.

METRICS: tuple[str, ...] = (
    "weighted_tau",
    "kendall_tau",
    "spearman",
    "pearson",
    "top1_relative_accuracy",
)

_METRIC_FNS: dict[str, Callable[[Any, Any], float]] = {
    "weighted_tau": weighted_tau,
    "kendall_tau": kendall_tau,
    "spearman": spearman,
    "pearson": pearson,
    "top1_relative_accuracy": top1_relative_accuracy,
}


def evaluate_ranking(
    scores: Mapping[Any, float],
    truth: Mapping[Any, float],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
  """All ranking measures of one score on one zoo, with bootstrap intervals.

  Args:
    scores: mapping model -> score (higher = predicted to transfer better);
      at least 3 models.
    truth: mapping model -> ground truth (e.g. fine-tuned accuracy) with the
      same models.
    n_boot: resamples per metric (the same resamples for every metric, see
      ``bootstrap_ci``); 0 skips the intervals (``low``/``high`` are None).
    alpha: 1 - coverage of the intervals.
    seed: resampling seed.

  Returns:
    A JSON-serialisable dict::

      {"n_models": int, "models": [str, ...],            # sorted by str
       "top1_models": [str, ...],                         # highest score (ties)
       "best_models": [str, ...],                         # highest truth (ties)
       "alpha": float, "n_boot": int, "seed": int,
       "weighted_tau": {"estimate", "low", "high", "alpha", "n_boot", "n_skipped"},
       "kendall_tau": {...}, "spearman": {...}, "pearson": {...},
       "top1_relative_accuracy": {...}}

  Raises:
    EvaluationInputError: not mappings, mismatched models, fewer than 3
      models, non-finite values, non-positive best truth.
    UndefinedStatisticError: a metric is undefined on the full data (constant
      scores or truth), or too many resamples were degenerate.
  """
  if not (isinstance(scores, Mapping) and isinstance(truth, Mapping)):
    raise EvaluationInputError("evaluate_ranking: scores and truth must be mappings.")
  names, x, y = aligned_pair(scores, truth, min_models=3, what="evaluate_ranking")
  if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
    raise EvaluationInputError(f"evaluate_ranking: n_boot must be an int >= 0, got {n_boot!r}.")
  out: dict[str, Any] = {
      "n_models": int(x.size),
      "models": [str(k) for k in names],
      "top1_models": [str(names[i]) for i in np.flatnonzero(x == x.max())],
      "best_models": [str(names[i]) for i in np.flatnonzero(y == y.max())],
      "alpha": float(alpha),
      "n_boot": int(n_boot),
      "seed": int(seed),
  }
  for metric in METRICS:
    fn = _METRIC_FNS[metric]
    if n_boot == 0:
      out[metric] = {
          "estimate": float(fn(x, y)),
          "low": None,
          "high": None,
          "alpha": float(alpha),
          "n_boot": 0,
          "n_skipped": 0,
      }
    else:
      out[metric] = bootstrap_ci(fn, x, y, n_boot=n_boot, alpha=alpha, seed=seed).to_dict()
  return out


def ranking_table(
    reports: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[str] = METRICS,
) -> list[dict[str, Any]]:
  """Flattens ``evaluate_ranking`` reports into table rows.

  Args:
    reports: mapping row name (e.g. the score's name) -> report.
    metrics: metric columns, each giving ``<m>``, ``<m>_low``, ``<m>_high``.

  Returns:
    One dict per report, in the mapping's order: ``{"name", "n_models",
    <m>, <m>_low, <m>_high, ...}``.
  """
  rows = []
  for name, rep in reports.items():
    row: dict[str, Any] = {"name": str(name), "n_models": rep["n_models"]}
    for m in metrics:
      if m not in rep:
        raise EvaluationInputError(f"ranking_table: report {name!r} has no metric {m!r}.")
      row[m] = rep[m]["estimate"]
      row[f"{m}_low"] = rep[m]["low"]
      row[f"{m}_high"] = rep[m]["high"]
    rows.append(row)
  return rows
