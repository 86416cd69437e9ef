"""Classic transferability baselines on the streaming engine (group A).

Synopsis::

    import face_jax
    out = face_jax.score(features, labels, source_probs=probs,
                         metrics=('logme', 'hscore', 'reg_hscore', 'transrate', 'gbc',
                                  'nce', 'nc1', 'vci', 'leep'))
    out['logme'], out['leep']                    # floats

Every metric here is (1) a *plan* (a generator, see ``face_jax._src.plan``)
that asks the engine for additive statistics, pass by pass, and (2) a pure
float64 host function of the finalised statistics (``*_from_*``), which is
the metric's definition.  They reproduce the reference implementations listed
in each docstring (the same ones ``face_jax.dense`` reproduces in memory and
``tests/fixtures/reference`` records), with the same epsilons.

Passes (metrics requested together share them; round r of every plan is one
pass over the data):

========================  ======  ==============================================
metric                    passes  statistics (memory, accumulator elements)
========================  ======  ==============================================
nc1                       1 (2)   Moments (2KD + K + D²); 2 passes only for
                                  weighting="balanced" on a stream whose class
                                  counts are unequal and unknown up front
vci, hscore, logme, gbc   1       Moments
reg_hscore                1       Moments + NormMoments (2D + 3)
transrate                 1       ClassScatter (K·D² + KD + K)
nce                       1       SourceJoint hard (K·Ks + K)
leep                      2       SourceJoint soft, then LeepLogLik (3)
gbc with pca_dim=k        2       Moments, then ProjectedMoments (2Kk + K)
========================  ======  ==============================================

Classes.  A class in ``[0, num_classes)`` without samples is left out (with a
``FaceJaxWarning``); K below is the number of populated classes, and at
least 2 are required.  With labels covering 0..C-1 (the references'
convention, which ``face_jax.dense`` enforces) this is the references' C.

Numerics.  Statistics are accumulated about shifts (the first batch's class
means), so float32 streaming survives large common offsets; every metric's
finalisation reconstructs the centred (or, for LogME, the raw) matrices in
float64.  Where a matrix has a known rank bound (N − 1 for a centred
covariance, N for XᵀX, n_c for a class block), eigenvalues beyond that rank
are set to zero before inverting or taking logarithms: a mathematical no-op
that keeps float32 rounding noise (~1e-7 relative instead of ~1e-16) out of
pseudo-inverses with the references' tiny cut-offs and out of log-determinants.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from face_jax._src import engine as engine_lib
from face_jax._src import face as face_lib
from face_jax._src import stats as stats_lib
from face_jax._src.baselines import mp_stats
from face_jax._src.baselines import stats_a
from face_jax._src.errors import InputError

EPS64 = float(np.finfo(np.float64).eps)

# LogME (thuml fixed point): singular values <= 1e-10 are dropped (N > D);
# 1e-5 is added to ||m||² and to the residual in the updates; stop when
# alpha/beta moves by <= 1e-3 relative; at most 11 updates (both variants).
LOGME_FP_SV_CUTOFF = 1e-10
LOGME_FP_EPS = 1e-5
LOGME_FP_TOL = 1e-3
LOGME_ICML_TOL = 1e-2          # tllib ICML: stop at < 1e-2 relative change of alpha/beta
LOGME_MAX_ITERS = 11
LOGME_VARIANTS = ('thuml', 'tllib_icml')
NCE_EPS = 1e-20                # thuml NCE: added to P(y|z) inside p·log p
HSCORE_PINV_RTOL = 1e-15       # numpy.linalg.pinv(rcond=1e-15), tllib / official H-score
GBC_VAR_FLOOR = 1e-4           # GBC: per-dimension class variances floored at 1e-4
GBC_TYPES = ('spherical', 'diagonal')
TRANSRATE_EPS = 1e-4           # tllib TransRate default distortion
NC1_WEIGHTINGS = ('balanced', 'sample')
NC1_CENTERINGS = (None, 'class_mean', 'sample_mean')


# ---------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------


_populated = mp_stats.populated_classes   # [K] populated-class mask; warns, needs >= 2


def _sym_eig_desc(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Eigen-decomposition of a symmetric matrix, eigenvalues descending."""
  w, v = np.linalg.eigh(0.5 * (a + a.T))
  return w[::-1], v[:, ::-1]


def _pinv_trace(a: np.ndarray, b: np.ndarray, rtol: float, max_rank: int | None = None) -> float:
  """trace(pinv(a) @ b) for symmetric ``a``, ``b``.

  Eigenpairs of ``a`` with |λ| > rtol·max|λ| are kept (numpy/torch ``pinv``
  with that ``rcond``/``rtol``: for a symmetric matrix the singular values are
  the |λ|); at most ``max_rank`` of them, the largest (a known rank bound).
  """
  w, v = _sym_eig_desc(a)
  aw = np.abs(w)
  if aw.max() == 0.0:
    return 0.0
  keep = aw > rtol * aw.max()
  if max_rank is not None:
    keep &= np.argsort(-aw, kind='stable').argsort() < max_rank
  vk = v[:, keep]
  quad = np.sum(vk * (b @ vk), axis=0)
  return float(np.sum(quad / w[keep]))


def _centered_between(moments: stats_lib.ClassMoments, present: np.ndarray):
  """(global mean [D], between scatter Σ_k n_k (μ_k − μ)(μ_k − μ)ᵀ [D, D]).

  The rows n_k (μ_k − μ) are re-centred to sum to zero (a mathematical no-op
  that removes the rounding of a large common offset).
  """
  counts = moments.counts[present]
  mu = moments.global_mean()
  dm = moments.means[present] - mu
  dm = dm - (counts[:, None] * dm).sum(0) / counts.sum()
  r = dm * np.sqrt(counts)[:, None]
  return mu, r.T @ r


def _unit_moments_request(info: engine_lib.StreamInfo, dtype: str) -> engine_lib.Request:
  """Moments about the first batch's class means with unit class weights.

  The same request FaCe makes with ``weighting="sample"`` (or equal counts),
  so the engine accumulates it once for every metric that asks.
  """
  spec = stats_lib.MomentsSpec(num_classes=info.num_classes, dim=info.dim, dtype=dtype)
  return engine_lib.Request(stats_lib.Moments, spec,
                            {'shift': engine_lib.FIRST_BATCH_SHIFT,
                             'weight': np.ones((info.num_classes,), np.float64)})


def _options(defaults: Mapping[str, Any], options: Mapping[str, Any], metric: str) -> dict:
  unknown = sorted(set(options) - set(defaults))
  if unknown:
    raise InputError(f'{metric} has no option(s) {unknown}; valid: {sorted(defaults)}')
  return {**defaults, **options}


def _choice(value, allowed, name: str, metric: str):
  if value not in allowed:
    raise InputError(f'{metric}: {name} must be one of {allowed}, got {value!r}')
  return value


def _source_classes(info: engine_lib.StreamInfo, metric: str) -> int:
  shape = info.extras.get('source_probs')
  if shape is None:
    raise InputError(f'{metric} needs source-model probabilities: pass source_probs=[N, Ks] '
                     "(or a 'source_probs' entry in every streamed batch)")
  if len(shape) != 1 or shape[0] < 1:
    raise InputError(f'{metric}: source_probs must be [N, Ks], got trailing shape {tuple(shape)}')
  return int(shape[0])


# ---------------------------------------------------------------------------------
# NC1 and VCI
# ---------------------------------------------------------------------------------


def nc1_from_moments(moments: stats_lib.ClassMoments, *, weighting: str = 'balanced',
                     centering: str | None = None) -> float:
  """NC1 = Tr(Σ_W Σ_B^†)/K (a pure float64 function of finalised moments).

  Papyan, Han & Donoho, "Prevalence of neural collapse during the terminal
  phase of deep learning training", PNAS 2020; the FaCe specification's
  variance-collapse definition (FACE_SPEC.md), which FaCe's ``nc1`` reports.

  Σ_B = (1/K) Σ_k (μ_k − g)(μ_k − g)ᵀ over the K populated classes;
  Σ_W and g by option:

  ============================  =======================  =================
  options                       Σ_W                      g
  ============================  =======================  =================
  weighting="balanced"          (1/K) Σ_k Σ_k            mean of class means
  (default, = FaCe's nc1)
  weighting="sample"            (1/N) Σ_i (x_i − μ_y)²   mean of all samples
  (fixture key ``nc1_papyan``)
  weighting="sample",           (1/N) Σ_i (x_i − μ_y)²   mean of class means
  centering="class_mean"
  (fixture ``nc1_rhubarbwu_pinv``)
  ============================  =======================  =================

  ``centering`` (None = the weighting's own: balanced -> "class_mean",
  sample -> "sample_mean") overrides g.  The rhubarbwu reference
  (rhubarbwu/neural-collapse@c05a0b80d6bc6e8e2e102f2180f1f33b2c9605fd
  ``neural_collapse/measure.py :: covariance_ratio(V_intra, M, m_G, 'pinv')``,
  accumulators with ``weighted=False``) divides Σ_W by N + 2.2e-16, which is N
  in float64 for N >= 2.

  Pseudo-inverse: the thin SVD of M = [(μ_k − g)/√K]_k (Σ_B = MᵀM) keeps
  s_j > max(K, D)·ε₆₄·max(s_max, max_k ‖μ_k‖) (FACE_SPEC's numerical-rank
  rule plus FaCe's floor at the class means' rounding level; see
  ``face.nc1_core``).  The references cut eigenvalues of Σ_B at D·ε₆₄·λ_max
  (torch's default ``pinv``); the two only differ for a Σ_B with eigenvalues
  between those cut-offs (near-coincident class means), never on the fixtures.

  Args:
    moments: ``ClassMoments`` with unit class weights (weighting="sample") or
      ``face.balanced_weights(counts)`` (weighting="balanced"; unit weights are
      the same when the populated classes have equal counts).
    weighting: "balanced" or "sample".
    centering: None, "class_mean" or "sample_mean".

  Returns:
    NC1 >= 0 (+inf when all class means coincide).  Orientation: lower = more
    within-class collapse (lower = better).
  """
  _choice(weighting, NC1_WEIGHTINGS, 'weighting', 'nc1')
  _choice(centering, NC1_CENTERINGS, 'centering', 'nc1')
  if centering is None:
    centering = 'class_mean' if weighting == 'balanced' else 'sample_mean'
  counts = np.asarray(moments.counts, np.float64)
  present = _populated(counts, 'nc1')
  w = np.asarray(moments.weight)[present]
  expected = (face_lib.balanced_weights(counts)[present] if weighting == 'balanced'
              else np.ones(int(present.sum())))
  unit_ok = np.allclose(w, 1.0) and (weighting == 'sample' or face_lib.equal_populated(counts))
  if not (unit_ok or np.allclose(w, expected, rtol=1e-6)):
    raise InputError(f'nc1: the scatter was accumulated with class weights that do not match '
                     f'weighting={weighting!r}')
  if moments.within_scatter is None:
    raise InputError('nc1 needs the within-class scatter (MomentsSpec.scatter=True)')
  mu = moments.means[present]
  cls_counts = counts[present]
  if centering == 'class_mean':
    g, recenter = mu.mean(0), None
  else:
    g, recenter = (cls_counts[:, None] * mu).sum(0) / cls_counts.sum(), cls_counts
  sigma_w = moments.within_scatter / counts.sum()
  return face_lib.nc1_core(mu, g, sigma_w, recenter)[0]


def vci_from_moments(moments: stats_lib.ClassMoments) -> float:
  """VCI = 1 − Tr(Σ_T^† Σ_B)/rank(Σ_B) (variability collapse index).

  Xu & Liu, "Quantifying the Variability Collapse of Neural Networks", ICML
  2023; the same definition as ``face_jax.dense.vci``: Σ_T = (1/N) Σ_i
  (x_i − g)(x_i − g)ᵀ, Σ_B = (1/N) Σ_c n_c (μ_c − g)(μ_c − g)ᵀ, g the sample
  mean; Σ_T^† keeps eigenvalues > D·ε₆₄·λ_max (and at most N − 1 of them, the
  rank bound of a centred covariance); rank(Σ_B) counts squared singular
  values of [√(n_c/N)(μ_c − g)]_c above D·ε₆₄ times the largest (numpy's
  ``pinv``/``matrix_rank`` cuts on Σ_B's eigenvalues).

  Args:
    moments: ``ClassMoments`` with unit class weights.

  Returns:
    VCI in [0, 1] up to rounding.  Orientation: lower = more collapsed (lower =
    better).

  Raises:
    InputError: all class means coincide (rank Σ_B = 0).
  """
  counts = np.asarray(moments.counts, np.float64)
  present = _populated(counts, 'vci')
  n, d = counts.sum(), moments.dim
  mu = moments.global_mean()
  dm = moments.means[present] - mu
  dm = dm - (counts[present][:, None] * dm).sum(0) / n
  r = dm * np.sqrt(counts[present] / n)[:, None]                 # Σ_B = rᵀ r
  s2 = np.linalg.svd(r, compute_uv=False) ** 2
  rank_b = int(np.sum(s2 > d * EPS64 * s2.max())) if s2.size and s2.max() > 0 else 0
  if rank_b == 0:
    raise InputError('vci: the between-class covariance is zero (all class means coincide); '
                     'VCI is undefined')
  sigma_t = moments.total_scatter() / n
  tr = _pinv_trace(sigma_t, r.T @ r, d * EPS64, max_rank=int(n) - 1)
  return 1.0 - tr / rank_b


# ---------------------------------------------------------------------------------
# LogME
# ---------------------------------------------------------------------------------


def logme_from_moments(moments: stats_lib.ClassMoments, *, variant: str = 'thuml') -> float:
  """LogME from XᵀX, Xᵀ1[y = c] and the class counts (a pure float64 function).

  You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning", ICML 2021; fixed-point solver from You et al., "Ranking and
  Tuning Pre-trained Models: A New Paradigm for Exploiting Model Hubs", JMLR
  2022.  For each class c the one-vs-rest target t = 1[y = c] is regressed on
  X (no centring, no bias column: LogME is *not* shift-invariant) and the
  per-sample log evidence is averaged over classes.  Everything depends on X
  only through XᵀX (= ``moments.second_moment()``, rebuilt exactly in float64
  from the shifted sums), Xᵀt (the class sums) and ‖t‖² = n_c: with
  XᵀX = V diag(σ) Vᵀ, the projections x2_i = (v_iᵀXᵀt)²/σ_i are the squared
  coordinates (u_iᵀt)² of the references' SVD of X.

  Args:
    moments: ``ClassMoments`` with unit class weights (and the scatter).
    variant: ``"thuml"`` (default; fixture key ``logme_thuml``) reproduces
      thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07
      ``LogME.py :: LogME(regression=False).fit`` (fixed point): alpha = beta
      = 1, at most 11 updates alpha = gamma/(‖m‖² + 1e-5), beta = (N −
      gamma)/(res² + 1e-5), stop when alpha/beta moves by <= 1e-3 relative;
      the log sum runs over the singular values > 1e-10 when N > D and over
      all min(N, D) = N of them when N <= D.  ``"tllib_icml"`` (fixture key
      ``logme_tllib_icml``) reproduces
      thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4
      ``tllib/ranking/logme.py :: log_maximum_evidence(regression=False)``
      (ICML 2021): MacKay updates without epsilon, stop at < 1e-2 relative
      change, at most 11 updates, the log sum over all D eigenvalues (zeros
      included).

  Known reference behaviour, matched (fixtures README, pitfall 2): when N <= D
  the two variants differ by (D − N)/(2N)·log alpha because "tllib_icml"
  counts the D − N zero eigenvalues of XᵀX.  The N <= D "thuml" path of the
  reference takes an SVD of X; here the top N eigenpairs of XᵀX stand for it
  (identical in exact arithmetic; eigenvalues beyond the rank bound min(N, D)
  are set to zero, and a direction with σ_i <= D·ε₆₄·σ_max counts as null:
  its share of ‖t‖² goes to the residual, as the reference's zero singular
  values do).

  Returns:
    LogME (mean per-sample log evidence).  Orientation: higher = better.
  """
  _choice(variant, LOGME_VARIANTS, 'variant', 'logme')
  counts = np.asarray(moments.counts, np.float64)
  present = _populated(counts, 'logme')
  n, d = counts.sum(), moments.dim
  xtx = moments.second_moment()
  xty = moments.sums[present].T                          # [D, K] Xᵀ onehot
  w, v = _sym_eig_desc(xtx)
  w = np.clip(w, 0.0, None)
  rank_bound = int(min(n, d))
  w[rank_bound:] = 0.0
  pos = w > d * EPS64 * w[0]
  tmp = v.T @ xty                                        # [D, K]
  tmp[~pos] = 0.0                                        # Xᵀt has no null-space component
  x2_all = np.zeros_like(tmp)
  x2_all[pos] = tmp[pos] ** 2 / w[pos][:, None]          # (u_iᵀ t)²
  if variant == 'thuml':
    if n > d:
      keep = np.sqrt(w) > LOGME_FP_SV_CUTOFF
    else:
      keep = np.arange(d) < rank_bound                   # all N singular values of X
    return logme_fixed_point_iteration(w[keep], x2_all[keep], counts[present], n, d)
  return _logme_icml(w, x2_all, counts[present], n, d)


def logme_evidence(alpha, beta, sigma, m2, res2, n, d) -> float:
  """Per-sample log evidence of the Bayesian linear model at (alpha, beta).

  ``sigma`` [k] eigenvalues of XᵀX, ``m2`` = ‖m‖², ``res2`` = ‖t − X m‖²
  (shared by both LogME iterations and by face_jax.dense).
  """
  evidence = (d / 2.0 * math.log(alpha) + n / 2.0 * math.log(beta)
              - 0.5 * np.sum(np.log(alpha + beta * sigma))
              - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * math.log(2.0 * math.pi))
  return float(evidence / n)


def logme_fixed_point_iteration(sigma, x2, n_c, n, d) -> float:
  """thuml LogME's fixed-point evidence maximisation in the eigenbasis of XᵀX.

  Args:
    sigma: [k] the kept eigenvalues of XᵀX (squared singular values of X).
    x2: [k, C] (u_iᵀ t_c)², t_c = 1[y = c], u_i the left singular vectors.
    n_c: [C] class counts (‖t_c‖²).
    n, d: N and D.

  Returns:
    The mean over classes of the per-sample log evidence (alpha = beta = 1 start,
    at most ``LOGME_MAX_ITERS`` updates with ``LOGME_FP_EPS`` added to ‖m‖² and
    the residual, stop at ``LOGME_FP_TOL`` relative change of alpha/beta).
  """
  evidences = []
  for c in range(x2.shape[1]):
    xc = x2[:, c]
    # ‖t‖² − Σ_kept (u_iᵀt)² (null directions of an N <= D X included), clipped at 0.
    res_x2 = max(n_c[c] - xc.sum(), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(LOGME_MAX_ITERS):
      t = alpha / beta
      gamma = np.sum(sigma / (sigma + t))
      m2 = np.sum(sigma * xc / (t + sigma) ** 2)
      res2 = np.sum(xc / (1.0 + sigma / t) ** 2) + res_x2
      alpha = gamma / (m2 + LOGME_FP_EPS)
      beta = (n - gamma) / (res2 + LOGME_FP_EPS)
      if abs(alpha / beta - t) / t <= LOGME_FP_TOL:
        break
    evidences.append(logme_evidence(alpha, beta, sigma, m2, res2, n, d))
  return float(np.mean(evidences))


def _logme_icml(s, x2, n_c, n, d) -> float:
  """tllib ICML iteration in the eigenbasis: ‖m‖² and ‖t − Xm‖² from σ, x2 and n_c."""
  evidences = []
  for c in range(x2.shape[1]):
    xc = x2[:, c]
    res_x2 = max(n_c[c] - xc.sum(), 0.0)
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    for _ in range(LOGME_MAX_ITERS):
      gamma = np.sum(s / (s + lam))
      # m = V (Vᵀ Xᵀ t)·beta/(alpha + beta σ): ‖m‖² = Σ σ x2 beta²/(alpha + beta σ)²,
      # ‖t − X m‖² = res_x2 + Σ x2 (alpha/(alpha + beta σ))².
      denom = alpha + beta * s
      alpha_de = float(np.sum(s * xc * (beta / denom) ** 2))
      beta_de = float(res_x2 + np.sum(xc * (alpha / denom) ** 2))
      alpha = gamma / alpha_de
      beta = (n - gamma) / beta_de
      new_lam = alpha / beta
      if abs(new_lam - lam) / lam < LOGME_ICML_TOL:
        break
      lam = new_lam
    evidences.append(logme_evidence(alpha, beta, s, alpha_de, beta_de, n, d))
  return float(np.mean(evidences))


# ---------------------------------------------------------------------------------
# LEEP and NCE
# ---------------------------------------------------------------------------------


def leep_conditional(joint: stats_a.JointCounts) -> np.ndarray:
  """[K, Ks] P(y | z) = P(y, z)/Σ_y' P(y', z) from the soft joint (0 where P(z) = 0)."""
  j = joint.joint / joint.n
  marginal = j.sum(0)
  return np.divide(j, marginal[None, :], out=np.zeros_like(j), where=marginal[None, :] > 0)


def leep_from_sums(joint: stats_a.JointCounts, sums: stats_a.LeepSums) -> float:
  """LEEP = (1/N) Σ_i log Σ_z θ_iz P(y_i | z) (a pure float64 function).

  Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
  Representations", ICML 2020.  Reproduces
  thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07
  ``LEEP.py :: LEEP(pseudo_source_label=probs, target_label=y)``: empirical
  joint P(y, z) = (1/N) Σ_{i: y_i = y} θ_iz (pass 1), conditional
  P(y | z) = P(y, z)/P(z), natural log, no epsilon, no smoothing (pass 2
  accumulates the log sum with the pass-1 table).  A source class with zero
  total probability gets P(·|z) = 0 (the reference would produce 0/0 = nan
  everywhere); a sample with expected prediction 0 makes LEEP −inf, as in the
  reference.

  Args:
    joint: pass-1 soft joint counts.
    sums: pass-2 sums.

  Returns:
    LEEP <= 0.  Orientation: higher = better.
  """
  _populated(joint.counts, 'leep')
  if sums.zero_rows > 0:
    return -math.inf
  return sums.log_sum / sums.n


def nce_from_joint(joint: stats_a.JointCounts) -> float:
  """NCE = −H(Y | Z) with hard source labels z_i = argmax_z θ_iz (pure float64).

  Tran et al., "Transferability and Hardness of Supervised Classification
  Tasks", ICCV 2019.  Reproduces
  thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07
  ``NCE.py :: NCE(source_label=argmax(probs, 1), target_label=y)``: P(y, z) =
  hard counts/N over the populated target classes, only source classes that
  occur are kept; with p = P(y | z) + 1e-20, NCE = Σ_z P(z) Σ_y p log p.
  Natural log.

  Args:
    joint: hard joint counts (``SourceJointSpec(hard=True)``).

  Returns:
    NCE <= 0.  Orientation: higher = better.
  """
  present = _populated(joint.counts, 'nce')
  j = joint.joint[present] / joint.n
  p_z = j.sum(0)
  valid = p_z > 0
  cond = j[:, valid] / p_z[None, valid] + NCE_EPS
  ent = np.sum(-cond * np.log(cond), axis=0)
  return float(-np.sum(ent * p_z[valid]))


# ---------------------------------------------------------------------------------
# H-score, regularised H-score, TransRate
# ---------------------------------------------------------------------------------


def hscore_from_moments(moments: stats_lib.ClassMoments) -> float:
  """H-score = trace(pinv(cov_f) @ cov_g) (first order, true matrix product).

  Bao et al., "An Information-Theoretic Approach to Transferability in Task
  Transfer Learning", ICIP 2019.  Reproduces
  thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4
  ``tllib/ranking/hscore.py :: h_score(features, labels)`` (= the official
  YaojieBao/An-Information-theoretic-Metric-of-Transferability
  @9a3f2d3f2511b6825a9d18c5fd7becbb06cae0b1
  ``3D_scene_understanding/H-score_1st_order.py :: getDiffNN``): cov_f = total
  scatter/(N − 1), cov_g = between-class scatter/(N − 1); ``pinv`` keeps
  singular values > 1e-15 x the largest (``rcond=1e-15``), and at most N − 1
  of them (cov_f's rank bound; with N − 1 < D the reference value is C − 1).

  Args:
    moments: ``ClassMoments`` with unit class weights.

  Returns:
    H-score in [0, K − 1] up to rounding.  Orientation: higher = better.
  """
  counts = np.asarray(moments.counts, np.float64)
  present = _populated(counts, 'hscore')
  n = counts.sum()
  _, between = _centered_between(moments, present)
  cov_f = moments.total_scatter() / (n - 1)
  return _pinv_trace(cov_f, between / (n - 1), HSCORE_PINV_RTOL, max_rank=int(n) - 1)


def ledoit_wolf_shrinkage(moments: stats_lib.ClassMoments, norms: stats_a.NormSums) -> float:
  """Ledoit–Wolf shrinkage intensity (scikit-learn ``LedoitWolf().shrinkage_``), streamed.

  S = T/N (T the total scatter), m = tr(S)/D, b = (Σ_i ‖x_i − μ‖⁴/N − ‖S‖_F²)/(N D),
  d = ‖S − m I‖_F²/D = (‖S‖_F² − D m²)/D; shrinkage = min(b, d)/d (0 if that is 0).
  Σ_i ‖x_i − μ‖⁴ comes from ``NormSums.quartic_about`` (one pass, exact expansion).
  """
  n, dim = moments.n, moments.dim
  total = moments.total_scatter()
  s = total / n
  fro2 = float(np.sum(s * s))
  m = float(np.trace(s)) / dim
  quart = norms.quartic_about(moments.global_mean(), total)
  b = (quart / n - fro2) / (n * dim)
  delta = (fro2 - dim * m * m) / dim
  b = min(b, delta)
  return 0.0 if b == 0 else b / delta


def reg_hscore_from_moments(moments: stats_lib.ClassMoments, norms: stats_a.NormSums) -> float:
  """Regularised (Ledoit–Wolf shrinkage) H-score.

  Ibrahim et al., "Newer is not always better: Rethinking transferability
  metrics, their peculiarities, stability and performance", ECML-PKDD 2022.
  Reproduces
  thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4
  ``tllib/ranking/hscore.py :: regularized_h_score(features, labels)``:
  S = T/N (note 1/N), a = Ledoit–Wolf intensity (``ledoit_wolf_shrinkage``),
  S_a = (1 − a) S + a (tr S/D) I, cov_g = between scatter/(N − 1), score =
  trace(pinv(S_a) @ ((1 − a) cov_g)) with the 1e-15 ``pinv`` cut.  The mixed
  normalisations (1/N vs 1/(N − 1)) and the (1 − a) factor are the
  reference's (fixtures README, pitfall 6) and are kept.

  Args:
    moments: ``ClassMoments`` with unit class weights.
    norms: ``NormSums`` of the same data (one pass, about any centre).

  Returns:
    The regularised H-score.  Orientation: higher = better.
  """
  counts = np.asarray(moments.counts, np.float64)
  present = _populated(counts, 'reg_hscore')
  n, d = counts.sum(), moments.dim
  a = ledoit_wolf_shrinkage(moments, norms)
  s = moments.total_scatter() / n
  s_a = (1.0 - a) * s + (a * float(np.trace(s)) / d) * np.eye(d)
  _, between = _centered_between(moments, present)
  return _pinv_trace(s_a, (1.0 - a) * between / (n - 1), HSCORE_PINV_RTOL)


def _coding_rate(scatter: np.ndarray, rows: float, eps: float, rank_bound: int) -> float:
  """(1/2) logdet(I_D + AᵀA/(n_A eps)) from AᵀA = ``scatter`` (n_A = ``rows``).

  Only the ``rank_bound`` largest eigenvalues of AᵀA can be non-zero; when
  that is below D the rest (rounding noise) are set to zero.  Full rank:
  Cholesky.
  """
  d = scatter.shape[0]
  g = scatter / (rows * eps)
  if rank_bound >= d:
    g = 0.5 * (g + g.T)
    g[np.diag_indices(d)] += 1.0
    try:
      return float(np.sum(np.log(np.diag(np.linalg.cholesky(g)))))
    except np.linalg.LinAlgError:
      g[np.diag_indices(d)] -= 1.0
  w = np.clip(np.linalg.eigvalsh(0.5 * (g + g.T))[::-1][:max(rank_bound, 0)], 0.0, None)
  return 0.5 * float(np.sum(np.log1p(w)))


def transrate_from_class_scatter(cov: stats_lib.ClassCovariances, *,
                                 eps: float = TRANSRATE_EPS) -> float:
  """TransRate (tllib formula): coding-rate gain of the labels (pure float64).

  Huang et al., "Frustratingly Easy Transferability Estimation", ICML 2022.
  Reproduces
  thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4
  ``tllib/ranking/transrate.py :: transrate(features, labels, eps=1e-4)``, NOT
  the official Long-Kai/TransRate pipeline (fixtures README, pitfall 5):
  Z = X − global mean, R(A) = (1/2) logdet(I + AᵀA/(n_A eps)),
  TrR = R(Z) − (1/K) Σ_c R(Z_c), Z_c the rows of class c, not re-centred, every
  class weighted equally.  Z_cᵀZ_c = the class scatter about the global mean
  (``ClassCovariances.scatter_about``); ZᵀZ = their sum.  Rank bounds N − 1
  (Z) and n_c (Z_c) are applied (see ``_coding_rate``); the reference takes the
  Gram matrix of the smaller side, the same value by Sylvester's identity.

  Args:
    cov: ``ClassCovariances`` (``ClassScatter``: K·D² memory).
    eps: distortion (> 0), 1e-4 as tllib.

  Returns:
    TransRate.  Orientation: higher = better.
  """
  if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
    raise InputError(f'transrate: eps must be a positive number, got {eps!r}')
  counts = np.asarray(cov.counts, np.float64)
  present = _populated(counts, 'transrate')
  n = counts.sum()
  g = (counts[present][:, None] * cov.means[present]).sum(0) / n
  about = cov.scatter_about(g)[present]                       # [K, D, D]
  d = about.shape[-1]
  rz = _coding_rate(about.sum(0), n, eps, int(min(d, n - 1)))
  rzy = sum(_coding_rate(about[i], c, eps, int(min(d, c)))
            for i, c in enumerate(counts[present]))
  return rz - rzy / int(present.sum())


# ---------------------------------------------------------------------------------
# GBC
# ---------------------------------------------------------------------------------


def gbc_from_moments(moments: stats_lib.ClassMoments, *, gaussian_type: str = 'spherical') -> float:
  """GBC from class means and per-dimension class variances (pure float64).

  Pandy et al., "Transferability Estimation using Bhattacharyya Class
  Separability", CVPR 2022.  Reproduces
  google-research/google-research@1d4d2f1aa6f2883a790d2ae46a6ee8ab150d8f31
  ``stable_transfer/transferability/gbc.py :: get_gbc_score(features,
  target_labels, gaussian_type)``: per class the mean μ_c and the population
  variance per dimension v_c (1/n_c), floored at 1e-4; spherical: v_c is
  replaced by mean_j v_cj.  For ordered pairs (a, b), v̄ = (v_a + v_b)/2,
  BD = (1/8) Σ_j (μ_aj − μ_bj)²/v̄_j + (1/2)[Σ_j log v̄_j − (1/2)Σ_j log v_aj
  − (1/2)Σ_j log v_bj]; spherical: the log term is one scalar term, NOT
  multiplied by D (the reference's formula, fixtures README pitfall 4; the
  exact Gaussian formula multiplies it by D — FaCe's ``bc_cov="spherical"``
  does).  GBC = −Σ_{a≠b} exp(−BD) (each unordered pair twice).

  Args:
    moments: class moments of the (possibly projected) features.
    gaussian_type: "spherical" (default, the google configuration) or "diagonal".

  Returns:
    GBC in [−K(K − 1), 0].  Orientation: higher (closer to 0) = better.
  """
  _choice(gaussian_type, GBC_TYPES, 'gaussian_type', 'gbc')
  present = _populated(moments.counts, 'gbc')
  mu = moments.means[present]
  mu = mu - mu.mean(0)                                         # shift-invariant; tidier rounding
  var = np.maximum(moments.var_diag[present], GBC_VAR_FLOOR)
  k = mu.shape[0]
  total = 0.0
  if gaussian_type == 'spherical':
    sv = var.mean(1)
    logs = np.log(sv)
    for a in range(k):
      d2 = np.sum((mu - mu[a]) ** 2, axis=1)
      vbar = 0.5 * (sv + sv[a])
      bd = d2 / vbar / 8.0 + 0.5 * (np.log(vbar) - 0.5 * logs[a] - 0.5 * logs)
      e = np.exp(-bd)
      e[a] = 0.0
      total += float(e.sum())
  else:
    logs = np.log(var).sum(1)
    for a in range(k):
      vbar = 0.5 * (var + var[a])
      bd = (np.sum((mu - mu[a]) ** 2 / vbar, axis=1) / 8.0
            + 0.5 * (np.log(vbar).sum(1) - 0.5 * logs[a] - 0.5 * logs))
      e = np.exp(-bd)
      e[a] = 0.0
      total += float(e.sum())
  return -total


def pca_basis(moments: stats_lib.ClassMoments, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(center [D], basis [D, k]): the sample mean and the top-k eigenvectors of the total scatter.

  These are the exact principal axes (what an exact SVD of the centred data
  gives, up to the sign of each axis, which GBC does not see).
  """
  _, v = _sym_eig_desc(moments.total_scatter())
  return moments.global_mean(), np.ascontiguousarray(v[:, :k])


def _check_pca_dim(pca_dim, n, d):
  if not 1 <= pca_dim <= min(n, d):
    raise InputError(
        f'gbc: pca_dim={pca_dim} needs 1 <= pca_dim <= min(N, D) = {int(min(n, d))} '
        f'(N={int(n)}, D={d}); the PCA-{pca_dim} reduction of the google pipeline is not '
        'defined here (face_jax.dense.gbc raises likewise). Use pca_dim=None for GBC on the '
        'raw features.')


# ---------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------


NC1_DEFAULTS = {'weighting': 'balanced', 'centering': None}
LOGME_DEFAULTS = {'variant': 'thuml'}
TRANSRATE_DEFAULTS = {'eps': TRANSRATE_EPS}
GBC_DEFAULTS = {'gaussian_type': 'spherical', 'pca_dim': None}


def nc1_plan(info: engine_lib.StreamInfo, options: Mapping[str, Any], dtype: str):
  """Plan of ``nc1`` (see ``nc1_from_moments``).

  One pass, except weighting="balanced" on a stream whose class counts are
  unknown up front and turn out unequal: then a second pass accumulates the
  balanced within-class scatter about the exact class means (FaCe's plan).
  """
  opts = _options(NC1_DEFAULTS, options, 'nc1')
  _choice(opts['weighting'], NC1_WEIGHTINGS, 'weighting', 'nc1')
  _choice(opts['centering'], NC1_CENTERINGS, 'centering', 'nc1')
  spec = stats_lib.MomentsSpec(num_classes=info.num_classes, dim=info.dim, dtype=dtype)

  def gen():
    balanced = opts['weighting'] == 'balanced'
    known = info.label_counts
    if balanced and known is not None and not face_lib.equal_populated(known):
      w = face_lib.balanced_weights(known)
      req = engine_lib.Request(stats_lib.Moments, spec,
                               {'shift': engine_lib.FIRST_BATCH_SHIFT, 'weight': w})
      fin = (yield {'moments': req})['moments']
    else:
      fin = (yield {'moments': _unit_moments_request(info, dtype)})['moments']
      if balanced and known is None and not face_lib.equal_populated(fin.counts):
        w = face_lib.balanced_weights(fin.counts)
        req = engine_lib.Request(stats_lib.Moments, spec, {'shift': fin.means, 'weight': w})
        fin = (yield {'balanced': req})['balanced']
    return nc1_from_moments(fin, weighting=opts['weighting'], centering=opts['centering'])

  return gen()


def _one_moments_plan(info, dtype, fn):
  def gen():
    fin = (yield {'moments': _unit_moments_request(info, dtype)})['moments']
    return fn(fin)
  return gen()


def vci_plan(info, options, dtype):
  """Plan of ``vci``: one pass of ``Moments``."""
  _options({}, options, 'vci')
  return _one_moments_plan(info, dtype, vci_from_moments)


def hscore_plan(info, options, dtype):
  """Plan of ``hscore``: one pass of ``Moments``."""
  _options({}, options, 'hscore')
  return _one_moments_plan(info, dtype, hscore_from_moments)


def logme_plan(info, options, dtype):
  """Plan of ``logme``: one pass of ``Moments`` (XᵀX rebuilt exactly in float64)."""
  opts = _options(LOGME_DEFAULTS, options, 'logme')
  variant = _choice(opts['variant'], LOGME_VARIANTS, 'variant', 'logme')
  return _one_moments_plan(info, dtype, lambda m: logme_from_moments(m, variant=variant))


def reg_hscore_plan(info, options, dtype):
  """Plan of ``reg_hscore``: one pass of ``Moments`` + ``NormMoments``."""
  _options({}, options, 'reg_hscore')
  spec = stats_a.NormMomentsSpec(num_classes=info.num_classes, dim=info.dim, dtype=dtype)

  def gen():
    got = yield {'moments': _unit_moments_request(info, dtype),
                 'norms': engine_lib.Request(stats_a.NormMoments, spec,
                                             {'shift': engine_lib.FIRST_BATCH_SHIFT})}
    return reg_hscore_from_moments(got['moments'], got['norms'])

  return gen()


def transrate_plan(info, options, dtype):
  """Plan of ``transrate``: one pass of ``ClassScatter`` (K·D² memory)."""
  opts = _options(TRANSRATE_DEFAULTS, options, 'transrate')
  eps = opts['eps']
  if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
    raise InputError(f'transrate: eps must be a positive number, got {eps!r}')
  spec = stats_lib.ClassScatterSpec(num_classes=info.num_classes, dim=info.dim, dtype=dtype)

  def gen():
    got = yield {'class_scatter': engine_lib.Request(stats_lib.ClassScatter, spec,
                                                     {'shift': engine_lib.FIRST_BATCH_SHIFT})}
    return transrate_from_class_scatter(got['class_scatter'], eps=float(eps))

  return gen()


def gbc_plan(info, options, dtype):
  """Plan of ``gbc``.

  ``pca_dim=None``: one pass of ``Moments``.  ``pca_dim=k``: pass 1
  ``Moments`` (total scatter -> exact top-k principal axes), pass 2
  ``ProjectedMoments`` of p = (x − μ) V rounded to float32 (the google
  pipeline stores float32 PCA features), about the projected class means of
  pass 1.  k > D raises before any pass, k > N after the first.
  """
  opts = _options(GBC_DEFAULTS, options, 'gbc')
  gtype = _choice(opts['gaussian_type'], GBC_TYPES, 'gaussian_type', 'gbc')
  pca_dim = opts['pca_dim']
  if pca_dim is not None:
    if isinstance(pca_dim, bool) or not isinstance(pca_dim, (int, np.integer)):
      raise InputError(f'gbc: pca_dim must be None or a positive int, got {pca_dim!r}')
    pca_dim = int(pca_dim)
    if info.label_counts is not None:
      _check_pca_dim(pca_dim, int(np.sum(info.label_counts)), info.dim)
    else:
      _check_pca_dim(pca_dim, max(pca_dim, 1), info.dim)

  def gen():
    fin = (yield {'moments': _unit_moments_request(info, dtype)})['moments']
    if pca_dim is None:
      return gbc_from_moments(fin, gaussian_type=gtype)
    _check_pca_dim(pca_dim, fin.n, info.dim)
    center, basis = pca_basis(fin, pca_dim)
    shift = np.where(fin.present[:, None], (fin.means - center) @ basis, 0.0)
    spec = stats_a.ProjectedMomentsSpec(num_classes=info.num_classes, dim=info.dim,
                                        out_dim=pca_dim, dtype=dtype, round_float32=True)
    req = engine_lib.Request(stats_a.ProjectedMoments, spec,
                             {'center': center, 'basis': basis, 'shift': shift})
    proj = (yield {'projected': req})['projected']
    return gbc_from_moments(proj, gaussian_type=gtype)

  return gen()


def nce_plan(info, options, dtype):
  """Plan of ``nce``: one pass of hard ``SourceJoint`` counts."""
  _options({}, options, 'nce')
  ks = _source_classes(info, 'nce')
  spec = stats_a.SourceJointSpec(num_classes=info.num_classes, source_classes=ks, dtype=dtype,
                                 hard=True)

  def gen():
    got = yield {'joint': engine_lib.Request(stats_a.SourceJoint, spec, {})}
    return nce_from_joint(got['joint'])

  return gen()


def leep_plan(info, options, dtype):
  """Plan of ``leep``: pass 1 soft ``SourceJoint`` -> P(y | z); pass 2 ``LeepLogLik``."""
  _options({}, options, 'leep')
  ks = _source_classes(info, 'leep')
  jspec = stats_a.SourceJointSpec(num_classes=info.num_classes, source_classes=ks, dtype=dtype)
  lspec = stats_a.LeepLogLikSpec(num_classes=info.num_classes, source_classes=ks, dtype=dtype)

  def gen():
    joint = (yield {'joint': engine_lib.Request(stats_a.SourceJoint, jspec, {})})['joint']
    if int(np.sum(joint.counts > 0)) < 2:
      _populated(joint.counts, 'leep')                  # raises before a useless second pass
    cond = leep_conditional(joint)
    sums = (yield {'loglik': engine_lib.Request(stats_a.LeepLogLik, lspec, {'cond': cond})})['loglik']
    return leep_from_sums(joint, sums)

  return gen()
