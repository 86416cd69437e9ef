"""ETran components (s_cls, s_en) on the streaming engine: 2 passes (float64: at most 4).

Gholami et al., "ETran: Energy-Based Transferability Estimation", ICCV 2023;
reference mgholamikn/ETran@d4551ed8f41f4ed6eba08b9cc1a78bae178acd19
``metrics.py :: [LDA_Score(X, y), Energy_Score(X, 0.5, 'bot')]``.  In-memory
oracle: ``face_jax.dense.etran_components``.  The published score is
pool-relative: ``face_jax.etran_pool({model: components})`` =
0.15·s_en_n + 0.85·s_cls_n.

Synopsis::

    c = face_jax.score(x, y, metrics=('etran',))['etran']   # EtranComponents
    c.s_cls, c.s_en

Definitions: s_cls = mean_i softmax_c(x_iᵀ μ_c − ½‖μ_c‖² + log π_c)[y_i] (no
log; ETran's committed LDA reduces to this nearest-mean dot-product classifier;
shift-invariant, evaluated on features centred at the global mean);
s_en = mean of the k = int(10·percent)·N // 1000 smallest energies
e_i = logsumexp_j x_ij (5N//1000 at percent = 0.5).

The k smallest energies are a selection, not a sum; they are found exactly by
a radix select on additive histograms (``EnergyHistogram``): every energy is
mapped to its order-preserving unsigned integer key (the float's bits, sign
handled), and each pass counts and sums the energies per value of the next
16 bits of the key among the rows whose higher bits equal the prefix found so
far.  After each pass the bins below the bin holding the k-th smallest value
are taken whole (their exact counts and sums), and the search continues in
that bin only; it stops as soon as every remaining value of that bin is
needed, or when all bits are fixed (then the remaining values are equal).
float32 keys have 32 bits: at most 2 histogram passes; float64 keys 64 bits:
at most 4 (usually 2: a 32-bit prefix rarely holds more than one tail value).
The first histogram shares pass 1 with the class moments, the second pass 2
with s_cls.  Memory: 2·65536 accumulator elements per histogram (x2
compensated), independent of N.  Nothing is approximated: the selected set is
exactly the reference's (ties at the k-th value included, which have equal
values).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from face_jax._src import engine as engine_lib
from face_jax._src import pool as pool_lib
from face_jax._src import registry
from face_jax._src import stats as stats_lib
from face_jax._src.errors import InputError
from face_jax._src.metrics import common
from face_jax._src.metrics import posterior

DIGIT_BITS = 16
NUM_BINS = 1 << DIGIT_BITS


@dataclasses.dataclass(frozen=True)
class EtranOptions:
  """Options of ``etran``.

  Attributes:
    percent: energy tail parameter of the reference's ``Energy_Score``: the
      k = int(10·percent)·N // 1000 lowest energies are averaged (0.5: 0.5 %).
  """

  percent: float = 0.5

  def __post_init__(self):
    try:
      ok = 0.0 < float(self.percent) <= 100.0
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise InputError(f'etran: percent must be a number in (0, 100], got {self.percent!r}')


@dataclasses.dataclass(frozen=True)
class EtranComponents:
  """Raw ETran components of one model's features (pool-relative: see ``etran_pool``).

  Attributes:
    s_cls: mean posterior of the true class of the nearest-mean classifier
      (higher = better).
    s_en: mean of the k lowest energies logsumexp_j x_ij (higher = better).
    k: the number of energies averaged.
    n: number of samples.
  """

  s_cls: float
  s_en: float
  k: int
  n: int

  def components(self) -> dict[str, float]:
    """``{'s_cls', 's_en'}`` (the input of ``etran_pool``)."""
    return {'s_cls': self.s_cls, 's_en': self.s_en}

  def astuple(self) -> tuple[float, float]:
    """(s_cls, s_en), the order of ``face_jax.dense.etran_components``."""
    return (self.s_cls, self.s_en)


# -- the energy histogram -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EnergyHistSpec:
  """Static configuration of ``EnergyHistogram``.

  Attributes:
    num_classes: K (unused by the statistic; the engine's label check needs it).
    dim: D.
    dtype: accumulation dtype; the energies and their keys have this width.
    level: which 16-bit digit of the key is histogrammed (0 = most significant).
  """

  num_classes: int
  dim: int
  dtype: str = 'float32'
  level: int = 0

  @property
  def key_bits(self) -> int:
    return 8 * jnp.dtype(self.dtype).itemsize

  @property
  def levels(self) -> int:
    return self.key_bits // DIGIT_BITS


def _uint(dtype):
  return jnp.uint64 if jnp.dtype(dtype).itemsize == 8 else jnp.uint32


def sortable_key(e: jax.Array) -> jax.Array:
  """Order-preserving unsigned key of floats: key(a) < key(b) iff a < b (no NaN)."""
  ut = _uint(e.dtype)
  bits = jax.lax.bitcast_convert_type(e, ut)
  sign = ut(1) << ut(8 * e.dtype.itemsize - 1)
  return jnp.where((bits & sign) != 0, ~bits, bits | sign)


def key_to_float(key: int, dtype: str) -> float:
  """Inverse of ``sortable_key`` on the host."""
  bits_n = 8 * np.dtype(dtype).itemsize
  sign = 1 << (bits_n - 1)
  bits = (key ^ sign) if key & sign else (~key & ((1 << bits_n) - 1))
  ut = np.uint64 if bits_n == 64 else np.uint32
  return float(np.array([bits], ut).view(np.dtype(dtype))[0])


def energies(x: jax.Array) -> jax.Array:
  """[B] logsumexp_j x_ij (the features used as logits, as ETran's evaluation script)."""
  return jax.nn.logsumexp(x, axis=1)


class EnergyHistogram(stats_lib.Statistic):
  """Counts and sums of the energies per value of one 16-bit digit of their key.

  params: ``prefix`` (unsigned scalar of the key's width): the digits above
  ``spec.level``; only rows whose key starts with it are counted (level 0:
  every row; the prefix is ignored).
  """

  count: jax.Array  # [65536]
  total: jax.Array  # [65536]

  @classmethod
  def empty(cls, spec: EnergyHistSpec) -> 'EnergyHistogram':
    dt = jnp.dtype(spec.dtype)
    return cls(count=jnp.zeros((NUM_BINS,), dt), total=jnp.zeros((NUM_BINS,), dt))

  @classmethod
  def default_params(cls, spec: EnergyHistSpec):
    return {'prefix': np.zeros((), np.uint64 if spec.key_bits == 64 else np.uint32)}

  @classmethod
  def from_batch(cls, spec: EnergyHistSpec, params, batch: stats_lib.Batch) -> 'EnergyHistogram':
    dt = jnp.dtype(spec.dtype)
    ut = _uint(dt)
    x = jnp.where(batch.mask[:, None], batch.features.astype(dt), jnp.zeros((), dt))
    e = energies(x)
    key = sortable_key(e)
    shift = spec.key_bits - DIGIT_BITS * (spec.level + 1)
    digit = ((key >> ut(shift)) & ut(NUM_BINS - 1)).astype(jnp.int32)
    take = batch.mask
    if spec.level > 0:
      take = take & ((key >> ut(shift + DIGIT_BITS)) == params['prefix'].astype(ut))
    w = take.astype(dt)
    count = jax.ops.segment_sum(w, digit, num_segments=NUM_BINS)
    total = jax.ops.segment_sum(jnp.where(take, e, jnp.zeros((), dt)), digit, num_segments=NUM_BINS)
    return cls(count=count, total=total)

  def finalize(self, spec: EnergyHistSpec, params):
    h = jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float64), self)
    return np.rint(h.count).astype(np.int64), h.total


def _hist_request(info, dtype, level, prefix):
  spec = EnergyHistSpec(num_classes=info.num_classes, dim=info.dim, dtype=dtype, level=level)
  ut = np.uint64 if spec.key_bits == 64 else np.uint32
  return engine_lib.Request(EnergyHistogram, spec, {'prefix': np.asarray(prefix, ut)})


@dataclasses.dataclass
class _Select:
  """Host state of the radix select for the sum of the k smallest energies."""

  need: int  # values still to take
  total: float = 0.0  # sum of the values taken
  prefix: int = 0  # key digits fixed so far
  level: int = 0
  done: bool = False
  expect: int | None = None  # rows the next histogram must hold (the boundary bin's count)

  def update(self, counts: np.ndarray, sums: np.ndarray, levels: int, dtype: str):
    if self.expect is not None and int(counts.sum()) != self.expect:
      raise InputError(
          f'etran: the energy histogram of pass {self.level + 1} holds {int(counts.sum())} rows '
          f'where the previous pass put {self.expect}: the stream did not yield the same rows '
          'in every pass'
      )
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, self.need))  # first bin with cum >= need
    below = int(cum[b - 1]) if b > 0 else 0
    self.total += float(sums[:b].sum())
    self.need -= below
    self.prefix = (self.prefix << DIGIT_BITS) | b
    self.level += 1
    m = int(counts[b])
    self.expect = m
    if self.need == m:  # the whole bin is taken
      self.total += float(sums[b])
      self.need = 0
      self.done = True
    elif self.level == levels:  # all bits fixed: equal values
      self.total += self.need * key_to_float(self.prefix, dtype)
      self.need = 0
      self.done = True


def _tail_size(n: int, options: EtranOptions) -> int:
  """k = int(10·percent)·N // 1000, the energy tail's size; InputError when it is 0."""
  k = int(float(options.percent) * 10) * n // 1000
  if k < 1:
    raise InputError(
        f'etran: the energy tail has k = int(10*percent)*N//1000 = {k} samples '
        f'(N={n}, percent={options.percent}); s_en is undefined (the reference '
        'returns nan). ETran needs N >= 200 at percent=0.5.'
    )
  return k


def etran_plan(info: engine_lib.StreamInfo, options: EtranOptions, dtype: str = 'float32'):
  """The ETran pass plan (see the module docstring).  Returns ``EtranComponents``."""
  k_cls = info.num_classes
  if info.label_counts is not None:  # N known before the first pass: fail before it
    _tail_size(int(np.sum(info.label_counts)), options)
  got = yield {
      'moments': common.moments_request(info, dtype, scatter=False),
      'energy': _hist_request(info, dtype, 0, 0),
  }
  fin = got['moments']
  present = common.populated_classes(fin.counts, 'etran')
  counts = fin.counts[present]
  n = int(round(counts.sum()))
  k = _tail_size(n, options)
  levels = EnergyHistSpec(k_cls, info.dim, dtype).levels
  sel = _Select(need=k)
  sel.update(*got['energy'], levels, dtype)

  g = fin.global_mean()
  mu = fin.means[present] - g  # [C, D] centred
  bias = -0.5 * np.sum(mu * mu, axis=1) + np.log(counts / counts.sum())
  spec = posterior.PosteriorSpec(num_classes=k_cls, dim=info.dim, dtype=dtype)
  params = {
      'center': g,
      'coef': common.embed_classes(mu.T, present, 1),
      'bias': common.embed_classes(bias, present, 0),
      'valid': present.astype(np.float64),
  }
  reqs = {'posterior': engine_lib.Request(posterior.LinearPosterior, spec, params)}
  s_cls = None
  while s_cls is None or not sel.done:
    if not sel.done:
      reqs['energy'] = _hist_request(info, dtype, sel.level, sel.prefix)
    got = yield reqs
    if 'posterior' in got:
      s_cls = float(got['posterior'].true_prob.sum() / counts.sum())
    if 'energy' in got:
      sel.update(*got['energy'], levels, dtype)
    reqs = {}
  return EtranComponents(s_cls=s_cls, s_en=sel.total / k, k=k, n=n)


# -- the pool score ------------------------------------------------------------------

# ETran (Gholami et al., ICCV 2023, mgholamikn/ETran): 0.15·s_en_n + 0.85·s_cls_n.
ETRAN_WEIGHTS = {'s_en': 0.15, 's_cls': 0.85}
ETRAN_COMPONENTS = ('s_cls', 's_en')


def etran_pool(components: Mapping[str, Any]) -> dict[str, float]:
  """Published ETran score over a pool of models: 0.15·s_en_n + 0.85·s_cls_n.

  Gholami et al., "ETran: Energy-Based Transferability Estimation", ICCV 2023
  (mgholamikn/ETran@d4551ed8f41f4ed6eba08b9cc1a78bae178acd19): each raw
  component is min–max normalised over the pool (``pool_minmax``).

  Args:
    components: ``{model: c}`` with c an ``EtranComponents``, a mapping with
      keys ``s_cls``, ``s_en``, or a pair ``(s_cls, s_en)`` (the order of
      ``face_jax.dense.etran_components``).

  Returns:
    ``{model: score}``; higher = predicted more transferable.
  """
  return pool_lib.pool_minmax(
      pool_lib.named_components(components, ETRAN_COMPONENTS, 'etran_pool'), ETRAN_WEIGHTS
  )


registry.register(
    registry.MetricInfo(
        name='etran',
        plan=etran_plan,
        options=EtranOptions,
        higher_is_better=True,
        citation='Gholami et al., ETran: Energy-Based Transferability Estimation, ICCV 2023; '
        'mgholamikn/ETran@d4551ed8f41f4ed6eba08b9cc1a78bae178acd19 '
        'metrics.py::LDA_Score, Energy_Score',
        summary='ETran components (s_cls, s_en): nearest-mean classifier posterior and the mean of '
        'the 0.5% lowest energies (exact radix select; 2 passes); the score is '
        'face_jax.etran_pool over a pool of models',
        pool_relative=True,
        pool=etran_pool,
    )
)
