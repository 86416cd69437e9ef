"""BERT-style text encoder in flax.nnx (Devlin et al., 2019, arXiv:1810.04805), sized by default
for all-MiniLM-L6-v2 (Wang et al., 2020, "MiniLM", arXiv:2002.10957; sentence-transformers,
Reimers & Gurevych, 2019, arXiv:1908.10084).

Post-LN encoder: h = LN(h + Attn(h)); h = LN(h + W2 GELU(W1 h)), exact (erf) GELU, LayerNorm eps
1e-12, learned absolute positions, token-type embeddings. The pooler head of HF BertModel is not
used by sentence-transformers and is not built.

Synopsis:
  >>> from flax import nnx
  >>> import jax.numpy as jnp
  >>> from face_jax.models.bert import BertEncoder, BertConfig
  >>> cfg = BertConfig(vocab_size=100, hidden=32, layers=2, heads=4, intermediate=64,
  ...                  max_positions=16)
  >>> m = BertEncoder(cfg, rngs=nnx.Rngs(0))
  >>> ids = jnp.array([[1, 5, 2, 0]]); mask = jnp.array([[1, 1, 1, 0]])
  >>> {k: v.shape for k, v in m.features(ids, mask, ("layer2", "sentence_embedding")).items()}
  {'layer2': (1, 4, 32), 'sentence_embedding': (1, 32)}

Layers:
  embeddings          [B, L, D]  LN(word + position + token-type embeddings).
  layer1..layerN      [B, L, D]  output of encoder layer k (1-based, = HF hidden_states[k]).
  sentence_embedding  [B, D]     attention-mask mean of layerN, then L2 normalisation
                                 (the sentence-transformers Pooling(mean) + Normalize pipeline).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from face_jax.models import _layers
from face_jax.models.vit import multi_head_attention

# sentence-transformers Pooling divides by clamp(sum(mask), min=1e-9); Normalize is
# torch.nn.functional.normalize(p=2, eps=1e-12), i.e. x / max(||x||, 1e-12).
MEAN_POOL_EPS = 1e-9
L2_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """BERT hyper-parameters (defaults: all-MiniLM-L6-v2's config.json)."""

  vocab_size: int = 30522
  hidden: int = 384
  layers: int = 6
  heads: int = 12
  intermediate: int = 1536
  max_positions: int = 512
  type_vocab_size: int = 2
  ln_eps: float = 1e-12

  def __post_init__(self):
    if self.hidden % self.heads:
      raise ValueError(f"hidden {self.hidden} must be divisible by heads {self.heads}")


MINILM_L6_CONFIG = BertConfig()


def masked_mean(h: jax.Array, mask: jax.Array) -> jax.Array:
  """Attention-mask mean over tokens: sum_t m_t h_t / max(sum_t m_t, 1e-9).

  Args:
    h: [B, L, D] token states.
    mask: [B, L] 0/1 attention mask (any numeric dtype).

  Returns:
    [B, D]. A row with an all-zero mask gives zeros.
  """
  m = mask.astype(h.dtype)[..., None]
  return jnp.sum(h * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), MEAN_POOL_EPS)


def l2_normalize(x: jax.Array) -> jax.Array:
  """x / max(||x||_2, 1e-12) along the last axis (torch.nn.functional.normalize)."""
  n = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(n, L2_NORM_EPS)


class BertLayer(nnx.Module):
  """One post-LN transformer layer (HF BertLayer without dropout)."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    init = _layers.normal_init(0.02)
    d = cfg.hidden
    self.heads = cfg.heads
    self.query = nnx.Linear(d, d, kernel_init=init, rngs=rngs)
    self.key = nnx.Linear(d, d, kernel_init=init, rngs=rngs)
    self.value = nnx.Linear(d, d, kernel_init=init, rngs=rngs)
    self.attn_out = nnx.Linear(d, d, kernel_init=init, rngs=rngs)
    self.attn_ln = nnx.LayerNorm(d, epsilon=cfg.ln_eps, rngs=rngs)
    self.intermediate = nnx.Linear(d, cfg.intermediate, kernel_init=init, rngs=rngs)
    self.output = nnx.Linear(cfg.intermediate, d, kernel_init=init, rngs=rngs)
    self.output_ln = nnx.LayerNorm(d, epsilon=cfg.ln_eps, rngs=rngs)

  def __call__(self, h: jax.Array, bias: jax.Array) -> jax.Array:
    """h: [B, L, D]; bias: [B, 1, 1, L] additive key mask -> [B, L, D]."""
    a = multi_head_attention(self.query(h), self.key(h), self.value(h), self.heads, bias)
    h = self.attn_ln(h + self.attn_out(a))
    return self.output_ln(h + self.output(_layers.gelu(self.intermediate(h))))


class BertEncoder(nnx.Module):
  """BERT encoder returning per-layer token states and the sentence embedding."""

  def __init__(self, config: BertConfig = MINILM_L6_CONFIG, *, rngs: nnx.Rngs):
    self.config = config
    cfg = config
    init = _layers.normal_init(0.02)
    self.word_embeddings = nnx.Embed(cfg.vocab_size, cfg.hidden, embedding_init=init, rngs=rngs)
    self.position_embeddings = nnx.Embed(
        cfg.max_positions, cfg.hidden, embedding_init=init, rngs=rngs
    )
    self.token_type_embeddings = nnx.Embed(
        cfg.type_vocab_size, cfg.hidden, embedding_init=init, rngs=rngs
    )
    self.emb_ln = nnx.LayerNorm(cfg.hidden, epsilon=cfg.ln_eps, rngs=rngs)
    self.layers = nnx.List([BertLayer(cfg, rngs=rngs) for _ in range(cfg.layers)])
    self.num_features = cfg.hidden
    self.layer_names = (
        ("embeddings",)
        + tuple(f"layer{i + 1}" for i in range(cfg.layers))
        + ("sentence_embedding",)
    )

  def layer_kind(self, name: str) -> str:
    """ "tokens" ([B, L, D], masked) for embeddings/layerK, "vector" for sentence_embedding."""
    return "vector" if name == "sentence_embedding" else "tokens"

  def features(
      self,
      input_ids: jax.Array,
      attention_mask: jax.Array,
      layers: Sequence[str],
      token_type_ids: jax.Array | None = None,
  ) -> dict[str, jax.Array]:
    """Runs the encoder up to the deepest requested layer.

    Args:
      input_ids: [B, L] integer token ids (L <= max_positions).
      attention_mask: [B, L] 0/1; padded positions are 0.
      layers: names from `layer_names`.
      token_type_ids: optional [B, L] segment ids (default zeros).

    Returns:
      {name: array}, shapes as in the module docstring.
    """
    layers = _layers.check_layers(layers, self.layer_names)
    b, length = input_ids.shape
    if length > self.config.max_positions:
      raise ValueError(
          f"sequence length {length} exceeds max_positions " f"{self.config.max_positions}"
      )
    last = max(self.layer_names.index(l) for l in layers)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    pos = jnp.arange(length)[None, :]
    h = (
        self.word_embeddings(input_ids)
        + self.position_embeddings(pos)
        + self.token_type_embeddings(token_type_ids)
    )
    h = self.emb_ln(h)
    out = {"embeddings": h}
    # HF BERT's extended mask: (1 - mask) * finfo(float32).min added to the attention logits.
    bias = ((1.0 - attention_mask.astype(jnp.float32)) * jnp.finfo(jnp.float32).min)[
        :, None, None, :
    ]
    for i, layer in enumerate(self.layers):
      if last < i + 1:
        break
      h = layer(h, bias)
      out[f"layer{i + 1}"] = h
    if "sentence_embedding" in layers:
      out["sentence_embedding"] = l2_normalize(masked_mean(h, attention_mask))
    return {l: out[l] for l in layers}

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Sentence embeddings [B, D]."""
    return self.features(input_ids, attention_mask, ("sentence_embedding",))["sentence_embedding"]
