"""Streaming statistics: immutable pytrees of additive sums.

Synopsis::

    spec = MomentsSpec(num_classes=10, dim=64)
    params = Moments.default_params(spec)          # shift [K, D] = 0, weight [K] = 1
    state = Moments.empty(spec)
    for batch in batches:                           # Batch(features [B, D], labels [B], mask [B])
      state = state.merge(Moments.from_batch(spec, params, batch))
    fin = state.finalize(spec, params)              # host float64, shift undone

Every statistic here is a commutative monoid: ``empty(spec)`` is the identity,
``merge`` adds leaf by leaf, and the cross-device merge is one ``lax.psum`` of
the whole pytree (``psum``).  Static configuration (shapes, dtypes, options)
lives in a hashable ``*Spec``; per-pass inputs that change from pass to pass
(the accumulation shift, class weights) are ``params``: a dict of arrays passed
to the jitted step as ordinary (replicated) arguments, so a new shift never
triggers a recompilation.

Numerics (the shift).  One-pass raw moments ``Σxxᵀ − n·μμᵀ`` cancel badly in
float32 when the features have a large common mean.  Every statistic here
accumulates ``z_i = x_i − c_{y_i}`` about a *per-class* shift ``c`` [K, D]
(by default the class means of the first batch, see ``engine``).  The
accumulated pooled scatter ``Σ z zᵀ`` is then already close to the within-class
scatter, so nothing cancels, and ``finalize`` undoes the shift exactly in float64:

    μ_k  = c_k + s_k / n_k
    S_W  = Σ_k w_k (Σ_{i∈k} z_i z_iᵀ − s_k s_kᵀ / n_k)

with ``s_k = Σ_{i∈k} z_i``.  The engine additionally sums batch contributions
with compensated (two-sum) arithmetic in float32, so the error does not grow
with the number of batches.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg.blas
from flax import struct

from face_jax._src import cpu_moments

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST


@struct.dataclass
class Batch:
  """One (padded, masked) batch of samples on device.

  Attributes:
    features: [B, D] floating features.
    labels: [B] int32 class labels in ``[0, num_classes)`` where ``mask``.
    mask: [B] bool; False marks padding rows, which contribute nothing.
    extras: dict of other per-sample arrays with leading dim B (e.g.
      ``source_probs`` [B, Ks]).
  """

  features: Array
  labels: Array
  mask: Array
  extras: dict = dataclasses.field(default_factory=dict)


class Statistic(struct.PyTreeNode):
  """Base class of streaming statistics (CLU ``Metric`` shape, additive leaves).

  Subclasses define ``empty``, ``from_batch``, ``default_params`` and
  ``finalize``.  ``merge`` and ``psum`` map over every leaf.
  """

  # Name of the per-sample extra array this statistic needs (None: features only).
  requires_extra: ClassVar[str | None] = None

  @classmethod
  def empty(cls, spec) -> 'Statistic':
    raise NotImplementedError

  @classmethod
  def default_params(cls, spec) -> dict[str, np.ndarray]:
    return {}

  @classmethod
  def from_batch(cls, spec, params: Mapping[str, Array], batch: Batch) -> 'Statistic':
    raise NotImplementedError

  def merge(self, other: 'Statistic') -> 'Statistic':
    """Adds two partial statistics (associative, commutative; identity = empty)."""
    if type(self) is not type(other):
      raise TypeError(f'cannot merge {type(self).__name__} with {type(other).__name__}')
    mine, theirs = jax.tree.leaves(self), jax.tree.leaves(other)
    for a, b in zip(mine, theirs):
      if a.shape != b.shape:
        raise ValueError(f'{type(self).__name__}.merge: leaf shapes differ: {a.shape} vs {b.shape}')
    return jax.tree.map(jnp.add, self, other)

  @classmethod
  def accumulate(
      cls, spec, params: Mapping[str, Array], batch: Batch, hi: 'Statistic', lo: 'Statistic'
  ) -> tuple['Statistic', 'Statistic']:
    """Adds one batch into a device's compensated accumulator pair: returns (hi', lo').

    ``hi + lo`` is the running sum, to about twice the working precision
    (``two_sum`` leaf by leaf).  Every leaf of ``hi`` and ``lo`` carries a
    leading axis of size 1 (the device's slot of the engine's sharded state, as
    passed, so a kernel can update the donated buffers in place).  The default
    adds ``from_batch``; a statistic may override it with a faster kernel that
    adds the same sums.
    """
    return add_compensated(hi, lo, as_slot(cls.from_batch(spec, params, batch)))

  def psum(self, axis_name) -> 'Statistic':
    """The cross-device (and cross-host) merge: one ``lax.psum`` of every leaf."""
    return jax.tree.map(lambda x: jax.lax.psum(x, axis_name), self)

  @classmethod
  def finalize_compensated(
      cls, spec, params: Mapping[str, np.ndarray], hi: 'Statistic', lo: 'Statistic | None'
  ):
    """Finalises the engine's merged accumulator pair (host arrays): ``finalize(hi + lo)``.

    ``hi + lo`` is formed in float64 (``lo`` is None without compensation).  A
    statistic with large leaves may override this to avoid materialising them in
    float64 at once (``ClassScatter`` finalises class by class).
    """
    total = (
        hi
        if lo is None
        else jax.tree.map(
            lambda h, l: np.asarray(h, np.float64) + np.asarray(l, np.float64), hi, lo
        )
    )
    return total.finalize(spec, params)

  def finalize(self, spec, params: Mapping[str, np.ndarray]):
    raise NotImplementedError


def two_sum(hi, lo, x):
  """Compensated accumulation: (hi', lo') with hi' + lo' = hi + lo + x (Knuth's two-sum)."""
  s = hi + x
  bb = s - hi
  err = (hi - (s - bb)) + (x - bb)
  return s, lo + err


def as_slot(stat):
  """A statistic with every leaf given the leading device-slot axis of size 1."""
  return jax.tree.map(lambda a: a[None], stat)


def add_compensated(hi, lo, contrib):
  """``two_sum`` of every leaf: (hi', lo') with hi' + lo' = hi + lo + contrib."""
  pairs = jax.tree.map(two_sum, hi, lo, contrib)
  is_pair = lambda t: isinstance(t, tuple)
  return (
      jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair),
      jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair),
  )


def _accum_dtype(spec) -> jnp.dtype:
  return jnp.dtype(spec.dtype)


def _masked_centered(spec, params, batch: Batch):
  """Returns (z [B, D], y [B] int32, m [B] dtype): features about the class shift, padding zeroed."""
  dt = _accum_dtype(spec)
  m = batch.mask
  # Labels of padding rows (and out-of-range labels, which the engine reports
  # as an error) are clamped so gathers stay in bounds.
  y = jnp.clip(batch.labels.astype(jnp.int32), 0, spec.num_classes - 1)
  x = batch.features.astype(dt)
  z = x - params['shift'].astype(dt)[y]
  z = jnp.where(m[:, None], z, jnp.zeros((), dt))
  return z, y, m.astype(dt)


def block_bounds(dim: int, blocks: int) -> tuple[int, ...]:
  """Boundaries of ``blocks`` near-equal column blocks of ``dim``."""
  blocks = max(1, min(blocks, dim))
  return tuple(int(b) for b in np.linspace(0, dim, blocks + 1).round().astype(int))


def auto_scatter_blocks(dim: int) -> int:
  """Default number of column blocks for the XLA upper-triangular scatter product.

  (On CPU in float32 the product normally comes from BLAS ssyrk instead; see
  ``cpu_moments`` and ``MomentsSpec.scatter_kernel``.)

  Only the upper block triangle of ``Zᵀ Z`` is computed: with ``b`` blocks this
  costs ``(b + 1) / (2 b)`` of a full matmul.  Blocks narrower than 128 columns
  lose more in matmul efficiency than they save (measured on CPU), hence
  ``b = clip(D // 128, 1, 4)``.
  """
  return int(np.clip(dim // 128, 1, 4))


def upper_scatter(z: Array, blocks: int) -> Array:
  """Upper block triangle of ``zᵀ z`` ([B, D] -> [D, D]; lower blocks are zero).

  The diagonal blocks are full; ``symmetrize_upper`` rebuilds the symmetric matrix.
  """
  bounds = block_bounds(z.shape[1], blocks)
  return upper_scatter_tiles([z[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])])


def upper_scatter_tiles(zs) -> Array:
  """Upper block triangle of ``zᵀ z`` from the column blocks ``zs`` of ``z``.

  Args:
    zs: list of [B, w_j] arrays, ``z = concatenate(zs, axis=1)`` [B, D].

  Returns:
    [D, D] with tiles ``z_iᵀ z_j`` for j ≥ i (one HIGHEST-precision matmul
    per tile) and zeros below the diagonal blocks.

  Every tile's operands are whole arrays: with ``b`` blocks this costs
  ``(b + 1) / (2 b)`` of a full matmul and no column-slice copies of ``z``.
  """
  if len(zs) == 1:
    return jnp.dot(zs[0].T, zs[0], precision=HIGHEST)
  dt = zs[0].dtype
  rows = []
  for i, zi in enumerate(zs):
    tiles = [jnp.zeros((zi.shape[1], zj.shape[1]), dt) for zj in zs[:i]]
    tiles += [jnp.dot(zi.T, zj, precision=HIGHEST) for zj in zs[i:]]
    rows.append(jnp.concatenate(tiles, axis=1))
  return jnp.concatenate(rows, axis=0)


def _like_varying(out: Array, like: Array) -> Array:
  """Marks ``out`` (a custom call's output, a new constant) as varying like ``like`` in shard_map."""
  want = tuple(sorted(jax.typeof(like).manual_axis_type.varying))
  have = set(jax.typeof(out).manual_axis_type.varying)
  missing = tuple(a for a in want if a not in have)
  return jax.lax.pcast(out, missing, to='varying') if missing else out


def symmetrize_upper(u: np.ndarray) -> np.ndarray:
  """Symmetric matrix from its upper triangle (the lower triangle of ``u`` is ignored)."""
  return np.triu(u) + np.triu(u, 1).T


# The CPU kernels run for a batch only when its product has at least this many
# multiply-adds (rows per device · D²; 2^25: e.g. 512 rows at D = 256, 32 rows at
# D = 1024).  Below it the XLA code runs: the kernels' BLAS call is then too short to
# pay for OpenBLAS's worker threads, which keep spinning after each call and take a
# core from whatever XLA runs next: a small model's forward + statistics step is then
# slower with the kernels than with the XLA code, while on streams of bare features the
# kernels are the faster code at every size measured (benchmarks/README.md has the
# figures).
CPU_KERNEL_MIN_WORK = 1 << 25


@dataclasses.dataclass(frozen=True)
class MomentsSpec:
  """Static configuration of ``Moments`` (hashable).

  Attributes:
    num_classes: K, the label range ``[0, K)``.
    dim: D, the feature dimension.
    dtype: accumulation dtype name ('float32' or 'float64').
    scatter: accumulate the pooled scatter [D, D] (D²·4 bytes in float32).
    scatter_blocks: column blocks for the upper-triangular scatter product
      (None: ``auto_scatter_blocks(dim)``).
    scatter_kernel: "auto" (on CPU, float32, with the scatter, ``rows · D² >=
      CPU_KERNEL_MIN_WORK`` and ``cpu_moments.available()``: the ``cpu_moments``
      kernels, one pass over the rows + BLAS ``ssyrk``, added in place into the
      compensated state; elsewhere the XLA code) or "xla" (always the XLA code:
      per-block centring, ``segment_sum`` class sums, the upper-block-triangle
      product).
  """

  num_classes: int
  dim: int
  dtype: str = 'float32'
  scatter: bool = True
  scatter_blocks: int | None = None
  scatter_kernel: str = 'auto'

  def __post_init__(self):
    if self.scatter_kernel not in ('auto', 'xla'):
      raise ValueError(f"scatter_kernel must be 'auto' or 'xla', got {self.scatter_kernel!r}")

  @property
  def blocks(self) -> int:
    return self.scatter_blocks or auto_scatter_blocks(self.dim)


@dataclasses.dataclass(frozen=True)
class ClassMoments:
  """Finalised class moments (host, float64, shift undone).

  Attributes:
    counts: [K] samples per class.
    sums: [K, D] Σ_{i∈k} x_i.
    means: [K, D] class means (rows of empty classes are zero).
    var_diag: [K, D] per-class population variances (1/n_k; zero for empty classes).
    within_scatter: [D, D] Σ_k w_k Σ_{i∈k} (x_i − μ_k)(x_i − μ_k)ᵀ, or None.
    weight: [K] the class weights w_k the scatter was accumulated with.
  """

  counts: np.ndarray
  sums: np.ndarray
  means: np.ndarray
  var_diag: np.ndarray
  within_scatter: np.ndarray | None
  weight: np.ndarray

  @property
  def n(self) -> float:
    return float(self.counts.sum())

  @property
  def num_classes(self) -> int:
    return int(self.counts.shape[0])

  @property
  def dim(self) -> int:
    return int(self.means.shape[1])

  @property
  def present(self) -> np.ndarray:
    """[K] bool: classes with at least one sample."""
    return self.counts > 0

  @property
  def unit_weights(self) -> bool:
    return bool(np.all(self.weight == 1.0))

  def global_mean(self) -> np.ndarray:
    """[D] sample mean over all N samples."""
    return self.sums.sum(0) / self.n

  def between_scatter(self) -> np.ndarray:
    """[D, D] Σ_k n_k (μ_k − μ)(μ_k − μ)ᵀ about the sample mean μ."""
    dm = (self.means - self.global_mean()) * np.sqrt(self.counts)[:, None]
    return dm.T @ dm

  def total_scatter(self) -> np.ndarray:
    """[D, D] Σ_i (x_i − μ)(x_i − μ)ᵀ (needs unit class weights)."""
    self._need_unit_scatter('total_scatter')
    return self.within_scatter + self.between_scatter()

  @functools.cached_property
  def total_scatter_eig(self) -> tuple[np.ndarray, np.ndarray]:
    """(w [D] descending, v [D, D]) eigenpairs of ``total_scatter`` (computed once).

    Metrics finalised from the same statistics share it: H-score's and the
    regularised H-score's pseudo-inverses and NCTI's PCA (the regularised
    covariance (1 − a) T/N + c I has the same eigenvectors).  Read-only arrays.
    """
    t = self.total_scatter()
    w, v = np.linalg.eigh(0.5 * (t + t.T))
    w, v = w[::-1].copy(), v[:, ::-1].copy()
    w.flags.writeable = False
    v.flags.writeable = False
    return w, v

  def second_moment(self) -> np.ndarray:
    """[D, D] raw Σ_i x_i x_iᵀ (uncentred; needs unit class weights)."""
    self._need_unit_scatter('second_moment')
    mc = self.means * np.sqrt(self.counts)[:, None]
    return self.within_scatter + mc.T @ mc

  def _need_unit_scatter(self, what):
    if self.within_scatter is None:
      raise ValueError(f'{what} needs the scatter matrix (MomentsSpec.scatter=True)')
    if not self.unit_weights:
      raise ValueError(f'{what} needs the scatter accumulated with unit class weights')


class Moments(Statistic):
  """Class counts, class sums, per-class diagonal and pooled within-class scatter.

  All leaves are sums over samples of functions of ``z = x − c_y`` (``c`` the
  per-class shift param, [K, D]); ``weight`` [K] scales each sample's outer
  product in the scatter (``w = 1``: sample weighting; ``w_k ∝ 1/n_k``:
  balanced weighting, with counts known before the pass).

  Memory: 2·K·D + K + D² accumulator elements (x2 with compensated sums).
  """

  count: Array  # [K]
  sum: Array  # [K, D]  Σ_{i∈k} z_i
  sq_sum: Array  # [K, D]  Σ_{i∈k} z_i²
  scatter: Array  # [D, D]  Σ_i w_{y_i} z_i z_iᵀ, upper triangle valid (lower: zeros or tile spill; [1, 1] if disabled)

  @classmethod
  def empty(cls, spec: MomentsSpec) -> 'Moments':
    dt = _accum_dtype(spec)
    k, d = spec.num_classes, spec.dim
    sd = d if spec.scatter else 1
    return cls(
        count=jnp.zeros((k,), dt),
        sum=jnp.zeros((k, d), dt),
        sq_sum=jnp.zeros((k, d), dt),
        scatter=jnp.zeros((sd, sd), dt),
    )

  @classmethod
  def default_params(cls, spec: MomentsSpec) -> dict[str, np.ndarray]:
    return {
        'shift': np.zeros((spec.num_classes, spec.dim), np.float64),
        'weight': np.ones((spec.num_classes,), np.float64),
    }

  @classmethod
  def prepare(cls, spec: MomentsSpec, params, batch: Batch) -> Batch:
    """The batch whose moments are accumulated (identity here).

    A subclass that accumulates the moments of transformed features (e.g. SFDA's
    ConfMix-mixed features) overrides this, and both ``from_batch`` and
    ``accumulate`` (the CPU kernels too) see the transformed batch.
    """
    del spec, params
    return batch

  @classmethod
  def _args(cls, spec: MomentsSpec, params, batch: Batch):
    batch = cls.prepare(spec, params, batch)
    dt = _accum_dtype(spec)
    # Labels of padding rows (and out-of-range labels, which the engine reports
    # as an error) are clamped so gathers stay in bounds.
    y = jnp.clip(batch.labels.astype(jnp.int32), 0, spec.num_classes - 1)
    return (
        batch.features.astype(dt),
        y,
        batch.mask,
        params['shift'].astype(dt),
        params['weight'].astype(dt),
    )

  @classmethod
  def uses_cpu_kernel(cls, spec: MomentsSpec, rows: int) -> bool:
    """Whether CPU lowering uses the ``cpu_moments`` kernels for ``rows`` rows per device.

    True for float32 with the scatter and ``scatter_kernel='auto'`` when the
    kernels could be built (``cpu_moments.status()`` says why not) and the
    product is large enough: ``rows · D² >= CPU_KERNEL_MIN_WORK``.  Other
    platforms never use them.
    """
    return (
        spec.scatter
        and spec.scatter_kernel == 'auto'
        and _accum_dtype(spec) == jnp.float32
        and rows * spec.dim**2 >= CPU_KERNEL_MIN_WORK
        and cpu_moments.available()
    )

  @classmethod
  def from_batch(cls, spec: MomentsSpec, params, batch: Batch) -> 'Moments':
    args = cls._args(spec, params, batch)
    if cls.uses_cpu_kernel(spec, batch.features.shape[0]):
      return jax.lax.platform_dependent(
          *args,
          cpu=functools.partial(cls._from_batch_cpu, spec),
          default=functools.partial(cls._from_batch_blocks, spec),
      )
    return cls._from_batch_blocks(spec, *args)

  @classmethod
  def accumulate(
      cls, spec: MomentsSpec, params, batch: Batch, hi: 'Moments', lo: 'Moments'
  ) -> tuple['Moments', 'Moments']:
    """``Statistic.accumulate``; on CPU (``uses_cpu_kernel``) one in-place kernel call.

    The kernel two-sums the class counts, sums and squares row by row (the XLA
    code two-sums each batch's plain sums) and the scatter's upper triangle per
    batch; the strict lower triangle of its scatter stays zero.  (A subclass that
    overrides ``from_batch`` rather than ``prepare`` gets the generic path.)
    """
    own = getattr(cls.from_batch, '__func__', None) is Moments.from_batch.__func__
    if not (own and cls.uses_cpu_kernel(spec, batch.features.shape[0])):
      return super().accumulate(spec, params, batch, hi, lo)

    def cpu(x, y, m, shift, weight, hi, lo):
      leaves = lambda t: (t.count, t.sum, t.sq_sum, t.scatter)
      h, l = cpu_moments.accumulate_moments(
          x, y, m.astype(x.dtype), shift, weight, leaves(hi), leaves(lo)
      )
      return cls(*(_like_varying(a, x) for a in h)), cls(*(_like_varying(a, x) for a in l))

    def default(x, y, m, shift, weight, hi, lo):
      contrib = cls._from_batch_blocks(spec, x, y, m, shift, weight)
      return add_compensated(hi, lo, as_slot(contrib))

    return jax.lax.platform_dependent(
        *cls._args(spec, params, batch), hi, lo, cpu=cpu, default=default
    )

  @classmethod
  def _from_batch_cpu(cls, spec: MomentsSpec, x, y, m, shift, weight) -> 'Moments':
    del spec
    out = cpu_moments.class_moments(x, y, m.astype(x.dtype), shift, weight)
    return cls(*(_like_varying(a, x) for a in out))

  @classmethod
  def _from_batch_blocks(cls, spec: MomentsSpec, x, y, m, shift, weight) -> 'Moments':
    # Computed per column block of the scatter: z_j = x[:, j] − c_y[:, j] is
    # produced once per block and consumed whole by the tile matmuls and the
    # class sums.  (Centring the whole [B, D] first and slicing it per block
    # made XLA:CPU re-compute z in every slice, at about half the bare product's
    # rate; see benchmarks/README.md.)
    dt = x.dtype
    k = spec.num_classes
    bounds = block_bounds(spec.dim, spec.blocks if spec.scatter else 1)
    zs = [
        jnp.where(m[:, None], x[:, lo:hi] - shift[:, lo:hi][y], jnp.zeros((), dt))
        for lo, hi in zip(bounds[:-1], bounds[1:])
    ]
    count = jax.ops.segment_sum(m.astype(dt), y, num_segments=k)
    s = jnp.concatenate([jax.ops.segment_sum(z, y, num_segments=k) for z in zs], axis=1)
    sq = jnp.concatenate([jax.ops.segment_sum(z * z, y, num_segments=k) for z in zs], axis=1)
    if spec.scatter:
      sw = jnp.sqrt(weight)[y][:, None]
      scatter = upper_scatter_tiles([z * sw for z in zs])
    else:
      scatter = jnp.zeros((1, 1), dt)
    return cls(count=count, sum=s, sq_sum=sq, scatter=scatter)

  def finalize(self, spec: MomentsSpec, params) -> ClassMoments:
    h = jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float64), self)
    shift = np.asarray(params['shift'], np.float64)
    weight = np.asarray(params['weight'], np.float64)
    n = h.count
    safe = np.where(n > 0, n, 1.0)
    mz = h.sum / safe[:, None]  # mean of z per class
    means = np.where(n[:, None] > 0, shift + mz, 0.0)
    var = np.clip(h.sq_sum / safe[:, None] - mz * mz, 0.0, None)
    var = np.where(n[:, None] > 0, var, 0.0)
    within = None
    if spec.scatter:
      corr = h.sum * np.sqrt(weight / safe)[:, None]
      within = symmetrize_upper(h.scatter) - corr.T @ corr
      within = 0.5 * (within + within.T)
    sums = means * n[:, None]
    return ClassMoments(
        counts=n, sums=sums, means=means, var_diag=var, within_scatter=within, weight=weight
    )


@dataclasses.dataclass(frozen=True)
class ClassScatterSpec:
  """Static configuration of ``ClassScatter``: per-class full D×D scatter (opt-in).

  Memory: K·D² accumulator elements, i.e. K·D²·4 bytes in float32 (x2 with the
  engine's compensated sums): 16 GiB for K = 1000, D = 2048.  Compute: every row
  is multiplied once (B·D² multiply-adds a batch, like the pooled scatter; the
  XLA code pads each class to whole row tiles, see ``ClassScatter``).

  Attributes:
    num_classes: K.
    dim: D.
    dtype: accumulation dtype name.
    scatter_kernel: "auto" (on CPU, float32, ``rows · D² >= CPU_KERNEL_MIN_WORK`` and
      ``cpu_moments.available()``: the CPU kernel, one ``ssyrk`` per class of the rows
      grouped by class, added in place into the compensated state; elsewhere the XLA
      code) or "xla".
    tile_rows: rows per tile of the XLA code (None: ``class_tile_rows``).
  """

  num_classes: int
  dim: int
  dtype: str = 'float32'
  scatter_kernel: str = 'auto'
  tile_rows: int | None = None

  def __post_init__(self):
    if self.scatter_kernel not in ('auto', 'xla'):
      raise ValueError(f"scatter_kernel must be 'auto' or 'xla', got {self.scatter_kernel!r}")


def class_tile_rows(rows: int, num_classes: int) -> int:
  """Default tile height of ``ClassScatter``'s XLA code for ``rows`` rows per device.

  Each class present in a batch is padded to whole tiles of T rows, so the
  products cost at most (rows + K·(T − 1))·D² multiply-adds: T is the power of two
  at most rows/(2K) (padding ≤ half a batch), between 8 and 256.
  """
  t = max(1, rows // (2 * max(num_classes, 1)))
  return int(np.clip(1 << (t.bit_length() - 1), 8, 256))


class ClassScatter(Statistic):
  """Per-class scatter Σ_{i∈k} (x_i − c_k)(x_i − c_k)ᵀ about the per-class shift.

  Every row is multiplied once.  On CPU (float32) a kernel groups the rows by
  class and calls ``ssyrk`` once per class present (``cpu_moments``).  The XLA
  code sorts the rows by class, lays each class out in whole tiles of T rows
  (``class_tile_rows``; at most ⌈B/T⌉ + K tiles), forms one T-row product per
  tile and adds it to its class, a few tiles at a time.
  """

  count: Array  # [K]
  sum: Array  # [K, D]
  scatter: Array  # [K, D, D] (CPU kernel: upper triangles; XLA code: full matrices)

  @classmethod
  def empty(cls, spec: ClassScatterSpec) -> 'ClassScatter':
    dt = _accum_dtype(spec)
    k, d = spec.num_classes, spec.dim
    return cls(
        count=jnp.zeros((k,), dt), sum=jnp.zeros((k, d), dt), scatter=jnp.zeros((k, d, d), dt)
    )

  @classmethod
  def default_params(cls, spec: ClassScatterSpec) -> dict[str, np.ndarray]:
    return {'shift': np.zeros((spec.num_classes, spec.dim), np.float64)}

  @classmethod
  def uses_cpu_kernel(cls, spec: ClassScatterSpec, rows: int) -> bool:
    """Whether CPU lowering of ``accumulate`` uses the ``cpu_moments`` class-scatter kernel."""
    return (
        spec.scatter_kernel == 'auto'
        and _accum_dtype(spec) == jnp.float32
        and rows * spec.dim**2 >= CPU_KERNEL_MIN_WORK
        and cpu_moments.available()
    )

  @classmethod
  def from_batch(cls, spec: ClassScatterSpec, params, batch: Batch) -> 'ClassScatter':
    z, y, m = _masked_centered(spec, params, batch)
    k = spec.num_classes
    count = jax.ops.segment_sum(m, y, num_segments=k)
    s = jax.ops.segment_sum(z, y, num_segments=k)
    return cls(count=count, sum=s, scatter=cls._tiled_scatter(spec, z, y, batch.mask))

  @classmethod
  def _tiled_scatter(cls, spec: ClassScatterSpec, z: Array, y: Array, mask: Array) -> Array:
    """[K, D, D] Σ_{i∈k} z_i z_iᵀ with every row multiplied once (rows sorted into class tiles)."""
    b, d = z.shape
    k = spec.num_classes
    t = spec.tile_rows or class_tile_rows(b, k)
    n_tiles = -(-b // t) + min(k, b)
    key = jnp.where(mask, y, k)  # padding rows sort last
    order = jnp.argsort(key, stable=True)
    ys = key[order]
    cnt = jnp.bincount(key, length=k + 1)[:k]  # [K]
    tiles = -(-cnt // t)  # tiles per class
    first_tile = jnp.cumsum(tiles) - tiles  # [K]
    first_row = jnp.cumsum(cnt) - cnt  # [K] in sorted order
    yc = jnp.minimum(ys, k - 1)
    dest = first_tile[yc] * t + (jnp.arange(b) - first_row[yc])
    dest = jnp.where(ys < k, dest, n_tiles * t)  # padding: dropped
    packed = jnp.zeros((n_tiles * t, d), z.dtype).at[dest].set(z[order], mode='drop')
    packed = packed.reshape(n_tiles, t, d)
    # The class of each tile (K for unused tiles, whose products are dropped).
    tile_class = jnp.searchsorted(jnp.cumsum(tiles), jnp.arange(n_tiles), side='right')
    group = max(1, min(n_tiles, 8))
    n_groups = -(-n_tiles // group)
    pad = n_groups * group - n_tiles
    packed = jnp.concatenate([packed, jnp.zeros((pad, t, d), z.dtype)]).reshape(
        n_groups, group, t, d
    )
    tile_class = jnp.concatenate([tile_class, jnp.full((pad,), k, tile_class.dtype)]).reshape(
        n_groups, group
    )

    def body(g, acc):
      zt = packed[g]  # [group, T, D]
      prod = jnp.einsum('gtd,gte->gde', zt, zt, precision=HIGHEST)
      return acc.at[tile_class[g]].add(prod, mode='drop')

    init = _like_varying(jnp.zeros((k, d, d), z.dtype), z)
    return jax.lax.fori_loop(0, n_groups, body, init)

  @classmethod
  def accumulate(
      cls, spec: ClassScatterSpec, params, batch: Batch, hi: 'ClassScatter', lo: 'ClassScatter'
  ) -> tuple['ClassScatter', 'ClassScatter']:
    """``Statistic.accumulate``; on CPU (``uses_cpu_kernel``) one in-place kernel call."""
    if not cls.uses_cpu_kernel(spec, batch.features.shape[0]):
      return super().accumulate(spec, params, batch, hi, lo)
    dt = _accum_dtype(spec)
    y = jnp.clip(batch.labels.astype(jnp.int32), 0, spec.num_classes - 1)
    args = (batch.features.astype(dt), y, batch.mask.astype(dt), params['shift'].astype(dt))

    def cpu(x, y, m, shift, hi, lo):
      leaves = lambda t: (t.count, t.sum, t.scatter)
      h, l = cpu_moments.accumulate_class_scatter(x, y, m, shift, leaves(hi), leaves(lo))
      return cls(*(_like_varying(a, x) for a in h)), cls(*(_like_varying(a, x) for a in l))

    def default(x, y, m, shift, hi, lo):
      del x, y, m, shift  # the XLA code (from_batch) reads the batch itself
      return add_compensated(hi, lo, as_slot(cls.from_batch(spec, params, batch)))

    return jax.lax.platform_dependent(*args, hi, lo, cpu=cpu, default=default)

  def finalize(self, spec: ClassScatterSpec, params) -> 'ClassCovariances':
    return ClassScatter.finalize_compensated(spec, params, self, None)

  @classmethod
  def finalize_compensated(
      cls, spec: ClassScatterSpec, params, hi: 'ClassScatter', lo: 'ClassScatter | None'
  ) -> 'ClassCovariances':
    """Counts and means in float64; the [K, D, D] sums stay as accumulated (no float64 copy)."""
    f64 = lambda a: np.asarray(jax.device_get(a), np.float64)
    n = f64(hi.count) + (0.0 if lo is None else f64(lo.count))
    zsum = f64(hi.sum) + (0.0 if lo is None else f64(lo.sum))
    shift = np.asarray(params['shift'], np.float64)
    safe = np.where(n > 0, n, 1.0)
    means = np.where(n[:, None] > 0, shift + zsum / safe[:, None], 0.0)
    return ClassCovariances(
        counts=n,
        means=means,
        zsum=zsum,
        raw=np.asarray(jax.device_get(hi.scatter)),
        raw_lo=None if lo is None else np.asarray(jax.device_get(lo.scatter)),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class ClassCovariances:
  """Finalised per-class scatter (host), formed in float64 one class at a time.

  The [K, D, D] sums are kept as accumulated (float32 hi and lo parts on the
  compensated path); ``class_scatter(k)`` forms class k's D×D matrix in float64, so
  a metric that goes class by class never holds K float64 matrices.

  Attributes:
    counts: [K] samples per class.
    means: [K, D] class means (zero rows for empty classes).
    zsum: [K, D] Σ_{i∈k} (x_i − c_k) about the accumulation shift c.
    raw: [K, D, D] Σ_{i∈k} (x_i − c_k)(x_i − c_k)ᵀ (upper triangles valid).
    raw_lo: [K, D, D] compensation part of ``raw`` (or None).
  """

  counts: np.ndarray
  means: np.ndarray
  zsum: np.ndarray
  raw: np.ndarray
  raw_lo: np.ndarray | None = None

  @property
  def num_classes(self) -> int:
    return int(self.counts.shape[0])

  def class_scatter(self, k: int) -> np.ndarray:
    """[D, D] float64 Σ_{i∈k} (x_i − μ_k)(x_i − μ_k)ᵀ (zeros for an empty class)."""
    u = np.asarray(self.raw[k], np.float64)
    if self.raw_lo is not None:
      u = u + np.asarray(self.raw_lo[k], np.float64)
    u = symmetrize_upper(u)
    n = self.counts[k]
    if n > 0:
      u -= np.outer(self.zsum[k], self.zsum[k] / n)
    return 0.5 * (u + u.T)

  def class_scatter_about(self, k: int, center: np.ndarray) -> np.ndarray:
    """[D, D] Σ_{i∈k} (x_i − a)(x_i − a)ᵀ about a common point ``a`` [D]."""
    dm = self.means[k] - np.asarray(center, np.float64)
    return self.class_scatter(k) + self.counts[k] * np.outer(dm, dm)

  def class_scatter_about_upper(self, k: int, center: np.ndarray) -> np.ndarray:
    """[D, D] float64 whose upper triangle is ``class_scatter_about(k, center)``'s.

    The lower triangle is left unspecified: for a consumer that reads one triangle
    (a Cholesky factorisation).  One conversion pass and one in-place rank-2 update
    (BLAS ``dsyr2``), with no symmetrisation: a fraction of
    ``class_scatter_about``'s full-matrix passes.
    """
    u = np.array(self.raw[k], np.float64)
    if self.raw_lo is not None:
      u += self.raw_lo[k]
    n = float(self.counts[k])
    if n > 0:
      # About the shift c: raw; about a: raw + n (δ δᵀ − α αᵀ) with α = mean − c
      # (= zsum / n) and δ = mean − a, i.e. the rank-2 update (n/2)[(δ − α)(δ + α)ᵀ + ...].
      alpha = self.zsum[k] / n
      delta = self.means[k] - np.asarray(center, np.float64)
      # Row-major upper triangle = the Fortran-order lower triangle of u.T (no copy).
      scipy.linalg.blas.dsyr2(0.5 * n, delta - alpha, delta + alpha, a=u.T, lower=1, overwrite_a=1)
    return u

  @property
  def scatter(self) -> np.ndarray:
    """[K, D, D] every class's scatter about its mean (materialises K·D² float64)."""
    return np.stack([self.class_scatter(k) for k in range(self.num_classes)])

  def scatter_about(self, center: np.ndarray) -> np.ndarray:
    """[K, D, D] Σ_{i∈k} (x_i − a)(x_i − a)ᵀ about a common point ``a`` [D] (materialises)."""
    return np.stack([self.class_scatter_about(k, center) for k in range(self.num_classes)])


def as_host_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in params.items()}
