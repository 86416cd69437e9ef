"""Vision Transformer in flax.nnx with torchvision's layout (Dosovitskiy et al., 2021, "An Image is
Worth 16x16 Words", arXiv:2010.11929; torchvision.models.VisionTransformer).

Class token, learned position embedding, pre-LN encoder blocks (LN eps 1e-6), exact-GELU MLP,
final LayerNorm, classifier on the class token.

Synopsis:
  >>> from flax import nnx
  >>> import jax.numpy as jnp
  >>> from face_jax.models.vit import ViT, ViTConfig
  >>> cfg = ViTConfig(image_size=(32, 32), patch_size=4, dim=64, depth=2, heads=4, mlp_dim=128)
  >>> model = ViT(cfg, rngs=nnx.Rngs(0))
  >>> f = model.features(jnp.zeros((2, 32, 32, 3)), ("block1", "pool"))
  >>> f["block1"].shape, f["pool"].shape
  ((2, 65, 64), (2, 64))

Layers:
  embed        [B, 1 + N, D]  patch embedding with class token prepended, plus position embedding.
  block0..     [B, 1 + N, D]  output of encoder block i (0-based, as torchvision's encoder_layer_i).
  norm         [B, 1 + N, D]  final LayerNorm output.
  pool         [B, D]         class token of `norm` (the classifier input).
  logits       [B, num_classes] (only when num_classes is set).
Token index 0 is the class token; tokens 1..N are patches in row-major order (N = gh * gw).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from face_jax.models import _layers

# torchvision's ViT LayerNorm epsilon.
VIT_LN_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Static description of a ViT.

  Attributes:
    image_size: (H, W) model input; both divisible by patch_size.
    patch_size: square patch side.
    dim: token width D.
    depth: number of encoder blocks.
    heads: attention heads (dim % heads == 0).
    mlp_dim: hidden width of the block MLP.
    in_channels: input image channels.
    num_classes: classifier size, or None for no head.
  """

  image_size: tuple[int, int] = (224, 224)
  patch_size: int = 16
  dim: int = 768
  depth: int = 12
  heads: int = 12
  mlp_dim: int = 3072
  in_channels: int = 3
  num_classes: int | None = None

  def __post_init__(self):
    h, w = self.image_size
    if h % self.patch_size or w % self.patch_size:
      raise ValueError(
          f"image_size {self.image_size} must be divisible by patch_size " f"{self.patch_size}"
      )
    if self.dim % self.heads:
      raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
    if self.depth < 1:
      raise ValueError(f"depth must be >= 1, got {self.depth}")
    if self.num_classes is not None and self.num_classes < 1:
      raise ValueError(f"num_classes must be positive or None, got {self.num_classes}")

  @property
  def grid(self) -> tuple[int, int]:
    return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

  @property
  def num_tokens(self) -> int:
    gh, gw = self.grid
    return gh * gw + 1


def multi_head_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, heads: int, bias: jax.Array | None = None
) -> jax.Array:
  """softmax(q k^T / sqrt(d_h) + bias) v over `heads` heads (Vaswani et al., 2017).

  Args:
    q, k, v: [B, T, D].
    heads: number of heads H (D % H == 0).
    bias: optional additive logits bias broadcastable to [B, H, T, T] (e.g. a key mask).

  Returns:
    [B, T, D].
  """
  b, t, d = q.shape
  dh = d // heads
  q = q.reshape(b, t, heads, dh)
  k = k.reshape(b, k.shape[1], heads, dh)
  v = v.reshape(b, v.shape[1], heads, dh)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(dh))
  if bias is not None:
    logits = logits + bias
  w = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, t, d)


class EncoderBlock(nnx.Module):
  """Pre-LN block: x + MHA(LN(x)); then x + MLP(LN(x)), MLP = Linear-GELU-Linear."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
    self.heads = heads
    xavier = _layers.xavier_uniform_init()
    small = _layers.normal_init(1e-6)  # torchvision MLPBlock bias init
    self.ln_1 = nnx.LayerNorm(dim, epsilon=VIT_LN_EPS, rngs=rngs)
    # q, k, v projections fused in one [D, 3D] kernel (torch MultiheadAttention.in_proj order).
    self.qkv = nnx.Linear(dim, 3 * dim, kernel_init=xavier, rngs=rngs)
    self.out_proj = nnx.Linear(dim, dim, kernel_init=_layers.torch_linear_init(), rngs=rngs)
    self.ln_2 = nnx.LayerNorm(dim, epsilon=VIT_LN_EPS, rngs=rngs)
    self.mlp_1 = nnx.Linear(dim, mlp_dim, kernel_init=xavier, bias_init=small, rngs=rngs)
    self.mlp_2 = nnx.Linear(mlp_dim, dim, kernel_init=xavier, bias_init=small, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, T, D] -> [B, T, D]."""
    q, k, v = jnp.split(self.qkv(self.ln_1(x)), 3, axis=-1)
    x = x + self.out_proj(multi_head_attention(q, k, v, self.heads))
    return x + self.mlp_2(_layers.gelu(self.mlp_1(self.ln_2(x))))


class ViT(nnx.Module):
  """Vision Transformer on normalised NHWC float images (see module docstring for layers)."""

  def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
    self.config = config
    cfg = config
    p = cfg.patch_size
    fan_in = cfg.in_channels * p * p
    self.conv_proj = nnx.Conv(
        cfg.in_channels,
        cfg.dim,
        (p, p),
        strides=(p, p),
        padding="VALID",
        kernel_init=_layers.truncated_normal_init((1.0 / fan_in) ** 0.5),
        rngs=rngs,
    )
    self.class_token = nnx.Param(jnp.zeros((1, 1, cfg.dim), jnp.float32))
    self.pos_embedding = nnx.Param(
        _layers.normal_init(0.02)(rngs.params(), (1, cfg.num_tokens, cfg.dim))
    )
    self.blocks = nnx.List(
        [EncoderBlock(cfg.dim, cfg.heads, cfg.mlp_dim, rngs=rngs) for _ in range(cfg.depth)]
    )
    self.ln = nnx.LayerNorm(cfg.dim, epsilon=VIT_LN_EPS, rngs=rngs)
    self.head = _layers.classifier_head(
        cfg.dim, cfg.num_classes, rngs=rngs, kernel_init=nnx.initializers.zeros
    )
    self.layer_names = _layers.tap_names(
        ["embed"] + [f"block{i}" for i in range(cfg.depth)] + ["norm", "pool"], cfg.num_classes
    )
    self.num_features = cfg.dim

  def layer_kind(self, name: str) -> str:
    """ "tokens" ([B, 1 + N, D], index 0 = class token) or "vector" ([B, D])."""
    return "vector" if name in ("pool", "logits") else "tokens"

  def features(self, x: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
    """Runs the encoder up to the deepest requested layer.

    Args:
      x: [B, H, W, in_channels] float32 normalised images, (H, W) == config.image_size.
      layers: names from `layer_names`.

    Returns:
      {name: array}, shapes as in the module docstring.
    """
    layers = _layers.check_layers(layers, self.layer_names)
    if tuple(x.shape[1:3]) != tuple(self.config.image_size):
      raise ValueError(
          f"ViT expects images of size {self.config.image_size}, got " f"{tuple(x.shape[1:3])}"
      )
    last = max(self.layer_names.index(l) for l in layers)
    out = {}
    b = x.shape[0]
    h = self.conv_proj(x)  # [B, gh, gw, D]
    h = h.reshape(b, -1, h.shape[-1])
    cls = jnp.broadcast_to(self.class_token[...], (b, 1, h.shape[-1]))
    h = jnp.concatenate([cls, h], axis=1) + self.pos_embedding[...]
    out["embed"] = h
    for i, block in enumerate(self.blocks):
      if last < i + 1:
        break
      h = block(h)
      out[f"block{i}"] = h
    if last >= self.layer_names.index("norm"):
      h = self.ln(h)
      out["norm"] = h
      out["pool"] = h[:, 0]
      if self.head is not None:
        out["logits"] = self.head(h[:, 0])
    return {l: out[l] for l in layers}

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits [B, num_classes] (or the class-token feature [B, D] without a head)."""
    name = "logits" if self.head is not None else "pool"
    return self.features(x, (name,))[name]
