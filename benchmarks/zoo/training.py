"""Training the model zoo with optax: pre-training on a source, full fine-tuning on a target.

Everything is a jit-compiled functional step over the parameters of a
``face_jax.models`` feature extractor (flax.nnx module split into its
``nnx.Param`` leaves and the rest, i.e. BatchNorm statistics).  One step
function serves every model of the same architecture (the nnx ``GraphDef`` is a
static argument and equal for equal architectures) and every learning rate
(the learning rate is a traced scalar), so a fine-tuning sweep compiles once per
architecture and target head size.

Optimiser: AdamW (Loshchilov & Hutter, ICLR 2019) built from optax parts,
``scale_by_adam`` (b1 = 0.9, b2 = 0.999, eps = 1e-8) then
``add_decayed_weights(weight_decay)`` then ``-lr_t``, i.e. exactly
``optax.adamw`` with the schedule applied outside the compiled step: a linear
warm-up over ``warmup_steps`` then a cosine decay to 0 (Loshchilov & Hutter,
ICLR 2017).  Weight decay applies to every parameter.

Losses (``LOSSES``), on the logits z [B, K] of the classifier head and integer
labels y [B]:

- ``"ce"``: softmax cross-entropy.
- ``"ls"``: cross-entropy against label-smoothed targets (1 − α)·onehot + α/K,
  α = ``LABEL_SMOOTHING`` = 0.1 (Szegedy et al., CVPR 2016).
- ``"mse"``: squared error to the one-hot target, summed over the K classes and
  averaged over the batch (Hui & Belkin, ICLR 2021, without their rescaling).

Batches: images are shuffled each epoch with ``numpy.random.default_rng(seed)``;
the last partial batch of an epoch is dropped in training (fixed shapes, one
compilation) and padded (then discarded) in evaluation, so evaluation sees every
example exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from face_jax.models import preprocess as pp

LOSSES = ('ce', 'ls', 'mse')
LABEL_SMOOTHING = 0.1
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyper-parameters of one training run.

  Attributes:
    epochs: passes over the training images.
    batch_size: images per step.
    lr: peak learning rate.
    weight_decay: decoupled AdamW weight decay.
    warmup_steps: linear warm-up steps (capped at a tenth of the run).
    loss: one of ``LOSSES``.
    seed: shuffling seed.
  """

  epochs: int
  batch_size: int = 128
  lr: float = 2e-3
  weight_decay: float = 1e-4
  warmup_steps: int = 50
  loss: str = 'ce'
  seed: int = 0

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ValueError(f'loss must be one of {LOSSES}, got {self.loss!r}')
    if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
      raise ValueError(f'bad training config {self}')


def _tx(weight_decay: float) -> optax.GradientTransformation:
  return optax.chain(
      optax.scale_by_adam(b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS),
      optax.add_decayed_weights(weight_decay),
  )


def loss_value(kind: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean loss of a batch: logits [B, K] float32, labels [B] int32 -> scalar."""
  k = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, k, dtype=logits.dtype)
  if kind == 'ce':
    return optax.softmax_cross_entropy(logits, onehot).mean()
  if kind == 'ls':
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(onehot, LABEL_SMOOTHING)).mean()
  if kind == 'mse':
    return jnp.sum((logits - onehot) ** 2, axis=-1).mean()
  raise ValueError(f'unknown loss {kind!r}')


@functools.partial(
    jax.jit,
    static_argnames=('graphdef', 'ipp', 'loss', 'weight_decay'),
    donate_argnames=('params', 'rest', 'opt_state'),
)
def _train_step(params, rest, opt_state, images, labels, lr, *, graphdef, ipp, loss, weight_decay):
  """One AdamW step. images uint8 [B, H, W, C], labels int32 [B], lr float32 scalar.

  Returns (params, rest, opt_state, loss, correct) with correct the number of
  training images classified right (before the update).
  """
  x = pp.preprocess_images(images, ipp)
  model = nnx.merge(graphdef, params, rest)
  model.train()

  def objective(m):
    logits = m(x)
    return loss_value(loss, logits, labels), logits

  grad_fn = nnx.value_and_grad(objective, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
  (value, logits), grads = grad_fn(model)
  _, _, new_rest = nnx.split(model, nnx.Param, ...)  # BatchNorm statistics updated in train mode
  updates, opt_state = _tx(weight_decay).update(grads, opt_state, params)
  params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
  correct = jnp.sum(jnp.argmax(logits, -1) == labels)
  return params, new_rest, opt_state, value, correct


@functools.partial(jax.jit, static_argnames=('graphdef', 'ipp', 'layer'))
def _predict(params, rest, images, *, graphdef, ipp, layer):
  """Eval-mode logits [B, K] and (optionally) the features of ``layer`` [B, D]."""
  model = nnx.merge(graphdef, params, rest)
  model.eval()
  x = pp.preprocess_images(images, ipp)
  names = ('logits',) if layer is None else (layer, 'logits')
  out = model.features(x, names)
  if layer is not None and out[layer].ndim == 4:
    out[layer] = jnp.mean(out[layer], axis=(1, 2))
  elif layer is not None and out[layer].ndim == 3:
    out[layer] = out[layer][:, 0]
  return out


def warmup_cosine(step: int, total: int, warmup: int, peak: float) -> float:
  """Learning rate at ``step`` (0-based) of ``total``: linear warm-up then cosine to 0."""
  warmup = min(warmup, max(total // 10, 1))
  if step < warmup:
    return peak * (step + 1) / warmup
  t = (step - warmup) / max(total - warmup, 1)
  return peak * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


@dataclasses.dataclass
class TrainResult:
  """Outcome of ``train``: final loss/accuracy on the training stream and timings."""

  steps: int
  final_loss: float
  train_accuracy_last_epoch: float
  seconds: float
  history: list


def train(
    extractor,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
  """Trains ``extractor.module`` (with its classifier head) in place.

  Args:
    extractor: a ``face_jax.models.FeatureExtractor`` with a classifier head.
    images: uint8 [N, H, W, C].
    labels: int [N] in [0, head size).
    config: hyper-parameters.
    log: optional per-epoch progress callback.

  Returns:
    A ``TrainResult``.
  """
  if extractor.num_classes is None:
    raise ValueError(f'{extractor.name} has no classifier head to train')
  n = images.shape[0]
  bs = min(config.batch_size, n)
  per_epoch = n // bs
  total = per_epoch * config.epochs
  graphdef, params, rest = nnx.split(extractor.module, nnx.Param, ...)
  params = jax.tree.map(jnp.array, params)  # own copies: the step donates its inputs
  rest = jax.tree.map(jnp.array, rest)
  opt_state = _tx(config.weight_decay).init(params)
  rng = np.random.default_rng(config.seed)
  labels = np.asarray(labels, np.int32)
  step = 0
  t0 = time.perf_counter()
  history = []
  loss = acc = float('nan')
  for epoch in range(config.epochs):
    order = rng.permutation(n)
    losses, correct = [], 0
    for b in range(per_epoch):
      idx = order[b * bs : (b + 1) * bs]
      lr = np.float32(warmup_cosine(step, total, config.warmup_steps, config.lr))
      params, rest, opt_state, lval, c = _train_step(
          params,
          rest,
          opt_state,
          images[idx],
          labels[idx],
          lr,
          graphdef=graphdef,
          ipp=extractor.image_preprocess,
          loss=config.loss,
          weight_decay=config.weight_decay,
      )
      losses.append(lval)
      correct += c
      step += 1
    loss = float(np.mean(jax.device_get(losses)))
    acc = float(jax.device_get(correct)) / (per_epoch * bs)
    history.append(
        {
            'epoch': epoch + 1,
            'loss': loss,
            'train_accuracy': acc,
            'seconds': time.perf_counter() - t0,
        }
    )
    if log:
      log(
          f'epoch {epoch + 1}/{config.epochs}: loss {loss:.4f} train acc {acc:.4f} '
          f'({time.perf_counter() - t0:.1f}s)'
      )
  if not all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(params)):
    raise FloatingPointError(f'{extractor.name}: training diverged (non-finite parameters)')
  nnx.update(extractor.module, params, rest)
  extractor.module.eval()
  return TrainResult(
      steps=step,
      final_loss=loss,
      train_accuracy_last_epoch=acc,
      seconds=time.perf_counter() - t0,
      history=history,
  )


def predict(
    extractor, images: np.ndarray, *, layer: str | None = None, batch_size: int = 256
) -> dict[str, np.ndarray]:
  """Eval-mode logits (and ``layer`` features, pooled like the extractor's default) on the host.

  Returns:
    ``{'logits': float32 [N, K]}`` plus ``{layer: float32 [N, D]}`` when ``layer`` is given.
  """
  graphdef, params, rest = nnx.split(extractor.module, nnx.Param, ...)
  n = images.shape[0]
  bs = min(batch_size, n)
  outs: dict[str, list] = {}
  for lo in range(0, n, bs):
    chunk = images[lo : lo + bs]
    m = chunk.shape[0]
    if m < bs:
      chunk = np.concatenate([chunk, np.zeros((bs - m,) + chunk.shape[1:], chunk.dtype)])
    res = jax.device_get(
        _predict(
            params, rest, chunk, graphdef=graphdef, ipp=extractor.image_preprocess, layer=layer
        )
    )
    for k, v in res.items():
      outs.setdefault(k, []).append(np.asarray(v[:m], np.float32))
  return {k: np.concatenate(v) for k, v in outs.items()}


def accuracy(extractor, images: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy of the classifier head on (images, labels)."""
  logits = predict(extractor, images)['logits']
  return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))
