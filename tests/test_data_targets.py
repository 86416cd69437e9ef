"""face_jax.data.targets: the digits target is bit-identical to the one the zoo was built on."""

import hashlib

import numpy as np
import pytest

from face_jax.data import targets

# sha256 of the raw bytes (np.ascontiguousarray(a).tobytes()) of the images and labels of the
# digits target, computed from benchmarks.zoo.datasets.load_digits_32() and
# benchmarks.zoo.stages.target_splits(stages.Data(None), 'digits') as they were before the
# digits target moved into face_jax.data.targets (scikit-learn 1.x's bundled digits, Pillow's
# bilinear resize).  The zoo's ground truth and committed scores were made on exactly these bytes.
FULL = (
    'bb72a09dcb2ae2a1b0982e3afd2dbfdacb70a8f0ecbc4e358dde826df0556987',
    '3a0e68456f9a3c609b399717dd9ca55bb9153be1bccf72e38e3319cb740c75cd',
)
SPLITS = {
    'train': (
        111,
        '5cf5231039ed45d7e1d437f4b6d1d8b72cf75763c24040875cba9b8922f66107',
        'd640a780239983869cf8c7d9ed875c5ffa4021681635ded05d6402efb1c83cd8',
    ),
    'val': (
        269,
        '158a6d5f7f8297526501d24ede7c482c219aa8d56cd258b50e7376ffd96846de',
        '6c7b561a927456a93cffbd4c43137df1d0f1f78c884a22a21a3722a57b418031',
    ),
    'test': (
        539,
        'ba453865dcf8799d7a1f2a90193f88459fd07f32d11ca0bcb5fd7a22e4883daf',
        '475089f9f81ab84bf1da318d297866c5bc8ff48aaec6e95181588962be2f7880',
    ),
}


def _sha(a):
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_load_digits_32_is_bit_identical():
  ds = targets.load_digits_32()
  assert ds.images.shape == (1797, 32, 32, 1) and ds.images.dtype == np.uint8
  assert ds.labels.dtype == np.int32 and ds.class_names == tuple('0123456789')
  assert (_sha(ds.images), _sha(ds.labels)) == FULL


def test_digits_target_is_bit_identical():
  splits = targets.digits_target()
  assert list(splits) == ['train', 'val', 'test']
  for name, (n, images, labels) in SPLITS.items():
    ds = splits[name]
    assert ds.images.shape == (n, 32, 32, 1) and ds.labels.dtype == np.int32, name
    assert (_sha(ds.images), _sha(ds.labels)) == (images, labels), name
  budget = np.bincount(splits['train'].labels, minlength=10).tolist()
  assert budget == targets.long_tailed_budget(10) and sum(budget) == 111
  assert max(budget) == targets.BUDGET_MAX and min(budget) == targets.BUDGET_MIN


def test_the_benchmark_uses_the_package_copy():
  from benchmarks.zoo import datasets
  from benchmarks.zoo import stages
  from benchmarks.zoo import zoo

  assert datasets.load_digits_32 is targets.load_digits_32
  assert datasets.stratified_split is targets.stratified_split
  assert datasets.Dataset is targets.Dataset
  assert stages.per_class_subset is targets.per_class_subset
  assert zoo.target_budget is targets.long_tailed_budget


def test_split_counts_and_errors():
  assert targets.split_counts(10, None, targets.DIGITS_FRACTIONS) == [6, 1, 3]
  assert targets.split_counts(7, {'a': 3, 'b': 4}, None) == [3, 4]
  with pytest.raises(ValueError, match='7 examples, 8 requested'):
    targets.split_counts(7, {'a': 4, 'b': 4}, None)
  ds = targets.Dataset(
      np.zeros((6, 32, 32, 1), np.uint8), np.array([0, 0, 0, 1, 1, 1], np.int32), ('a', 'b')
  )
  with pytest.raises(ValueError, match='exactly one'):
    targets.stratified_split(ds)
  with pytest.raises(ValueError, match="Class 'a'"):
    targets.stratified_split(ds, {'train': 2, 'test': 2})
  with pytest.raises(ValueError, match="class 'b' has 3 < 4"):
    targets.per_class_subset(ds, [1, 4], seed=0)
