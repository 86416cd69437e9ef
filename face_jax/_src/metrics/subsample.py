"""NLEEP and PARC on a bounded, seeded row subsample collected by the streaming engine.

NLEEP's Gaussian mixture (an iterative EM fit) and PARC's two N×N
dissimilarity matrices cannot be computed from additive statistics.  They are
computed in memory (``nleep_from_rows`` / ``parc_from_rows``, the maths that
``face_jax.dense.nleep`` / ``face_jax.dense.parc`` run after validating their
input) on a subsample of at most ``subsample`` rows that the engine collects
in one pass, so only S×D features are ever held in memory:

1. N is known up front for in-memory arrays (the label counts); for a stream a
   first, cheap pass counts it (``stats.Moments`` without the scatter).
2. If N ≤ ``subsample`` every row is used, in stream order (the result then
   equals ``face_jax.dense`` on the whole data exactly).  Otherwise
   S = ``subsample`` row numbers are drawn uniformly without replacement with
   ``numpy.random.default_rng(subsample_seed).choice(N, S, replace=False)``
   and sorted (stream order is kept: NLEEP's k-means++ initialisation depends
   on row order).
3. ``RowSample`` collects those rows: a batch row whose global row number
   (the ``_index`` extra every face_jax source provides) equals the j-th
   selected number is added into slot j of an [S, D] buffer (an additive
   scatter: each slot receives exactly one row).  Each slot's hit count is
   checked to be exactly 1 (the stream must yield the same rows in every pass).

The value is returned as a ``SubsampleResult`` (value, n_used, n_total, seed)
so the subsample is never silent.  Memory: S·(D + 2) accumulator elements per
device (x2 compensated in float32): 8192 × 2048 floats = 64 MiB for NLEEP's
default S at D = 2048.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from face_jax._src import engine as engine_lib
from face_jax._src import registry
from face_jax._src import stats as stats_lib
from face_jax._src.errors import FaceJaxWarning, InputError
from face_jax._src.metrics import common

PARC_PCA_SEED = 1919  # dbolya/parc: PCA(random_state=1919, iterated_power=1)


@dataclasses.dataclass(frozen=True)
class SubsampleResult:
  """A metric computed on a row subsample (``float(result)`` is the value).

  Attributes:
    value: the metric's value on the subsample.
    n_used: rows used (S = min(subsample, N)).
    n_total: rows in the stream (N).
    seed: the subsample seed (irrelevant, but recorded, when n_used == n_total).
    details: metric-specific notes (e.g. a clipped PCA dimension).
  """

  value: float
  n_used: int
  n_total: int
  seed: int
  details: Any = None

  @property
  def subsampled(self) -> bool:
    """True when fewer rows than the whole stream were used."""
    return self.n_used < self.n_total

  def __float__(self) -> float:
    return float(self.value)


# -- the row-collecting statistic -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RowSampleSpec:
  """Static configuration of ``RowSample``.

  Attributes:
    num_classes: K (the engine's label check).
    dim: D.
    size: S, the number of selected rows.
    dtype: accumulation dtype (the rows are stored exactly in it).
  """

  num_classes: int
  dim: int
  size: int
  dtype: str = 'float32'


class RowSample(stats_lib.Statistic):
  """The selected rows, each added into its own slot.

  params: ``rows`` [S] int32, the selected global row numbers, sorted ascending.
  Needs the ``_index`` extra (global row number, −1 for padding).
  """

  features: jax.Array  # [S, D]
  labels: jax.Array  # [S] (the label as a number; exact below 2^24 in float32)
  hits: jax.Array  # [S] rows added into each slot (must end as 1)

  @classmethod
  def empty(cls, spec: RowSampleSpec) -> 'RowSample':
    dt = jnp.dtype(spec.dtype)
    return cls(
        features=jnp.zeros((spec.size, spec.dim), dt),
        labels=jnp.zeros((spec.size,), dt),
        hits=jnp.zeros((spec.size,), dt),
    )

  @classmethod
  def from_batch(cls, spec: RowSampleSpec, params, batch: stats_lib.Batch) -> 'RowSample':
    if '_index' not in batch.extras:
      raise InputError(
          'a row subsample needs global row numbers (the _index extra that '
          'face_jax sources provide); this featurizer/source does not pass them'
      )
    dt = jnp.dtype(spec.dtype)
    rows = params['rows']
    idx = batch.extras['_index'].astype(rows.dtype)
    pos = jnp.clip(jnp.searchsorted(rows, idx), 0, spec.size - 1)
    hit = batch.mask & (idx >= 0) & (rows[pos] == idx)
    x = jnp.where(hit[:, None], batch.features.astype(dt), jnp.zeros((), dt))
    y = jnp.where(hit, batch.labels.astype(dt), jnp.zeros((), dt))
    h = hit.astype(dt)
    return cls(
        features=jnp.zeros((spec.size, spec.dim), dt).at[pos].add(x),
        labels=jnp.zeros((spec.size,), dt).at[pos].add(y),
        hits=jnp.zeros((spec.size,), dt).at[pos].add(h),
    )

  def finalize(self, spec: RowSampleSpec, params):
    h = jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float64), self)
    hits = np.rint(h.hits).astype(np.int64)
    if not np.all(hits == 1):
      bad = np.flatnonzero(hits != 1)
      raise InputError(
          f'row subsample: {bad.size} selected row(s) were seen {hits[bad[0]]} '
          f'time(s) instead of once (first: row {int(params["rows"][bad[0]])}); the '
          'stream must yield the same rows, numbered the same way, in every pass'
      )
    return h.features, np.rint(h.labels).astype(np.int64)


def select_rows(n_total: int, size: int, seed: int) -> np.ndarray:
  """Sorted row numbers of the subsample: all rows if N ≤ size, else a seeded uniform draw."""
  if n_total <= size:
    return np.arange(n_total, dtype=np.int64)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(n_total, size, replace=False))


def collect_rows(info: engine_lib.StreamInfo, dtype: str, size: int, seed: int):
  """Plan fragment: yields the passes that collect the subsample.

  Returns (X [S, D] float64, y [S] int64 with labels re-indexed to the classes
  present in the subsample, n_total).
  """
  if info.nonfinite == 'skip':
    raise InputError(
        "a row subsample (nleep, parc) numbers the stream's rows, which nonfinite='skip' "
        'would leave with gaps; remove the non-finite rows before scoring these metrics'
    )
  if info.label_counts is not None:
    n_total = int(np.asarray(info.label_counts).sum())
  else:
    fin = (yield {'count': common.moments_request(info, dtype, scatter=False)})['count']
    n_total = int(round(fin.counts.sum()))
  rows = select_rows(n_total, size, seed)
  if n_total >= np.iinfo(np.int32).max:
    raise InputError(f'row subsample: N = {n_total} rows exceed the int32 row numbers')
  spec = RowSampleSpec(num_classes=info.num_classes, dim=info.dim, size=int(rows.size), dtype=dtype)
  x, y = (yield {'rows': engine_lib.Request(RowSample, spec, {'rows': rows.astype(np.int32)})})[
      'rows'
  ]
  return x, y, n_total


def _compact_labels(y: np.ndarray, metric: str) -> np.ndarray:
  """Re-indexes labels to 0..C-1 over the classes present (warning if any is left out)."""
  classes, inv = np.unique(y, return_inverse=True)
  if classes.size < 2:
    raise InputError(
        f'{metric}: the rows used hold {classes.size} class(es); ' 'at least 2 are needed'
    )
  if classes.size != int(y.max()) + 1:
    missing = np.setdiff1d(np.arange(int(y.max()) + 1), classes)
    warnings.warn(
        f'{metric}: {missing.size} class(es) have no sample among the rows used and are '
        f'left out: {missing[:20].tolist()}',
        FaceJaxWarning,
        stacklevel=3,
    )
  return inv.astype(np.int64)


def _check_int(name: str, v, lo: int, metric: str):
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
    raise InputError(f'{metric}: {name} must be an integer >= {lo}, got {v!r}')


# -- the in-memory maths (shared with face_jax.dense) ----------------------------------


def leep_float32_google(pred: np.ndarray, y: np.ndarray, num_classes: int) -> float:
  """google-research ``leep.get_leep_score`` semantics in float32.

  P(t|s) with divide-no-nan (0 where a source component has no mass); a sample
  whose expected prediction is 0 counts as −log C.

  Args:
    pred: [N, S] source "probabilities" (mixture responsibilities).
    y: [N] int labels in 0..C-1.
    num_classes: C.
  """
  pred = pred.astype(np.float32)
  onehot = np.zeros((pred.shape[0], num_classes), np.float32)
  onehot[np.arange(pred.shape[0]), y] = 1.0
  occ = pred.T @ onehot  # [S, T]
  occ_s = occ.sum(axis=1, keepdims=True)
  cond = np.divide(occ, occ_s, out=np.zeros_like(occ), where=occ_s != 0)
  eep = np.sum((pred @ cond) * onehot, axis=1)
  with np.errstate(divide='ignore'):
    vals = np.where(eep > 0, np.log(eep), -np.log(np.float32(num_classes)))
  return float(np.mean(vals, dtype=np.float32))


def nleep_from_rows(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    n_components_factor: int,
    pca_variance: float,
    random_state: int,
) -> float:
  """NLEEP of in-memory rows (the maths of ``face_jax.dense.nleep``, inputs not re-checked).

  F = scikit-learn ``PCA(n_components=pca_variance, svd_solver='full')`` of x,
  cast to float32; a ``GaussianMixture(n_components_factor · C,
  random_state=random_state)`` fitted on F (single-threaded BLAS/OpenMP, as
  the fixtures were produced); its responsibilities replace the source
  probabilities of LEEP (``leep_float32_google``).

  Args:
    x: [N, D] float64 features (finite).
    y: [N] int labels covering 0..C-1.
    num_classes: C >= 2.
    n_components_factor: mixture components per class.
    pca_variance: explained-variance fraction in (0, 1).
    random_state: GaussianMixture seed.

  Raises:
    InputError: too many components for N, or scikit-learn cannot fit the
      mixture (the message names the shapes).
  """
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top
  from sklearn.mixture import GaussianMixture  # pylint: disable=g-import-not-at-top
  from threadpoolctl import threadpool_limits  # pylint: disable=g-import-not-at-top

  k = int(n_components_factor) * num_classes
  if k < 1 or k > x.shape[0]:
    raise InputError(f'nleep: {k} mixture components for N={x.shape[0]} samples is not possible.')
  feats = PCA(n_components=pca_variance, svd_solver='full').fit_transform(x)
  feats = feats.astype(np.float32)
  with threadpool_limits(limits=1):
    try:
      gmm = GaussianMixture(n_components=k, random_state=random_state).fit(feats)
    except ValueError as e:
      raise InputError(
          f'nleep: scikit-learn GaussianMixture with {k} full-covariance '
          f'components on N={feats.shape[0]} float32 samples of dimension '
          f'{feats.shape[1]} failed (the reference fails identically): {e}'
      ) from e
    pred = gmm.predict_proba(feats).astype(np.float32)
  return leep_float32_google(pred, y, num_classes)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  a = a - a.mean()
  b = b - b.mean()
  return float((a @ b) / math.sqrt(float(a @ a) * float(b @ b)))


def parc_from_rows(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    n_dims: int | None,
    pca_solver: str,
    label_rdm: str,
) -> float:
  """PARC of in-memory rows (the maths of ``face_jax.dense.parc``, inputs not re-checked).

  PCA to f = min(n_dims, N) dimensions (``pca_solver`` "randomized": the
  reference's seeded randomized PCA; "full": exact; ``n_dims=None``: none),
  columns standardised, R_f = 1 − Pearson correlation of every pair of rows,
  R_y the label dissimilarity (``label_rdm`` "exact" or "corrcoef"), PARC =
  100 x Spearman correlation of their strict upper triangles.  O(N²) memory.

  Args:
    x: [N, D] float64 features (finite).
    y: [N] int labels covering 0..C-1.
    num_classes: C >= 2.
    n_dims: PCA dimension or None.
    pca_solver: "randomized" or "full".
    label_rdm: "exact" or "corrcoef".

  Raises:
    InputError: the PCA dimension exceeds D.
  """
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top

  n = x.shape[0]
  feats = x
  if n_dims is not None:
    f = min(int(n_dims), n)
    if f < 1 or f > x.shape[1]:
      raise InputError(f'parc: PCA to {f} dimensions needs 1 <= {f} <= D = {x.shape[1]}.')
    if pca_solver == 'randomized':
      pca = PCA(
          n_components=f, svd_solver='randomized', random_state=PARC_PCA_SEED, iterated_power=1
      )
    else:
      pca = PCA(n_components=f, svd_solver='full')
    feats = pca.fit_transform(x).astype(np.float64)
  std = feats.std(axis=0)
  std[std == 0] = 1.0
  feats = (feats - feats.mean(axis=0)) / std
  iu = np.triu_indices(n, 1)
  rdm_f = (1.0 - np.corrcoef(feats))[iu]
  rank_f = scipy.stats.rankdata(rdm_f)
  del rdm_f
  if label_rdm == 'exact':
    # R_y takes two values (0 and C/(C-1)); its average ranks are an increasing
    # affine function of the indicator [y_i != y_j], and Pearson correlation is
    # invariant to that, so the indicator stands in for rank(R_y).
    rank_y = (y[iu[0]] != y[iu[1]]).astype(np.float64)
  else:
    onehot = np.eye(num_classes)[y]
    rank_y = scipy.stats.rankdata((1.0 - np.corrcoef(onehot))[iu])
  return 100.0 * _pearson(rank_f, rank_y)


# -- NLEEP ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NleepOptions:
  """Options of ``nleep`` (Li et al., CVPR 2021; google-research stable_transfer).

  Attributes:
    subsample: most rows the mixture is fitted on (default 8192).
    subsample_seed: seed of the row draw (used only when N > subsample).
    n_components_factor: mixture components per target class (5 as the paper).
    pca_variance: explained-variance fraction the PCA keeps (0.8).
    random_state: GaussianMixture seed (123 as the reference).
  """

  subsample: int = 8192
  subsample_seed: int = 0
  n_components_factor: int = 5
  pca_variance: float = 0.8
  random_state: int = 123

  def __post_init__(self):
    _check_int('subsample', self.subsample, 2, 'nleep')
    _check_int('subsample_seed', self.subsample_seed, 0, 'nleep')
    _check_int('n_components_factor', self.n_components_factor, 1, 'nleep')
    _check_int('random_state', self.random_state, 0, 'nleep')
    if not (isinstance(self.pca_variance, (int, float)) and 0.0 < self.pca_variance < 1.0):
      raise InputError(f'nleep: pca_variance must be in (0, 1), got {self.pca_variance!r}')


def nleep_plan(info: engine_lib.StreamInfo, options: NleepOptions, dtype: str = 'float32'):
  """NLEEP on at most ``options.subsample`` rows (1 pass; 2 if N is not known up front)."""
  x, y, n_total = yield from collect_rows(info, dtype, options.subsample, options.subsample_seed)
  y = _compact_labels(y, 'nleep')
  try:
    value = nleep_from_rows(
        x,
        y,
        int(y.max()) + 1,
        n_components_factor=options.n_components_factor,
        pca_variance=options.pca_variance,
        random_state=options.random_state,
    )
  except ValueError as e:
    raise InputError(f'nleep on {x.shape[0]} of {n_total} rows: {e}') from e
  return SubsampleResult(
      value=float(value), n_used=int(x.shape[0]), n_total=n_total, seed=options.subsample_seed
  )


# -- PARC ----------------------------------------------------------------------------------


PARC_SOLVERS = ('randomized', 'full')
PARC_LABEL_RDMS = ('exact', 'corrcoef')


@dataclasses.dataclass(frozen=True)
class ParcOptions:
  """Options of ``parc`` (Bolya et al., NeurIPS 2021; dbolya/parc).

  Attributes:
    subsample: most rows used (default 3000: two S×S matrices, ~4.5e6 pairs).
    subsample_seed: seed of the row draw (used only when N > subsample).
    n_dims: PCA dimension (32 as the reference).
    pca_dim_policy: when min(S, D) < n_dims: 'clip' (default; warn, use
      min(n_dims, S, D), recorded in ``details``) or 'error' (the reference's
      PCA raises for D < n_dims).
    pca_solver: 'randomized' (the reference: scikit-learn randomized PCA,
      random_state 1919, one power iteration) or 'full' (exact).
    label_rdm: 'exact' (default: exact 0/1 ties of the label dissimilarity) or
      'corrcoef' (the reference's literal 1 − corrcoef(one-hot), whose ties
      depend on BLAS rounding; see ``face_jax.dense.parc``).
  """

  subsample: int = 3000
  subsample_seed: int = 0
  n_dims: int = 32
  pca_dim_policy: str = 'clip'
  pca_solver: str = 'randomized'
  label_rdm: str = 'exact'

  def __post_init__(self):
    _check_int('subsample', self.subsample, 3, 'parc')
    _check_int('subsample_seed', self.subsample_seed, 0, 'parc')
    _check_int('n_dims', self.n_dims, 1, 'parc')
    for name, allowed in (
        ('pca_dim_policy', common.PCA_DIM_POLICIES),
        ('pca_solver', PARC_SOLVERS),
        ('label_rdm', PARC_LABEL_RDMS),
    ):
      if getattr(self, name) not in allowed:
        raise InputError(f'parc: {name} must be one of {allowed}, got {getattr(self, name)!r}')


def parc_plan(info: engine_lib.StreamInfo, options: ParcOptions, dtype: str = 'float32'):
  """PARC on at most ``options.subsample`` rows (1 pass; 2 if N is not known up front)."""
  x, y, n_total = yield from collect_rows(info, dtype, options.subsample, options.subsample_seed)
  y = _compact_labels(y, 'parc')
  dims = common.resolve_pca_dim(
      options.n_dims, x.shape[0], x.shape[1], options.pca_dim_policy, 'parc'
  )
  try:
    value = parc_from_rows(
        x,
        y,
        int(y.max()) + 1,
        n_dims=dims,
        pca_solver=options.pca_solver,
        label_rdm=options.label_rdm,
    )
  except ValueError as e:
    raise InputError(f'parc on {x.shape[0]} of {n_total} rows: {e}') from e
  return SubsampleResult(
      value=float(value),
      n_used=int(x.shape[0]),
      n_total=n_total,
      seed=options.subsample_seed,
      details={'n_dims': dims},
  )


registry.register(
    registry.MetricInfo(
        name='nleep',
        plan=nleep_plan,
        options=NleepOptions,
        higher_is_better=True,
        citation='Li et al., Ranking Neural Checkpoints, CVPR 2021; google-research/google-research@'
        '4963f325fe8bf41c69aeb2717d0ef408f623500e stable_transfer/transferability/nleep.py',
        summary='NLEEP: LEEP with a 5C-component Gaussian mixture on PCA(80% variance) features, '
        'fitted on a seeded row subsample (SubsampleResult)',
    )
)

registry.register(
    registry.MetricInfo(
        name='parc',
        plan=parc_plan,
        options=ParcOptions,
        higher_is_better=True,
        citation='Bolya et al., Scalable Diverse Model Selection for Accessible Transfer Learning, '
        'NeurIPS 2021; dbolya/parc@ddfca43a84d35328897d107d6f86e860b11801ce methods.py::PARC',
        summary='PARC (x100): Spearman correlation of the feature and label dissimilarity matrices '
        'after PCA-32, on a seeded row subsample (SubsampleResult)',
    )
)
