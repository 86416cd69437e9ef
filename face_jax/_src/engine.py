"""The sharded streaming engine: one jit-compiled step, one collective per pass.

Synopsis::

    engine = Engine()                                   # mesh over jax.devices()
    req = Request(Moments, MomentsSpec(num_classes=10, dim=64), Moments.default_params(spec))
    out = engine.run_pass(ArraySource(x, y, batch_size=4096),
                          {'features': {'moments': req}})
    moments = out['features']['moments']                # ClassMoments (host, float64)

How a pass runs:

1. Host batches (per process, fixed ``local_batch_size`` rows, padding rows
   masked) become global ``jax.Array``s sharded ``P('data')`` over a 1-D mesh of
   every device of every process (``jax.make_array_from_process_local_data``).
2. ``step = jax.jit(_step, donate_argnums=0)``: an optional *featurizer* (e.g. a
   Flax forward pass) runs as ordinary jit code, then a ``jax.shard_map`` adds
   each device's ``from_batch`` contribution to that device's own partial state
   (a leading device axis sharded ``P('data')``).  No collective runs per step.
   In float32 the addition is compensated (two-sum: a ``hi`` and a ``lo``
   accumulator), so rounding error does not grow with the number of batches.
3. After the stream, one ``shard_map`` with ``out_specs=P()`` calls
   ``Statistic.psum('data')``; because the mesh spans all hosts this single
   collective is also the cross-host merge.  ``hi + lo`` is formed in float64
   on the host and ``finalize`` undoes the shift.

Bad data is caught on device: every step also returns per-device health
counters (non-finite features, labels out of range, invalid probabilities)
that the host reads a few steps late (so the device queue never stalls) and
turns into an ``InputError`` naming the batch; with ``nonfinite='skip'`` the
rows holding non-finite features are masked out instead, and counted.  The
same counters carry the largest row L1 norm (a bound of every |feature|), from
which the engine refuses features too small for the accumulation dtype's squares; statistics that
overflow it are refused at the end of the pass (see ``Engine``).

Statistics whose params depend on earlier results (exact class means, LEEP's
conditional table, ...) are computed in later passes: see ``run_plans``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import time
from typing import Any, Callable, Hashable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from face_jax._src import stats as stats_lib
from face_jax._src.errors import InputError
from face_jax._src.numerics import PROBS_SUM_ATOL

DATA = 'data'

# Number of times each jitted function was traced, keyed by kind; tests use it
# to assert that a whole stream compiles once.
TRACE_COUNTS: collections.Counter = collections.Counter()

# A ``source_probs`` row is invalid when an entry is negative or non-finite or
# |Σ_z p_z − 1| > PROBS_SUM_ATOL (one constant, in numerics, shared with face_jax.dense).
# Health counters per stream and step (see ``health_counts``): these three are
# errors; then the rows dropped by nonfinite='skip' and the largest finite row
# L1 norm of the unmasked rows (a float32 bit pattern, see ``health_counts``).
HEALTH_FIELDS = (
    'non-finite feature values',
    'labels outside [0, num_classes)',
    'invalid source_probs rows (source_probs must be probabilities: finite, '
    f'>= 0, each row summing to 1 within {PROBS_SUM_ATOL:g})',
)
HEALTH_DROPPED, HEALTH_AMAX = len(HEALTH_FIELDS), len(HEALTH_FIELDS) + 1
NONFINITE_POLICIES = ('raise', 'skip')


def min_feature_scale(dtype) -> float:
  """The smallest feature scale whose statistics ``dtype`` holds: sqrt(tiny) / eps.

  Features are only known to eps(dtype) of their largest magnitude a, so
  centred values of interest are >= eps·a; their squares stay normal numbers
  (full relative precision) when (eps·a)² >= tiny, i.e. a >= sqrt(tiny)/eps:
  about 9.1e-13 in float32 and 6.7e-139 in float64.  Below it the squares
  underflow and the scatters come out zero or wrong, so the engine refuses a
  stream whose largest row L1 norm Σ_j |x_ij| (an upper bound of a, free from
  the health check) is below it (``InputError``) instead of returning a
  different number.  (Features within a factor D above the bound pass.)  The
  engine checks float32 accumulation only: float64's bound is below the float32
  range of the health counter, and float64 features that small are rare.
  """
  fi = np.finfo(np.dtype(dtype))
  return float(np.sqrt(fi.tiny) / fi.eps)


def default_mesh(devices=None) -> Mesh:
  """A 1-D ``('data',)`` mesh over ``devices`` (default: every device of every process)."""
  devs = jax.devices() if devices is None else list(devices)
  return Mesh(np.array(devs), (DATA,))


class _FirstBatchShift:
  """Sentinel param value: the per-class means of the first batch (computed on device)."""

  def __repr__(self):
    return 'FIRST_BATCH_SHIFT'


FIRST_BATCH_SHIFT = _FirstBatchShift()


def _fingerprint(v) -> Hashable:
  if v is FIRST_BATCH_SHIFT:
    return 'first-batch'
  a = np.ascontiguousarray(v)
  return (a.shape, a.dtype.str, hashlib.sha1(a.tobytes()).hexdigest())


@dataclasses.dataclass(frozen=True, eq=False)
class Request:
  """A statistic to accumulate in one pass.

  Attributes:
    stat: the ``Statistic`` subclass.
    spec: its hashable static spec.
    params: dict of host arrays (or ``FIRST_BATCH_SHIFT`` for ``'shift'``).
  """

  stat: type
  spec: Hashable
  params: Mapping[str, Any]

  def key(self) -> Hashable:
    """Identity for de-duplication: equal keys accumulate the same numbers."""
    return (
        self.stat.__module__,
        self.stat.__qualname__,
        self.spec,
        tuple(sorted((k, _fingerprint(v)) for k, v in self.params.items())),
    )


@dataclasses.dataclass(frozen=True)
class StreamInfo:
  """What a plan may know about a stream before its first pass.

  Attributes:
    name: stream name (``'features'`` or a layer name).
    dim: D.
    num_classes: K.
    label_counts: [K] class counts if the source knows them before streaming, else None.
    extras: names of per-sample extra arrays (e.g. ``'source_probs'``) -> trailing shape.
    reiterable: whether more than one pass can be made.
    nonfinite: the engine's ``nonfinite`` policy ('skip': rows may be dropped,
      so ``label_counts`` is None and row numbers have gaps).
  """

  name: str
  dim: int
  num_classes: int
  label_counts: np.ndarray | None = None
  extras: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  reiterable: bool = True
  nonfinite: str = 'raise'


@dataclasses.dataclass(frozen=True)
class PassProgress:
  """Progress report passed to the ``progress`` callback."""

  pass_index: int
  steps: int
  examples: int
  seconds: float
  done: bool

  @property
  def examples_per_second(self) -> float:
    return self.examples / self.seconds if self.seconds > 0 else float('nan')


@dataclasses.dataclass(frozen=True)
class PassCheckpoint:
  """Where a pass stands after ``steps`` steps (``Engine.run_pass``'s ``checkpoint``/``resume``).

  Attributes:
    pass_index: the pass.
    steps: steps made (batches read from this process's source, padding included).
    examples: real rows accumulated by this process.
    params: the pass's host params (first-batch shifts resolved), a tree or its leaves.
    states: the per-device accumulator states (leading device axis; a tree of
      ``jax.Array`` sharded ``P('data')``, or its leaves as arrays).
    dropped: ``{stream: {'rows', 'batches'}}``, the rows ``nonfinite='skip'`` left
      out of this pass so far (this process), or None.
  """

  pass_index: int
  steps: int
  examples: int
  params: Any
  states: Any
  dropped: Any = None


@dataclasses.dataclass(frozen=True)
class PassTotals:
  """A finished pass's merged statistics before finalisation (``Engine.run_pass``'s ``on_totals``).

  Attributes:
    params: the pass's host params, a tree or its leaves.
    totals: the merged ``(hi, lo)`` states (host numpy), a tree or its leaves.
    steps: steps made.
    examples: real rows accumulated by this process.
    dropped: ``{stream: {'rows', 'batches'}}``, the rows ``nonfinite='skip'`` left
      out of the pass (this process), or None.
  """

  params: Any
  totals: Any
  steps: int = 0
  examples: int = 0
  dropped: Any = None


def features_featurizer(aux, raw: Mapping[str, jax.Array]) -> dict[str, stats_lib.Batch]:
  """The featurizer for raw feature arrays: one stream named ``'features'``.

  Args:
    aux: unused (model variables for model featurizers).
    raw: ``features`` [B, D], ``label`` [B], ``_mask`` [B] and per-sample extras.
  """
  del aux
  extras = {k: v for k, v in raw.items() if k not in ('features', 'label', '_mask')}  # incl. _index
  return {'features': stats_lib.Batch(raw['features'], raw['label'], raw['_mask'], extras)}


def finite_rows(batch: stats_lib.Batch) -> tuple[stats_lib.Batch, jax.Array]:
  """(the batch with its rows holding a non-finite feature masked out and zeroed, rows dropped).

  ``nonfinite='skip'``: an exact per-row ``all(isfinite)`` (not the cheap row
  sum of ``health_counts``, whose false alarms would drop good rows); the
  dropped rows' values are zeroed too, so that no statistic multiplies a NaN
  by a zero weight.
  """
  f = batch.features
  ok = jnp.all(jnp.isfinite(f.reshape(f.shape[0], -1)), axis=1)
  dropped = jnp.sum(batch.mask & ~ok, dtype=jnp.int32)
  okf = ok.reshape((-1,) + (1,) * (f.ndim - 1))
  new = stats_lib.Batch(
      jnp.where(okf, f, jnp.zeros((), f.dtype)), batch.labels, batch.mask & ok, batch.extras
  )
  return new, dropped


def health_counts(batch: stats_lib.Batch, num_classes: int) -> jax.Array:
  """[5] int32 health counters of one device's batch (unmasked rows only).

  ``[non-finite feature values, labels out of range, invalid source_probs rows
  (HEALTH_FIELDS), 0 (HEALTH_DROPPED: the step adds the rows nonfinite='skip'
  dropped), the largest finite row L1 norm Σ_j |x_ij| (HEALTH_AMAX), an upper
  bound of every |feature|]``; the last is the bit pattern of a non-negative
  float32 (``np.int32(...).view(np.float32)``), so that int32 order is float
  order.
  """
  m = batch.mask
  f = batch.features.reshape(batch.features.shape[0], -1)
  # Which rows may hold a non-finite value: a row's sum of |x| is NaN or +Inf
  # whenever one of its values is (NaN and Inf propagate through any order of
  # addition), and it is the cheapest per-row flag on XLA:CPU (one vectorised
  # reduction, the abs fused into it; a boolean all(isfinite) per row, or an
  # int32 count per row, is slower: see benchmarks/README.md).  Summed in at
  # least float32 so low-precision rows rarely overflow; a row of finite values
  # whose sum overflows is only a false alarm: the exact count of non-finite
  # values, computed only when some unmasked row is flagged, is then 0.  The same
  # sums, the rows' L1 norms, bound the features' scale for free: every |x| is
  # at most the largest finite one (HEALTH_AMAX).
  acc = jnp.promote_types(f.dtype, jnp.float32)
  row_l1 = jnp.sum(jnp.abs(f), axis=1, dtype=acc)
  finite = jnp.isfinite(row_l1)
  bad_rows = m & ~finite
  amax = jnp.max(jnp.where(m & finite, row_l1, 0.0), initial=0.0).astype(jnp.float32)
  amax_bits = jax.lax.bitcast_convert_type(amax, jnp.int32)
  nonfinite = jax.lax.cond(
      jnp.any(bad_rows),
      lambda: jnp.sum(jnp.where(bad_rows[:, None], ~jnp.isfinite(f), False), dtype=jnp.int32),
      lambda: jnp.sum(bad_rows, dtype=jnp.int32),
  )  # 0 here (and varying like the other branch)
  y = batch.labels
  bad_labels = jnp.sum(m & ((y < 0) | (y >= num_classes)), dtype=jnp.int32)
  bad_probs = jnp.zeros((), jnp.int32)
  if 'source_probs' in batch.extras:
    p = batch.extras['source_probs'].astype(jnp.float32)
    # Two fused sums per row instead of boolean all() reductions (slower on XLA:CPU):
    # the row sum is finite iff every entry is (entries of a valid row are at most 1,
    # so a finite row cannot overflow), and the sum of min(p, 0) is 0 iff no entry is
    # negative (its terms cannot cancel).
    total = jnp.sum(p, axis=-1)
    negative = jnp.sum(jnp.minimum(p, 0.0), axis=-1)
    ok = jnp.isfinite(total) & (negative == 0) & (jnp.abs(total - 1.0) <= PROBS_SUM_ATOL)
    bad_probs = jnp.sum(m & ~ok, dtype=jnp.int32)
  return jnp.stack([nonfinite, bad_labels, bad_probs, jnp.zeros((), jnp.int32), amax_bits])


# A layout is a tuple of (stream, num_classes, tuple of (stat, spec)): the static
# structure of a pass.  States and params are tuples in the same slot order, so
# a pass with other param values (a new shift) reuses the compiled step.
Layout = tuple


@functools.lru_cache(maxsize=None)
def _build_step(featurizer, mesh: Mesh, layout: Layout, compensated: bool, skip_nonfinite: bool):
  """The jitted, donated, sharded accumulation step for one pass layout."""

  def local(states, batches, params):
    new_states, health = {}, []
    for stream, k, reqs in layout:
      b = batches[stream]
      h = health_counts(b, k)
      if skip_nonfinite:
        b, dropped = finite_rows(b)
        h = h.at[0].set(0).at[HEALTH_DROPPED].set(dropped)
      health.append(h)
      new = []
      for slot, (stat, spec) in enumerate(reqs):
        hi, lo = states[stream][slot]  # this device's slot: leaves [1, ...]
        if compensated:
          new.append(stat.accumulate(spec, params[stream][slot], b, hi, lo))
        else:
          contrib = stats_lib.as_slot(stat.from_batch(spec, params[stream][slot], b))
          new.append((hi.merge(contrib), lo))
      new_states[stream] = tuple(new)
    return new_states, jnp.stack(health)[None]

  smap = jax.shard_map(
      local, mesh=mesh, in_specs=(P(DATA), P(DATA), P()), out_specs=(P(DATA), P(DATA))
  )

  def step(states, raw, params, aux):
    TRACE_COUNTS['step'] += 1
    return smap(states, featurizer(aux, raw), params)

  return jax.jit(step, donate_argnums=0)


@functools.lru_cache(maxsize=None)
def _build_init(mesh: Mesh, layout: Layout, compensated: bool):
  """Zero states with a leading device axis, created on device (no host transfer)."""
  n = mesh.devices.size

  def init():
    states = {}
    for stream, _, reqs in layout:
      s = []
      for stat, spec in reqs:
        e = jax.tree.map(lambda a: jnp.zeros((n,) + a.shape, a.dtype), stat.empty(spec))
        s.append((e, jax.tree.map(jnp.zeros_like, e) if compensated else None))
      states[stream] = tuple(s)
    return states

  return jax.jit(init, out_shardings=NamedSharding(mesh, P(DATA)))


@functools.lru_cache(maxsize=None)
def _build_reduce(mesh: Mesh):
  """One collective: psum of every device's partial state (also merges hosts).

  The result keeps the leading slot axis (size 1; ``run_pass`` drops it on the
  host) and the state is donated, so its buffers are freed as the sums are
  formed.  On a one-device mesh ``run_pass`` skips this step: the state is the total.
  """

  def local(states):
    def red(t):
      if isinstance(t, stats_lib.Statistic):
        return t.psum(DATA)
      return t  # ``lo`` placeholder (None) when not compensated

    return jax.tree.map(red, states, is_leaf=lambda t: isinstance(t, stats_lib.Statistic))

  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P(DATA), out_specs=P()), donate_argnums=0)


@functools.lru_cache(maxsize=None)
def _build_shift(featurizer, mesh: Mesh, streams: tuple, skip_nonfinite: bool = False):
  """Per-class means of one batch, replicated: the default accumulation shift.

  A class absent from the batch gets the batch's overall mean; an all-padding
  batch gives zeros.  With ``skip_nonfinite`` the rows that the step drops are
  left out here too.
  """

  def f(raw, aux):
    TRACE_COUNTS['shift'] += 1
    batches = featurizer(aux, raw)
    out = {}
    for stream, k, dtype in streams:
      b = batches[stream]
      if skip_nonfinite:
        b, _ = finite_rows(b)
      dt = jnp.dtype(dtype)
      m = b.mask.astype(dt)
      y = jnp.clip(b.labels.astype(jnp.int32), 0, k - 1)
      x = jnp.where(b.mask[:, None], b.features.astype(dt), jnp.zeros((), dt))
      cnt = jax.ops.segment_sum(m, y, num_segments=k)
      s = jax.ops.segment_sum(x, y, num_segments=k)
      gm = x.sum(0) / jnp.maximum(m.sum(), 1)
      out[stream] = jnp.where(cnt[:, None] > 0, s / jnp.maximum(cnt, 1)[:, None], gm[None])
    return out

  return jax.jit(f, out_shardings=NamedSharding(mesh, P()))


class Engine:
  """Runs passes of sharded statistics over host sources.

  Args:
    mesh: a 1-D mesh with axis ``'data'`` (default: ``default_mesh()``).
    dtype: accumulation dtype, ``'float32'`` (default) or ``'float64'`` (runs
      under ``jax.enable_x64``; CPU/GPU only).
    compensated: two-sum accumulation across batches (default: True for float32).
    progress: optional callback receiving ``PassProgress`` every ``progress_every``
      steps and at the end of each pass (the engine itself never logs).
    check_lag: how many steps late the host reads the health counters.
    nonfinite: 'raise' (default: an ``InputError`` naming the batch and the
      count) or 'skip' (rows holding a non-finite feature are left out of
      every statistic; ``dropped`` reports them after each pass).

  Features whose every row has Σ_j |x_ij| below ``min_feature_scale(dtype)``
  (about 9e-13 in float32), and statistics that overflow the accumulation dtype
  (features near 1e19 in float32), raise ``InputError`` at the end of the
  pass: float32 cannot hold their squares (rescale the features, or
  accumulate float64 features in float64).
  """

  def __init__(
      self,
      mesh: Mesh | None = None,
      *,
      dtype: str = 'float32',
      compensated: bool | None = None,
      progress: Callable[[PassProgress], None] | None = None,
      progress_every: int = 100,
      check_lag: int = 2,
      nonfinite: str = 'raise',
  ):
    self.mesh = mesh if mesh is not None else default_mesh()
    if tuple(self.mesh.axis_names) != (DATA,):
      raise ValueError(f'the mesh must be 1-D with axis name {DATA!r}, got {self.mesh.axis_names}')
    self.dtype = str(np.dtype(dtype))
    if self.dtype not in ('float32', 'float64'):
      raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    self.compensated = (self.dtype == 'float32') if compensated is None else bool(compensated)
    self.progress = progress
    self.progress_every = max(1, int(progress_every))
    self.check_lag = max(0, int(check_lag))
    if nonfinite not in NONFINITE_POLICIES:
      raise InputError(f'nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}')
    self.nonfinite = nonfinite
    # {stream: {'rows': int, 'batches': [(batch label, rows), ...]}} of the last pass.
    self.dropped: dict[str, dict] = {}
    self.passes_run = 0
    self._data_sharding = NamedSharding(self.mesh, P(DATA))
    self._replicated = NamedSharding(self.mesh, P())

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  @property
  def num_local_devices(self) -> int:
    return sum(1 for d in self.mesh.devices.flat if d.process_index == jax.process_index())

  def _x64(self):
    return jax.enable_x64(self.dtype == 'float64')

  # -- host <-> device ------------------------------------------------------

  def to_global(self, raw: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """Per-process host batch (leading dim = local rows) -> global arrays sharded P('data')."""
    out = {}
    for k, v in raw.items():
      v = np.asarray(v)
      gshape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
      out[k] = jax.make_array_from_process_local_data(self._data_sharding, v, gshape)
    return out

  def replicate(self, tree):
    """``tree`` (host or device arrays) placed on every device of the mesh, replicated."""
    return jax.device_put(tree, self._replicated)

  def init_states(self, layout: Layout):
    """Zero accumulator states for ``layout``, created on device, sharded ``P('data')``.

    Each statistic's state is a ``(hi, lo)`` pair (``lo`` is None when not
    compensated) whose leaves carry a leading device axis of the mesh's size.
    """
    return _build_init(self.mesh, layout, self.compensated)()

  def build_step(self, layout: Layout, featurizer=features_featurizer):
    """The jitted accumulation step of one pass layout (compiled once, cached).

    Args:
      layout: ``((stream, num_classes, ((Statistic subclass, spec), ...)), ...)``:
        the static structure of a pass, one entry per stream.
      featurizer: hashable ``f(aux, raw) -> {stream: Batch}`` run inside the jit.

    Returns:
      ``step(states, raw, params, aux) -> (states, health)``: ``states`` from
      ``init_states`` (donated), ``raw`` a global batch from ``to_global``,
      ``params`` ``{stream: (params dict per statistic, ...)}`` placed with
      ``replicate``, ``health`` the per-device bad-data counters.  This is the
      step ``run_pass`` runs; benchmarks time it on device-resident batches.
    """
    return _build_step(featurizer, self.mesh, layout, self.compensated, self.nonfinite == 'skip')

  # -- one pass ---------------------------------------------------------------

  def run_pass(
      self,
      source,
      requests: Mapping[str, Mapping[Hashable, Request]],
      *,
      featurizer=features_featurizer,
      aux=None,
      pass_index: int = 0,
      resume: PassCheckpoint | None = None,
      checkpoint: Callable[[PassCheckpoint], None] | None = None,
      checkpoint_every: int = 0,
      on_totals: Callable[[PassTotals], None] | None = None,
  ):
    """Streams ``source`` once and returns finalised statistics.

    Args:
      source: a face_jax source (``ArraySource``, ``IterableSource``, a pipeline
        source): iterating it yields ``(raw, label)`` with ``raw`` a dict of
        per-process numpy arrays of ``source.local_batch_size`` rows (``_mask``
        marks real rows) and ``label`` naming the batch in error messages.  A
        source with ``iter_from(step)`` starts there when a pass is resumed;
        otherwise the first steps are read and skipped.
      requests: ``{stream: {name: Request}}``.
      featurizer: hashable ``f(aux, raw) -> {stream: Batch}`` run inside the jit.
      aux: pytree passed to the featurizer (e.g. replicated model variables).
      pass_index: for progress reports.
      resume: a ``PassCheckpoint`` of this pass (same requests, same mesh): the
        pass continues from its step with its states and params.
      checkpoint: called with a ``PassCheckpoint`` every ``checkpoint_every``
        steps, after the health counters of every step so far were checked.  Its
        ``states`` are donated to the next step: the callback copies them
        before it returns.
      checkpoint_every: steps between ``checkpoint`` calls (0: never).
      on_totals: called with the pass's ``PassTotals`` (host) once every device
        and process is merged, before finalisation.

    Returns:
      ``{stream: {name: finalised statistic}}`` (host, float64).

    Raises:
      InputError: empty stream, or bad data (naming the batch).
    """
    layout, slot_of, uniq = _pass_layout(requests)
    with self._x64():
      step = self.build_step(layout, featurizer)
      params_host, params_dev = None, None
      steps, examples = 0, 0
      if resume is None:
        states = self.init_states(layout)
      else:
        states = self._restore_states(layout, resume.states)
        params_host = self.params_from_leaves(requests, resume.params)
        params_dev = self.replicate(params_host)
        steps, examples = int(resume.steps), int(resume.examples)
      pending = collections.deque()
      t0 = time.perf_counter()
      # Bad-row counts (a resumed pass starts from its checkpoint's) and the largest
      # |feature| of this run of the pass (a resumed pass: from its checkpoint on).
      amax = np.zeros(len(layout), np.float32)
      dropped = {stream: {'rows': 0, 'batches': []} for stream, _, _ in layout}
      for stream, d in ((resume.dropped or {}) if resume is not None else {}).items():
        dropped[stream] = {'rows': int(d['rows']), 'batches': [tuple(b) for b in d['batches']]}
      for raw, label in _synchronised(_from_step(source, steps)):
        if params_dev is None:
          params_host = self._resolve_params(layout, uniq, raw, featurizer, aux)
          params_dev = self.replicate(params_host)
        states, health = step(states, self.to_global(raw), params_dev, aux)
        pending.append((label, health, raw))  # raw: to name the bad rows (no copy)
        steps += 1
        examples += int(np.count_nonzero(raw['_mask']))
        while len(pending) > self.check_lag:
          self._check(*pending.popleft(), layout, amax, dropped)
        if self.progress and steps % self.progress_every == 0:
          self.progress(PassProgress(pass_index, steps, examples, time.perf_counter() - t0, False))
        if checkpoint is not None and checkpoint_every > 0 and steps % checkpoint_every == 0:
          while pending:
            self._check(*pending.popleft(), layout, amax, dropped)
          checkpoint(
              PassCheckpoint(
                  pass_index, steps, examples, params_host, states, _copy_dropped(dropped)
              )
          )
      while pending:
        self._check(*pending.popleft(), layout, amax, dropped)
      if steps == 0 or params_host is None:
        raise InputError('empty stream: the source yielded no batches')
      self.dropped = {s: d for s, d in dropped.items() if d['rows']}
      self._check_scale(layout, amax)
      # On one device the state is already the total (no collective, no copy).
      reduced = states if self.num_devices == 1 else _build_reduce(self.mesh)(states)
      del states
      host = jax.tree.map(lambda a: np.asarray(a)[0], jax.device_get(reduced))
    self._check_overflow(layout, host, amax)
    self.passes_run += 1
    if self.progress:
      self.progress(PassProgress(pass_index, steps, examples, time.perf_counter() - t0, True))
    if on_totals is not None:
      on_totals(PassTotals(params_host, host, steps, examples, _copy_dropped(self.dropped)))
    return _finalize(slot_of, uniq, host, params_host)

  def finalize_totals(
      self, requests: Mapping[str, Mapping[Hashable, Request]], totals: PassTotals
  ) -> dict:
    """The finalised statistics of a pass made before, from its ``PassTotals`` (no data).

    ``totals.params`` and ``totals.totals`` may be the trees ``run_pass`` gave
    ``on_totals`` or their leaves (``jax.tree.leaves``), e.g. read back from a
    checkpoint; the requests must be the pass's.  Finalisation is the same host
    float64 code as ``run_pass``'s, so the result is bitwise the same.
    """
    layout, slot_of, uniq = _pass_layout(requests)
    params = self.params_from_leaves(requests, totals.params)
    host = totals.totals
    if isinstance(host, (list, tuple)) and not isinstance(host, dict):
      host = jax.tree.unflatten(self._states_treedef(layout), [np.asarray(a) for a in host])
    return _finalize(slot_of, uniq, host, params)

  def params_from_leaves(self, requests, params):
    """A pass's host params tree from its leaves (a tree is returned as it is)."""
    if isinstance(params, dict):
      return params
    layout, _, uniq = _pass_layout(requests)
    skeleton = {
        stream: tuple({name: 0 for name in uniq[(stream, i)].params} for i in range(len(reqs)))
        for stream, _, reqs in layout
    }
    return jax.tree.unflatten(jax.tree.structure(skeleton), [np.asarray(a) for a in params])

  def _states_treedef(self, layout: Layout):
    return jax.tree.structure(jax.eval_shape(_build_init(self.mesh, layout, self.compensated)))

  def _restore_states(self, layout: Layout, states):
    """Device states of ``layout`` from a ``PassCheckpoint``'s states (a tree or its leaves)."""
    leaves = states if isinstance(states, (list, tuple)) else jax.tree.leaves(states)
    shapes = jax.eval_shape(_build_init(self.mesh, layout, self.compensated))
    want = jax.tree.leaves(shapes)
    if len(leaves) != len(want):
      raise InputError(
          f'the checkpointed pass has {len(leaves)} state arrays, this pass {len(want)}'
      )
    out = []
    for a, w in zip(leaves, want):
      if tuple(a.shape) != tuple(w.shape) or np.dtype(a.dtype) != np.dtype(w.dtype):
        raise InputError(
            f'a checkpointed state array is {a.dtype}{tuple(a.shape)}, this pass needs '
            f'{w.dtype}{tuple(w.shape)} (another mesh or other requests)'
        )
      if isinstance(a, jax.Array):  # e.g. restored by orbax with this sharding
        out.append(jax.device_put(a, self._data_sharding))
        continue
      host = np.asarray(a)
      out.append(
          jax.make_array_from_callback(host.shape, self._data_sharding, lambda i, h=host: h[i])
      )
    return jax.tree.unflatten(jax.tree.structure(shapes), out)

  def _resolve_params(self, layout, uniq, raw, featurizer, aux):
    """Host params per stream and slot, cast to the accumulation dtype; FIRST_BATCH_SHIFT resolved."""
    need_shift = tuple(
        (stream, k, self.dtype)
        for stream, k, reqs in layout
        if any(uniq[(stream, i)].params.get('shift') is FIRST_BATCH_SHIFT for i in range(len(reqs)))
    )
    shifts = {}
    if need_shift:
      shifts = jax.device_get(
          _build_shift(featurizer, self.mesh, need_shift, self.nonfinite == 'skip')(
              self.to_global(raw), aux
          )
      )
    dt = np.dtype(self.dtype)
    out = {}
    for stream, _, reqs in layout:
      slots = []
      for i in range(len(reqs)):
        p = {}
        for name, v in uniq[(stream, i)].params.items():
          v = shifts[stream] if v is FIRST_BATCH_SHIFT else np.asarray(v)
          p[name] = v.astype(dt) if np.issubdtype(v.dtype, np.floating) else v
        slots.append(p)
      out[stream] = tuple(slots)
    return out

  def _check(self, label, health, raw, layout, amax, dropped):
    # This process's devices only (on several hosts the rest are not addressable).
    per_dev = np.concatenate([np.asarray(s.data) for s in health.addressable_shards])
    h = per_dev.sum(0)  # [streams, fields]: counts add up over devices
    big = per_dev[..., HEALTH_AMAX].max(0).astype(np.int32).view(np.float32)  # [streams]
    for i, ((stream, _, _), row) in enumerate(zip(layout, h)):
      where = f'{label}' + (f' (stream {stream!r})' if stream != 'features' else '')
      bad = [f'{int(c)} {what}' for c, what in zip(row, HEALTH_FIELDS) if c]
      if bad:
        rows = _bad_rows(raw, row, stream, layout[i][1])
        raise InputError(f'bad input in {where}: ' + ', '.join(bad) + rows)
      if row[HEALTH_DROPPED]:
        dropped[stream]['rows'] += int(row[HEALTH_DROPPED])
        dropped[stream]['batches'].append((label, int(row[HEALTH_DROPPED])))
      amax[i] = max(amax[i], big[i])

  def _check_scale(self, layout, amax):
    """``InputError`` when every feature is too small for the accumulation dtype's squares."""
    # Every process must raise alike, so the bound is that of all processes.
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      amax[:] = np.asarray(multihost_utils.process_allgather(amax)).reshape(-1, len(layout)).max(0)
    if self.dtype != 'float32':
      return  # float64's bound (6.7e-139) is below what the float32 counter can hold
    floor = min_feature_scale(self.dtype)
    for (stream, _, _), a in zip(layout, amax):
      if 0.0 < a < floor:
        raise InputError(
            f'features too small for {self.dtype} statistics'
            + (f' (stream {stream!r})' if stream != 'features' else '')
            + f': every row has Σ|x| <= {float(a):.3g}, below {floor:.2g} '
            f'(engine.min_feature_scale), so their squares underflow {self.dtype}; '
            'rescale the features (most metrics are scale-invariant, see '
            'docs/failure_modes.md)'
            + (
                ', or pass float64 features (accumulated in float64)'
                if self.dtype == 'float32'
                else ''
            )
        )

  def _check_overflow(self, layout, host, amax):
    """``InputError`` when a finalised-to-be statistic holds inf or NaN (finite features overflowed)."""
    for i, (stream, _, reqs) in enumerate(layout):
      for slot, (stat, _) in enumerate(reqs):
        leaves = [np.asarray(x) for x in jax.tree.leaves(host[stream][slot])]
        if all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.inexact)):
          continue
        raise InputError(
            f'{stat.__name__} statistics overflowed {self.dtype}'
            + (f' (stream {stream!r})' if stream != 'features' else '')
            + f': the largest row Σ|x| is {float(amax[i]):.3g}, too large for the squares '
            f'and sums of {self.dtype}; rescale the features (most metrics are '
            'scale-invariant, see docs/failure_modes.md)'
            + (
                ', or pass float64 features (accumulated in float64)'
                if self.dtype == 'float32'
                else ''
            )
        )


def _copy_dropped(dropped: Mapping[str, dict]) -> dict:
  """A copy of a pass's dropped-row report (streams with rows only)."""
  return {
      s: {'rows': int(d['rows']), 'batches': [list(b) for b in d['batches']]}
      for s, d in dropped.items()
      if d['rows']
  }


def _pass_layout(requests):
  """(layout, slot of each (stream, name), unique request of each (stream, slot)).

  Identical requests within a stream share a slot.
  """
  layout, slot_of, uniq = [], {}, {}
  for stream, reqs in requests.items():
    keys = {}
    for name, r in reqs.items():
      slot = keys.setdefault(r.key(), len(keys))
      slot_of[(stream, name)] = slot
      uniq.setdefault((stream, slot), r)
    reqs_s = [uniq[(stream, i)] for i in range(len(keys))]
    layout.append((stream, _num_classes_of(reqs_s), tuple((r.stat, r.spec) for r in reqs_s)))
  return tuple(layout), slot_of, uniq


def _finalize(slot_of, uniq, host, params_host) -> dict:
  out, done = {}, {}
  for (stream, name), slot in slot_of.items():
    if (stream, slot) not in done:
      hi, lo = host[stream][slot]
      r = uniq[(stream, slot)]
      done[(stream, slot)] = r.stat.finalize_compensated(r.spec, params_host[stream][slot], hi, lo)
    out.setdefault(stream, {})[name] = done[(stream, slot)]
  return out


class _FromStep:
  """A source resumed at a step: ``iter_from(step)`` if it has one, else the first steps skipped."""

  def __init__(self, source, start: int):
    self.source, self.start = source, int(start)

  def __getattr__(self, name):
    return getattr(self.source, name)

  def __iter__(self):
    if hasattr(self.source, 'iter_from'):
      return iter(self.source.iter_from(self.start))
    it = iter(self.source)
    for _ in range(self.start):
      if next(it, None) is None:
        break
    return it


def _from_step(source, start: int):
  return source if start == 0 else _FromStep(source, start)


def _bad_rows(raw, counts, stream: str, num_classes: int) -> str:
  """'' or '; rows [...]': the stream rows (``_index``) of the bad data ``counts`` flags.

  Only for raw feature streams, whose host batch holds the features (a model's
  features exist only on device); this runs once, on the error path.
  """
  if stream != 'features' or 'features' not in raw or '_index' not in raw:
    return ''
  m = np.asarray(raw['_mask'], bool)
  f = np.asarray(raw['features'])
  bad = np.zeros(m.shape, bool)
  if counts[0]:
    bad |= ~np.isfinite(f.reshape(f.shape[0], -1)).all(1)
  if counts[1]:
    y = np.asarray(raw['label'])
    bad |= (y < 0) | (y >= num_classes)
  if counts[2] and 'source_probs' in raw:
    pr = np.asarray(raw['source_probs'], np.float32)
    ok = np.isfinite(pr).all(1) & (pr >= 0).all(1) & (np.abs(pr.sum(1) - 1.0) <= PROBS_SUM_ATOL)
    bad |= ~ok
  idx = np.asarray(raw['_index'])[bad & m]
  if not idx.size:
    return ''
  shown = ', '.join(str(int(i)) for i in idx[:10]) + (', ...' if idx.size > 10 else '')
  return f' (stream rows {shown})'


def _num_classes_of(reqs) -> int:
  for r in reqs:
    k = getattr(r.spec, 'num_classes', None)
    if k:
      return int(k)
  raise ValueError('no request in this stream has a num_classes spec')


def _synchronised(source) -> Iterator[tuple[dict, str]]:
  """Yields the source's batches; on several processes pads every process to the same step count.

  A process whose input is exhausted keeps yielding fully masked batches until
  every process is done, so the per-step collectives of a multi-host jit line up
  and no example is dropped.
  """
  it = iter(source)
  if jax.process_count() == 1:
    yield from it
    return
  from jax.experimental import multihost_utils

  while True:
    item = next(it, None)
    done = item is None
    all_done = np.asarray(multihost_utils.process_allgather(np.array(done)))
    if all_done.all():
      return
    if done:
      yield source.padding_batch(), 'padding batch'
    else:
      yield item
