"""Target tasks as in-memory arrays: the digits target the bundled model zoo is ranked on.

Synopsis::

    from face_jax.data import targets
    splits = targets.digits_target()         # {'train', 'val', 'test'}: targets.Dataset
    images, labels, class_names = splits['train']   # uint8 [111, 32, 32, 1], int32 [111], 10
    # the labelled budget: 20 down to 5 images per class (long-tailed, seeded)

The digits target is scikit-learn's bundled copy of the UCI handwritten digits
(1797 images of 8x8 pixels; nothing is downloaded), resized to 32x32 one-channel
uint8 images (``load_digits_32``), split per class into train / val / test =
55% / 15% / 30% (``stratified_split``, seed 303: 989 / 269 / 539 images), and
the train split is cut down to a long-tailed labelled budget
(``labelled_budget``): class k keeps
``n_k = round(20 * (5 / 20) ** (r_k / (K - 1)))`` images, r_k the rank of
class k in a seeded permutation (so which classes are rare is random, not the
label order), i.e. 20 down to 5 per class, imbalance ratio 4; the images of
each class are a seeded random subset.  Val and test stay the full splits.
These are the data the zoo of ``benchmarks/zoo`` was fine-tuned on (its ground
truth) and that ``scripts/score.py`` scores it on.

Format: ``images`` uint8 [N, 32, 32, 1] (0 = black, 255 = white; digits are
bright ink on a dark background), ``labels`` int32 [N] in [0, K), and
``class_names`` a tuple of K strings.  Every split keeps the source order.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np

IMAGE_SIZE = 32
CHANNELS = 1

# The digits target's split: fractions of each class and the permutation seed.
DIGITS_FRACTIONS = {'train': 0.55, 'val': 0.15, 'test': 0.30}
DIGITS_SEED = 303
DIGITS_CLASSES = tuple(str(i) for i in range(10))

# The labelled budget: a long-tailed subset of a target's train split (see the module docstring).
BUDGET_MAX = 20
BUDGET_MIN = 5
BUDGET_SEED = 0


class Dataset(NamedTuple):
  """One split: unpacks as ``images, labels, class_names``."""

  images: np.ndarray  # [N, 32, 32, 1] uint8
  labels: np.ndarray  # [N] int32 in [0, K)
  class_names: tuple[str, ...]  # [K]


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Rounds to the nearest integer (half to even) and clips to uint8 [0, 255]."""
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def load_digits_32() -> Dataset:
  """scikit-learn's 1797 handwritten digits, resized to 32x32.

  Resize: the 8x8 images (0..16, ink high; themselves 4x4 block counts of
  32x32 bitmaps, UCI optdigits) are scaled to 0..255 and resized to 32x32 with
  Pillow's bilinear filter on float32 ('F' mode) images, then rounded to
  uint8.  The digit fills the frame as in the 8x8 original.  The order is
  scikit-learn's.

  Returns:
    ``Dataset``: images uint8 [1797, 32, 32, 1], labels int32 [1797], classes "0".."9".
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  d = load_digits()
  images = np.empty((d.images.shape[0], IMAGE_SIZE, IMAGE_SIZE, CHANNELS), np.uint8)
  for i, im in enumerate(d.images):
    f = Image.fromarray((im * (255.0 / 16.0)).astype(np.float32), mode='F')
    up = f.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    images[i, :, :, 0] = to_uint8(np.asarray(up))
  return Dataset(images, d.target.astype(np.int32), DIGITS_CLASSES)


def split_counts(
    n: int, per_class: Mapping[str, int] | None, fractions: Mapping[str, float] | None
) -> list[int]:
  """Examples of one class (of ``n``) going to each split, in mapping order.

  Args:
    n: the class size.
    per_class: examples per split (used when given).
    fractions: fractions per split (summing to 1); rounded by largest
      remainder, ties to the earlier split, so each count is within 1 of
      fraction * n.

  Returns:
    [S] counts, one per split.

  Raises:
    ValueError: ``per_class`` asks for more than ``n`` examples or a negative count.
  """
  if per_class is not None:
    counts = [int(c) for c in per_class.values()]
    if min(counts) < 0 or sum(counts) > n:
      raise ValueError(f'{n} examples, {sum(counts)} requested ({dict(per_class)}).')
    return counts
  exact = [f * n for f in fractions.values()]
  counts = [int(math.floor(e)) for e in exact]
  by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
  for i in by_remainder[: n - sum(counts)]:
    counts[i] += 1
  return counts


def stratified_split(
    ds: Dataset,
    per_class: Mapping[str, int] | None = None,
    *,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, Dataset]:
  """Deterministic stratified split.

  Exactly one of ``per_class`` (examples per class in each split) or
  ``fractions`` (of each class; see ``split_counts``) is given.  Within each
  class the examples are permuted with ``default_rng(seed)`` and cut in the
  order of the mapping; each split keeps the dataset's relative order.

  Args:
    ds: dataset to split.
    per_class: e.g. ``{'train': 60, 'val': 20, 'test': 40}``.
    fractions: e.g. ``{'train': 0.55, 'val': 0.15, 'test': 0.30}``.
    seed: permutation seed.

  Returns:
    split name -> ``Dataset``.

  Raises:
    ValueError: a class has too few examples, or bad arguments.
  """
  if (per_class is None) == (fractions is None):
    raise ValueError('Give exactly one of per_class and fractions.')
  names = list((per_class or fractions).keys())
  if fractions is not None and not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-9):
    raise ValueError(f'fractions must sum to 1, got {sum(fractions.values())}.')
  rng = np.random.default_rng(seed)
  chosen: dict[str, list[np.ndarray]] = {s: [] for s in names}
  for k in range(len(ds.class_names)):
    idx = np.flatnonzero(ds.labels == k)
    idx = idx[rng.permutation(idx.size)]
    try:
      counts = split_counts(idx.size, per_class, fractions)
    except ValueError as e:
      raise ValueError(f'Class {ds.class_names[k]!r}: {e}') from None
    start = 0
    for s, c in zip(names, counts):
      chosen[s].append(idx[start : start + c])
      start += c
  out = {}
  for s in names:
    idx = np.sort(np.concatenate(chosen[s]))
    out[s] = Dataset(ds.images[idx], ds.labels[idx], ds.class_names)
  return out


def per_class_subset(ds: Dataset, per_class: int | Sequence[int], seed: int) -> Dataset:
  """A seeded random subset of ``per_class[k]`` examples of every class k (dataset order kept).

  Args:
    ds: the dataset.
    per_class: examples per class, one int for every class or [K] ints.
    seed: the permutation seed.

  Returns:
    The subset, in dataset order.

  Raises:
    ValueError: a class has fewer examples than asked, or ``per_class`` has the wrong length.
  """
  k_all = len(ds.class_names)
  counts = [int(per_class)] * k_all if np.ndim(per_class) == 0 else [int(c) for c in per_class]
  if len(counts) != k_all:
    raise ValueError(f'per_class has {len(counts)} entries for {k_all} classes')
  rng = np.random.default_rng(seed)
  idx = []
  for k in range(k_all):
    members = np.flatnonzero(ds.labels == k)
    if members.size < counts[k]:
      raise ValueError(f'class {ds.class_names[k]!r} has {members.size} < {counts[k]} examples')
    idx.append(rng.permutation(members)[: counts[k]])
  idx = np.sort(np.concatenate(idx))
  return Dataset(ds.images[idx], ds.labels[idx], ds.class_names)


def long_tailed_budget(num_classes: int, seed: int = BUDGET_SEED) -> list[int]:
  """[K] examples per class of the labelled budget, ``BUDGET_MAX`` down to ``BUDGET_MIN``.

  Class k gets ``round(BUDGET_MAX * (BUDGET_MIN / BUDGET_MAX) ** (r_k / (K - 1)))``
  examples, r_k its rank in ``default_rng(seed).permutation(K)``.
  """
  rank = np.random.default_rng(seed).permutation(num_classes)
  ratio = BUDGET_MIN / BUDGET_MAX
  return [int(round(BUDGET_MAX * ratio ** (r / max(num_classes - 1, 1)))) for r in rank]


def labelled_budget(splits: Mapping[str, Dataset], seed: int = BUDGET_SEED) -> dict[str, Dataset]:
  """A target task from its full splits: ``train`` cut to ``long_tailed_budget``, others kept.

  Args:
    splits: ``{'train': ..., 'val': ..., 'test': ...}`` (the full splits).
    seed: the seed of the budget (which classes are rare) and of the subset.

  Returns:
    The same splits with ``train`` replaced by its long-tailed subset.
  """
  train = splits['train']
  budget = long_tailed_budget(len(train.class_names), seed)
  return {**splits, 'train': per_class_subset(train, budget, seed)}


def digits_target() -> dict[str, Dataset]:
  """The digits target: ``train`` = the labelled budget, ``val`` and ``test`` = the full splits.

  Returns:
    ``{'train': 111 images, 'val': 269, 'test': 539}``, each a ``Dataset`` of
    uint8 [N, 32, 32, 1] images and int32 [N] labels in 0..9.
  """
  splits = stratified_split(load_digits_32(), fractions=DIGITS_FRACTIONS, seed=DIGITS_SEED)
  return labelled_budget(splits)
