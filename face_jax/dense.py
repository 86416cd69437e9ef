"""In-memory float64 NumPy implementations of classic transferability baselines.

Every function here takes whole arrays that fit in memory (``X`` [N, D] target
features, ``y`` [N] integer target labels, optionally ``probs`` [N, Cs]
source-model class probabilities), works in float64 (except where a reference
pipeline is defined in float32, which is then stated), and returns plain Python
floats (tuples of floats for the ``*_components`` functions, dicts for the
pool functions). They are written from the published mathematics and checked number for
number against the authors' reference implementations on the fixtures in
``tests/fixtures/reference`` (see its README for the provenance of each value).
No reference code is copied.

These are the "usual way" (dense, in-memory) counterparts of the streamed
scores and serve as oracles for them.

Conventions shared by all functions:

* Labels are integers ``0..C-1`` with ``C = max(y) + 1``; every class in that
  range must occur at least once and there must be at least two classes
  (``face_jax.InputError``, a ``ValueError``, otherwise).
* ``X`` must be a finite 2-D real array with the same number of rows as ``y``.
  Inputs are never modified (``sfda`` in particular works on its own copy).
* ``probs`` rows must be non-negative, finite and sum to 1 within an absolute
  tolerance of ``PROBS_SUM_ATOL = 1e-4``, the streaming engine's tolerance (for
  float32/float16 input: max(1e-4, Cs * eps(dtype)), since such rows cannot sum
  more accurately).
* Orientation is stated in every docstring. For most scores higher means
  "more transferable"; NC1 and VCI measure variability (lower = more
  collapsed), and NCTI's ``vc`` component enters its pool score negatively.

The shared float64 maths (eigen-decompositions, pseudo-inverse traces, SPD
solves, ...) and the metrics' constants come from the core
(``face_jax._src.numerics`` and the metric modules under
``face_jax._src.metrics``), which never import this module.

Public API (all pure functions):

  logme, leep, nce, hscore, reg_hscore, transrate, gbc, sfda,
  ncti_components, etran_components, nleep, parc, nc1, vci,
  pool_minmax, ncti_pool, etran_pool.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import scipy.linalg
import scipy.special

from face_jax._src import numerics
from face_jax._src import pool as _pool
from face_jax._src.errors import InputError
from face_jax._src.metrics import etran as _etran
from face_jax._src.metrics import gbc as _gbc
from face_jax._src.metrics import hscore as _hscore
from face_jax._src.metrics import leep as _leep
from face_jax._src.metrics import logme as _logme
from face_jax._src.metrics import ncti as _ncti
from face_jax._src.metrics import sfda as _sfda
from face_jax._src.metrics import subsample as _subsample
from face_jax._src.metrics import transrate as _transrate
from face_jax._src.numerics import PROBS_SUM_ATOL

__all__ = [
    "PROBS_SUM_ATOL",
    "logme",
    "leep",
    "nce",
    "hscore",
    "reg_hscore",
    "transrate",
    "gbc",
    "sfda",
    "ncti_components",
    "etran_components",
    "nleep",
    "parc",
    "nc1",
    "vci",
    "pool_minmax",
    "ncti_pool",
    "etran_pool",
]

# PROBS_SUM_ATOL (from face_jax._src.numerics): the absolute tolerance on
# |sum_k probs[i, k] - 1| accepted by leep/nce/parc, the same as the engine's.


# ----------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------


def _check_labels(y, n: int | None, fn: str) -> tuple[np.ndarray, int, np.ndarray]:
  """Validates integer labels; returns (y int64 [N], C, counts [C])."""
  y = np.asarray(y)
  if y.ndim != 1:
    raise InputError(f"{fn}: y must be 1-D [N], got shape {y.shape}.")
  if y.size == 0:
    raise InputError(f"{fn}: y is empty.")
  if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
    raise InputError(f"{fn}: y must hold integer class labels, got dtype {y.dtype}.")
  if n is not None and y.shape[0] != n:
    raise InputError(f"{fn}: y has {y.shape[0]} labels but the data has {n} rows.")
  y = y.astype(np.int64)
  if y.min() < 0:
    raise InputError(f"{fn}: labels must be >= 0, found {int(y.min())}.")
  num_classes = int(y.max()) + 1
  if num_classes < 2:
    raise InputError(f"{fn}: needs at least two classes (labels 0 and 1).")
  counts = np.bincount(y, minlength=num_classes)
  missing = np.flatnonzero(counts == 0)
  if missing.size:
    raise InputError(
        f"{fn}: labels must cover 0..C-1 (C = max(y)+1 = {num_classes}); "
        f"classes without samples: {missing[:10].tolist()}"
        f"{' ...' if missing.size > 10 else ''}."
    )
  return y, num_classes, counts


def _check_features(X, fn: str, name: str = "X") -> np.ndarray:
  """Validates a finite real 2-D array; returns it as float64 (no copy if possible)."""
  X = np.asarray(X)
  if X.ndim != 2:
    raise InputError(f"{fn}: {name} must be 2-D [N, D], got shape {X.shape}.")
  if X.shape[0] < 2 or X.shape[1] < 1:
    raise InputError(f"{fn}: {name} needs at least 2 rows and 1 column, got {X.shape}.")
  if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
    raise InputError(f"{fn}: {name} must be real-valued, got dtype {X.dtype}.")
  X = X.astype(np.float64, copy=False)
  if not np.all(np.isfinite(X)):
    raise InputError(f"{fn}: {name} contains NaN or infinite values.")
  return X


def _check_xy(X, y, fn: str):
  X = _check_features(X, fn)
  y, num_classes, counts = _check_labels(y, X.shape[0], fn)
  return X, y, num_classes, counts


def _check_probs(probs, n: int | None, fn: str) -> np.ndarray:
  """Validates source probabilities [N, Cs]: finite, >= 0, rows sum to 1."""
  if probs is None:
    raise InputError(f"{fn}: needs source-model probabilities `probs` [N, Cs]; got None.")
  in_dtype = np.asarray(probs).dtype
  probs = _check_features(probs, fn, name="probs")
  if n is not None and probs.shape[0] != n:
    raise InputError(f"{fn}: probs has {probs.shape[0]} rows but there are {n} labels.")
  if np.any(probs < 0):
    raise InputError(f"{fn}: probs contains negative entries.")
  atol = PROBS_SUM_ATOL
  if np.issubdtype(in_dtype, np.floating) and np.finfo(in_dtype).eps > numerics.EPS64:
    # float32/float16 rows cannot sum more accurately than ~Cs ulps.
    atol = max(atol, probs.shape[1] * float(np.finfo(in_dtype).eps))
  dev = np.abs(probs.sum(axis=1) - 1.0)
  if np.any(dev > atol):
    i = int(np.argmax(dev))
    raise InputError(
        f"{fn}: every row of probs must sum to 1 (abs tol {atol:g}); "
        f"row {i} sums to {probs[i].sum():.9g}."
    )
  return probs


def _check_probs_y(probs, y, fn: str):
  probs = _check_probs(probs, None, fn)
  y, num_classes, counts = _check_labels(y, probs.shape[0], fn)
  return probs, y, num_classes, counts


# ----------------------------------------------------------------------------
# Small linear-algebra helpers
# ----------------------------------------------------------------------------


def _class_sums(A: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """Per-class row sums [C, K] of A [N, K] (every class has >= 1 row)."""
  order = np.argsort(y, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  return np.add.reduceat(A[order], starts, axis=0)


def _class_sums_means(
    X: np.ndarray, y: np.ndarray, num_classes: int, counts: np.ndarray
) -> np.ndarray:
  """Class means [C, D] of the rows of X."""
  del num_classes  # implied by counts
  return _class_sums(X, y, counts) / counts[:, None]


# ----------------------------------------------------------------------------
# LogME
# ----------------------------------------------------------------------------

# The LogME constants (the thuml 1e-10 singular-value cut, the fixed point's 1e-5 update
# epsilon and 1e-3 tolerance, the ICML variant's 1e-2 tolerance, the 11-update cap) and the
# fixed-point iteration itself are shared with the streamed metric
# (face_jax._src.metrics.logme).


def _logme_fixed_point(X: np.ndarray, y: np.ndarray, num_classes: int) -> float:
  n, d = X.shape
  onehot = (y[:, None] == np.arange(num_classes)[None, :]).astype(np.float64)
  if n > d:
    # Eigen-decomposition of X^T X; singular values s = sqrt(eig) > 1e-10 kept.
    w, v = numerics.sym_eig_desc(X.T @ X)
    s = np.sqrt(np.clip(w, 0.0, None))
    keep = s > _logme.LOGME_FP_SV_CUTOFF
    s, v = s[keep], v[:, keep]
    # x = U^T y with U = X V / s, computed as V^T (X^T y) / s.
    proj = (v.T @ (X.T @ onehot)) / s[:, None]  # [k, C]
  else:
    u, s, _ = np.linalg.svd(X, full_matrices=False)  # all min(N, D) kept
    proj = u.T @ onehot  # [k, C]
  # The fixed-point iteration itself is shared with the streamed metric, which reaches the
  # same eigenbasis quantities from its sufficient statistics.
  return _logme.logme_fixed_point_iteration(s**2, proj**2, onehot.sum(0), n, d)


def _logme_icml(X: np.ndarray, y: np.ndarray, num_classes: int) -> float:
  n, d = X.shape
  w, v = numerics.sym_eig_desc(X.T @ X)
  s = np.abs(w)  # singular values of the PSD matrix X^T X (all D)
  evidences = []
  for c in range(num_classes):
    t = (y == c).astype(np.float64)
    tmp = v.T @ (X.T @ t)
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    for _ in range(_logme.LOGME_MAX_ITERS):
      gamma = np.sum(s / (s + lam))
      m = v @ (tmp * beta / (alpha + beta * s))
      alpha_de = float(m @ m)
      alpha = gamma / alpha_de
      r = t - X @ m
      beta_de = float(r @ r)
      beta = (n - gamma) / beta_de
      new_lam = alpha / beta
      if abs(new_lam - lam) / lam < _logme.LOGME_ICML_TOL:
        break
      lam = new_lam
    evidences.append(_logme.logme_evidence(alpha, beta, s, alpha_de, beta_de, n, d))
  return float(np.mean(evidences))


def logme(X, y, *, variant: str = _logme.LogmeOptions.variant) -> float:
  """LogME: log maximum evidence of a Bayesian linear model, averaged over classes.

  You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning", ICML 2021; fixed-point solver from You et al., "Ranking and Tuning
  Pre-trained Models: A New Paradigm for Exploiting Model Hubs", JMLR 2022.

  For each class c the one-vs-rest target t = 1[y == c] is regressed on X (no
  centring, no bias column) with prior precision alpha and noise precision
  beta; the evidence is maximised over (alpha, beta) and the per-sample log
  evidence ``(D/2) log a + (N/2) log b - (1/2) sum_i log(a + b s_i)
  - (b/2) ||t - X m||^2 - (a/2) ||m||^2 - (N/2) log 2 pi`` divided by N is
  averaged over classes (s_i: eigenvalues of X^T X, m: posterior mean).

  Args:
    X: [N, D] features (used as is).
    y: [N] integer labels in 0..C-1.
    variant: ``"thuml"`` (default; fixture key ``logme_thuml``) reproduces
      thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07
      ``LogME.py :: LogME(regression=False).fit`` (the fixed-point solver):
      alpha = beta = 1 start, at most 11 updates ``alpha = gamma / (||m||^2 +
      1e-5)``, ``beta = (N - gamma) / (res^2 + 1e-5)``, stop when alpha/beta
      moves by <= 1e-3 relative; only the rank-k eigenvalues enter the log sum
      (k = min(N, D) when N <= D via the thin SVD of X; singular values
      > 1e-10 when N > D via the eigen-decomposition of X^T X).
      ``"tllib_icml"`` (fixture key ``logme_tllib_icml``) reproduces
      thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4
      ``tllib/ranking/logme.py :: log_maximum_evidence(regression=False)`` (the
      ICML-2021 iteration): classic MacKay updates without epsilon, stop at
      < 1e-2 relative change of alpha/beta, at most 11 updates, and the log sum
      runs over all D eigenvalues (zeros included). The two agree closely when
      N > D and differ by (D - k)/(2N) log alpha when N <= D.

  Returns:
    The LogME score. Orientation: higher = better.

  Raises:
    InputError: on invalid inputs or an unknown ``variant``.
  """
  X, y, num_classes, _ = _check_xy(X, y, "logme")
  if variant == "thuml":
    return _logme_fixed_point(X, y, num_classes)
  if variant == "tllib_icml":
    return _logme_icml(X, y, num_classes)
  raise InputError(f"logme: unknown variant {variant!r}; use 'thuml' or 'tllib_icml'.")


# ----------------------------------------------------------------------------
# LEEP and NCE (source probabilities)
# ----------------------------------------------------------------------------


def leep(probs, y) -> float:
  """LEEP: log expected empirical prediction.

  Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
  Representations", ICML 2020. Reproduces
  thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07
  ``LEEP.py :: LEEP(pseudo_source_label=probs, target_label=y)``.

  With theta_i = probs[i], the empirical joint P(y, z) = (1/N) sum_{i: y_i=y}
  theta_iz, P(y|z) = P(y, z) / sum_y' P(y', z), and
  LEEP = (1/N) sum_i log( sum_z theta_iz P(y_i|z) ). Natural log, no epsilon,
  no smoothing. A source class z with zero total probability has P(.|z) := 0
  (it carries no weight in any sum; the reference would propagate 0/0 = nan
  into every sample); a sample whose expected prediction is exactly 0
  contributes log 0 = -inf, as in the reference.

  Args:
    probs: [N, Cs] source-model class probabilities; rows sum to 1 (abs tol
      ``PROBS_SUM_ATOL``).
    y: [N] integer target labels in 0..C-1.

  Returns:
    LEEP (<= 0). Orientation: higher = better.

  Raises:
    InputError: if ``probs`` is None or inputs are invalid.
  """
  probs, y, _, counts = _check_probs_y(probs, y, "leep")
  n = probs.shape[0]
  joint = _class_sums(probs, y, counts) / n  # P(y, z) [C, Cs]
  marginal = joint.sum(axis=0)
  cond = np.divide(
      joint, marginal[None, :], out=np.zeros_like(joint), where=marginal[None, :] > 0
  )  # P(y | z) [C, Cs]
  eep = np.einsum("nz,nz->n", probs, cond[y])
  with np.errstate(divide="ignore"):
    return float(np.mean(np.log(eep)))


def nce(probs, y) -> float:
  """NCE: negative conditional entropy H(Y | Z) with hard source labels.

  Tran et al., "Transferability and Hardness of Supervised Classification
  Tasks", ICCV 2019. Reproduces
  thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07
  ``NCE.py :: NCE(source_label=argmax(probs, 1), target_label=y)``.

  z_i = argmax_z probs[i, z] (first index on ties); P(y, z) = counts / N; only
  source classes that occur are kept; with p = P(y|z) + 1e-20,
  NCE = sum_z P(z) sum_y p log p (= -H(Y|Z) up to the 1e-20). Natural log.

  Args:
    probs: [N, Cs] source-model class probabilities; rows sum to 1.
    y: [N] integer target labels in 0..C-1.

  Returns:
    NCE (<= 0). Orientation: higher = better.

  Raises:
    InputError: if ``probs`` is None or inputs are invalid.
  """
  probs, y, num_classes, _ = _check_probs_y(probs, y, "nce")
  n = probs.shape[0]
  z = np.argmax(probs, axis=1)
  num_source = int(z.max()) + 1
  joint = np.bincount(y * num_source + z, minlength=num_classes * num_source)
  joint = joint.reshape(num_classes, num_source) / n  # P(y, z)
  p_z = joint.sum(axis=0)
  valid = p_z > 0
  cond = joint[:, valid] / p_z[None, valid] + _leep.NCE_EPS
  ent = np.sum(-cond * np.log(cond), axis=0)  # H(Y | z) per valid z
  return float(-np.sum(ent * p_z[valid]))


# ----------------------------------------------------------------------------
# H-score, regularised H-score, TransRate
# ----------------------------------------------------------------------------


def _between_scatter(
    Xc: np.ndarray, y: np.ndarray, num_classes: int, counts: np.ndarray
) -> np.ndarray:
  """sum_c n_c (mu_c - mu)(mu_c - mu)^T for globally centred Xc (mu = 0)."""
  mc = _class_sums_means(Xc, y, num_classes, counts)
  return (mc * counts[:, None]).T @ mc


def hscore(X, y) -> float:
  """H-score (first-order, official definition with a true matrix product), in memory.

  Bao et al., "An Information-Theoretic Approach to Transferability in Task
  Transfer Learning", ICIP 2019; the reference implementations it reproduces are
  cited by the streamed version, ``face_jax._src.metrics.hscore.hscore_from_moments``
  (tllib's ``h_score``, the same as the authors' ``getDiffNN``).

  cov_f = covariance of X (1/(N-1)); cov_g = covariance of the matrix whose
  rows are replaced by their class means = sum_c n_c (mu_c - mu)(mu_c - mu)^T
  / (N-1); H = trace(pinv(cov_f) @ cov_g) with pinv keeping singular values
  > 1e-15 x the largest (``rcond=1e-15``). This is the matrix product, not the
  element-wise product of the google-research variant.

  Args:
    X: [N, D] features.
    y: [N] integer labels in 0..C-1.

  Returns:
    H-score (in [0, C-1] up to rounding). Orientation: higher = better.
  """
  X, y, num_classes, counts = _check_xy(X, y, "hscore")
  n = X.shape[0]
  Xc = X - X.mean(axis=0)
  cov_f = (Xc.T @ Xc) / (n - 1)
  cov_g = _between_scatter(Xc, y, num_classes, counts) / (n - 1)
  return numerics.pinv_trace(cov_f, cov_g, _hscore.HSCORE_PINV_RTOL)[0]


def _ledoit_wolf_shrinkage(Xc: np.ndarray) -> float:
  """Ledoit-Wolf shrinkage intensity of centred data Xc [N, D] (1/N covariance).

  With S = Xc^T Xc / N and m = tr(S)/D: b = (sum_i ||x_i||^4 / N - ||S||_F^2)
  / (N D), d = (||S||_F^2 - D m^2) / D, b' = min(b, d); shrinkage = 0 if b' == 0
  else b'/d (the scikit-learn ``ledoit_wolf_shrinkage`` formula).
  """
  n, d = Xc.shape
  s = (Xc.T @ Xc) / n
  fro2 = float(np.sum(s * s))
  mu = float(np.trace(s)) / d
  b = (float(np.sum(np.sum(Xc * Xc, axis=1) ** 2)) / n - fro2) / (n * d)
  delta = (fro2 - d * mu * mu) / d
  b = min(b, delta)
  return 0.0 if b == 0 else b / delta


def reg_hscore(X, y) -> float:
  """Regularised (shrinkage) H-score.

  Ibrahim et al., "Newer is not always better: Rethinking transferability
  metrics, their peculiarities, stability and performance", ECML-PKDD 2022.
  Reproduces
  thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4
  ``tllib/ranking/hscore.py :: regularized_h_score(features, labels)``.

  Xc = X - mean; S = Xc^T Xc / N (note 1/N); Ledoit-Wolf intensity a (see
  ``_ledoit_wolf_shrinkage``, = scikit-learn ``LedoitWolf(assume_centered=
  False).shrinkage_``); S_a = (1 - a) S + a (tr S / D) I; cov_g as in
  :func:`hscore` (1/(N-1)); score = trace(pinv(S_a) @ ((1 - a) cov_g)) with the
  pinv cut 1e-15 x the largest singular value.

  Args:
    X: [N, D] features.
    y: [N] integer labels in 0..C-1.

  Returns:
    Regularised H-score. Orientation: higher = better.
  """
  X, y, num_classes, counts = _check_xy(X, y, "reg_hscore")
  n, d = X.shape
  Xc = X - X.mean(axis=0)
  a = _ledoit_wolf_shrinkage(Xc)
  s = (Xc.T @ Xc) / n
  s_a = (1.0 - a) * s + (a * float(np.trace(s)) / d) * np.eye(d)
  cov_g = _between_scatter(Xc, y, num_classes, counts) / (n - 1)
  return numerics.pinv_trace(s_a, (1.0 - a) * cov_g, _hscore.HSCORE_PINV_RTOL)[0]


def _coding_rate(z: np.ndarray, eps: float) -> float:
  """(1/2) logdet(I_D + Z^T Z / (n eps)) for Z [n, D] (Gram of the smaller side)."""
  n, d = z.shape
  g = (z.T @ z) if d <= n else (z @ z.T)
  g = g / (n * eps)
  g[np.diag_indices_from(g)] += 1.0
  chol = np.linalg.cholesky(g)
  return float(np.sum(np.log(np.diag(chol))))


def transrate(X, y, *, eps: float = _transrate.TransrateOptions.eps) -> float:
  """TransRate (tllib formula): coding-rate gain of the labels.

  Huang et al., "Frustratingly Easy Transferability Estimation", ICML 2022.
  Reproduces
  thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4
  ``tllib/ranking/transrate.py :: transrate(features, labels, eps=1e-4)``
  -- NOT the official
  Long-Kai/TransRate pipeline (row/rank normalisation, class weights).

  Z = X - global mean (once); R(A) = (1/2) logdet(I_D + A^T A / (n_A eps)) with
  n_A the number of rows of A; TrR = R(Z) - (1/C) sum_c R(Z_c), Z_c the rows of
  class c, not re-centred, all classes weighted equally. The log-determinant is
  taken by Cholesky on the smaller of A^T A and A A^T (Sylvester's identity).

  Args:
    X: [N, D] features.
    y: [N] integer labels in 0..C-1.
    eps: distortion ``eps`` (> 0) of the coding rate; default 1e-4 as tllib.

  Returns:
    TransRate. Orientation: higher = better.
  """
  X, y, num_classes, _ = _check_xy(X, y, "transrate")
  if not eps > 0:
    raise InputError(f"transrate: eps must be > 0, got {eps}.")
  z = X - X.mean(axis=0)
  rz = _coding_rate(z, eps)
  rzy = sum(_coding_rate(z[y == c], eps) for c in range(num_classes))
  return rz - rzy / num_classes


# ----------------------------------------------------------------------------
# GBC
# ----------------------------------------------------------------------------


def _pca_exact(X: np.ndarray, k: int) -> np.ndarray:
  """Projection of X on its top-k principal components (exact thin SVD)."""
  Xc = X - X.mean(axis=0)
  u, s, _ = np.linalg.svd(Xc, full_matrices=False)
  return u[:, :k] * s[:k]


def gbc(
    X,
    y,
    *,
    gaussian_type: str = _gbc.GbcOptions.gaussian_type,
    pca_dim: int | None = _gbc.GbcOptions.pca_dim,
) -> float:
  """GBC: Gaussian Bhattacharyya coefficient class separability.

  Pandy et al., "Transferability Estimation using Bhattacharyya Class
  Separability", CVPR 2022. Reproduces
  google-research/google-research@1d4d2f1aa6f2883a790d2ae46a6ee8ab150d8f31
  ``stable_transfer/transferability/gbc.py :: get_gbc_score(features,
  target_labels, gaussian_type)``.

  Per class: mean mu_c and per-dimension population variance v_c (1/n_c),
  floored as max(v, 1e-4). Spherical: v_c is replaced by the scalar mean_j
  v_cj. For an ordered pair (a, b), vbar = (v_a + v_b)/2,
  BD = (1/8) sum_j (mu_aj - mu_bj)^2 / vbar_j + (1/2)[sum_j log vbar_j -
  (1/2) sum_j log v_aj - (1/2) sum_j log v_bj] (spherical: the log term is a
  single scalar term, not multiplied by D). GBC = -sum_{a != b} exp(-BD), each
  unordered pair counted twice; the range is [-C(C-1), 0].

  Args:
    X: [N, D] features.
    y: [N] integer labels in 0..C-1.
    gaussian_type: ``"spherical"`` (default, the google config) or
      ``"diagonal"``.
    pca_dim: None (default) = no reduction, float64 throughout (fixture keys
      ``gbc_google_*_nopca_f64``). An int k reproduces the google pipeline
      ``pca_reduction(X, k)`` (``features_targets_utils.py`` at commit
      4963f325fe8bf41c69aeb2717d0ef408f623500e): projection on the top-k
      principal components by exact SVD, then cast to float32 (fixture key
      ``gbc_google_spherical_pca64_f32`` for k = 64); the GBC arithmetic on
      those float32 values is then done in float64 (the reference does it in
      float32; the difference is ~1e-6 relative).
      Requires k <= min(N, D): otherwise a ``ValueError`` is raised (the
      reduction is not defined; the reference pipeline fails likewise). No
      silent fallback.

  Returns:
    GBC in [-C(C-1), 0]. Orientation: higher (closer to 0) = better.
  """
  X, y, num_classes, counts = _check_xy(X, y, "gbc")
  if gaussian_type not in ("spherical", "diagonal"):
    raise InputError(
        f"gbc: gaussian_type must be 'spherical' or 'diagonal', got {gaussian_type!r}."
    )
  if pca_dim is not None:
    pca_dim = int(pca_dim)
    if not 1 <= pca_dim <= min(X.shape):
      raise InputError(
          f"gbc: pca_dim={pca_dim} needs 1 <= pca_dim <= min(N, D) = "
          f"{min(X.shape)} (N={X.shape[0]}, D={X.shape[1]}); the PCA-{pca_dim} "
          "reduction of the google pipeline is not defined here. Use "
          "pca_dim=None for GBC on the raw features."
      )
    X = _pca_exact(X, pca_dim).astype(np.float32).astype(np.float64)
  else:
    X = X - X.mean(axis=0)  # shift-invariant; centring only improves rounding
  mu = _class_sums_means(X, y, num_classes, counts)
  var = np.maximum(_class_sums((X - mu[y]) ** 2, y, counts) / counts[:, None], _gbc.GBC_VAR_FLOOR)
  return -numerics.bhattacharyya_sum(mu, var, gaussian_type)


# ----------------------------------------------------------------------------
# SFDA
# ----------------------------------------------------------------------------


def _shrunk_lda_proba(
    Xc: np.ndarray, y: np.ndarray, num_classes: int, counts: np.ndarray, shrinkage: float | None
):
  """Posteriors of SFDA's shrunk LDA on (globally centred) data.

  Returns (P [N, C], class means [C, D], shrinkage used).
  """
  n, d = Xc.shape
  mu = _class_sums_means(Xc, y, num_classes, counts)
  r = Xc - mu[y]
  sw = (r.T @ r) / n  # sum_c pi_c Cov_c, each Cov_c with 1/n_c
  if shrinkage is None:
    lam = numerics.power_largest_eig(sw, _sfda.SFDA_POWER_ITERS)
    shrinkage = max(math.exp(-5.0 * lam), _sfda.SFDA_SHRINK_FLOOR)
  sw_s = (1.0 - shrinkage) * sw
  sw_s[np.diag_indices(d)] += shrinkage * float(np.trace(sw)) / d
  a_mu = numerics.solve_spd(sw_s, mu.T)  # Sw_s^{-1} mu_c  [D, C]
  logits = Xc @ a_mu - 0.5 * np.einsum("cd,dc->c", mu, a_mu) + np.log(counts / n)
  return numerics.softmax_rows(logits), mu, shrinkage


def sfda(X, y) -> float:
  """SFDA: self-challenging Fisher discriminant analysis score.

  Shao et al., "Not All Models Are Equal: Predicting Model Transferability in
  a Self-challenging Fisher Space", ECCV 2022. Reproduces
  TencentARC/SFDA@3b7edf76bd682acb1eba4f4c5eb7ea7f3f7f6c59
  ``metrics.py :: SFDA_Score(X, y)`` (with ``utils.py :: iterative_A``),
  without its side effect: the reference overwrites its X
  argument, this function never modifies the caller's array.

  (1) Shrunk LDA: Sw = sum_c pi_c Cov_c (1/n_c); lambda = 3-step power
  iteration estimate of Sw's largest eigenvalue (start: row sums);
  s = max(exp(-5 lambda), 1e-10); Sw_s = (1 - s) Sw + s (tr Sw / D) I;
  P_ic = softmax_c(x_i^T Sw_s^-1 mu_c - (1/2) mu_c^T Sw_s^-1 mu_c + log pi_c).
  (The reference reaches Sw_s^-1 through a generalised eigenproblem; here a
  Cholesky solve, mathematically identical.)
  (2) P' = softmax_c(P) (a softmax applied to probabilities).
  (3) ConfMix: x_i <- P'_{i,y_i} x_i + (1 - P'_{i,y_i}) mbar_{y_i}, mbar_c =
  plain average of the other classes' means (of the original data).
  (4) Refit the LDA on the mixed data with the same s; score = mean_i of the
  refitted posterior of the true class (no log).
  All steps are shift-invariant, so X is centred on its global mean first
  (better rounding on offset data; same value mathematically).

  Args:
    X: [N, D] features (not modified).
    y: [N] integer labels in 0..C-1.

  Returns:
    SFDA score in (0, 1]. Orientation: higher = better.
  """
  X, y, num_classes, counts = _check_xy(X, y, "sfda")
  Xc = X - X.mean(axis=0)  # new array
  prob, mu, shrink = _shrunk_lda_proba(Xc, y, num_classes, counts, None)
  prob = numerics.softmax_rows(prob)
  mbar = (mu.sum(axis=0)[None, :] - mu) / (num_classes - 1)
  w = prob[np.arange(len(y)), y][:, None]
  mixed = w * Xc + (1.0 - w) * mbar[y]
  prob2, _, _ = _shrunk_lda_proba(mixed, y, num_classes, counts, shrink)
  return float(np.mean(prob2[np.arange(len(y)), y]))


# ----------------------------------------------------------------------------
# NCTI
# ----------------------------------------------------------------------------


def _lda_svd(F: np.ndarray, y: np.ndarray, num_classes: int, counts: np.ndarray):
  """LDA with scikit-learn's 'svd' solver maths (scikit-learn 1.9).

  Returns (H = transform(F) [N, min(C-1, D, rank)], posteriors P [N, C]).
  Within-class centred data Z (rows x_i - mu_{y_i}) is scaled per column by its
  std (0 -> 1) and by sqrt(1/N); directions with singular value <= 1e-4 are
  dropped; the class means, centred at xbar = sum_c pi_c mu_c and weighted by
  sqrt(N pi_c / (C - 1)), are whitened and their right singular vectors with
  singular value > 1e-4 x the largest are kept. H = (F - xbar) W; logits_c =
  (x - xbar)^T W W^T (mu_c - xbar) - (1/2) ||W^T (mu_c - xbar)||^2 + log pi_c.
  """
  n, d = F.shape
  priors = counts / n
  mu = _class_sums_means(F, y, num_classes, counts)
  xbar = priors @ mu
  z = F - mu[y]
  std = z.std(axis=0)
  std[std == 0] = 1.0
  _, s1, vt1 = np.linalg.svd(math.sqrt(1.0 / n) * (z / std), full_matrices=False)
  r1 = int(np.sum(s1 > _ncti.LDA_SVD_TOL))
  w1 = (vt1[:r1] / std).T / s1[:r1]  # [D, r1]
  fac = 1.0 / (num_classes - 1)
  mw = (np.sqrt(n * priors * fac)[:, None] * (mu - xbar)) @ w1  # [C, r1]
  _, s2, vt2 = np.linalg.svd(mw, full_matrices=False)
  r2 = int(np.sum(s2 > _ncti.LDA_SVD_TOL * s2[0]))
  w = w1 @ vt2.T[:, :r2]  # [D, r2]
  coef = (mu - xbar) @ w  # [C, r2]
  proj = (F - xbar) @ w  # [N, r2]
  logits = proj @ coef.T - 0.5 * np.sum(coef**2, axis=1) + np.log(priors)
  h = proj[:, : min(num_classes - 1, d)]
  return h, numerics.softmax_rows(logits)


def _lda_eigen(
    F: np.ndarray, y: np.ndarray, num_classes: int, counts: np.ndarray, shrinkage: float
):
  """LDA with scikit-learn's 'eigen' solver and a fixed shrinkage (1.9 maths).

  Sw_s = (1 - a) Sw + a (tr Sw / D) I (Sw = sum_c pi_c Cov_c, 1/n_c), St_s the
  same for the total covariance, Sb = St_s - Sw_s; generalised eigenvectors of
  (Sb, Sw_s) (Sw_s-orthonormal) sorted by decreasing eigenvalue;
  H = F @ evecs[:, :min(C-1, D)] (uncentred, as scikit-learn's transform);
  logits_c = x^T Sw_s^-1 mu_c - (1/2) mu_c^T Sw_s^-1 mu_c + log pi_c.
  """
  n, d = F.shape
  priors = counts / n
  mu = _class_sums_means(F, y, num_classes, counts)
  r = F - mu[y]
  sw = (r.T @ r) / n
  fc = F - F.mean(axis=0)
  st = (fc.T @ fc) / n
  eye = np.eye(d)
  sw_s = (1.0 - shrinkage) * sw + shrinkage * float(np.trace(sw)) / d * eye
  st_s = (1.0 - shrinkage) * st + shrinkage * float(np.trace(st)) / d * eye
  evals, evecs = scipy.linalg.eigh(st_s - sw_s, sw_s)
  evecs = evecs[:, np.argsort(evals)[::-1]]
  h = F @ evecs[:, : min(num_classes - 1, d)]
  g = F.mean(axis=0)
  a_mu = numerics.solve_spd(sw_s, (mu - g).T)  # [D, C]
  logits = (F - g) @ a_mu - 0.5 * np.einsum("cd,dc->c", mu - g, a_mu) + np.log(priors)
  return h, numerics.softmax_rows(logits)


def ncti_components(
    X, y, *, pca_dim: int = _ncti.NctiOptions.pca_dim, pca_solver: str = "auto"
) -> tuple[float, float, float]:
  """Raw NCTI components (S_seli, S_ncc, vc) of one model's features.

  Wang et al., "How Far Pre-trained Models Are from Neural Collapse on the
  Target Dataset Informs their Transferability", ICCV 2023. Reproduces
  BUserName/NCTI@b18d39514a3f2a7a949500b467a38b93de1428e4
  ``metrics.py :: NCTI_Score(X, y)`` (which returns these three numbers;
  the published score min-max normalises them over a pool of models, see
  :func:`ncti_pool`).

  1. F = scikit-learn ``PCA(n_components=pca_dim, svd_solver=pca_solver,
     random_state=1).fit_transform(X)``. The reference leaves the solver on
     'auto' and seeds numpy's global RNG with 1; ``random_state=1`` draws the
     same numbers without touching global state, so the randomized solver (if
     'auto' picks it, e.g. N and D both > 500 with N < 10 D) matches too. Pass
     ``pca_solver="full"`` for an exact PCA.
  2. temp = max(exp(-sum of the 32 largest PCA variances), 1e-10). If temp ==
     1e-10: LDA with scikit-learn's 'svd' solver maths, else the 'eigen' solver
     with shrinkage = temp (both re-implemented here, see ``_lda_svd`` /
     ``_lda_eigen``; they follow scikit-learn 1.9, whose svd solver scales the
     within-class data by 1/N -- the values depend on that choice).
  3. H = LDA transform of F (min(C-1, D) columns), centred;
     S_seli = ||H||_* (nuclear norm); S_ncc = mean_i P(y_i | x_i) from the LDA
     posteriors (no log); vc = log sum_c ||P_c||_*, P_c the n_c x C block of
     posteriors of class c.

  Args:
    X: [N, D] features.
    y: [N] integer labels in 0..C-1.
    pca_dim: PCA dimension, default 64 as NCTI. Requires 1 <= pca_dim <=
      min(N, D), otherwise ``ValueError`` -- so with the default, features
      with D < 64 or fewer than 64 samples are rejected, exactly where the
      reference's PCA(64) raises. No silent fallback: pass a smaller
      ``pca_dim`` explicitly if you accept a deviation from the published
      recipe (the "top-32" variance sum then runs over min(32, pca_dim)
      components).
    pca_solver: scikit-learn PCA ``svd_solver`` ('auto' as the reference).

  Returns:
    (S_seli, S_ncc, vc). Orientation: S_seli and S_ncc higher = better; vc
    lower = better (it enters the pool score with a minus sign).
  """
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top

  X, y, num_classes, counts = _check_xy(X, y, "ncti_components")
  pca_dim = int(pca_dim)
  if not 1 <= pca_dim <= min(X.shape):
    raise InputError(
        f"ncti_components: PCA to pca_dim={pca_dim} components needs "
        f"1 <= pca_dim <= min(N, D) = {min(X.shape)} "
        f"(N={X.shape[0]}, D={X.shape[1]}); the NCTI recipe (PCA-64) is not "
        "defined for these features."
    )
  pca = PCA(n_components=pca_dim, svd_solver=pca_solver, random_state=_ncti.NCTI_PCA_SEED)
  F = pca.fit_transform(X).astype(np.float64)
  temp = max(
      math.exp(-float(pca.explained_variance_[: _ncti.NCTI_TOP_VAR].sum())), _ncti.NCTI_SHRINK_FLOOR
  )
  if temp == _ncti.NCTI_SHRINK_FLOOR:
    h, prob = _lda_svd(F, y, num_classes, counts)
  else:
    h, prob = _lda_eigen(F, y, num_classes, counts, temp)
  h = h - h.mean(axis=0)
  s_seli = numerics.nuclear_norm(h)
  s_ncc = float(np.mean(prob[np.arange(len(y)), y]))
  vc = math.log(sum(numerics.nuclear_norm(prob[y == c]) for c in range(num_classes)))
  return s_seli, s_ncc, vc


# ----------------------------------------------------------------------------
# ETran
# ----------------------------------------------------------------------------


def etran_components(X, y, *, percent: float = _etran.EtranOptions.percent) -> tuple[float, float]:
  """Raw ETran components (s_cls, s_en) of one model's features.

  Gholami et al., "ETran: Energy-Based Transferability Estimation", ICCV
  2023. Reproduces
  mgholamikn/ETran@d4551ed8f41f4ed6eba08b9cc1a78bae178acd19
  ``metrics.py :: [LDA_Score(X, y), Energy_Score(X, 0.5, 'bot')]`` (the
  published score min-max normalises them over a pool of models, see
  :func:`etran_pool`).

  s_cls = mean_i softmax_c(x_i^T mu_c - (1/2)||mu_c||^2 + log pi_c)[y_i] (no
  log) -- ETran's LDA as committed reduces to this nearest-mean dot-product
  classifier; it is shift-invariant and is evaluated on centred data.
  s_en = mean of the k smallest values of logsumexp_j X_ij with
  k = int(percent * 10) * N // 1000 (5N//1000 at the default 0.5), the
  features being used as logits as in ETran's evaluation script; it shifts by
  exactly the offset if a constant is added to X.

  Args:
    X: [N, D] features.
    y: [N] integer labels in 0..C-1.
    percent: energy tail size parameter of ``Energy_Score`` (default 0.5).

  Returns:
    (s_cls, s_en). Orientation: both higher = better.

  Raises:
    InputError: if k == 0 (N < 200 at percent 0.5), where the reference
      returns the mean of an empty set (nan).
  """
  X, y, num_classes, counts = _check_xy(X, y, "etran_components")
  n = X.shape[0]
  k = int(percent * 10) * n // 1000
  if k < 1:
    raise InputError(
        f"etran_components: the energy tail has k = int(percent*10)*N//1000 = {k} "
        f"samples (N={n}, percent={percent}); s_en is undefined (the reference "
        "returns nan). ETran needs N >= 200 at percent=0.5."
    )
  g = X.mean(axis=0)
  xc = X - g
  mu = _class_sums_means(xc, y, num_classes, counts)
  logits = xc @ mu.T - 0.5 * np.sum(mu * mu, axis=1) + np.log(counts / n)
  s_cls = float(np.mean(numerics.softmax_rows(logits)[np.arange(n), y]))
  energy = scipy.special.logsumexp(X, axis=1)
  s_en = float(np.mean(np.sort(energy)[:k]))
  return s_cls, s_en


# ----------------------------------------------------------------------------
# NLEEP
# ----------------------------------------------------------------------------


def nleep(
    X,
    y,
    *,
    n_components_factor: int = _subsample.NleepOptions.n_components_factor,
    pca_variance: float = _subsample.NleepOptions.pca_variance,
    random_state: int = _subsample.NleepOptions.random_state,
) -> float:
  """NLEEP: LEEP with a Gaussian-mixture "source model" on PCA features.

  Li et al., "Ranking Neural Checkpoints", CVPR 2021. Reproduces
  google-research/google-research@4963f325fe8bf41c69aeb2717d0ef408f623500e
  ``stable_transfer/transferability/nleep.py :: get_nleep_score(
  pca_reduction(X, 0.8), y, 5*C, random_state=123)`` with ``leep.py`` at
  commit 1d4d2f1aa6f2883a790d2ae46a6ee8ab150d8f31.

  F = scikit-learn ``PCA(n_components=pca_variance, svd_solver='full')
  .fit_transform(X)`` cast to float32 (fewest components explaining
  ``pca_variance`` of the variance); a scikit-learn ``GaussianMixture(
  n_components=n_components_factor * C, random_state=random_state)`` (all
  other defaults: full covariances, k-means init, reg_covar 1e-6) is fitted on
  F; its posterior responsibilities replace theta in LEEP (float32, natural
  log, divide-no-nan; a sample with zero expected prediction counts as
  -log C). The value depends on the k-means++ initialisation, hence on the
  row order of X and on the scikit-learn version (the reference fixtures were
  made with scikit-learn 1.9.1). The mixture is fitted inside
  ``threadpoolctl.threadpool_limits(1)`` (single-threaded BLAS/OpenMP, as the
  fixtures were produced; on these sizes threads only add overhead). Cost: EM
  with K = 5C full covariances, O(N K d^2) per iteration for d PCA dimensions.

  Args:
    X: [N, D] features.
    y: [N] integer labels in 0..C-1.
    n_components_factor: mixture components per target class (5 in the paper).
    pca_variance: explained-variance fraction in (0, 1) kept by the PCA.
    random_state: GaussianMixture seed (123 as the reference).

  Returns:
    NLEEP (<= 0). Orientation: higher = better.

  Raises:
    InputError: if scikit-learn cannot fit the mixture (e.g. "ill-defined
      empirical covariance" with too few samples per component), re-raised
      with the shapes involved.
  """
  X, y, num_classes, _ = _check_xy(X, y, "nleep")
  if not 0.0 < pca_variance < 1.0:
    raise InputError(f"nleep: pca_variance must be in (0, 1), got {pca_variance}.")
  return _subsample.nleep_from_rows(
      X,
      y,
      num_classes,
      n_components_factor=n_components_factor,
      pca_variance=pca_variance,
      random_state=random_state,
  )


# ----------------------------------------------------------------------------
# PARC
# ----------------------------------------------------------------------------


def parc(
    X,
    probs,
    y,
    *,
    n_dims: int | None = _subsample.ParcOptions.n_dims,
    pca_solver: str = _subsample.ParcOptions.pca_solver,
    label_rdm: str = _subsample.ParcOptions.label_rdm,
) -> float:
  """PARC: Pairwise Annotation Representation Comparison.

  Bolya et al., "Scalable Diverse Model Selection for Accessible Transfer
  Learning", NeurIPS 2021. Reproduces
  dbolya/parc@ddfca43a84d35328897d107d6f86e860b11801ce
  ``methods.py :: PARC(n_dims=32)(features, probs, y, ...)``.

  1. Reduce X to f = min(n_dims, N) dimensions with scikit-learn
     ``PCA(n_components=f, svd_solver='randomized', random_state=1919,
     iterated_power=1)`` (``pca_solver="randomized"``, the reference) or an
     exact ``svd_solver='full'`` PCA (``pca_solver="full"``); ``n_dims=None``
     skips the reduction. Then standardise each column (population std, 0 ->
     1, as scikit-learn's StandardScaler).
  2. R_f = 1 - Pearson correlation between every pair of samples (N x N);
     R_y = 1 - Pearson correlation between one-hot label rows.
  3. PARC = 100 x Spearman correlation (average ranks for ties) of the strict
     upper triangles of R_f and R_y.

  The label RDM. Mathematically R_y is 0 for same-class pairs and C/(C-1)
  otherwise. ``label_rdm="exact"`` (default) uses exactly these two values.
  ``label_rdm="corrcoef"`` computes ``1 - numpy.corrcoef(one_hot)`` literally
  as the reference does; BLAS rounding then turns some of the 0 ties into
  ~1e-16, which changes the Spearman ranks, and which pairs are affected
  depends on the BLAS build and thread count (the reference value moves at
  the 1e-3..1e-1 level; see the fixture README, pitfall 9).

  Cost: O(N^2) memory and time (two N x N matrices).

  Args:
    X: [N, D] features.
    probs: [N, Cs] source probabilities or None. PARC does not use them (the
      reference's ``TransferabilityMethod`` signature carries them); if given
      they are validated like everywhere else.
    y: [N] integer labels in 0..C-1.
    n_dims: PCA dimension (default 32 as the PARC paper), or None.
    pca_solver: ``"randomized"`` (reference) or ``"full"``.
    label_rdm: ``"exact"`` or ``"corrcoef"`` (see above).

  Returns:
    PARC on the x100 scale, in [-100, 100]. Orientation: higher = better.

  Raises:
    InputError: on invalid inputs, or if the PCA dimension exceeds D (the
      reference's PCA raises then too).
  """
  X, y, num_classes, _ = _check_xy(X, y, "parc")
  if probs is not None:
    _check_probs(probs, X.shape[0], "parc")
  if pca_solver not in ("randomized", "full"):
    raise InputError(f"parc: pca_solver must be 'randomized' or 'full', got {pca_solver!r}.")
  if label_rdm not in ("exact", "corrcoef"):
    raise InputError(f"parc: label_rdm must be 'exact' or 'corrcoef', got {label_rdm!r}.")
  return _subsample.parc_from_rows(
      X, y, num_classes, n_dims=n_dims, pca_solver=pca_solver, label_rdm=label_rdm
  )


# ----------------------------------------------------------------------------
# Neural-collapse measures: NC1, VCI
# ----------------------------------------------------------------------------


def nc1(X, y, *, centering: str = "class_mean") -> float:
  """NC1: within-class variability relative to between-class spread.

  Papyan, Han & Donoho, "Prevalence of neural collapse during the terminal
  phase of deep learning training", PNAS 2020.

  Sigma_W = (1/N) sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T;
  Sigma_B = (1/C) sum_c (mu_c - g)(mu_c - g)^T;
  NC1 = trace(Sigma_W pinv(Sigma_B)) / C, pinv keeping singular values
  > D * eps(float64) * the largest (torch.linalg.pinv's default cut).

  Args:
    X: [N, D] features.
    y: [N] integer labels in 0..C-1.
    centering: ``"class_mean"`` (default): g = the unweighted mean of the C
      class means, reproducing
      rhubarbwu/neural-collapse@c05a0b80d6bc6e8e2e102f2180f1f33b2c9605fd
      ``neural_collapse/measure.py :: covariance_ratio(V_intra, M, m_G,
      'pinv')`` with its accumulators' defaults (``weighted=False``; its
      Sigma_W divisor N + 2.2e-16 rounds to N in float64 for N >= 2).
      ``"sample_mean"``: g = the mean of all N samples (Papyan et al.'s
      global mean; fixture key ``nc1_papyan``). They agree for balanced
      classes.

  Returns:
    NC1 >= 0. Orientation: lower = more within-class collapse (for
    transferability, lower = better; negate to rank "higher = better").
  """
  X, y, num_classes, counts = _check_xy(X, y, "nc1")
  if centering not in ("class_mean", "sample_mean"):
    raise InputError(f"nc1: centering must be 'class_mean' or 'sample_mean', got {centering!r}.")
  n, d = X.shape
  mu = _class_sums_means(X, y, num_classes, counts)
  g = mu.mean(axis=0) if centering == "class_mean" else X.mean(axis=0)
  r = X - mu[y]
  # rhubarbwu divides by N + eps; for N >= 2 that rounds to N in float64.
  sigma_w = (r.T @ r) / ((n + numerics.EPS64) if centering == "class_mean" else n)
  dm = mu - g
  sigma_b = (dm.T @ dm) / num_classes
  return numerics.pinv_trace(sigma_b, sigma_w, d * numerics.EPS64)[0] / num_classes


def vci(X, y) -> float:
  """VCI: variability collapse index.

  Xu & Liu, "Quantifying the Variability Collapse of Neural Networks", ICML
  2023: VCI = 1 - Tr(Sigma_T^+ Sigma_B) / rank(Sigma_B).

  Sigma_T = (1/N) sum_i (x_i - g)(x_i - g)^T (total covariance) and
  Sigma_B = (1/N) sum_c n_c (mu_c - g)(mu_c - g)^T (between-class covariance),
  g = the mean of all N samples. Sigma_T^+ is the pseudo-inverse through the
  eigen-decomposition of Sigma_T keeping eigenvalues > D * eps(float64) * the
  largest; rank(Sigma_B) = number of eigenvalues of Sigma_B above
  D * eps(float64) * its largest (both = numpy's default pinv / matrix_rank
  cuts). Since 0 <= Sigma_B <= Sigma_T, VCI lies in [0, 1] up to rounding.

  Args:
    X: [N, D] features.
    y: [N] integer labels in 0..C-1.

  Returns:
    VCI in [0, 1]. Orientation: lower = more collapsed (for transferability,
    lower = better).

  Raises:
    InputError: if all class means coincide (rank(Sigma_B) = 0).
  """
  X, y, num_classes, counts = _check_xy(X, y, "vci")
  n, d = X.shape
  xc = X - X.mean(axis=0)
  sigma_t = (xc.T @ xc) / n
  mu = _class_sums_means(xc, y, num_classes, counts)
  sigma_b = (mu * (counts / n)[:, None]).T @ mu
  wb = np.abs(np.linalg.eigvalsh(sigma_b))
  rank_b = int(np.sum(wb > d * numerics.EPS64 * wb.max())) if wb.max() > 0 else 0
  if rank_b == 0:
    raise InputError(
        "vci: the between-class covariance is zero (all class means " "coincide); VCI is undefined."
    )
  tr, _ = numerics.pinv_trace(sigma_t, sigma_b, d * numerics.EPS64)
  return 1.0 - tr / rank_b


# ----------------------------------------------------------------------------
# Pool-relative combinations (NCTI, ETran)
# ----------------------------------------------------------------------------


def pool_minmax(
    components: Mapping[str, Mapping[str, float]], weights: Mapping[str, float]
) -> dict[str, float]:
  """Weighted sum of per-component min-max normalised scores over a model pool.

  For every component name k in ``weights``, the values v_m[k] over the pool
  of models m are mapped to (v_m[k] - min_m v[k]) / (max_m v[k] - min_m v[k])
  in [0, 1]; a component that is constant over the pool (max == min, including
  a pool of one model) maps to 0 for every model. The score of model m is
  sum_k weights[k] * normalised v_m[k].

  This is ``face_jax.pool_minmax`` (one implementation, in the core),
  re-exported here.

  Args:
    components: model name -> {component name -> raw value}.
    weights: component name -> weight (sign included).

  Returns:
    model name -> pooled score (same keys and order as ``components``).

  Raises:
    ValueError (``face_jax.InputError``): on an empty pool or weights, a model
      missing a weighted component, or a non-finite value (the message names
      the model and the component).
  """
  return _pool.pool_minmax(components, weights)


NCTI_WEIGHTS = dict(_ncti.NCTI_WEIGHTS)
ETRAN_WEIGHTS = dict(_etran.ETRAN_WEIGHTS)


def ncti_pool(components: Mapping[str, Sequence[float]]) -> dict[str, float]:
  """Published NCTI score over a pool: ncc_n + seli_n - vc_n.

  Each model's value is the 3-tuple ``(s_seli, s_ncc, vc)`` returned by
  :func:`ncti_components` (or a mapping with those keys, or an
  ``NctiComponents`` result); every component is min-max normalised over the
  pool (:func:`pool_minmax`). Orientation: higher = better. Wang et al., ICCV
  2023 (BUserName/NCTI). Delegates to ``face_jax.ncti_pool``.
  """
  return _ncti.ncti_pool(components)


def etran_pool(components: Mapping[str, Sequence[float]]) -> dict[str, float]:
  """Published ETran score over a pool: 0.15 s_en_n + 0.85 s_cls_n.

  Each model's value is the pair ``(s_cls, s_en)`` returned by
  :func:`etran_components` (or a mapping with those keys, or an
  ``EtranComponents`` result); every component is min-max normalised over the
  pool (:func:`pool_minmax`). Orientation: higher = better. Gholami et al.,
  ICCV 2023 (mgholamikn/ETran). Delegates to ``face_jax.etran_pool``.
  """
  return _etran.etran_pool(components)
