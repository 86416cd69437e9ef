"""Streaming statistics for the classic baselines (LEEP, NCE, regularised H-score, GBC-PCA).

Synopsis::

    spec = SourceJointSpec(num_classes=10, source_classes=1000, dtype='float32')
    req = Request(SourceJoint, spec, {})                  # LEEP pass 1 / NCE (hard=True)
    joint = engine.run_pass(src, {'features': {'j': req}})['features']['j']   # JointCounts

Every statistic here follows ``face_jax._src.stats``: leaves are additive sums
over samples (masked rows add exactly zero), static configuration lives in a
hashable ``*Spec`` (with ``num_classes`` and ``dtype``, as the engine needs),
per-pass inputs are ``params`` (host arrays), and ``finalize`` returns a
frozen host float64 object.

- ``SourceJoint`` [K, Ks]: per target class, the sum of the source-model
  probabilities (``hard=False``, LEEP's joint P(y, z) x N) or of their one-hot
  argmax (``hard=True``, NCE's joint counts).
- ``LeepLogLik``: Σ_i log Σ_z θ_iz P(y_i | z) for a given conditional table
  (LEEP's second pass).
- ``NormMoments``: Σ‖z‖², Σ‖z‖⁴ and Σ‖z‖² z about one centre, the sums the
  Ledoit–Wolf shrinkage of the regularised H-score needs, one pass.
- ``ProjectedMoments``: class moments of features projected on a basis and
  optionally rounded to float32 (GBC on PCA features, second pass).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from face_jax._src import stats as stats_lib

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST


def _host64(tree):
  return jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float64), tree)


def _labels_mask(spec, batch: stats_lib.Batch):
  """Returns (y [B] int32 clamped into range, m [B] bool)."""
  y = jnp.clip(batch.labels.astype(jnp.int32), 0, spec.num_classes - 1)
  return y, batch.mask


def _masked_probs(spec, batch: stats_lib.Batch) -> Array:
  """[B, Ks] source probabilities in the accumulation dtype, padding rows zeroed."""
  dt = jnp.dtype(spec.dtype)
  p = batch.extras['source_probs'].astype(dt)
  return jnp.where(batch.mask[:, None], p, jnp.zeros((), dt))


# ---------------------------------------------------------------------------------
# Joint target/source table (LEEP pass 1, NCE)
# ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceJointSpec:
  """Static configuration of ``SourceJoint``.

  Attributes:
    num_classes: K target classes.
    source_classes: Ks source classes (trailing dim of ``source_probs``).
    dtype: accumulation dtype name.
    hard: False: sum the probabilities θ_i (soft joint, LEEP); True: sum the
      one-hot of argmax_z θ_iz, first index on ties (hard counts, NCE).
  """

  num_classes: int
  source_classes: int
  dtype: str = 'float32'
  hard: bool = False


@dataclasses.dataclass(frozen=True)
class JointCounts:
  """Finalised joint table (host float64).

  Attributes:
    counts: [K] samples per target class.
    joint: [K, Ks] Σ_{i: y_i = k} θ_iz (soft) or #{i: y_i = k, argmax θ_i = z} (hard).
  """

  counts: np.ndarray
  joint: np.ndarray

  @property
  def n(self) -> float:
    return float(self.counts.sum())


class SourceJoint(stats_lib.Statistic):
  """Per-target-class sums of source probabilities (or of their hard argmax).

  Memory: K·Ks + K accumulator elements.
  """

  requires_extra = 'source_probs'

  count: Array   # [K]
  joint: Array   # [K, Ks]

  @classmethod
  def empty(cls, spec: SourceJointSpec) -> 'SourceJoint':
    dt = jnp.dtype(spec.dtype)
    return cls(count=jnp.zeros((spec.num_classes,), dt),
               joint=jnp.zeros((spec.num_classes, spec.source_classes), dt))

  @classmethod
  def from_batch(cls, spec: SourceJointSpec, params, batch: stats_lib.Batch) -> 'SourceJoint':
    del params
    y, m = _labels_mask(spec, batch)
    p = _masked_probs(spec, batch)
    dt = p.dtype
    if spec.hard:
      z = jnp.argmax(batch.extras['source_probs'], axis=-1)
      p = jax.nn.one_hot(z, spec.source_classes, dtype=dt) * m[:, None].astype(dt)
    count = jax.ops.segment_sum(m.astype(dt), y, num_segments=spec.num_classes)
    joint = jax.ops.segment_sum(p, y, num_segments=spec.num_classes)
    return cls(count=count, joint=joint)

  def finalize(self, spec: SourceJointSpec, params) -> JointCounts:
    h = _host64(self)
    return JointCounts(counts=h.count, joint=h.joint)


# ---------------------------------------------------------------------------------
# LEEP log-likelihood (pass 2)
# ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LeepLogLikSpec:
  """Static configuration of ``LeepLogLik`` (K target, Ks source classes)."""

  num_classes: int
  source_classes: int
  dtype: str = 'float32'


@dataclasses.dataclass(frozen=True)
class LeepSums:
  """Finalised LEEP sums (host float64).

  Attributes:
    n: number of samples.
    log_sum: Σ log EEP_i over the samples with EEP_i > 0.
    zero_rows: number of samples whose expected prediction EEP_i is 0 (each
      contributes log 0 = −inf).
  """

  n: float
  log_sum: float
  zero_rows: float


class LeepLogLik(stats_lib.Statistic):
  """Σ_i log EEP_i with EEP_i = Σ_z θ_iz P(y_i | z), for a given P(y | z).

  params: ``{'cond': [K, Ks] P(y | z)}`` (the first pass's finalised table).
  Rows with EEP_i = 0 are counted separately (``zero``) instead of adding
  −inf, which the compensated sums cannot carry.

  Memory: 3 scalars.  Per step: a [B, Ks] gather of the table.
  """

  requires_extra = 'source_probs'

  count: Array     # []
  log_sum: Array   # []
  zero: Array      # []

  @classmethod
  def empty(cls, spec: LeepLogLikSpec) -> 'LeepLogLik':
    dt = jnp.dtype(spec.dtype)
    return cls(count=jnp.zeros((), dt), log_sum=jnp.zeros((), dt), zero=jnp.zeros((), dt))

  @classmethod
  def default_params(cls, spec: LeepLogLikSpec):
    return {'cond': np.zeros((spec.num_classes, spec.source_classes), np.float64)}

  @classmethod
  def from_batch(cls, spec: LeepLogLikSpec, params, batch: stats_lib.Batch) -> 'LeepLogLik':
    y, m = _labels_mask(spec, batch)
    p = _masked_probs(spec, batch)
    dt = p.dtype
    cond = params['cond'].astype(dt)[y]                       # [B, Ks]
    eep = jnp.sum(p * cond, axis=-1)                          # [B]
    pos = m & (eep > 0)
    logs = jnp.log(jnp.where(pos, eep, jnp.ones((), dt)))
    return cls(count=jnp.sum(m.astype(dt)),
               log_sum=jnp.sum(jnp.where(pos, logs, jnp.zeros((), dt))),
               zero=jnp.sum((m & ~(eep > 0)).astype(dt)))

  def finalize(self, spec: LeepLogLikSpec, params) -> LeepSums:
    h = _host64(self)
    return LeepSums(n=float(h.count), log_sum=float(h.log_sum), zero_rows=float(h.zero))


# ---------------------------------------------------------------------------------
# Norm moments about one centre (regularised H-score: Ledoit–Wolf shrinkage)
# ---------------------------------------------------------------------------------


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
    return (self.quartic - 4.0 * float(delta @ self.cross) + 4.0 * sum_b2
            + 2.0 * e * self.sq - 4.0 * e * float(delta @ self.sum) + n * e * e)


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

  count: Array     # []
  sum: Array       # [D]
  sq: Array        # []
  quartic: Array   # []
  cross: Array     # [D]

  @classmethod
  def empty(cls, spec: NormMomentsSpec) -> 'NormMoments':
    dt = jnp.dtype(spec.dtype)
    return cls(count=jnp.zeros((), dt), sum=jnp.zeros((spec.dim,), dt), sq=jnp.zeros((), dt),
               quartic=jnp.zeros((), dt), cross=jnp.zeros((spec.dim,), dt))

  @classmethod
  def default_params(cls, spec: NormMomentsSpec):
    return {'shift': np.zeros((spec.num_classes, spec.dim), np.float64)}

  @classmethod
  def from_batch(cls, spec: NormMomentsSpec, params, batch: stats_lib.Batch) -> 'NormMoments':
    dt = jnp.dtype(spec.dtype)
    m = batch.mask
    z = batch.features.astype(dt) - params['shift'].astype(dt)[0]
    z = jnp.where(m[:, None], z, jnp.zeros((), dt))
    a = jnp.sum(z * z, axis=-1)                               # [B]
    return cls(count=jnp.sum(m.astype(dt)), sum=jnp.sum(z, axis=0), sq=jnp.sum(a),
               quartic=jnp.sum(a * a), cross=jnp.dot(a, z, precision=HIGHEST))

  def finalize(self, spec: NormMomentsSpec, params) -> NormSums:
    h = _host64(self)
    center = np.asarray(params['shift'], np.float64)[0]
    return NormSums(center=center, n=float(h.count), sum=h.sum, sq=float(h.sq),
                    quartic=float(h.quartic), cross=h.cross)


# ---------------------------------------------------------------------------------
# Class moments of projected features (GBC on PCA features)
# ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProjectedMomentsSpec:
  """Static configuration of ``ProjectedMoments``.

  Attributes:
    num_classes: K.
    dim: D of the input features.
    out_dim: k, columns of the basis.
    dtype: accumulation dtype name.
    round_float32: round the projected features to float32 before the
      moments (as a pipeline that stores float32 PCA features does).
  """

  num_classes: int
  dim: int
  out_dim: int
  dtype: str = 'float32'
  round_float32: bool = False


class ProjectedMoments(stats_lib.Statistic):
  """Class counts, sums and per-class diagonal moments of p = (x − center) @ basis.

  params: ``{'center': [D], 'basis': [D, k], 'shift': [K, k]}``; the moments
  are accumulated about the per-class shift in the projected space (pass the
  projected class means of an earlier pass) and finalised like ``Moments``
  without the scatter.

  Memory: 2·K·k + K accumulator elements.  Per step: one [B, D] x [D, k] matmul.
  """

  count: Array    # [K]
  sum: Array      # [K, k]
  sq_sum: Array   # [K, k]

  @classmethod
  def empty(cls, spec: ProjectedMomentsSpec) -> 'ProjectedMoments':
    dt = jnp.dtype(spec.dtype)
    k, d = spec.num_classes, spec.out_dim
    return cls(count=jnp.zeros((k,), dt), sum=jnp.zeros((k, d), dt), sq_sum=jnp.zeros((k, d), dt))

  @classmethod
  def default_params(cls, spec: ProjectedMomentsSpec):
    return {'center': np.zeros((spec.dim,), np.float64),
            'basis': np.eye(spec.dim, spec.out_dim),
            'shift': np.zeros((spec.num_classes, spec.out_dim), np.float64)}

  @classmethod
  def from_batch(cls, spec: ProjectedMomentsSpec, params, batch) -> 'ProjectedMoments':
    dt = jnp.dtype(spec.dtype)
    y, m = _labels_mask(spec, batch)
    x = batch.features.astype(dt) - params['center'].astype(dt)
    x = jnp.where(m[:, None], x, jnp.zeros((), dt))
    p = jnp.dot(x, params['basis'].astype(dt), precision=HIGHEST)     # [B, k]
    if spec.round_float32:
      p = p.astype(jnp.float32).astype(dt)
    z = p - params['shift'].astype(dt)[y]
    z = jnp.where(m[:, None], z, jnp.zeros((), dt))
    k = spec.num_classes
    return cls(count=jax.ops.segment_sum(m.astype(dt), y, num_segments=k),
               sum=jax.ops.segment_sum(z, y, num_segments=k),
               sq_sum=jax.ops.segment_sum(z * z, y, num_segments=k))

  def finalize(self, spec: ProjectedMomentsSpec, params) -> stats_lib.ClassMoments:
    h = _host64(self)
    shift = np.asarray(params['shift'], np.float64)
    n = h.count
    safe = np.where(n > 0, n, 1.0)
    mz = h.sum / safe[:, None]
    means = np.where(n[:, None] > 0, shift + mz, 0.0)
    var = np.clip(h.sq_sum / safe[:, None] - mz * mz, 0.0, None)
    var = np.where(n[:, None] > 0, var, 0.0)
    return stats_lib.ClassMoments(counts=n, sums=means * n[:, None], means=means, var_diag=var,
                                  within_scatter=None, weight=np.ones_like(n))
