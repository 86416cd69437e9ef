"""Small plain CNNs and an MLP (flax.nnx) for fast tests and the model zoo.

SmallCNN: `len(widths)` blocks; block k = `convs_per_block` x (3x3 conv -> BatchNorm -> ReLU) at
width widths[k-1], with a 2x2/2 max pool in front of every block but the first (a VGG-style
plain net, Simonyan & Zisserman, 2015). Then global average pooling and an optional classifier.

MLP: flatten the normalised image, then Linear -> ReLU per hidden width, then an optional
classifier.

Synopsis:
  >>> from flax import nnx
  >>> import jax.numpy as jnp
  >>> from face_jax.models.cnn import SmallCNN, CNNConfig
  >>> m = SmallCNN(CNNConfig(widths=(8, 16)), rngs=nnx.Rngs(0))
  >>> {k: v.shape for k, v in m.features(jnp.zeros((2, 16, 16, 3)), ("block2", "pool")).items()}
  {'block2': (2, 8, 8, 16), 'pool': (2, 16)}

Layers:
  SmallCNN: block1..blockN [B, h, w, C] (block k at H / 2^(k-1)), pool [B, C], logits.
  MLP:      dense1..denseN [B, width] (after ReLU), logits [B, num_classes].
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from face_jax.models import _layers


@dataclasses.dataclass(frozen=True)
class CNNConfig:
  """SmallCNN configuration: block widths, convs per block, input channels, classifier size."""

  widths: tuple[int, ...] = (32, 64, 128)
  convs_per_block: int = 1
  in_channels: int = 3
  num_classes: int | None = None

  def __post_init__(self):
    if not self.widths or any(w < 1 for w in self.widths):
      raise ValueError(f"widths must be a non-empty tuple of positive ints, got {self.widths}")
    if self.convs_per_block < 1:
      raise ValueError(f"convs_per_block must be >= 1, got {self.convs_per_block}")
    if self.num_classes is not None and self.num_classes < 1:
      raise ValueError(f"num_classes must be positive or None, got {self.num_classes}")


class ConvBNReLU(nnx.Module):

  def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
    self.conv = _layers.conv(in_ch, out_ch, 3, 1, rngs=rngs)
    self.bn = _layers.batch_norm(out_ch, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.conv(x)))


class SmallCNN(nnx.Module):
  """Plain conv net (see module docstring). `train()` / `eval()` switch BatchNorm modes."""

  def __init__(self, config: CNNConfig, *, rngs: nnx.Rngs):
    self.config = config
    in_ch = config.in_channels
    blocks = []
    for w in config.widths:
      convs = []
      for _ in range(config.convs_per_block):
        convs.append(ConvBNReLU(in_ch, w, rngs=rngs))
        in_ch = w
      blocks.append(nnx.List(convs))
    self.blocks = nnx.List(blocks)
    self.num_features = in_ch
    self.head = _layers.classifier_head(in_ch, config.num_classes, rngs=rngs)
    self.layer_names = _layers.tap_names(
        [f"block{i + 1}" for i in range(len(config.widths))] + ["pool"], config.num_classes
    )
    self.eval()

  def layer_kind(self, name: str) -> str:
    return "vector" if name in ("pool", "logits") else "spatial"

  def features(self, x: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
    """x: [B, H, W, in_channels] normalised float32 -> {layer: array} (stops at the deepest)."""
    layers = _layers.check_layers(layers, self.layer_names)
    last = max(self.layer_names.index(l) for l in layers)
    out = {}
    h = x
    for i, block in enumerate(self.blocks):
      if last < i:
        break
      if i > 0:
        h = _layers.max_pool(h, 2, 2)
      for c in block:
        h = c(h)
      out[f"block{i + 1}"] = h
    if last >= self.layer_names.index("pool"):
      out["pool"] = jnp.mean(h, axis=(1, 2))
      if self.head is not None:
        out["logits"] = self.head(out["pool"])
    return {l: out[l] for l in layers}

  def __call__(self, x: jax.Array) -> jax.Array:
    name = "logits" if self.head is not None else "pool"
    return self.features(x, (name,))[name]


@dataclasses.dataclass(frozen=True)
class MLPConfig:
  """MLP configuration: input image (H, W, C), hidden widths, classifier size."""

  image_size: tuple[int, int] = (32, 32)
  in_channels: int = 3
  hidden: tuple[int, ...] = (512, 256)
  num_classes: int | None = None

  def __post_init__(self):
    if not self.hidden or any(w < 1 for w in self.hidden):
      raise ValueError(f"hidden must be a non-empty tuple of positive ints, got {self.hidden}")
    if self.num_classes is not None and self.num_classes < 1:
      raise ValueError(f"num_classes must be positive or None, got {self.num_classes}")


class MLP(nnx.Module):
  """Flatten -> (Linear -> ReLU) x len(hidden) -> optional Linear classifier."""

  def __init__(self, config: MLPConfig, *, rngs: nnx.Rngs):
    self.config = config
    d = config.image_size[0] * config.image_size[1] * config.in_channels
    layers = []
    for w in config.hidden:
      layers.append(nnx.Linear(d, w, kernel_init=_layers.torch_linear_init(), rngs=rngs))
      d = w
    self.dense = nnx.List(layers)
    self.num_features = d
    self.head = _layers.classifier_head(d, config.num_classes, rngs=rngs)
    self.layer_names = _layers.tap_names(
        [f"dense{i + 1}" for i in range(len(config.hidden))], config.num_classes
    )

  def layer_kind(self, name: str) -> str:
    return "vector"

  def features(self, x: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
    """x: [B, H, W, C] normalised float32 (H, W, C as configured) -> {layer: [B, width]}."""
    layers = _layers.check_layers(layers, self.layer_names)
    expect = (*self.config.image_size, self.config.in_channels)
    if tuple(x.shape[1:]) != expect:
      raise ValueError(
          f"MLP expects inputs of shape [B, {expect[0]}, {expect[1]}, {expect[2]}], "
          f"got {list(x.shape)}"
      )
    last = max(self.layer_names.index(l) for l in layers)
    out = {}
    h = x.reshape(x.shape[0], -1)
    for i, lin in enumerate(self.dense):
      if last < i:
        break
      h = jax.nn.relu(lin(h))
      out[f"dense{i + 1}"] = h
    if self.head is not None and "logits" in layers:
      out["logits"] = self.head(h)
    return {l: out[l] for l in layers}

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x, (self.layer_names[-1],))[self.layer_names[-1]]
