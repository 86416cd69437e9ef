"""`digits`: scikit-learn's 8x8 handwritten digits as a tfds array_record dataset.

>>> import face_jax.data as fd
>>> pipe = fd.get("digits", "test", data_dir="/tmp/tfds", batch_size=64)  # doctest: +SKIP
>>> pipe.num_examples, pipe.element_spec["image"].shape                   # doctest: +SKIP
(355, (64, 8, 8, 1))

Source: `sklearn.datasets.load_digits()` (the UCI "Optical Recognition of
Handwritten Digits" test set, 1797 images of 8x8 pixels with values 0..16,
bundled with scikit-learn, so no download). Pixels are rescaled to uint8 with
`round(v * 255 / 16)`; images keep one channel ([8, 8, 1]).

Splits (deterministic, no RNG; see `common.every_kth_per_class`):

* `test`: within each digit class, in source order, every 5th example
  (class ranks 4, 9, 14, ...): 355 examples, a stratified ~20 % split.
* `train`: the remaining 1442 examples, in source order.
* `all`: tfds's union of every split, i.e. `train` followed by `test` (1797).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from face_jax.data.builders import common

_NAME = "digits"
_HOLDOUT_EVERY = 5


def load_source() -> tuple[np.ndarray, np.ndarray]:
  """The source arrays, in scikit-learn's order.

  Returns:
    images: [1797, 8, 8, 1] uint8, `round(v * 255 / 16)` of the 0..16 values.
    labels: [1797] int64 in 0..9.
  """
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top

  raw = sk_datasets.load_digits()
  images = np.round(np.asarray(raw.images, dtype=np.float64) * (255.0 / 16.0))
  images = np.clip(images, 0, 255).astype(np.uint8)[..., None]
  labels = np.asarray(raw.target, dtype=np.int64)
  return images, labels


def split_indices() -> dict[str, np.ndarray]:
  """Source indices of the `train` and `test` splits (each in source order)."""
  _, labels = load_source()
  test = common.every_kth_per_class(labels, _HOLDOUT_EVERY)
  return {"train": np.flatnonzero(~test), "test": np.flatnonzero(test)}


class Digits(
    common.ShippedBuilderMixin,
    tfds.core.GeneratorBasedBuilder,
    skip_registration=common.already_registered(_NAME),
):
  """scikit-learn's handwritten digits (1797 x [8, 8, 1] uint8, 10 classes)."""

  name = _NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: train/test = 80/20 every-5th-per-class split."}

  def _info(self) -> tfds.core.DatasetInfo:
    return common.make_info(
        self,
        description=(
            "scikit-learn's 8x8 handwritten digits (UCI optdigits test set): "
            "1797 grayscale images, pixel values 0..16 rescaled to uint8 by "
            "round(v*255/16), labels 0..9. test = every 5th example of each "
            "class in source order (355), train = the rest (1442)."
        ),
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
            }
        ),
        homepage="https://archive.ics.uci.edu/dataset/80",
        citation=(
            "Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of "
            "Handwritten Digits. UCI Machine Learning Repository."
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is local.
    images, labels = load_source()
    splits = split_indices()
    common.set_label_counts(
        self, {s: common.count_labels(labels[idx], 10) for s, idx in splits.items()}
    )
    return {s: self._generate_examples(images, labels, idx) for s, idx in splits.items()}

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i])}
