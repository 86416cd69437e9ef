"""FaCe (Fair Collapse): variance collapse + class fairness, as defined in docs/face.md.

FaCe was proposed by Ding, Jiang, Sheng, Zheng and Liang, *Unleashing the
power of Neural Collapse for Transferability Estimation* (arXiv 2310.05754,
2023).  The paper's equations and code are not public: this module implements
the reconstruction from the published description that docs/face.md fixes,
with every named variant, and reports each term separately.

    S = C + λ·F
    C = −NC1 ("neg") or −ln NC1 ("neglog"),   NC1 = Tr(Σ_W Σ_B^†)/K
    F = −std_k(o_k) ("std") | −(max − min) ("range") | normalised entropy ("entropy")
    o_k = mean_{j≠k} exp(−D_B(k, j))   (Bhattacharyya coefficients between class Gaussians)

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
FAIRNESSES = ('std', 'range', 'entropy')
COMBINES = ('sum', 'pool_minmax')


@dataclasses.dataclass(frozen=True)
class FaceOptions:
  """The FaCe variant (hashable).

  The defaults (sample / neglog / spherical / range) are the variant that ranked
  the model zoo of benchmarks/zoo best (docs/face_ablation.md); the defaults
  of the definition in docs/face.md are balanced / neg / pooled / std.
  ``FaceOptions.CHOICES`` lists the allowed values of the named variants.

  Attributes:
    weighting: "balanced" (μ_G = mean of class means, Σ_W = mean of class
      covariances) or "sample" (μ_G = sample mean, Σ_W = pooled covariance).
    vc_transform: "neg" (C = −NC1) or "neglog" (C = −ln NC1).
    bc_cov: class Gaussians for the Bhattacharyya distance: "pooled" (shared
      ridge-regularised Σ_W), "diagonal" or "spherical" (per-class variances).
    fairness: "std", "range" or "entropy" of the per-class overlaps.
    temperature: t of the "entropy" fairness softmax (> 0).
    fairness_weight: λ in S = C + λ·F.
    ridge: ρ in Σ_reg = Σ_W + ρ·(Tr Σ_W / D)·I ("pooled" only; ≥ 0).
    combine: "sum" or "pool_minmax" (pool-relative: see ``face_pool``).
  """

  CHOICES: ClassVar[Mapping[str, tuple]] = {
      'weighting': WEIGHTINGS,
      'vc_transform': VC_TRANSFORMS,
      'bc_cov': BC_COVS,
      'fairness': FAIRNESSES,
      'combine': COMBINES,
  }

  weighting: str = 'sample'
  vc_transform: str = 'neglog'
  bc_cov: str = 'spherical'
  fairness: str = 'range'
  temperature: float = 0.1
  fairness_weight: float = 1.0
  ridge: float = 1e-3
  combine: str = 'sum'

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
    score: S = C + λ·F (higher = predicted more transferable); None for
      ``combine="pool_minmax"``, which only exists for a pool (``face_pool``).
    variance_collapse: C.
    class_fairness: F (0 = every class overlaps the others equally).
    nc1: Tr(Σ_W Σ_B^†)/K (+inf when all class means coincide).
    overlap: [K] o_k for every populated class, in label order (see ``classes``).
    mean_overlap: ō.
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

  def to_dict(self) -> dict:
    """A JSON-friendly dict (arrays as lists)."""
    return {
        'score': self.score,
        'variance_collapse': self.variance_collapse,
        'class_fairness': self.class_fairness,
        'nc1': self.nc1,
        'overlap': [float(v) for v in self.overlap],
        'mean_overlap': self.mean_overlap,
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
  mean_overlap = float(overlap.mean())
  f_term = _fairness(overlap, options)
  if passes is not None:
    diag['passes'] = int(passes)
  score = (
      None if options.combine == 'pool_minmax' else float(c_term + options.fairness_weight * f_term)
  )
  return FaCeResult(
      score=score,
      variance_collapse=float(c_term),
      class_fairness=float(f_term),
      nc1=float(nc1),
      overlap=overlap,
      mean_overlap=mean_overlap,
      classes=np.flatnonzero(present),
      class_counts=counts.astype(np.int64),
      options=options,
      diagnostics=diag,
  )


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


def _fairness(overlap: np.ndarray, options: FaceOptions) -> float:
  k = overlap.shape[0]
  if options.fairness == 'std':
    return -float(np.sqrt(np.mean((overlap - overlap.mean()) ** 2)))
  if options.fairness == 'range':
    return -float(overlap.max() - overlap.min())
  z = overlap / options.temperature
  z = z - z.max()
  p = np.exp(z)
  p /= p.sum()
  nz = p > 0
  h = -float(np.sum(p[nz] * np.log(p[nz])))
  return (h - math.log(k)) / math.log(k)


# -- pools ---------------------------------------------------------------------------


def face_pool(
    results: Mapping[str, FaCeResult], *, fairness_weight: float | None = None
) -> dict[str, float]:
  """FaCe ``combine="pool_minmax"``: S = C̃ + λ·F̃ over a pool of models on the same target data.

  C and F are each min–max normalised over the pool to [0, 1] (a term that is
  constant over the pool becomes 0).

  Args:
    results: ``{model: FaCeResult}`` (any ``combine``).
    fairness_weight: λ (default: the results' own ``options.fairness_weight``,
      which must then agree).

  Returns:
    ``{model: pool score}`` (higher = predicted more transferable).

  Raises:
    InputError: empty pool, disagreeing λ, or a non-finite term.
  """
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
  comps = {
      m: {'variance_collapse': r.variance_collapse, 'class_fairness': r.class_fairness}
      for m, r in results.items()
  }
  return pool_lib.pool_minmax(comps, {'variance_collapse': 1.0, 'class_fairness': fairness_weight})


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
