"""H-score and the regularised (Ledoit–Wolf shrinkage) H-score on the streaming engine.

Synopsis::

    out = face_jax.score(features, labels, metrics=('hscore', 'reg_hscore'))

Both take one pass: ``Moments`` (the total and between-class scatter), plus,
for the regularised H-score, ``NormMoments``: Σ‖z‖², Σ‖z‖⁴ and Σ‖z‖² z about
one centre, the sums the Ledoit–Wolf shrinkage intensity needs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from face_jax._src import engine as engine_lib
from face_jax._src import registry
from face_jax._src import stats as stats_lib
from face_jax._src.metrics import common
from face_jax._src.numerics import pinv_trace

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST
HSCORE_PINV_RTOL = 1e-15  # numpy.linalg.pinv(rcond=1e-15), tllib / official H-score


@dataclasses.dataclass(frozen=True)
class HscoreOptions:
  """The H-score has no options."""


@dataclasses.dataclass(frozen=True)
class RegHscoreOptions:
  """The regularised H-score has no options."""


# -- norm moments about one centre (Ledoit–Wolf shrinkage) -----------------------------


@dataclasses.dataclass(frozen=True)
class NormMomentsSpec:
  """Static configuration of ``NormMoments`` (K only for the label check)."""

  num_classes: int
  dim: int
  dtype: str = 'float32'


@dataclasses.dataclass(frozen=True)
class NormSums:
  """Finalised norm moments about the centre c (host float64).

  With z_i = x_i − c and a_i = ‖z_i‖²:

  Attributes:
    center: [D] c.
    n: N.
    sum: [D] Σ z_i.
    sq: Σ a_i.
    quartic: Σ a_i².
    cross: [D] Σ a_i z_i.
  """

  center: np.ndarray
  n: float
  sum: np.ndarray
  sq: float
  quartic: float
  cross: np.ndarray

  def quartic_about(self, mean: np.ndarray, total_scatter: np.ndarray) -> float:
    """Σ_i ‖x_i − μ‖⁴ about the sample mean μ, expanded exactly about c.

    With δ = μ − c, e = ‖δ‖², b_i = z_iᵀδ:
    ‖x_i − μ‖² = a_i − 2 b_i + e, so
    Σ (a − 2b + e)² = Σa² − 4 δᵀΣ a z + 4 Σb² + 2e Σa − 4e δᵀΣz + N e²,
    with Σ b² = δᵀ T δ + N e² (T = Σ (x − μ)(x − μ)ᵀ, the total scatter).

    Args:
      mean: [D] μ.
      total_scatter: [D, D] T.
    """
    delta = np.asarray(mean, np.float64) - self.center
    e = float(delta @ delta)
    n = self.n
    sum_b2 = float(delta @ total_scatter @ delta) + n * e * e
    return (
        self.quartic
        - 4.0 * float(delta @ self.cross)
        + 4.0 * sum_b2
        + 2.0 * e * self.sq
        - 4.0 * e * float(delta @ self.sum)
        + n * e * e
    )


class NormMoments(stats_lib.Statistic):
  """Σ z, Σ‖z‖², Σ‖z‖⁴ and Σ‖z‖² z of z = x − c about one centre c.

  params: ``{'shift': [K, D]}``; the centre is its first row, c = shift[0]
  (with ``FIRST_BATCH_SHIFT``: the first batch's class-0 mean, or its overall
  mean when class 0 is absent from it).  A single centre is needed because
  ‖x_i − μ‖⁴ mixes every coordinate; any centre near the data removes a large
  common offset before float32 arithmetic, and ``NormSums.quartic_about``
  moves the sums to the exact sample mean in float64.

  Memory: 2·D + 3 accumulator elements.
  """

  count: Array  # []
  sum: Array  # [D]
  sq: Array  # []
  quartic: Array  # []
  cross: Array  # [D]

  @classmethod
  def empty(cls, spec: NormMomentsSpec) -> 'NormMoments':
    dt = jnp.dtype(spec.dtype)
    return cls(
        count=jnp.zeros((), dt),
        sum=jnp.zeros((spec.dim,), dt),
        sq=jnp.zeros((), dt),
        quartic=jnp.zeros((), dt),
        cross=jnp.zeros((spec.dim,), dt),
    )

  @classmethod
  def default_params(cls, spec: NormMomentsSpec):
    return {'shift': np.zeros((spec.num_classes, spec.dim), np.float64)}

  @classmethod
  def from_batch(cls, spec: NormMomentsSpec, params, batch: stats_lib.Batch) -> 'NormMoments':
    dt = jnp.dtype(spec.dtype)
    m = batch.mask
    z = batch.features.astype(dt) - params['shift'].astype(dt)[0]
    z = jnp.where(m[:, None], z, jnp.zeros((), dt))
    a = jnp.sum(z * z, axis=-1)  # [B]
    return cls(
        count=jnp.sum(m.astype(dt)),
        sum=jnp.sum(z, axis=0),
        sq=jnp.sum(a),
        quartic=jnp.sum(a * a),
        cross=jnp.dot(a, z, precision=HIGHEST),
    )

  def finalize(self, spec: NormMomentsSpec, params) -> NormSums:
    h = common.host64(self)
    center = np.asarray(params['shift'], np.float64)[0]
    return NormSums(
        center=center,
        n=float(h.count),
        sum=h.sum,
        sq=float(h.sq),
        quartic=float(h.quartic),
        cross=h.cross,
    )


# -- the scores ---------------------------------------------------------------------


def centered_between(moments: stats_lib.ClassMoments, present: np.ndarray):
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
  present = common.populated_classes(counts, 'hscore')
  n = counts.sum()
  _, between = centered_between(moments, present)
  w, v = moments.total_scatter_eig  # cov_f = total scatter / (N − 1)
  eig = (w / (n - 1), v)
  return pinv_trace(None, between / (n - 1), HSCORE_PINV_RTOL, max_rank=int(n) - 1, eig=eig)[0]


def ledoit_wolf_shrinkage(moments: stats_lib.ClassMoments, norms: NormSums) -> float:
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


def reg_hscore_from_moments(moments: stats_lib.ClassMoments, norms: NormSums) -> float:
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
  present = common.populated_classes(counts, 'reg_hscore')
  n, d = counts.sum(), moments.dim
  a = ledoit_wolf_shrinkage(moments, norms)
  # S_a = (1 − a) T/N + (a tr(S)/D) I: T's eigenvectors, eigenvalues moved affinely.
  w, v = moments.total_scatter_eig
  eig = ((1.0 - a) * (w / n) + a * float(np.sum(w)) / (n * d), v)
  _, between = centered_between(moments, present)
  return pinv_trace(None, (1.0 - a) * between / (n - 1), HSCORE_PINV_RTOL, eig=eig)[0]


# -- plans ----------------------------------------------------------------------------


def hscore_plan(info: engine_lib.StreamInfo, options: HscoreOptions, dtype: str):
  """Plan of ``hscore``: one pass of ``Moments``."""
  del options
  fin = (yield {'moments': common.moments_request(info, dtype)})['moments']
  return hscore_from_moments(fin)


def reg_hscore_plan(info: engine_lib.StreamInfo, options: RegHscoreOptions, dtype: str):
  """Plan of ``reg_hscore``: one pass of ``Moments`` + ``NormMoments``."""
  del options
  spec = NormMomentsSpec(num_classes=info.num_classes, dim=info.dim, dtype=dtype)
  got = yield {
      'moments': common.moments_request(info, dtype),
      'norms': engine_lib.Request(NormMoments, spec, {'shift': engine_lib.FIRST_BATCH_SHIFT}),
  }
  return reg_hscore_from_moments(got['moments'], got['norms'])


registry.register(
    registry.MetricInfo(
        name='hscore',
        plan=hscore_plan,
        options=HscoreOptions,
        higher_is_better=True,
        citation='Bao et al., An Information-Theoretic Approach to Transferability in Task Transfer '
        'Learning, ICIP 2019; thuml/Transfer-Learning-Library@'
        'c4aa59eb565650a552b809411601d0589efbbfe4 tllib/ranking/hscore.py::h_score',
        summary='H-score tr(pinv(cov_f) cov_g) (true matrix product, pinv rcond 1e-15); '
        '1 pass of Moments',
    )
)

registry.register(
    registry.MetricInfo(
        name='reg_hscore',
        plan=reg_hscore_plan,
        options=RegHscoreOptions,
        higher_is_better=True,
        citation='Ibrahim et al., Newer is not always better, ECML-PKDD 2022; '
        'thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4 '
        'tllib/ranking/hscore.py::regularized_h_score',
        summary='Ledoit–Wolf shrinkage H-score; 1 pass of Moments + NormMoments (fourth-moment sums)',
    )
)
