"""The model zoo: architectures, the model list, pre-training and fine-tuning recipes.

Synopsis::

    from benchmarks.zoo import zoo
    for spec in zoo.ZOO:
      print(spec.name, spec.arch, spec.source, spec.loss)
    ex = zoo.load_pretrained(zoo.spec('cnn_small-glyphs-ce'), weights_dir)   # source head kept
    ft = zoo.for_finetuning(zoo.spec('cnn_small-glyphs-ce'), weights_dir, num_classes=10, seed=0)

The zoo varies the three axes the FaCe paper varies (Ding et al., arXiv
2310.05754, Sec. 5): architecture (``ARCHS``: an MLP, three plain CNNs of
different widths and depths, a CIFAR-style ResNet-8 and a small ViT), source
data (``glyphs``: Latin letters rendered in 22 fonts; ``shapes``: filled
procedural shapes; see ``benchmarks.zoo.datasets``) and pre-training loss
(cross-entropy, label smoothing 0.1, squared error to one-hot; see
``benchmarks.zoo.training``).  Every architecture is trained with
cross-entropy on both sources; the two other losses are trained for two
architectures (one per source), so each loss is compared with cross-entropy
at a fixed architecture and source.

All models take the 32x32 one-channel images of the zoo datasets
(``in_channels=1``) with the small presets' normalisation (x/255 − 0.5)/0.5.
Sizes are kept small for a 2-core CPU: the widest plain CNN has 16/32/64
channels.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from face_jax import models
from face_jax.data import targets

from benchmarks.zoo import training

# name -> (face_jax.models preset, preset options).  Every model gets in_channels=1.
ARCHS: dict[str, tuple[str, Mapping[str, Any]]] = {
    'mlp': ('mlp', {'hidden': (256, 128)}),
    'cnn_tiny': ('cnn_tiny', {'widths': (16, 32), 'convs_per_block': 1}),
    'cnn_small': ('cnn_small', {'widths': (16, 32, 64), 'convs_per_block': 1}),
    'cnn_deep': ('cnn_base', {'widths': (8, 16, 32), 'convs_per_block': 2}),
    'resnet8': ('resnet_mini', {'depth': 8, 'widths': (8, 16, 32)}),
    'vit_mini': ('vit_mini', {'patch_size': 8, 'dim': 64, 'depth': 4, 'heads': 4, 'mlp_dim': 128}),
}

# Peak pre-training learning rate per architecture (AdamW, warm-up + cosine).
PRETRAIN_LR = {
    'mlp': 1e-3,
    'cnn_tiny': 3e-3,
    'cnn_small': 3e-3,
    'cnn_deep': 3e-3,
    'resnet8': 3e-3,
    'vit_mini': 1e-3,
}
PRETRAIN_EPOCHS = 6
PRETRAIN_BATCH = 128
PRETRAIN_WEIGHT_DECAY = 1e-4

# Target tasks: the labelled budget.  Fine-tuning and scoring both use a long-tailed subset of
# the target's train split (face_jax.data.targets.labelled_budget): class k gets
# n_k = round(MAX * (MIN / MAX) ** (r_k / (K - 1))) examples, r_k the rank of class k in a seeded
# permutation (so which classes are rare is random, not the label order), i.e. 20 down to 5 per
# class, imbalance ratio 4; the examples of each class are a seeded random subset.  Validation
# (LR selection) and test (ground truth) are the full splits.  Unequal class counts make FaCe's
# two weightings (balanced / sample) differ, which the ablation needs.
TARGET_TRAIN_MAX = targets.BUDGET_MAX
TARGET_TRAIN_MIN = targets.BUDGET_MIN
TARGET_SUBSET_SEED = targets.BUDGET_SEED
target_budget = targets.long_tailed_budget


# Fine-tuning: every parameter is trained, with a freshly initialised head.
FINETUNE_LRS = (1e-3, 3e-3, 1e-2)
FINETUNE_EPOCHS = 40
FINETUNE_BATCH = 32
FINETUNE_WEIGHT_DECAY = 1e-4
FINETUNE_SEEDS = (0, 1, 2, 3)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One zoo model.

  Attributes:
    arch: key of ``ARCHS``.
    source: source dataset (``benchmarks.zoo.datasets.SOURCES``).
    loss: pre-training loss (``training.LOSSES``).
    seed: initialisation and shuffling seed.
  """

  arch: str
  source: str
  loss: str
  seed: int = 0

  @property
  def name(self) -> str:
    return f'{self.arch}-{self.source}-{self.loss}'

  @property
  def preset(self) -> str:
    return ARCHS[self.arch][0]

  @property
  def options(self) -> dict:
    return {'in_channels': 1, **ARCHS[self.arch][1]}


def _zoo() -> tuple[ModelSpec, ...]:
  specs = [ModelSpec(a, s, 'ce', seed=i) for i, a in enumerate(ARCHS) for s in ('glyphs', 'shapes')]
  specs += [
      ModelSpec('cnn_small', 'glyphs', 'ls', seed=2),
      ModelSpec('cnn_small', 'glyphs', 'mse', seed=2),
      ModelSpec('resnet8', 'shapes', 'ls', seed=4),
      ModelSpec('resnet8', 'shapes', 'mse', seed=4),
  ]
  return tuple(specs)


ZOO: tuple[ModelSpec, ...] = _zoo()


def spec(name: str) -> ModelSpec:
  """The ``ModelSpec`` called ``name``."""
  for s in ZOO:
    if s.name == name:
      return s
  raise KeyError(f'no zoo model {name!r}; models: {[s.name for s in ZOO]}')


def weights_path(weights_dir: str, model: ModelSpec | str) -> str:
  name = model.name if isinstance(model, ModelSpec) else model
  return os.path.join(weights_dir, f'{name}.msgpack')


def new_model(model: ModelSpec, num_classes: int):
  """A randomly initialised extractor with a ``num_classes``-way head (seed = ``model.seed``)."""
  return models.get(model.preset, num_classes=num_classes, seed=model.seed, **model.options)


def load_pretrained(model: ModelSpec, weights_dir: str):
  """The pre-trained extractor with its source classifier head (``logits`` layer)."""
  return models.get(
      model.preset, weights=weights_path(weights_dir, model), seed=model.seed, **model.options
  )


def for_finetuning(model: ModelSpec, weights_dir: str, num_classes: int, seed: int):
  """The pre-trained body with a fresh ``num_classes``-way head (initialised from ``seed``)."""
  params = models.load_params(weights_path(weights_dir, model))
  params.pop('head', None)
  return models.get(
      model.preset, weights=params, num_classes=num_classes, seed=seed, **model.options
  )


def pretrain_config(model: ModelSpec) -> training.TrainConfig:
  return training.TrainConfig(
      epochs=PRETRAIN_EPOCHS,
      batch_size=PRETRAIN_BATCH,
      lr=PRETRAIN_LR[model.arch],
      weight_decay=PRETRAIN_WEIGHT_DECAY,
      loss=model.loss,
      seed=model.seed,
  )


def finetune_config(
    lr: float, epochs: int = FINETUNE_EPOCHS, seed: int = 0
) -> training.TrainConfig:
  return training.TrainConfig(
      epochs=epochs,
      batch_size=FINETUNE_BATCH,
      lr=lr,
      weight_decay=FINETUNE_WEIGHT_DECAY,
      loss='ce',
      seed=seed,
  )
