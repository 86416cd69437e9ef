"""ResNet v1.5 in flax.nnx, in torchvision's layout (He et al., 2016, "Deep Residual Learning for
Image Recognition", arXiv:1512.03385; v1.5 = the stride-2 sits on the bottleneck's 3x3 conv, as in
torchvision.models.resnet).

Synopsis:
  >>> from flax import nnx
  >>> import jax.numpy as jnp
  >>> from face_jax.models.resnet import ResNet, resnet_config
  >>> model = ResNet(resnet_config(18), rngs=nnx.Rngs(0))
  >>> model.eval()
  >>> feats = model.features(jnp.zeros((2, 64, 64, 3)), ("layer3", "pool"))
  >>> feats["layer3"].shape, feats["pool"].shape
  ((2, 4, 4, 256), (2, 512))

Layers (names usable as feature taps):
  stem     [B, H/4, W/4, 64]  conv1 -> bn1 -> relu -> 3x3/2 max pool (ImageNet stem);
                             [B, H, W, w0] conv3x3 -> bn -> relu for the CIFAR stem.
  layerK   [B, h, w, C]       output of residual stage K (K = 1..number of stages).
  pool     [B, C]             global average pool of the last stage (input of the classifier).
  logits   [B, num_classes]   classifier output (only when num_classes is set).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from face_jax.models import _layers

# Stage sizes of the torchvision depths.
RESNET_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """Static description of a ResNet.

  Attributes:
    stage_sizes: number of residual blocks per stage.
    block: "basic" (two 3x3 convs, expansion 1) or "bottleneck" (1x1, 3x3, 1x1, expansion 4).
    widths: base width ("planes") of every stage; a stage outputs width * expansion channels.
    stem: "imagenet" (7x7/2 conv + 3x3/2 max pool, torchvision) or "cifar" (3x3/1 conv, no pool).
    stem_width: output channels of the stem conv.
    in_channels: input image channels.
    num_classes: size of the classifier head, or None for no head.
  """

  stage_sizes: tuple[int, ...]
  block: str = "bottleneck"
  widths: tuple[int, ...] = (64, 128, 256, 512)
  stem: str = "imagenet"
  stem_width: int = 64
  in_channels: int = 3
  num_classes: int | None = None

  def __post_init__(self):
    if self.block not in ("basic", "bottleneck"):
      raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
    if self.stem not in ("imagenet", "cifar"):
      raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
    if len(self.stage_sizes) != len(self.widths) or not self.stage_sizes:
      raise ValueError(
          f"stage_sizes {self.stage_sizes} and widths {self.widths} must have the "
          "same non-zero length"
      )
    if any(n < 1 for n in self.stage_sizes) or any(w < 1 for w in self.widths):
      raise ValueError("stage_sizes and widths must be positive")
    if self.num_classes is not None and self.num_classes < 1:
      raise ValueError(f"num_classes must be positive or None, got {self.num_classes}")

  @property
  def expansion(self) -> int:
    return 1 if self.block == "basic" else 4


def resnet_config(
    depth: int, *, num_classes: int | None = None, in_channels: int = 3
) -> ResNetConfig:
  """The torchvision ResNet-`depth` configuration (depth in 18, 34, 50, 101, 152)."""
  if depth not in RESNET_STAGES:
    raise ValueError(f"ResNet depth must be one of {sorted(RESNET_STAGES)}, got {depth}")
  block, stages = RESNET_STAGES[depth]
  return ResNetConfig(
      stage_sizes=stages, block=block, num_classes=num_classes, in_channels=in_channels
  )


def resnet_mini_config(
    depth: int = 20,
    widths: Sequence[int] = (16, 32, 64),
    *,
    num_classes: int | None = None,
    in_channels: int = 3,
) -> ResNetConfig:
  """CIFAR-style ResNet (He et al., 2016, Sec. 4.2): 3x3 stem, basic blocks, depth = 6n + 2.

  With three stages `depth` = 6n + 2 gives n blocks per stage (20 -> 3, 8 -> 1); in general
  depth = 2 * len(widths) * n + 2. Shortcuts that change shape use 1x1 projections (option B).
  """
  widths = tuple(int(w) for w in widths)
  per = 2 * len(widths)
  if depth < per + 2 or (depth - 2) % per:
    raise ValueError(
        f"resnet_mini depth must be {per}n + 2 for {len(widths)} stages "
        f"(e.g. {per + 2}, {2 * per + 2}, {3 * per + 2}), got {depth}"
    )
  n = (depth - 2) // per
  return ResNetConfig(
      stage_sizes=(n,) * len(widths),
      block="basic",
      widths=widths,
      stem="cifar",
      stem_width=widths[0],
      num_classes=num_classes,
      in_channels=in_channels,
  )


class _ResidualBlock(nnx.Module):
  """The shortcut shared by the residual blocks.

  Identity, or (when the stride or the channel count changes) a strided 1x1 conv + BatchNorm
  projection held as `downsample_conv` / `downsample_bn` (torchvision's `downsample.0/1`).
  """

  def _init_shortcut(self, in_ch: int, out_ch: int, stride: int, rngs: nnx.Rngs) -> None:
    if stride != 1 or in_ch != out_ch:
      self.downsample_conv = _layers.conv(in_ch, out_ch, 1, stride, rngs=rngs)
      self.downsample_bn = _layers.batch_norm(out_ch, rngs=rngs)
    else:
      self.downsample_conv = None
      self.downsample_bn = None

  def _add_shortcut(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """relu(y + shortcut(x)) for the block input x and the residual branch's output y."""
    sc = x if self.downsample_conv is None else self.downsample_bn(self.downsample_conv(x))
    return jax.nn.relu(y + sc)


class BasicBlock(_ResidualBlock):
  """Two 3x3 convs with an identity (or 1x1 projection) shortcut; stride on the first conv."""

  def __init__(self, in_ch: int, width: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = _layers.conv(in_ch, width, 3, stride, rngs=rngs)
    self.bn1 = _layers.batch_norm(width, rngs=rngs)
    self.conv2 = _layers.conv(width, width, 3, 1, rngs=rngs)
    self.bn2 = _layers.batch_norm(width, rngs=rngs)
    self._init_shortcut(in_ch, width, stride, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return self._add_shortcut(x, y)


class Bottleneck(_ResidualBlock):
  """1x1 -> 3x3 (stride here: ResNet v1.5) -> 1x1 (x4 channels) with a projection shortcut."""

  def __init__(self, in_ch: int, width: int, stride: int, *, rngs: nnx.Rngs):
    out = width * 4
    self.conv1 = _layers.conv(in_ch, width, 1, 1, rngs=rngs)
    self.bn1 = _layers.batch_norm(width, rngs=rngs)
    self.conv2 = _layers.conv(width, width, 3, stride, rngs=rngs)
    self.bn2 = _layers.batch_norm(width, rngs=rngs)
    self.conv3 = _layers.conv(width, out, 1, 1, rngs=rngs)
    self.bn3 = _layers.batch_norm(out, rngs=rngs)
    self._init_shortcut(in_ch, out, stride, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return self._add_shortcut(x, y)


class ResNet(nnx.Module):
  """ResNet v1.5 feature extractor / classifier on normalised NHWC float images.

  Use `model.train()` for batch statistics (BatchNorm running averages are updated in place) and
  `model.eval()` for the running averages (inference; the default after construction).
  """

  def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs):
    self.config = config
    cfg = config
    if cfg.stem == "imagenet":
      self.conv1 = nnx.Conv(
          cfg.in_channels,
          cfg.stem_width,
          (7, 7),
          strides=(2, 2),
          padding=((3, 3), (3, 3)),
          use_bias=False,
          kernel_init=_layers.kaiming_fan_out,
          rngs=rngs,
      )
    else:
      self.conv1 = _layers.conv(cfg.in_channels, cfg.stem_width, 3, 1, rngs=rngs)
    self.bn1 = _layers.batch_norm(cfg.stem_width, rngs=rngs)
    block_cls = BasicBlock if cfg.block == "basic" else Bottleneck
    in_ch = cfg.stem_width
    stages = []
    for i, (n, w) in enumerate(zip(cfg.stage_sizes, cfg.widths)):
      blocks = []
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(block_cls(in_ch, w, stride, rngs=rngs))
        in_ch = w * cfg.expansion
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.num_features = in_ch
    self.head = _layers.classifier_head(in_ch, cfg.num_classes, rngs=rngs)
    self.layer_names = _layers.tap_names(
        ["stem"] + [f"layer{i + 1}" for i in range(len(cfg.stage_sizes))] + ["pool"],
        cfg.num_classes,
    )
    self.eval()

  def layer_kind(self, name: str) -> str:
    """ "spatial" ([B, h, w, C] maps) for stem/layerK, "vector" ([B, D]) for pool/logits."""
    return "vector" if name in ("pool", "logits") else "spatial"

  def features(self, x: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
    """Runs the network up to the deepest requested layer.

    Args:
      x: [B, H, W, in_channels] float32, already normalised.
      layers: names from `layer_names`.

    Returns:
      {name: array} with the shapes listed in the module docstring.
    """
    layers = _layers.check_layers(layers, self.layer_names)
    want = set(layers)
    last = max(self.layer_names.index(l) for l in layers)
    out = {}
    h = jax.nn.relu(self.bn1(self.conv1(x)))
    if self.config.stem == "imagenet":
      h = _layers.max_pool(h, 3, 2, 1)
    out["stem"] = h
    for i, stage in enumerate(self.stages):
      if last <= i:  # index of layer{i+1} is i + 1
        break
      for block in stage:
        h = block(h)
      out[f"layer{i + 1}"] = h
    if last >= self.layer_names.index("pool"):
      out["pool"] = jnp.mean(h, axis=(1, 2))
      if self.head is not None and "logits" in want:
        out["logits"] = self.head(out["pool"])
    return {l: out[l] for l in layers}

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits [B, num_classes] (or pooled features [B, C] without a head) for x [B, H, W, C]."""
    name = "logits" if self.head is not None else "pool"
    return self.features(x, (name,))[name]
