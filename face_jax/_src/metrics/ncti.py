"""NCTI components (S_seli, S_ncc, vc) on the streaming engine: 2 passes.

Wang et al., "How Far Pre-trained Models Are from Neural Collapse on the
Target Dataset Informs their Transferability", ICCV 2023; reference
BUserName/NCTI@b18d39514a3f2a7a949500b467a38b93de1428e4
``metrics.py :: NCTI_Score(X, y)``.  In-memory oracle:
``face_jax.dense.ncti_components``.  The published score is pool-relative:
``face_jax.ncti_pool({model: components})`` = ncc_n + seli_n − vc_n.

Synopsis::

    c = face_jax.score(x, y, metrics=('ncti',))['ncti']    # NctiComponents
    c.s_seli, c.s_ncc, c.vc

Passes:

1. ``stats.Moments`` (class means, within-class scatter S_W; total scatter
   S_T = S_W + between).  On the host, everything up to the LDA is a function
   of these moments: the PCA basis V [D, p] = top-p eigenvectors of S_T (exact
   ``eigh``), the PCA features' class means (μ_c − g) V, within scatter
   Vᵀ S_W V and total scatter Vᵀ S_T V, hence the LDA (scikit-learn's 'svd'
   solver maths, or its 'eigen' solver with shrinkage when
   temp = exp(−Σ top-32 PCA variances) > 1e-10).  The LDA transform H is an
   affine map of x, so the centred Gram HᵀH = Wᵀ (Vᵀ S_T V) W and
   S_seli = ‖H‖_* = Σ sqrt(eig(HᵀH)) need no extra pass.
2. ``LinearPosterior`` with per-class Grams: the LDA posteriors
   P_i = softmax(Aᵀ(x_i − g) + b) computed per sample on device;
   S_ncc = Σ_i P_i[y_i] / N and vc = log Σ_c ‖P_c‖_* with
   ‖P_c‖_* = Σ sqrt(eig(P_cᵀ P_c)), P_cᵀ P_c = Σ_{i∈c} P_i P_iᵀ (additive).

Memory: pass 1 2KD + K + D²; pass 2 K³ (+2K) accumulator elements (the
per-class K×K Grams: 1e6 for K = 100, 1e9 for K = 1000), per device, x2 with
compensated float32 sums.

Differences from the reference (documented in docs/baselines_multipass.md):
the PCA is exact (eigen-decomposition of the streamed total scatter).  The
reference calls scikit-learn ``PCA(64)`` with the 'auto' solver, which is
exact ('full' / 'covariance_eigh') for the fixture cases (their
``pca_solver_used``) and for N ≥ 10 D, but randomized (seeded) for large N and
D with N < 10 D; there our value is the exact-PCA one
(``dense.ncti_components(..., pca_solver='full')``).  For min(N, D) < 64 the
reference raises; by default (``pca_dim_policy='clip'``) we use
p = min(64, N, D) with a ``FaceJaxWarning`` and record p in the result
(``pca_dim_policy='error'`` raises as the reference).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

from typing import Any, Mapping

import numpy as np
import scipy.linalg

from face_jax._src import engine as engine_lib
from face_jax._src import pool as pool_lib
from face_jax._src import registry
from face_jax._src.errors import FaceJaxWarning, InputError
from face_jax._src.metrics import common
from face_jax._src.metrics import posterior
from face_jax._src.metrics import sfda as sfda_lib
from face_jax._src.numerics import solve_spd, sqrt_eig_sum

# Constants of the reference (shared with face_jax.dense): temp = max(exp(−Σ
# top-32 PCA variances), 1e-10); scikit-learn LDA tol 1e-4; NCTI seeds numpy's
# global RNG with 1 (the in-memory oracle's PCA random_state).
NCTI_TOP_VAR = 32
NCTI_SHRINK_FLOOR = 1e-10
LDA_SVD_TOL = 1e-4
NCTI_PCA_SEED = 1
PCA_DIM_POLICIES = common.PCA_DIM_POLICIES
# A FaceJaxWarning states the memory of pass 2 above this many Gram elements (K ≈ 465).
GRAM_WARN_ELEMENTS = 10**8


@dataclasses.dataclass(frozen=True)
class NctiOptions:
  """Options of ``ncti``.

  Attributes:
    pca_dim: PCA dimension p (64 as NCTI).
    pca_dim_policy: what to do when min(N, D) < pca_dim: 'clip' (default; use
      p = min(pca_dim, N, D), warn, record it) or 'error' (raise, as the
      reference's scikit-learn PCA does).
  """

  pca_dim: int = 64
  pca_dim_policy: str = 'clip'

  def __post_init__(self):
    if (
        isinstance(self.pca_dim, bool)
        or not isinstance(self.pca_dim, (int, np.integer))
        or self.pca_dim < 1
    ):
      raise InputError(f'ncti: pca_dim must be a positive integer, got {self.pca_dim!r}')
    if self.pca_dim_policy not in PCA_DIM_POLICIES:
      raise InputError(
          f'ncti: pca_dim_policy must be one of {PCA_DIM_POLICIES}, ' f'got {self.pca_dim_policy!r}'
      )


@dataclasses.dataclass(frozen=True)
class NctiComponents:
  """Raw NCTI components of one model's features (pool-relative: see ``ncti_pool``).

  Attributes:
    s_seli: ‖H‖_*, nuclear norm of the centred LDA transform (higher = better).
    s_ncc: mean_i P(y_i | x_i) of the LDA (no log; higher = better).
    vc: log Σ_c ‖P_c‖_* (enters the pool score negatively).
    pca_dim: the PCA dimension used (64 unless clipped).
    lda_solver: 'svd' (temp = 1e-10) or 'eigen' (shrinkage = temp).
    n: number of samples.
  """

  s_seli: float
  s_ncc: float
  vc: float
  pca_dim: int
  lda_solver: str
  n: int

  def components(self) -> dict[str, float]:
    """``{'s_seli', 's_ncc', 'vc'}`` (the input of ``ncti_pool``)."""
    return {'s_seli': self.s_seli, 's_ncc': self.s_ncc, 'vc': self.vc}

  def astuple(self) -> tuple[float, float, float]:
    """(s_seli, s_ncc, vc), the order of ``face_jax.dense.ncti_components``."""
    return (self.s_seli, self.s_ncc, self.vc)


def _lda_svd(mu_f, sw_f, st_f, counts):
  """scikit-learn's 'svd' LDA solver maths from PCA-space moments (cf. ``dense._lda_svd``).

  Args:
    mu_f: [C, p] class means of the (centred) PCA features.
    sw_f: [p, p] within-class scatter.
    st_f: [p, p] total scatter about the mean (0).
    counts: [C].

  Returns:
    (coef [p, C], bias [C] (logits = F coef + bias), Gram [m, m] of the centred
    transform H).
  """
  n = counts.sum()
  c, p = mu_f.shape
  priors = counts / n
  xbar = priors @ mu_f
  std = np.sqrt(np.clip(np.diag(sw_f), 0.0, None) / n)
  std[std == 0] = 1.0
  g = sw_f / np.outer(std, std) / n  # Gram of sqrt(1/N) Z / std
  lam, u = np.linalg.eigh(0.5 * (g + g.T))
  lam, u = lam[::-1], u[:, ::-1]
  s1 = np.sqrt(np.clip(lam, 0.0, None))
  r1 = int(np.sum(s1 > LDA_SVD_TOL))
  if r1 == 0:
    # scikit-learn's LDA (and so the reference) fails here (IndexError).
    raise InputError(
        'ncti: the within-class scatter of the PCA features is zero (every class '
        "collapsed to a point): NCTI's LDA is undefined"
    )
  w1 = (u[:, :r1] / std[:, None]) / s1[:r1]  # [p, r1]
  mw = (np.sqrt(n * priors / (c - 1))[:, None] * (mu_f - xbar)) @ w1
  _, s2, vt2 = np.linalg.svd(mw, full_matrices=False)
  r2 = int(np.sum(s2 > LDA_SVD_TOL * s2[0]))
  w = w1 @ vt2[:r2].T  # [p, r2]
  coef = (mu_f - xbar) @ w  # [C, r2]
  a = w @ coef.T  # [p, C]
  bias = -(xbar @ a) - 0.5 * np.sum(coef**2, axis=1) + np.log(priors)
  wh = w[:, : min(c - 1, p)]
  return a, bias, wh.T @ st_f @ wh


def _lda_eigen(mu_f, sw_f, st_f, counts, shrinkage):
  """scikit-learn's 'eigen' LDA solver, fixed shrinkage, from moments (cf. ``dense._lda_eigen``)."""
  n = counts.sum()
  c, p = mu_f.shape
  priors = counts / n
  sw, st = sw_f / n, st_f / n
  eye = np.eye(p)
  sw_s = (1.0 - shrinkage) * sw + shrinkage * float(np.trace(sw)) / p * eye
  st_s = (1.0 - shrinkage) * st + shrinkage * float(np.trace(st)) / p * eye
  evals, evecs = scipy.linalg.eigh(st_s - sw_s, sw_s)
  evecs = evecs[:, np.argsort(evals)[::-1]]
  e = evecs[:, : min(c - 1, p)]
  a = solve_spd(sw_s, mu_f.T)
  bias = -0.5 * np.einsum('cd,dc->c', mu_f, a) + np.log(priors)
  return a, bias, e.T @ st_f @ e


def null_variance_tol(lam_max: float, dim: int, dtype: str) -> float:
  """Eigenvalues of a streamed D×D scatter at or below this are rounding noise.

  ``sqrt(D) · eps(dtype) · λ_max`` (see ``sfda.denoise_scatter``).  NCTI's
  PCA components with such a variance are set to exactly zero columns, their
  exact-arithmetic value when rank(S_T) < p: scikit-learn's LDA then gives
  them std 1 and singular value 0 and drops them.  (The reference instead
  divides the rounding noise of those columns by its own std, which makes its
  value depend on that noise; on full-rank features nothing changes.)
  """
  return math.sqrt(dim) * float(np.finfo(np.dtype(dtype)).eps) * max(float(lam_max), 0.0)


def ncti_plan(info: engine_lib.StreamInfo, options: NctiOptions, dtype: str = 'float32'):
  """The NCTI pass plan (2 passes; see the module docstring).  Returns ``NctiComponents``."""
  k = info.num_classes
  fin = (yield {'moments': common.moments_request(info, dtype)})['moments']
  present = common.populated_classes(fin.counts, 'ncti')
  counts = fin.counts[present]
  n = counts.sum()
  p = common.resolve_pca_dim(options.pca_dim, n, info.dim, options.pca_dim_policy, 'ncti')
  g = fin.global_mean()
  s_t = fin.total_scatter()
  evals, vecs = fin.total_scatter_eig  # descending; shared with H-score's pseudo-inverse
  v = vecs[:, :p].copy()  # [D, p]
  lam = evals[:p]
  # Components whose variance is rounding noise (rank(S_T) < p) are exactly
  # zero columns of F in exact arithmetic; make them so (see null_components).
  null = lam <= null_variance_tol(lam[0], info.dim, dtype)
  v[:, null] = 0.0
  explained = np.where(null, 0.0, lam) / (n - 1)
  temp = max(math.exp(-float(explained[:NCTI_TOP_VAR].sum())), NCTI_SHRINK_FLOOR)
  mu_f = (fin.means[present] - g) @ v
  sw_f = sfda_lib.denoise_scatter(v.T @ fin.within_scatter @ v, dtype)
  st_f = v.T @ s_t @ v
  if temp == NCTI_SHRINK_FLOOR:
    a_f, bias, h_gram = _lda_svd(mu_f, sw_f, st_f, counts)
    solver = 'svd'
  else:
    a_f, bias, h_gram = _lda_eigen(mu_f, sw_f, st_f, counts, temp)
    solver = 'eigen'
  s_seli = sqrt_eig_sum(h_gram)

  if k**3 > GRAM_WARN_ELEMENTS:
    gib = 2 * k**3 * np.dtype(dtype).itemsize / 2**30
    warnings.warn(
        f'ncti: the per-class posterior Grams hold K^3 = {k ** 3:.3g} elements '
        f'(~{gib:.1f} GiB per device with compensated sums) for K = {k}',
        FaceJaxWarning,
        stacklevel=3,
    )
  spec = posterior.PosteriorSpec(num_classes=k, dim=info.dim, dtype=dtype, gram=True)
  params = {
      'center': g,
      'coef': common.embed_classes(v @ a_f, present, 1),
      'bias': common.embed_classes(bias, present, 0),
      'valid': present.astype(np.float64),
  }
  req = engine_lib.Request(posterior.LinearPosterior, spec, params)
  post = (yield {'posterior': req})['posterior']
  s_ncc = float(post.true_prob.sum() / n)
  idx = np.flatnonzero(present)
  nuc = sum(sqrt_eig_sum(post.gram[c][np.ix_(idx, idx)]) for c in idx)
  return NctiComponents(
      s_seli=s_seli, s_ncc=s_ncc, vc=math.log(nuc), pca_dim=p, lda_solver=solver, n=int(round(n))
  )


# -- the pool score ------------------------------------------------------------------

# NCTI (Wang et al., ICCV 2023, BUserName/NCTI): ncc_n + seli_n − vc_n.
NCTI_WEIGHTS = {'s_ncc': 1.0, 's_seli': 1.0, 'vc': -1.0}
NCTI_COMPONENTS = ('s_seli', 's_ncc', 'vc')


def ncti_pool(components: Mapping[str, Any]) -> dict[str, float]:
  """Published NCTI score over a pool of models: ncc_n + seli_n − vc_n.

  Wang et al., "How Far Pre-trained Models Are from Neural Collapse on the
  Target Dataset Informs their Transferability", ICCV 2023
  (BUserName/NCTI@b18d39514a3f2a7a949500b467a38b93de1428e4): each raw
  component is min–max normalised over the pool (``pool_minmax``).

  Args:
    components: ``{model: c}`` with c an ``NctiComponents`` (from
      ``face_jax.score(..., metrics=('ncti',))``), a mapping with keys
      ``s_seli``, ``s_ncc``, ``vc``, or a 3-tuple ``(s_seli, s_ncc, vc)`` (the
      order of ``face_jax.dense.ncti_components``).

  Returns:
    ``{model: score}``; higher = predicted more transferable.
  """
  return pool_lib.pool_minmax(
      pool_lib.named_components(components, NCTI_COMPONENTS, 'ncti_pool'), NCTI_WEIGHTS
  )


registry.register(
    registry.MetricInfo(
        name='ncti',
        plan=ncti_plan,
        options=NctiOptions,
        higher_is_better=True,
        citation='Wang et al., How Far Pre-trained Models Are from Neural Collapse on the Target '
        'Dataset Informs their Transferability, ICCV 2023; BUserName/NCTI@'
        'b18d39514a3f2a7a949500b467a38b93de1428e4 metrics.py::NCTI_Score',
        summary='NCTI components (S_seli, S_ncc, vc) after exact PCA-64 and LDA (2 passes); the score '
        'is face_jax.ncti_pool over a pool of models',
        pool_relative=True,
        pool=ncti_pool,
    )
)
