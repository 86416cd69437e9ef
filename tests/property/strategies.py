"""Hypothesis strategies and helpers shared by the property tests.

Data are drawn as a few hypothesis values (shape, dtype, class sizes, separation,
offset, seed) from which NumPy builds the arrays: the draws stay cheap and shrink
well, and the shapes come from small sets so that the jitted steps compile once
per shape, dtype and batch size and are reused across examples and tests.
"""

import dataclasses

import numpy as np
from hypothesis import strategies as st

import face_jax
from face_jax import engine

# (D, K) pairs and the step size of the score-level properties: a new shape costs
# a compilation (seconds on two CPU cores), a new N none (the last step is padded).
SHAPES = ((6, 3), (9, 5))
BATCH = 64
DTYPES = ('float32', 'float64')


@dataclasses.dataclass(frozen=True)
class Data:
  """One generated labelled feature set.

  Attributes:
    x: [N, D] features in ``dtype``.
    y: [N] int64 labels; every class of ``[0, K)`` has at least ``min_per_class`` rows.
    probs: [N, Cs] source-model probabilities in ``dtype`` (rows sum to 1).
    num_classes: K.
    dtype: 'float32' or 'float64'.
    seed: the NumPy seed the arrays were drawn with (for derived draws).
  """

  x: np.ndarray
  y: np.ndarray
  probs: np.ndarray
  num_classes: int
  dtype: str
  seed: int

  def __repr__(self):
    counts = np.bincount(self.y, minlength=self.num_classes).tolist()
    return f'Data(N={self.y.size}, D={self.x.shape[1]}, counts={counts}, {self.dtype}, seed={self.seed})'

  def _repr_pretty_(self, printer, cycle):
    del cycle
    printer.text(repr(self))

  @property
  def x64(self) -> np.ndarray:
    """[N, D] the features exactly as streamed, in float64 (the oracles' input)."""
    return self.x.astype(np.float64)

  @property
  def p64(self) -> np.ndarray:
    return self.probs.astype(np.float64)


@st.composite
def datasets(
    draw,
    *,
    min_per_class=4,
    max_per_class=40,
    min_n=0,
    max_offset=1e3,
    dtypes=DTYPES,
    shapes=SHAPES,
):
  """Gaussian classes with drawn imbalance, separation, anisotropy and common offset.

  Class c has about ``n_min · r^(c'/(K-1))`` rows (``r`` the imbalance ratio,
  ``c'`` a shuffled class order), so the largest class is up to ``r`` times the
  smallest; ``min_n`` raises ``n_min`` so that ``N >= min_n``.
  """
  d, k = draw(st.sampled_from(shapes))
  dtype = draw(st.sampled_from(dtypes))
  lo = max(min_per_class, -(-min_n // k))
  n_min = draw(st.integers(lo, max(lo, max_per_class)))
  ratio = draw(st.floats(1.0, 6.0))
  sep = draw(st.floats(0.7, 3.0))
  offset = draw(st.floats(-max_offset, max_offset))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  sizes = np.round(n_min * ratio ** (rng.permutation(k) / (k - 1))).astype(int)
  y = np.repeat(np.arange(k), sizes)
  rng.shuffle(y)
  mu = rng.normal(0.0, sep, size=(k, d))
  scales = np.exp(rng.normal(0.0, 0.5, size=d))
  x = mu[y] + rng.normal(size=(y.size, d)) * scales + offset * rng.uniform(0.5, 1.5, size=d)
  probs = rng.dirichlet(np.full(k + 2, 0.5), size=y.size)
  return Data(
      x=x.astype(dtype),
      y=y.astype(np.int64),
      probs=probs.astype(dtype),
      num_classes=k,
      dtype=dtype,
      seed=seed,
  )


def moments_requests(k, d, dtype, weight=None):
  """``{'m': Moments, 'cs': ClassScatter}`` requests, both about the first batch's class means."""
  weight = np.ones(k) if weight is None else np.asarray(weight, np.float64)
  return {
      'm': engine.Request(
          engine.Moments,
          engine.MomentsSpec(num_classes=k, dim=d, dtype=dtype),
          {'shift': engine.FIRST_BATCH_SHIFT, 'weight': weight},
      ),
      'cs': engine.Request(
          engine.ClassScatter,
          engine.ClassScatterSpec(num_classes=k, dim=d, dtype=dtype),
          {'shift': engine.FIRST_BATCH_SHIFT},
      ),
  }


def assert_close(got, want, rtol, err_msg=''):
  """``assert_allclose`` with an absolute floor of ``rtol`` times the largest |want|.

  Entries of a matrix far below its scale (off-diagonal scatter, tiny Bhattacharyya
  overlaps) carry the absolute error of the large ones; a relative test alone would
  ask them for more digits than the arithmetic has.
  """
  want = np.asarray(want, np.float64)
  scale = float(np.max(np.abs(want))) if want.size else 0.0
  np.testing.assert_allclose(
      np.asarray(got, np.float64), want, rtol=rtol, atol=rtol * scale, err_msg=err_msg
  )


# The one-pass and source-probability metrics, scored together in one call (one
# compiled step per shape and dtype, shared by the score-level properties).
ONE_PASS = (
    'face',
    'nc1',
    'vci',
    'logme',
    'hscore',
    'reg_hscore',
    'transrate',
    'gbc',
    'leep',
    'nce',
)
FACE_FIELDS = ('score', 'variance_collapse', 'class_fairness', 'nc1', 'mean_overlap')


def one_pass_scores(data, x=None, y=None, metrics=ONE_PASS):
  """``face_jax.score`` of ``metrics`` on ``data`` (or on other features/labels of its shape)."""
  x = data.x if x is None else x
  y = data.y if y is None else y
  return face_jax.score(x, y, source_probs=data.probs, metrics=metrics, batch_size=BATCH)


def as_float(value) -> float:
  """A metric's value as a float (FaCe: its score)."""
  return float(value.score) if hasattr(value, 'overlap') else float(value)


def assert_face_close(got, want, rtol, atol=0.0):
  """FaCe result ``got`` against ``want`` (a result or an oracle dict), field by field.

  The score S = C + λ·F is compared to ``rtol`` of |C| + |λ·F|: the terms may nearly
  cancel, and S then carries the terms' rounding, not its own.
  """
  field = lambda f: want[f] if isinstance(want, dict) else getattr(want, f)
  for f in FACE_FIELDS[1:]:
    np.testing.assert_allclose(getattr(got, f), field(f), rtol=rtol, atol=atol, err_msg=f)
  terms = abs(field('variance_collapse')) + abs(
      got.options.fairness_weight * field('class_fairness')
  )
  np.testing.assert_allclose(got.score, field('score'), rtol=rtol, atol=atol + rtol * terms)
  overlap = np.asarray(field('overlap'))
  np.testing.assert_allclose(
      got.overlap, overlap, rtol=rtol, atol=max(atol, rtol * float(overlap.max()))
  )
