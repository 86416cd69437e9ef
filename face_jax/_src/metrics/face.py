"""FaCe (Fair Collapse): variance collapse + class fairness, as defined in docs/face.md.

FaCe was proposed by Ding, Jiang, Sheng, Zheng and Liang, *Unleashing the
power of Neural Collapse for Transferability Estimation* (arXiv 2310.05754,
2023).  The paper's equations and code are not public: this module implements
the reconstruction from the published description that docs/face.md fixes,
with every named variant, and reports each term separately.

    S = C + λ·F
    C = −NC1 ("neg") or −ln NC1 ("neglog"),   NC1 = Tr(Σ_W Σ_B^†)/K
    F = −std_k(o_k) ("std") | −(max − min) ("range") | normalised entropy ("entropy")
        | −std_k(o_k)/ō ("cv") | −std_k(ln o_k) ("log_std")
    o_k = mean_{j≠k} exp(−D_B(k, j))   (Bhattacharyya coefficients between class Gaussians)

or, over a pool of models scored on the same data, S = C̃ + λ·F̃ with each term
normalised over the pool (``combine`` = "pool_minmax", "pool_zscore", "pool_rank";
``face_pool``).

Everything here is host-side float64 numpy on finalised statistics; the plan
asks for one pass of ``Moments`` (two for balanced weighting on a stream whose
class counts are unequal and unknown up front, see
``collapse.class_moments_plan``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, ClassVar, Mapping

import numpy as np
import scipy.linalg
import scipy.special

from face_jax._src import engine as engine_lib
from face_jax._src import pool as pool_lib
from face_jax._src import registry
from face_jax._src import stats as stats_lib
from face_jax._src.errors import FaceJaxWarning, InputError
from face_jax._src.metrics import collapse
from face_jax._src.numerics import EPS64

VAR_FLOOR = 1e-4  # per-class variance floor (the floor GBC uses)

WEIGHTINGS = ('balanced', 'sample')
VC_TRANSFORMS = ('neg', 'neglog')
BC_COVS = ('pooled', 'diagonal', 'spherical')
FAIRNESSES = ('std', 'range', 'entropy', 'cv', 'log_std')
COMBINES = ('sum', 'pool_minmax', 'pool_zscore', 'pool_rank')
# The pool normalisation of each pool combination (``pool.pool_combine``).
POOL_NORMALISATIONS = {'pool_minmax': 'minmax', 'pool_zscore': 'zscore', 'pool_rank': 'rank'}


@dataclasses.dataclass(frozen=True)
class FaceOptions:
  """The FaCe variant (hashable).

  The defaults (sample / neg / diagonal / std, combined over a pool by
  "pool_zscore") are the choice of the leave-one-target-out selection on the
  model zoo of benchmarks/zoo (docs/face_ablation.md); the specification's
  defaults (docs/face.md) are balanced / neg / pooled / std with "sum".
  ``FaceOptions.CHOICES`` lists the allowed values of the named variants.

  Attributes:
    weighting: "balanced" (μ_G = mean of class means, Σ_W = mean of class
      covariances) or "sample" (μ_G = sample mean, Σ_W = pooled covariance).
    vc_transform: "neg" (C = −NC1) or "neglog" (C = −ln NC1).
    bc_cov: class Gaussians for the Bhattacharyya distance: "pooled" (shared
      ridge-regularised Σ_W), "diagonal" or "spherical" (per-class variances).
    fairness: "std", "range" or "entropy" of the per-class overlaps, or the
      scale-free "cv" (std / mean) or "log_std" (std of the log overlaps).
    temperature: t of the "entropy" fairness softmax (> 0).
    fairness_weight: λ in S = C + λ·F.
    ridge: ρ in Σ_reg = Σ_W + ρ·(Tr Σ_W / D)·I ("pooled" only; ≥ 0).
    combine: "sum", or the pool combination that ``face_pool`` applies by
      default: "pool_minmax", "pool_zscore" or "pool_rank" (each term
      normalised over the pool).  A single model's ``score`` is always the sum
      C + λ·F (``FaCeResult.combination`` says so): a pool score needs the pool.
  """

  CHOICES: ClassVar[Mapping[str, tuple]] = {
      'weighting': WEIGHTINGS,
      'vc_transform': VC_TRANSFORMS,
      'bc_cov': BC_COVS,
      'fairness': FAIRNESSES,
      'combine': COMBINES,
  }

  weighting: str = 'sample'
  vc_transform: str = 'neg'
  bc_cov: str = 'diagonal'
  fairness: str = 'std'
  temperature: float = 0.1
  fairness_weight: float = 1.0
  ridge: float = 1e-3
  combine: str = 'pool_zscore'

  def __post_init__(self):
    for name, allowed in self.CHOICES.items():
      if getattr(self, name) not in allowed:
        raise InputError(f'{name} must be one of {allowed}, got {getattr(self, name)!r}')
    if not (math.isfinite(self.temperature) and self.temperature > 0):
      raise InputError(f'temperature must be a positive number, got {self.temperature}')
    if not (math.isfinite(self.ridge) and self.ridge >= 0):
      raise InputError(f'ridge must be >= 0, got {self.ridge}')
    if not math.isfinite(self.fairness_weight):
      raise InputError(f'fairness_weight must be finite, got {self.fairness_weight}')


@dataclasses.dataclass(frozen=True)
class FaCeResult:
  """A FaCe score with its terms and diagnostics.

  Attributes:
    score: S = C + λ·F of this model alone (higher = predicted more
      transferable); see ``combination``.  A pool combination
      (``options.combine`` "pool_*") only exists over a pool: ``face_pool``.
    variance_collapse: C.
    class_fairness: F (0 = every class overlaps the others equally).
    nc1: Tr(Σ_W Σ_B^†)/K (+inf when all class means coincide).
    overlap: [K] o_k for every populated class, in label order (see ``classes``).
    log_overlap: [K] ln o_k, computed from the distances (finite where o_k
      underflows to 0; −inf only for an infinite distance to every other class).
    mean_overlap: ō.
    fairness_share: |λ·F| / (|C| + |λ·F|), F's share of the score's magnitude
      (0: fairness does nothing to the score; 0 when both terms are 0, 0 for an
      infinite C).
    combination: how ``score`` was formed: "sum" (C + λ·F).
    classes: [K] the populated class labels.
    class_counts: [num_classes] samples per label (zeros for left-out classes).
    options: the ``FaceOptions`` used.
    diagnostics: N, D, K, left_out classes, singleton classes, rank_sigma_b,
      cond_sigma_reg (pooled only), trace_sigma_w, passes.
  """

  score: float | None
  variance_collapse: float
  class_fairness: float
  nc1: float
  overlap: np.ndarray
  mean_overlap: float
  classes: np.ndarray
  class_counts: np.ndarray
  options: FaceOptions
  diagnostics: Mapping[str, Any]
  log_overlap: np.ndarray | None = None
  fairness_share: float = 0.0
  combination: str = 'sum'

  def to_dict(self) -> dict:
    """A JSON-friendly dict (arrays as lists)."""
    return {
        'score': self.score,
        'variance_collapse': self.variance_collapse,
        'class_fairness': self.class_fairness,
        'nc1': self.nc1,
        'overlap': [float(v) for v in self.overlap],
        'log_overlap': None if self.log_overlap is None else [float(v) for v in self.log_overlap],
        'mean_overlap': self.mean_overlap,
        'fairness_share': self.fairness_share,
        'combination': self.combination,
        'classes': [int(c) for c in self.classes],
        'class_counts': [int(c) for c in self.class_counts],
        'options': dataclasses.asdict(self.options),
        'diagnostics': {
            k: (list(v) if isinstance(v, (tuple, list, np.ndarray)) else v)
            for k, v in self.diagnostics.items()
        },
    }


# -- planning --------------------------------------------------------------------


def face_plan(info: engine_lib.StreamInfo, options: FaceOptions, dtype: str = 'float32'):
  """The pass plan of FaCe (a generator; see ``plan.run_plans``).

  One pass, except for balanced weighting when the class counts are unequal
  and unknown before streaming: then a second pass accumulates the balanced
  within-class scatter about the exact class means of the first
  (``collapse.class_moments_plan``).
  """
  fin, passes = yield from collapse.class_moments_plan(info, options.weighting, dtype)
  return face_from_moments(fin, options, passes=passes)


# -- the score ---------------------------------------------------------------------


def face_from_moments(
    moments: stats_lib.ClassMoments,
    options: FaceOptions = FaceOptions(),
    *,
    passes: int | None = None,
) -> FaCeResult:
  """FaCe from finalised class moments (a pure float64 function).

  Args:
    moments: ``ClassMoments`` whose scatter was accumulated with unit weights
      ("sample") or ``collapse.balanced_weights(counts)`` ("balanced"; unit
      weights are the same thing when the populated classes have equal counts).
    options: the variant.
    passes: recorded in the diagnostics.

  Returns:
    A ``FaCeResult``.

  Raises:
    InputError: fewer than 2 populated classes, or scatter weights that do not
      match ``options.weighting``.
  """
  counts = np.asarray(moments.counts, np.float64)
  present = counts > 0
  k = int(present.sum())
  if k < 2:
    raise InputError(
        f'FaCe needs at least 2 populated classes, got {k} '
        f'(class counts: {counts.astype(np.int64).tolist()})'
    )
  left_out = [int(c) for c in np.flatnonzero(~present)]
  if left_out:
    warnings.warn(
        f'{len(left_out)} class(es) have no sample and are left out: {left_out[:20]}'
        + (' ...' if len(left_out) > 20 else ''),
        FaceJaxWarning,
        stacklevel=2,
    )
  singletons = [int(c) for c in np.flatnonzero(counts == 1)]
  if singletons:
    warnings.warn(
        f'{len(singletons)} class(es) have a single sample (zero covariance): '
        f'{singletons[:20]}',
        FaceJaxWarning,
        stacklevel=2,
    )
  if moments.within_scatter is None:
    raise InputError('FaCe needs the within-class scatter (MomentsSpec.scatter=True)')
  collapse.check_weights(moments, present, options.weighting)

  n = counts.sum()
  d = moments.dim
  mu = moments.means[present]  # [K, D]
  cls_counts = counts[present]
  if options.weighting == 'balanced':
    mu_g = mu.mean(0)
  else:
    mu_g = (cls_counts[:, None] * mu).sum(0) / n
  sigma_w = moments.within_scatter / n  # [D, D]

  nc1, rank = collapse.nc1_core(
      mu, mu_g, sigma_w, cls_counts if options.weighting == 'sample' else None
  )
  if options.vc_transform == 'neg':
    c_term = -nc1
  else:
    c_term = math.inf if nc1 == 0 else -math.log(nc1)

  diag: dict[str, Any] = {
      'N': int(round(n)),
      'D': int(d),
      'K': k,
      'left_out': left_out,
      'singleton_classes': singletons,
      'rank_sigma_b': int(rank),
      'trace_sigma_w': float(np.trace(sigma_w)),
  }
  if options.bc_cov == 'pooled':
    dist, cond = _bhattacharyya_pooled(mu, sigma_w, options.ridge)
    diag['cond_sigma_reg'] = cond
  else:
    var = np.maximum(moments.var_diag[present], VAR_FLOOR)  # [K, D]
    if options.bc_cov == 'diagonal':
      dist = _bhattacharyya_diagonal(mu, var)
    else:
      dist = _bhattacharyya_spherical(mu, np.maximum(var.mean(1), VAR_FLOOR), d)
  bc = np.exp(-dist)
  np.fill_diagonal(bc, 0.0)
  overlap = bc.sum(1) / (k - 1)
  log_overlap = _log_overlap(dist)
  mean_overlap = float(overlap.mean())
  f_term = _fairness(overlap, log_overlap, options)
  if passes is not None:
    diag['passes'] = int(passes)
  weighted_f = options.fairness_weight * f_term
  return FaCeResult(
      score=float(c_term + weighted_f),
      variance_collapse=float(c_term),
      class_fairness=float(f_term),
      nc1=float(nc1),
      overlap=overlap,
      mean_overlap=mean_overlap,
      classes=np.flatnonzero(present),
      class_counts=counts.astype(np.int64),
      options=options,
      diagnostics=diag,
      log_overlap=log_overlap,
      fairness_share=fairness_share(c_term, weighted_f),
      combination='sum',
  )


def fairness_share(c_term: float, weighted_f: float) -> float:
  """|λF| / (|C| + |λF|): F's share of the magnitude of S = C + λF.

  0 when both terms are 0 or C is infinite; 1 when λF is infinite and C is not.
  """
  a, b = abs(float(c_term)), abs(float(weighted_f))
  if math.isinf(a):
    return 0.0
  if math.isinf(b):
    return 1.0
  return 0.0 if a + b == 0.0 else b / (a + b)


def _log_overlap(dist: np.ndarray) -> np.ndarray:
  """[K] ln o_k = logsumexp_{j≠k}(−D_B(k, j)) − ln(K − 1), finite where exp underflows."""
  k = dist.shape[0]
  neg = -np.asarray(dist, np.float64).copy()
  np.fill_diagonal(neg, -np.inf)
  out = np.full(k, -np.inf)
  finite = np.isfinite(neg).any(1)  # a row of +inf distances has ln o_k = −inf
  if finite.any():
    out[finite] = scipy.special.logsumexp(neg[finite], axis=1) - math.log(k - 1)
  return out


def _pairwise_sq_dists(u: np.ndarray) -> np.ndarray:
  """[K, K] squared Euclidean distances between the rows of u [K, D] (centred Gram)."""
  u = u - u.mean(0)
  sq = np.einsum('kd,kd->k', u, u)
  g = u @ u.T
  return np.maximum(sq[:, None] + sq[None, :] - 2.0 * g, 0.0)


def _bhattacharyya_pooled(mu: np.ndarray, sigma_w: np.ndarray, ridge: float):
  """D_B(i, j) = (1/8) δᵀ Σ_reg⁻¹ δ, Σ_reg = Σ_W + ρ(Tr Σ_W / D) I; returns (D_B, cond Σ_reg)."""
  k, d = mu.shape
  tr = float(np.trace(sigma_w))
  if tr <= 0.0:
    # Tr Σ_W = 0: point masses.  D_B = +inf between distinct means, 0 between equal ones.
    sq = _pairwise_sq_dists(mu)
    return np.where(sq > 0, np.inf, 0.0), math.inf
  reg = sigma_w + ridge * (tr / d) * np.eye(d)
  evals = np.linalg.eigvalsh(reg)
  cond = float(evals[-1] / evals[0]) if evals[0] > 0 else math.inf
  try:
    chol = np.linalg.cholesky(reg)
    u = scipy.linalg.solve_triangular(chol, (mu - mu.mean(0)).T, lower=True).T  # [K, D]
  except np.linalg.LinAlgError:
    warnings.warn(
        'Σ_reg is singular (ridge = 0 and a rank-deficient Σ_W): using its '
        'pseudo-inverse for the Bhattacharyya distances',
        FaceJaxWarning,
        stacklevel=3,
    )
    ev, vec = np.linalg.eigh(reg)
    keep = ev > ev[-1] * d * EPS64
    u = (mu - mu.mean(0)) @ vec[:, keep] / np.sqrt(ev[keep])
  return _pairwise_sq_dists(u) / 8.0, cond


def _bhattacharyya_diagonal(mu: np.ndarray, var: np.ndarray) -> np.ndarray:
  """Per-class diagonal Gaussians [K, K].

  D_B = (1/8) Σ_d δ_d²/v̄_d + (1/2) Σ_d [ln v̄_d − (ln v_i,d + ln v_j,d)/2].
  """
  k = mu.shape[0]
  logv = np.log(var)
  out = np.zeros((k, k))
  for i in range(k - 1):
    vbar = 0.5 * (var[i] + var[i + 1 :])  # [K-i-1, D]
    delta = mu[i] - mu[i + 1 :]
    term = 0.125 * (delta * delta / vbar).sum(1) + 0.5 * (
        np.log(vbar) - 0.5 * (logv[i] + logv[i + 1 :])
    ).sum(1)
    out[i, i + 1 :] = term
    out[i + 1 :, i] = term
  return out


def _bhattacharyya_spherical(mu: np.ndarray, v: np.ndarray, d: int) -> np.ndarray:
  """Spherical Gaussians [K, K] (the exact Gaussian formula).

  D_B = (1/8)‖δ‖²/v̄ + (D/2)[ln v̄ − (ln v_i + ln v_j)/2].
  """
  vbar = 0.5 * (v[:, None] + v[None, :])
  logv = np.log(v)
  return 0.125 * _pairwise_sq_dists(mu) / vbar + 0.5 * d * (
      np.log(vbar) - 0.5 * (logv[:, None] + logv[None, :])
  )


def _fairness(overlap: np.ndarray, log_overlap: np.ndarray, options: FaceOptions) -> float:
  k = overlap.shape[0]
  if options.fairness == 'std':
    return -float(np.sqrt(np.mean((overlap - overlap.mean()) ** 2)))
  if options.fairness == 'range':
    return -float(overlap.max() - overlap.min())
  if options.fairness in ('cv', 'log_std'):
    top = float(log_overlap.max())
    if top == -math.inf:  # every overlap is exactly 0: every class equally (un)overlapped
      return 0.0
    if options.fairness == 'cv':
      # std/mean is scale-free: computed on o_k / max_k o_k, which cannot underflow to all-zero.
      r = np.exp(log_overlap - top)
      return -float(np.sqrt(np.mean((r - r.mean()) ** 2)) / r.mean())
    if not np.all(np.isfinite(log_overlap)):
      return -math.inf  # some classes have o_k = 0 exactly, others not: infinitely unfair
    return -float(np.sqrt(np.mean((log_overlap - log_overlap.mean()) ** 2)))
  z = overlap / options.temperature
  z = z - z.max()
  p = np.exp(z)
  p /= p.sum()
  nz = p > 0
  h = -float(np.sum(p[nz] * np.log(p[nz])))
  return (h - math.log(k)) / math.log(k)


# -- pools ---------------------------------------------------------------------------


def _pool_settings(
    results: Mapping[str, FaCeResult], fairness_weight: float | None, combine: str | None
) -> tuple[float, str]:
  """(λ, combination) of a pool: the given ones, else the results' own (which must agree)."""
  if not results:
    raise InputError('face_pool needs at least one model')
  if fairness_weight is None:
    lams = {r.options.fairness_weight for r in results.values()}
    if len(lams) != 1:
      raise InputError(
          f'the results use different fairness weights {sorted(lams)}; '
          'pass fairness_weight explicitly'
      )
    fairness_weight = lams.pop()
  if combine is None:
    combines = {r.options.combine for r in results.values()}
    if len(combines) != 1:
      raise InputError(
          f'the results use different combinations {sorted(combines)}; pass combine explicitly'
      )
    combine = combines.pop()
  if combine not in COMBINES:
    raise InputError(f'combine must be one of {COMBINES}, got {combine!r}')
  return fairness_weight, combine


def face_pool(
    results: Mapping[str, FaCeResult],
    *,
    fairness_weight: float | None = None,
    combine: str | None = None,
) -> dict[str, float]:
  """FaCe over a pool of models on the same target data: S = C̃ + λ·F̃ (or C + λ·F).

  With a pool combination, C and F are each normalised over the pool
  ("pool_minmax": to [0, 1]; "pool_zscore": mean 0, std 1; "pool_rank": ranks
  scaled to [0, 1]; a term that is constant over the pool becomes 0) and
  summed; with "sum" the scores are the models' own C + λ·F.

  Args:
    results: ``{model: FaCeResult}``.
    fairness_weight: λ (default: the results' own ``options.fairness_weight``,
      which must then agree).
    combine: one of ``COMBINES`` (default: the results' own
      ``options.combine``, which must then agree).

  Returns:
    ``{model: pool score}`` (higher = predicted more transferable).

  Raises:
    InputError: empty pool, disagreeing λ or combinations, an unknown
      combination, or a non-finite term.
  """
  fairness_weight, combine = _pool_settings(results, fairness_weight, combine)
  comps = {
      m: {'variance_collapse': r.variance_collapse, 'class_fairness': r.class_fairness}
      for m, r in results.items()
  }
  return combine_terms(comps, combine, fairness_weight)


def combine_terms(
    terms: Mapping[str, Mapping[str, float]], combine: str, fairness_weight: float = 1.0
) -> dict[str, float]:
  """FaCe scores of a pool from its terms ``{model: {'variance_collapse', 'class_fairness'}}``.

  "sum": C + λ·F per model; a pool combination: ``pool.pool_combine`` of the two
  terms with weights (1, λ).  Non-finite terms raise for pool combinations.
  """
  if combine == 'sum':
    return {
        m: float(t['variance_collapse'] + fairness_weight * t['class_fairness'])
        for m, t in terms.items()
    }
  return pool_lib.pool_combine(
      terms,
      {'variance_collapse': 1.0, 'class_fairness': fairness_weight},
      POOL_NORMALISATIONS[combine],
  )


def pool_fairness_shares(
    terms: Mapping[str, Mapping[str, float]], combine: str, fairness_weight: float = 1.0
) -> dict[str, float]:
  """F's share of each model's pool score: |λ·F̃| / (|C̃| + |λ·F̃|).

  C̃ and F̃ are the terms as ``combine_terms`` adds them: normalised over the pool
  for a pool combination (so a term constant over the pool contributes 0), the
  raw terms for "sum" (then this is ``FaCeResult.fairness_share``).  A share near
  0 for every model means fairness does not move the ranking; with "pool_zscore"
  both terms have unit spread over the pool, so shares are of order 1/2 unless F
  is constant over the pool.

  Args:
    terms: ``{model: {'variance_collapse': C, 'class_fairness': F}}``.
    combine: one of ``COMBINES``.
    fairness_weight: λ.

  Returns:
    ``{model: share in [0, 1]}``.
  """
  if combine not in COMBINES:
    raise InputError(f'combine must be one of {COMBINES}, got {combine!r}')
  if combine == 'sum':
    c = {m: float(t['variance_collapse']) for m, t in terms.items()}
    f = {m: float(t['class_fairness']) for m, t in terms.items()}
  else:
    how = POOL_NORMALISATIONS[combine]
    c = pool_lib.pool_combine(
        {m: {'variance_collapse': t['variance_collapse']} for m, t in terms.items()},
        {'variance_collapse': 1.0},
        how,
    )
    f = pool_lib.pool_combine(
        {m: {'class_fairness': t['class_fairness']} for m, t in terms.items()},
        {'class_fairness': 1.0},
        how,
    )
  return {m: fairness_share(c[m], fairness_weight * f[m]) for m in terms}


def face_pool_shares(
    results: Mapping[str, FaCeResult],
    *,
    fairness_weight: float | None = None,
    combine: str | None = None,
) -> dict[str, float]:
  """F's share of each model's ``face_pool`` score (``pool_fairness_shares`` of the results).

  Same arguments and defaults as ``face_pool``: λ and the combination default to
  the results' own options, which must then agree.
  """
  fairness_weight, combine = _pool_settings(results, fairness_weight, combine)
  comps = {
      m: {'variance_collapse': r.variance_collapse, 'class_fairness': r.class_fairness}
      for m, r in results.items()
  }
  return pool_fairness_shares(comps, combine, fairness_weight)


registry.register(
    registry.MetricInfo(
        name='face',
        plan=face_plan,
        options=FaceOptions,
        higher_is_better=True,
        citation='Ding et al., Unleashing the power of Neural Collapse for Transferability Estimation, '
        'arXiv 2310.05754 (2023); reconstruction per docs/face.md',
        summary='FaCe (Fair Collapse): variance collapse −NC1 plus class fairness of '
        'Bhattacharyya overlaps',
        pool=face_pool,
    )
)
