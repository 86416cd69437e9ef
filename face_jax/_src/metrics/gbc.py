"""GBC (Gaussian Bhattacharyya coefficient) on the streaming engine.

Synopsis::

    face_jax.score(features, labels, metrics=('gbc',))['gbc']              # float
    face_jax.score(features, labels, metrics=('gbc',), pca_dim=64)         # google pipeline

``pca_dim=None``: one pass of ``Moments``.  ``pca_dim=k``: pass 1 ``Moments``
(total scatter -> exact top-k principal axes), pass 2 ``ProjectedMoments``:
class moments of the features projected on those axes and rounded to float32
(the google pipeline stores float32 PCA features).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from face_jax._src import engine as engine_lib
from face_jax._src import registry
from face_jax._src import stats as stats_lib
from face_jax._src.errors import InputError
from face_jax._src.metrics import common
from face_jax._src.numerics import bhattacharyya_sum, sym_eig_desc

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST
GBC_VAR_FLOOR = 1e-4  # GBC: per-dimension class variances floored at 1e-4
GBC_TYPES = ('spherical', 'diagonal')


@dataclasses.dataclass(frozen=True)
class GbcOptions:
  """Options of ``gbc``.

  Attributes:
    gaussian_type: "spherical" (the google configuration) or "diagonal".
    pca_dim: None (GBC on the raw features) or k: GBC on the exact top-k
      principal components rounded to float32 (the google pipeline; 2 passes).
  """

  gaussian_type: str = 'spherical'
  pca_dim: int | None = None

  def __post_init__(self):
    common.choice(self.gaussian_type, GBC_TYPES, 'gaussian_type', 'gbc')
    p = self.pca_dim
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, np.integer))):
      raise InputError(f'gbc: pca_dim must be None or a positive int, got {p!r}')


# -- class moments of projected features (GBC on PCA features) --------------------------


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

  count: Array  # [K]
  sum: Array  # [K, k]
  sq_sum: Array  # [K, k]

  @classmethod
  def empty(cls, spec: ProjectedMomentsSpec) -> 'ProjectedMoments':
    dt = jnp.dtype(spec.dtype)
    k, d = spec.num_classes, spec.out_dim
    return cls(count=jnp.zeros((k,), dt), sum=jnp.zeros((k, d), dt), sq_sum=jnp.zeros((k, d), dt))

  @classmethod
  def default_params(cls, spec: ProjectedMomentsSpec):
    return {
        'center': np.zeros((spec.dim,), np.float64),
        'basis': np.eye(spec.dim, spec.out_dim),
        'shift': np.zeros((spec.num_classes, spec.out_dim), np.float64),
    }

  @classmethod
  def from_batch(cls, spec: ProjectedMomentsSpec, params, batch) -> 'ProjectedMoments':
    dt = jnp.dtype(spec.dtype)
    y, m = common.labels_mask(spec, batch)
    x = batch.features.astype(dt) - params['center'].astype(dt)
    x = jnp.where(m[:, None], x, jnp.zeros((), dt))
    p = jnp.dot(x, params['basis'].astype(dt), precision=HIGHEST)  # [B, k]
    if spec.round_float32:
      p = p.astype(jnp.float32).astype(dt)
    z = p - params['shift'].astype(dt)[y]
    z = jnp.where(m[:, None], z, jnp.zeros((), dt))
    k = spec.num_classes
    return cls(
        count=jax.ops.segment_sum(m.astype(dt), y, num_segments=k),
        sum=jax.ops.segment_sum(z, y, num_segments=k),
        sq_sum=jax.ops.segment_sum(z * z, y, num_segments=k),
    )

  def finalize(self, spec: ProjectedMomentsSpec, params) -> stats_lib.ClassMoments:
    h = common.host64(self)
    shift = np.asarray(params['shift'], np.float64)
    n = h.count
    safe = np.where(n > 0, n, 1.0)
    mz = h.sum / safe[:, None]
    means = np.where(n[:, None] > 0, shift + mz, 0.0)
    var = np.clip(h.sq_sum / safe[:, None] - mz * mz, 0.0, None)
    var = np.where(n[:, None] > 0, var, 0.0)
    return stats_lib.ClassMoments(
        counts=n,
        sums=means * n[:, None],
        means=means,
        var_diag=var,
        within_scatter=None,
        weight=np.ones_like(n),
    )


# -- the score ----------------------------------------------------------------------


def gbc_from_moments(moments: stats_lib.ClassMoments, options: GbcOptions = GbcOptions()) -> float:
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
    options: ``GbcOptions``; its ``gaussian_type`` is used here ("spherical",
      the default, or "diagonal"; ``pca_dim`` is the plan's: pass the moments
      of the projected features).

  Returns:
    GBC in [−K(K − 1), 0].  Orientation: higher (closer to 0) = better.
  """
  present = common.populated_classes(moments.counts, 'gbc')
  mu = moments.means[present]
  mu = mu - mu.mean(0)  # shift-invariant; tidier rounding
  var = np.maximum(moments.var_diag[present], GBC_VAR_FLOOR)
  return -bhattacharyya_sum(mu, var, options.gaussian_type)


def pca_basis(moments: stats_lib.ClassMoments, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(center [D], basis [D, k]): the sample mean and the top-k eigenvectors of the total scatter.

  These are the exact principal axes (what an exact SVD of the centred data
  gives, up to the sign of each axis, which GBC does not see).
  """
  _, v = sym_eig_desc(moments.total_scatter())
  return moments.global_mean(), np.ascontiguousarray(v[:, :k])


def _check_pca_dim(pca_dim, n, d):
  if not 1 <= pca_dim <= min(n, d):
    raise InputError(
        f'gbc: pca_dim={pca_dim} needs 1 <= pca_dim <= min(N, D) = {int(min(n, d))} '
        f'(N={int(n)}, D={d}); the PCA-{pca_dim} reduction of the google pipeline is not '
        'defined here (face_jax.dense.gbc raises likewise). Use pca_dim=None for GBC on the '
        'raw features.'
    )


def gbc_plan(info: engine_lib.StreamInfo, options: GbcOptions, dtype: str):
  """Plan of ``gbc``.

  ``pca_dim=None``: one pass of ``Moments``.  ``pca_dim=k``: pass 1
  ``Moments`` (total scatter -> exact top-k principal axes), pass 2
  ``ProjectedMoments`` of p = (x − μ) V rounded to float32 (the google
  pipeline stores float32 PCA features), about the projected class means of
  pass 1.  k > D raises before any pass, k > N after the first.
  """
  pca_dim = options.pca_dim
  if pca_dim is not None:
    pca_dim = int(pca_dim)
    if info.label_counts is not None:
      _check_pca_dim(pca_dim, int(np.sum(info.label_counts)), info.dim)
    else:
      _check_pca_dim(pca_dim, max(pca_dim, 1), info.dim)
  fin = (yield {'moments': common.moments_request(info, dtype)})['moments']
  if pca_dim is None:
    return gbc_from_moments(fin, options)
  _check_pca_dim(pca_dim, fin.n, info.dim)
  center, basis = pca_basis(fin, pca_dim)
  shift = np.where(fin.present[:, None], (fin.means - center) @ basis, 0.0)
  spec = ProjectedMomentsSpec(
      num_classes=info.num_classes, dim=info.dim, out_dim=pca_dim, dtype=dtype, round_float32=True
  )
  req = engine_lib.Request(
      ProjectedMoments, spec, {'center': center, 'basis': basis, 'shift': shift}
  )
  proj = (yield {'projected': req})['projected']
  return gbc_from_moments(proj, options)


registry.register(
    registry.MetricInfo(
        name='gbc',
        plan=gbc_plan,
        options=GbcOptions,
        higher_is_better=True,
        citation='Pandy et al., Transferability Estimation using Bhattacharyya Class Separability, '
        'CVPR 2022; google-research/google-research@1d4d2f1aa6f2883a790d2ae46a6ee8ab150d8f31 '
        'stable_transfer/transferability/gbc.py::get_gbc_score',
        summary='GBC = −Σ_{a≠b} Bhattacharyya coefficients of class Gaussians; 1 pass of Moments, '
        '2 with pca_dim (top-k axes, then moments of float32 projections)',
    )
)
