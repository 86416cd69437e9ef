"""FeatureExtractor: a preset's model + preprocessing behind one pure, jittable feature function.

Synopsis:
  >>> import jax
  >>> import numpy as np
  >>> from face_jax import models
  >>> ex = models.get("cnn_tiny", image_size=16)
  >>> ex.layer_names, ex.default_layer
  (('block1', 'block2', 'pool'), 'pool')
  >>> fn = ex.feature_fn(["block1", "pool"])              # pure: fn(params, batch) -> dict
  >>> batch = ex.host_preprocess(np.zeros((4, 16, 16, 3), np.uint8))
  >>> out = jax.jit(fn)(ex.params, jax.device_put(batch))
  >>> out["block1"].shape, out["pool"].shape
  ((4, 16), (4, 32))
  >>> ex.embed(np.zeros((4, 16, 16, 3), np.uint8))["pool"].shape
  (4, 32)

Pooling (`pooling=`), applied to every requested layer that is not already a vector:
  conv maps [B, h, w, C]:      "avg" (= "mean", default) global average, or "max".
  ViT tokens [B, 1 + N, D]:    "cls" (default) class token, or "mean" (= "avg") over the patch
                               tokens (class token excluded).
  text tokens [B, L, D]:       "mean" (= "avg", default) attention-masked mean (sentence-
                               transformers' mean pooling), or "cls" (token 0).
Dense output (`dense=True`): conv maps as [B, h, w, C]; ViT token layers as the patch grid
[B, gh, gw, D] (class token dropped). Vector and text layers have no spatial map (error).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from face_jax.models import preprocess as pp
from face_jax.models.bert import masked_mean

PyTree = Any
_CONV_POOLS = {"avg": "avg", "mean": "avg", "max": "max"}
_TOKEN_POOLS = {"cls": "cls", "mean": "mean", "avg": "mean"}
# Values for jax.default_matmul_precision (applied to every conv / matmul of the forward pass).
_PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


class FeatureExtractor:
  """A model with its preset's preprocessing and layer taps.

  Attributes:
    name: preset name.
    input_kind: "image" or "text".
    layer_names: every tappable layer, in forward order.
    default_layer: the penultimate representation (input of the final classifier); for
      all-MiniLM-L6-v2 "sentence_embedding".
    dense_layer_names: layers that `dense=True` can return as spatial maps.
    module: the underlying nnx.Module (train it with optax/nnx.Optimizer; `module.train()` /
      `module.eval()` switch BatchNorm between batch and running statistics; feature functions
      always run it in eval mode).
    image_preprocess: ImagePreprocess of an image preset (None for text).
    precision: None (JAX's default matmul/conv precision: full float32 on CPU, possibly
      TF32/bf16 passes on GPU/TPU) or a `jax.default_matmul_precision` value such as "highest"
      under which the forward pass is traced.
    max_length: fixed token length of a text preset (None for images).
    num_classes: classifier size, or None when the model has no head.
  """

  def __init__(
      self,
      *,
      name: str,
      module: nnx.Module,
      input_kind: str,
      default_layer: str,
      image_preprocess: pp.ImagePreprocess | None = None,
      tokenizer: pp.TextTokenizer | None = None,
      default_pooling: str | None = None,
      precision: str | None = None,
  ):
    if input_kind not in ("image", "text"):
      raise ValueError(f"input_kind must be 'image' or 'text', got {input_kind!r}")
    if (input_kind == "image") != (image_preprocess is not None):
      raise ValueError("image presets need image_preprocess (and text presets must not have one)")
    if (input_kind == "text") != (tokenizer is not None):
      raise ValueError("text presets need a tokenizer")
    self.name = name
    self.module = module
    self.input_kind = input_kind
    self.layer_names: tuple[str, ...] = tuple(module.layer_names)
    if default_layer not in self.layer_names:
      raise ValueError(f"default_layer {default_layer!r} not in {self.layer_names}")
    self.default_layer = default_layer
    self.image_preprocess = image_preprocess
    self.tokenizer = tokenizer
    self.max_length = tokenizer.max_length if tokenizer is not None else None
    self._default_pooling = default_pooling
    if precision is not None and precision not in _PRECISIONS:
      raise ValueError(f"precision must be None or one of {_PRECISIONS}, got {precision!r}")
    self.precision = precision
    head = getattr(module, "head", None)
    self.num_classes = None if head is None else int(head.out_features)
    self.dense_layer_names = tuple(
        l
        for l in self.layer_names
        if module.layer_kind(l) == "spatial"
        or (module.layer_kind(l) == "tokens" and input_kind == "image")
    )
    self._jit_cache: dict = {}
    self._dims: dict = {}

  def __repr__(self):
    return (
        f"FeatureExtractor(name={self.name!r}, input_kind={self.input_kind!r}, "
        f"default_layer={self.default_layer!r}, layers={len(self.layer_names)})"
    )

  # ------------------------------------------------------------------------------------------
  @property
  def params(self) -> dict:
    """Current model variables (params and BatchNorm statistics) as a nested dict of arrays.

    Read from `module` on every access, so it follows training of the module.
    """
    return nnx.to_pure_dict(nnx.state(self.module))

  def _layers_arg(self, layers, dense: bool) -> tuple[str, ...]:
    if layers is None:
      if dense:
        if not self.dense_layer_names:
          raise ValueError(f"{self.name} has no layer with a spatial map (dense=True)")
        return (self.dense_layer_names[-1],)
      return (self.default_layer,)
    if isinstance(layers, str):
      layers = (layers,)
    layers = tuple(layers)
    if not layers:
      raise ValueError("layers must name at least one layer")
    unknown = [l for l in layers if l not in self.layer_names]
    if unknown:
      raise ValueError(
          f"unknown layer(s) {unknown} for {self.name}; valid: " f"{list(self.layer_names)}"
      )
    if len(set(layers)) != len(layers):
      raise ValueError(f"duplicate layer names in {layers}")
    if dense:
      bad = [l for l in layers if l not in self.dense_layer_names]
      if bad:
        raise ValueError(
            f"layer(s) {bad} of {self.name} have no spatial map for dense=True; "
            f"dense layers: {list(self.dense_layer_names)}"
        )
    return layers

  def _pool(
      self, kind: str, h: jax.Array, pooling: str | None, mask: jax.Array | None
  ) -> jax.Array:
    """Pools one raw layer output of the given kind to [B, D] (pure)."""
    if kind == "vector":
      return h
    if kind == "spatial":
      mode = _CONV_POOLS[pooling or "avg"]
      return jnp.mean(h, axis=(1, 2)) if mode == "avg" else jnp.max(h, axis=(1, 2))
    mode = _TOKEN_POOLS[pooling or self._default_pooling or "cls"]
    if mode == "cls":
      return h[:, 0]
    if mask is not None:  # text: attention-masked mean over all tokens
      return masked_mean(h, mask)
    return jnp.mean(h[:, 1:], axis=1)  # ViT: mean over the patch tokens

  def _check_pooling(self, layers: tuple[str, ...], pooling: str | None) -> None:
    if pooling is None:
      return
    for l in layers:
      kind = self.module.layer_kind(l)
      allowed = {
          "spatial": _CONV_POOLS,
          "tokens": _TOKEN_POOLS,
          "vector": {**_CONV_POOLS, **_TOKEN_POOLS},
      }[kind]
      if pooling not in allowed:
        raise ValueError(
            f"pooling {pooling!r} is not valid for {kind} layer {l!r} of "
            f"{self.name}; choose from {sorted(allowed)}"
        )

  def feature_fn(
      self,
      layers: str | Sequence[str] | None = None,
      *,
      pooling: str | None = None,
      dense: bool = False,
  ) -> Callable[[PyTree, Mapping[str, jax.Array]], dict[str, jax.Array]]:
    """A pure, jittable function (params, batch) -> {layer: features}.

    Args:
      layers: a layer name or names (one forward pass serves all); None -> `default_layer`
        (with dense=True: the last layer in `dense_layer_names`).
      pooling: see the module docstring; None -> the layer kind's default.
      dense: return spatial maps instead of pooled vectors.

    Returns:
      fn(params, batch) with params = `self.params` (any pytree of arrays of the same structure)
      and batch = `host_preprocess(...)` output (arrays, possibly sharded):
        images: {"image": uint8 [B, H, W, C]}, C in {1, 3}, any H, W (resized on device);
        text:   {"input_ids": int [B, L], "attention_mask": int [B, L]} (optional
                "token_type_ids").
      It returns {layer: float32 [B, D]}, or with dense=True {layer: [B, h, w, C]}.

    Raises:
      ValueError: unknown layers, pooling not valid for them, dense on non-spatial layers.
    """
    layers = self._layers_arg(layers, dense)
    if dense and pooling is not None:
      raise ValueError("pooling does not apply with dense=True")
    self._check_pooling(layers, pooling)
    graphdef = nnx.graphdef(self.module)
    module_layers = tuple(dict.fromkeys(layers))
    kind = self.input_kind
    ipp = self.image_preprocess
    vit_grid = getattr(getattr(self.module, "config", None), "grid", None)
    precision = self.precision
    kinds = {l: self.module.layer_kind(l) for l in layers}
    pool = self._pool

    def fn(params: PyTree, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
      model = nnx.merge(graphdef, params)
      model.eval()
      mask = None
      if kind == "image":
        if "image" not in batch:
          raise KeyError(f"image batch needs key 'image', got keys {sorted(batch)}")
      else:
        missing = {"input_ids", "attention_mask"} - set(batch)
        if missing:
          raise KeyError(f"text batch lacks keys {sorted(missing)}")
        mask = batch["attention_mask"]
      # Only override the caller's precision setting when the preset asks for one.
      ctx = (
          contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)
      )
      with ctx:
        if kind == "image":
          x = pp.preprocess_images(batch["image"], ipp)
          raw = model.features(x, module_layers)
        else:
          raw = model.features(
              batch["input_ids"], mask, module_layers, token_type_ids=batch.get("token_type_ids")
          )
      out = {}
      for l in layers:
        h = raw[l]
        if dense:
          if kinds[l] == "tokens":  # ViT: patch tokens back onto the grid
            h = h[:, 1:].reshape(h.shape[0], vit_grid[0], vit_grid[1], h.shape[-1])
          out[l] = h
        else:
          out[l] = pool(kinds[l], h, pooling, mask)
      return out

    return fn

  # ------------------------------------------------------------------------------------------
  def host_preprocess(self, inputs) -> dict[str, np.ndarray]:
    """Host-side input preparation.

    Args:
      inputs: images: uint8 [N, H, W, C] with C in {1, 3}; text: a sequence of str.

    Returns:
      {"image": uint8 [N, H, W, C]} or {"input_ids": int32 [N, max_length],
      "attention_mask": int32 [N, max_length]} (truncated/padded to max_length).

    Raises:
      TypeError / ValueError on a wrong dtype, rank, channel count or input type.
    """
    if self.input_kind == "image":
      if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        raise TypeError(f"{self.name} is an image model; got text")
      return {"image": pp.validate_images(inputs)}
    if isinstance(inputs, np.ndarray):
      raise TypeError(f"{self.name} is a text model; pass a list of strings, not an array")
    return self.tokenizer(inputs)

  def feature_dim(self, layer: str | None = None) -> int:
    """Width D of the pooled features of `layer` (default: `default_layer`)."""
    layer = self.default_layer if layer is None else layer
    (layer,) = self._layers_arg(layer, False)
    if not self._dims:  # one abstract pass (no computation) gives every layer's width
      if self.input_kind == "image":
        h, w = self.image_preprocess.size
        batch = {
            "image": jax.ShapeDtypeStruct((1, h, w, self.image_preprocess.channels), jnp.uint8)
        }
      else:
        s = jax.ShapeDtypeStruct((1, self.max_length), jnp.int32)
        batch = {"input_ids": s, "attention_mask": s}
      params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), self.params)
      out = jax.eval_shape(self.feature_fn(self.layer_names), params, batch)
      self._dims.update({l: int(v.shape[-1]) for l, v in out.items()})
    return self._dims[layer]

  def embed(
      self,
      inputs,
      layers: str | Sequence[str] | None = None,
      *,
      batch_size: int = 64,
      pooling: str | None = None,
      dense: bool = False,
  ) -> dict[str, np.ndarray]:
    """Convenience: host_preprocess + jitted feature_fn in batches, on the default device.

    The last batch is zero-padded to the batch size (static shapes, one compilation) and the
    padding rows are dropped from the result.

    Args:
      inputs: as for `host_preprocess`.
      layers, pooling, dense: as for `feature_fn`.
      batch_size: examples per device call (capped at the number of inputs).

    Returns:
      {layer: float32 numpy [N, D]} (or [N, h, w, C] with dense=True).
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    layers = self._layers_arg(layers, dense)
    data = self.host_preprocess(inputs)
    n = next(iter(data.values())).shape[0]
    key = (layers, pooling, dense)
    if key not in self._jit_cache:
      self._jit_cache[key] = jax.jit(self.feature_fn(layers, pooling=pooling, dense=dense))
    fn = self._jit_cache[key]
    params = self.params
    if n == 0:
      shapes = jax.eval_shape(
          fn,
          jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params),
          {k: jax.ShapeDtypeStruct((1,) + v.shape[1:], v.dtype) for k, v in data.items()},
      )
      return {l: np.zeros((0,) + s.shape[1:], np.float32) for l, s in shapes.items()}
    bs = min(batch_size, n)
    outs: dict[str, list] = {l: [] for l in layers}
    for start in range(0, n, bs):
      chunk = {k: v[start : start + bs] for k, v in data.items()}
      m = next(iter(chunk.values())).shape[0]
      if m < bs:
        chunk = {
            k: np.concatenate([v, np.zeros((bs - m,) + v.shape[1:], v.dtype)])
            for k, v in chunk.items()
        }
      res = jax.device_get(fn(params, jax.device_put(chunk)))
      for l in layers:
        outs[l].append(np.asarray(res[l][:m], np.float32))
    return {l: np.concatenate(v, axis=0) for l, v in outs.items()}
