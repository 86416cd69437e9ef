"""Neural-collapse measures on the streaming engine: NC1 and VCI.

Synopsis::

    out = face_jax.score(features, labels, metrics=('nc1', 'vci'))
    out['nc1'], out['vci']                        # floats, lower = more collapsed

Both are pure float64 functions of one pass of class moments (``Moments``);
NC1 with weighting="balanced" takes a second pass on a stream whose class
counts are unequal and unknown up front (the balanced within-class scatter
about the exact class means of the first pass).  ``nc1_core`` is also FaCe's
variance-collapse term (``face.py``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from face_jax._src import engine as engine_lib
from face_jax._src import registry
from face_jax._src import stats as stats_lib
from face_jax._src.errors import InputError
from face_jax._src.metrics import common
from face_jax._src.numerics import EPS64, pinv_trace

NC1_WEIGHTINGS = ('balanced', 'sample')
NC1_CENTERINGS = (None, 'class_mean', 'sample_mean')


@dataclasses.dataclass(frozen=True)
class Nc1Options:
  """Options of ``nc1`` (see ``nc1_from_moments``).

  Attributes:
    weighting: "balanced" (Σ_W = mean of class covariances, the definition in
      docs/face.md) or "sample" (pooled covariance).
    centering: None (the weighting's own), "class_mean" or "sample_mean".
  """

  weighting: str = 'balanced'
  centering: str | None = None

  def __post_init__(self):
    common.choice(self.weighting, NC1_WEIGHTINGS, 'weighting', 'nc1')
    common.choice(self.centering, NC1_CENTERINGS, 'centering', 'nc1')


@dataclasses.dataclass(frozen=True)
class VciOptions:
  """VCI has no options."""


# -- class weights ---------------------------------------------------------------


def balanced_weights(counts: np.ndarray) -> np.ndarray:
  """[K] w_k = N / (K·n_k) for populated classes (0 elsewhere).

  With these weights the accumulated scatter divided by N is the balanced
  Σ_W = (1/K) Σ_k Σ_k, and magnitudes stay like the unweighted sum.
  """
  counts = np.asarray(counts, np.float64)
  present = counts > 0
  k = max(int(present.sum()), 1)
  n = counts.sum()
  return np.where(present, n / (k * np.where(present, counts, 1.0)), 0.0)


def equal_populated(counts) -> bool:
  """True when every populated class has the same count (balanced = unit weights then)."""
  c = np.asarray(counts)[np.asarray(counts) > 0]
  return c.size > 0 and bool(np.all(c == c[0]))


def check_weights(
    moments: stats_lib.ClassMoments, present: np.ndarray, weighting: str, metric: str | None = None
):
  """Raises ``InputError`` unless the scatter's class weights match ``weighting``.

  The message starts with ``metric`` when one is given.
  """
  counts = np.asarray(moments.counts, np.float64)
  w = np.asarray(moments.weight)[present]
  expected = (
      balanced_weights(counts)[present] if weighting == 'balanced' else np.ones(int(present.sum()))
  )
  unit_ok = np.allclose(w, 1.0) and (weighting == 'sample' or equal_populated(counts))
  if not (unit_ok or np.allclose(w, expected, rtol=1e-6)):
    raise InputError(
        ('' if metric is None else f'{metric}: ')
        + 'the scatter was accumulated with class weights that do not match '
        f'weighting={weighting!r}'
    )


# -- NC1 ---------------------------------------------------------------------------


def nc1_core(
    mu: np.ndarray, mu_g: np.ndarray, sigma_w: np.ndarray, counts: np.ndarray | None
) -> tuple[float, int]:
  """NC1 = (1/K) Σ_{j kept} v_jᵀ Σ_W v_j / s_j², M = (μ_k − μ_G)/√K = U S Vᵀ.

  Args:
    mu: [K, D] class means of the populated classes.
    mu_g: [D] the centre g.
    sigma_w: [D, D] Σ_W.
    counts: [K] class counts (sample weighting: the rows of M are re-centred
      with these weights), or None (unweighted re-centring).

  Singular values are kept when s_j > s_max · max(K, D) · ε₆₄ (the numerical
  rank rule of docs/face.md) and, a face_jax addition, s_j > max(K, D) · ε₆₄ ·
  max_k ‖μ_k‖, the rounding level of the class means themselves, so means that
  agree to rounding count as equal.  Returns (+inf, 0) when none is kept (all
  class means equal).

  The rows of M sum to zero exactly (weighted by ``counts`` for sample
  weighting), so rank Σ_B ≤ K − 1.  Class means of features with a large
  common offset carry absolute rounding errors of order |μ|·ε₆₄, which would
  break that identity and could create a spurious K-th singular value above
  the cutoff; re-centring M in float64 restores it (a mathematical no-op).

  Returns:
    (NC1 >= 0, rank of Σ_B kept); 0 when Σ_W = 0 (perfect within-class collapse).
  """
  k, d = mu.shape
  m = mu - mu_g
  m = m - (m.mean(0) if counts is None else (counts[:, None] * m).sum(0) / counts.sum())
  m = m / math.sqrt(k)
  _, s, vt = np.linalg.svd(m, full_matrices=False)
  tol = max(k, d) * EPS64 * max(s[0] if s.size else 0.0, float(np.linalg.norm(mu, axis=1).max()))
  keep = s > tol
  if not keep.any():
    return math.inf, 0
  v = vt[keep].T  # [D, r]
  # vᵀ Σ_W v >= 0 (Σ_W is a covariance); clipped at 0 because a zero Σ_W (every
  # sample at its class mean) can round to a tiny negative value.  NC1 = 0 then.
  q = np.maximum(np.einsum('dr,dr->r', sigma_w @ v, v), 0.0)
  return float((q / s[keep] ** 2).sum() / k), int(keep.sum())


def nc1_from_moments(moments: stats_lib.ClassMoments, options: Nc1Options = Nc1Options()) -> float:
  """NC1 = Tr(Σ_W Σ_B^†)/K (a pure float64 function of finalised moments).

  Papyan, Han & Donoho, "Prevalence of neural collapse during the terminal
  phase of deep learning training", PNAS 2020; FaCe's variance-collapse
  definition (docs/face.md), which FaCe's ``nc1`` reports.

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
  s_j > max(K, D)·ε₆₄·max(s_max, max_k ‖μ_k‖) (see ``nc1_core``).  The
  references cut eigenvalues of Σ_B at D·ε₆₄·λ_max (torch's default ``pinv``);
  the two only differ for a Σ_B with eigenvalues between those cut-offs
  (near-coincident class means), never on the fixtures.

  Args:
    moments: ``ClassMoments`` with unit class weights (weighting="sample") or
      ``balanced_weights(counts)`` (weighting="balanced"; unit weights are the
      same when the populated classes have equal counts).
    options: ``Nc1Options``.

  Returns:
    NC1 >= 0 (+inf when all class means coincide).  Orientation: lower = more
    within-class collapse (lower = better).
  """
  weighting, centering = options.weighting, options.centering
  if centering is None:
    centering = 'class_mean' if weighting == 'balanced' else 'sample_mean'
  counts = np.asarray(moments.counts, np.float64)
  present = common.populated_classes(counts, 'nc1')
  check_weights(moments, present, weighting, 'nc1')
  if moments.within_scatter is None:
    raise InputError('nc1 needs the within-class scatter (MomentsSpec.scatter=True)')
  mu = moments.means[present]
  cls_counts = counts[present]
  if centering == 'class_mean':
    g, recenter = mu.mean(0), None
  else:
    g, recenter = (cls_counts[:, None] * mu).sum(0) / cls_counts.sum(), cls_counts
  sigma_w = moments.within_scatter / counts.sum()
  return nc1_core(mu, g, sigma_w, recenter)[0]


def class_moments_plan(info: engine_lib.StreamInfo, weighting: str, dtype: str):
  """Plan fragment: the class moments of ``weighting`` in as few passes as possible.

  Unit weights (sample weighting, or balanced with equal class counts): one
  pass.  Balanced with class counts known up front: one pass with
  ``balanced_weights``.  Balanced on a stream whose counts are unknown and turn
  out unequal: a second pass accumulates the balanced within-class scatter
  about the exact class means of the first.

  Returns:
    (ClassMoments, passes made).
  """
  spec = stats_lib.MomentsSpec(num_classes=info.num_classes, dim=info.dim, dtype=dtype)
  balanced = weighting == 'balanced'
  known = info.label_counts
  if balanced and known is not None and not equal_populated(known):
    req = engine_lib.Request(
        stats_lib.Moments,
        spec,
        {'shift': engine_lib.FIRST_BATCH_SHIFT, 'weight': balanced_weights(known)},
    )
    return (yield {'moments': req})['moments'], 1
  fin = (yield {'moments': common.moments_request(info, dtype)})['moments']
  if balanced and known is None and not equal_populated(fin.counts):
    req = engine_lib.Request(
        stats_lib.Moments, spec, {'shift': fin.means, 'weight': balanced_weights(fin.counts)}
    )
    return (yield {'balanced': req})['balanced'], 2
  return fin, 1


def nc1_plan(info: engine_lib.StreamInfo, options: Nc1Options, dtype: str):
  """Plan of ``nc1`` (see ``nc1_from_moments``).

  One pass, except weighting="balanced" on a stream whose class counts are
  unknown up front and turn out unequal: then a second pass accumulates the
  balanced within-class scatter about the exact class means (FaCe's plan).
  """
  fin, _ = yield from class_moments_plan(info, options.weighting, dtype)
  return nc1_from_moments(fin, options)


# -- VCI ---------------------------------------------------------------------------


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
  present = common.populated_classes(counts, 'vci')
  n, d = counts.sum(), moments.dim
  mu = moments.global_mean()
  dm = moments.means[present] - mu
  dm = dm - (counts[present][:, None] * dm).sum(0) / n
  r = dm * np.sqrt(counts[present] / n)[:, None]  # Σ_B = rᵀ r
  s2 = np.linalg.svd(r, compute_uv=False) ** 2
  rank_b = int(np.sum(s2 > d * EPS64 * s2.max())) if s2.size and s2.max() > 0 else 0
  if rank_b == 0:
    raise InputError(
        'vci: the between-class covariance is zero (all class means coincide); ' 'VCI is undefined'
    )
  sigma_t = moments.total_scatter() / n
  tr, _ = pinv_trace(sigma_t, r.T @ r, d * EPS64, max_rank=int(n) - 1)
  return 1.0 - tr / rank_b


def vci_plan(info: engine_lib.StreamInfo, options: VciOptions, dtype: str):
  """Plan of ``vci``: one pass of ``Moments``."""
  del options
  fin = (yield {'moments': common.moments_request(info, dtype)})['moments']
  return vci_from_moments(fin)


registry.register(
    registry.MetricInfo(
        name='nc1',
        plan=nc1_plan,
        options=Nc1Options,
        higher_is_better=False,
        citation='Papyan, Han & Donoho, Prevalence of neural collapse during the terminal phase of '
        'deep learning training, PNAS 2020; docs/face.md definition (weighting="balanced"); '
        'weighting="sample" = nc1_papyan, weighting="sample", centering="class_mean" = '
        'rhubarbwu/neural-collapse@c05a0b80d6bc6e8e2e102f2180f1f33b2c9605fd '
        'neural_collapse/measure.py::covariance_ratio(..., "pinv")',
        summary='NC1 = Tr(Σ_W Σ_B^†)/K, lower = more collapsed; 1 pass of Moments (2 for balanced '
        'weighting on a stream with unknown unequal class counts)',
    )
)

registry.register(
    registry.MetricInfo(
        name='vci',
        plan=vci_plan,
        options=VciOptions,
        higher_is_better=False,
        citation='Xu & Liu, Quantifying the Variability Collapse of Neural Networks, ICML 2023',
        summary='VCI = 1 − Tr(Σ_T^† Σ_B)/rank(Σ_B) in [0, 1], lower = more collapsed; '
        '1 pass of Moments',
    )
)
