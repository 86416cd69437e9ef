"""face_jax.models ResNet / ViT against torchvision (random weights, non-trivial BatchNorm).

Tolerance: 1e-4 absolute plus 1e-4 relative (float32 on CPU; both frameworks accumulate
convolutions in float32 in different orders, observed differences are ~1e-6 relative).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from face_jax import models  # noqa: E402  # pylint: disable=g-import-not-at-top
from face_jax.models import preprocess as pp  # noqa: E402  # pylint: disable=g-import-not-at-top

ATOL = 1e-4
RTOL = 1e-4


def _randomise_(model: "torch.nn.Module", seed: int) -> None:
  """Makes BatchNorm / LayerNorm / class token / zero-initialised heads non-trivial."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
        m.weight.copy_(0.5 + 0.5 * torch.rand(m.num_features, generator=g))
        m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
      elif isinstance(m, torch.nn.LayerNorm):
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    for name, p in model.named_parameters():
      if name in ("class_token",) or name.startswith("heads."):
        p.copy_(0.1 * torch.randn(p.shape, generator=g))


def _torch_resnet_layers(model, x_nchw):
  out = {}
  h = model.maxpool(model.relu(model.bn1(model.conv1(x_nchw))))
  out["stem"] = h
  for i in range(1, 5):
    h = getattr(model, f"layer{i}")(h)
    out[f"layer{i}"] = h
  out["pool"] = torch.flatten(model.avgpool(h), 1)
  out["logits"] = model.fc(out["pool"])
  return {k: v.numpy() for k, v in out.items()}


def _close(name, got, want, nchw=False):
  if nchw:  # torch conv maps are NCHW
    want = want.transpose(0, 2, 3, 1)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=name)


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_matches_torchvision(depth, tmp_path):
  torch.manual_seed(depth)
  tv = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=7)
  _randomise_(tv, seed=depth)
  tv.eval()
  rng = np.random.default_rng(depth)
  images = rng.integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
  mean, std = np.array(pp.IMAGENET_MEAN), np.array(pp.IMAGENET_STD)
  x = ((images / 255.0 - mean) / std).astype(np.float32)
  with torch.no_grad():
    want = _torch_resnet_layers(tv, torch.from_numpy(x.transpose(0, 3, 1, 2)))

  # 1) importer on a dict of numpy arrays (no torch needed), through get(weights=...).
  sd_np = {k: v.numpy() for k, v in tv.state_dict().items()}
  params = models.load_torchvision_resnet(sd_np, depth)
  assert params["head"]["kernel"].shape == (want["pool"].shape[1], 7)
  ex = models.get(f"resnet{depth}", weights=params, image_size=64, crop_fraction=1.0)
  assert ex.num_classes == 7
  layers = ("layer2", "layer4", "pool", "logits")
  got = ex.embed(images, layers, batch_size=2)
  for l in ("pool", "logits"):
    _close(l, got[l], want[l])
  dense = ex.embed(images, ("stem", "layer2"), dense=True)
  for l in ("stem", "layer2"):
    _close(l, dense[l], want[l], nchw=True)
  np.testing.assert_allclose(got["layer2"], want["layer2"].mean(axis=(2, 3)), atol=ATOL, rtol=RTOL)

  # 2) a .pth file read lazily with torch.
  path = tmp_path / f"resnet{depth}.pth"
  torch.save(tv.state_dict(), path)
  ex2 = models.get(f"resnet{depth}", weights=str(path), image_size=64, crop_fraction=1.0)
  flat1 = models.weights.flatten_params(ex.params)
  flat2 = models.weights.flatten_params(ex2.params)
  assert flat1.keys() == flat2.keys()
  for k in flat1:
    np.testing.assert_array_equal(flat1[k], flat2[k], err_msg=k)
  # Features are far from trivial, so the tolerance above is meaningful.
  assert np.abs(want["pool"]).max() > 0.1 and np.abs(want["logits"]).std() > 0.01


def test_resnet_importer_rejects_wrong_depth():
  sd = {k: v.numpy() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
  with pytest.raises(ValueError, match="no key"):
    models.load_torchvision_resnet(sd, 34)
  with pytest.raises(ValueError, match="depth must be one of"):
    models.load_torchvision_resnet(sd, 20)
  sd["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match="unexpected state-dict keys"):
    models.load_torchvision_resnet(sd, 18)


def test_vit_matches_torchvision(tmp_path):
  torch.manual_seed(0)
  tv = torchvision.models.VisionTransformer(
      image_size=32,
      patch_size=16,
      num_layers=2,
      num_heads=4,
      hidden_dim=64,
      mlp_dim=128,
      num_classes=5,
  )
  _randomise_(tv, seed=3)
  tv.eval()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
  x = ((images / 255.0 - 0.5) / 0.5).astype(np.float32)  # vit_mini normalisation
  with torch.no_grad():
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    tokens = tv._process_input(xt)  # pylint: disable=protected-access
    tokens = torch.cat([tv.class_token.expand(xt.shape[0], -1, -1), tokens], dim=1)
    h = tokens + tv.encoder.pos_embedding
    want = {"embed": h.numpy()}
    for i, layer in enumerate(tv.encoder.layers):
      h = layer(h)
      want[f"block{i}"] = h.numpy()
    h = tv.encoder.ln(h)
    want["norm"] = h.numpy()
    want["pool"] = h[:, 0].numpy()
    want["logits"] = tv.heads(h[:, 0]).numpy()
    np.testing.assert_allclose(want["logits"], tv(xt).numpy(), atol=1e-6)

  path = tmp_path / "vit.pth"
  torch.save(tv.state_dict(), path)
  ex = models.get(
      "vit_mini",
      weights=str(path),
      image_size=32,
      patch_size=16,
      dim=64,
      depth=2,
      heads=4,
      mlp_dim=128,
  )
  assert ex.num_classes == 5
  got = ex.embed(images, ("pool", "logits", "block0", "block1"), pooling="cls")
  for l in ("pool", "logits"):
    _close(l, got[l], want[l])
  for l in ("block0", "block1"):
    _close(l, got[l], want[l][:, 0])
  mean_tok = ex.embed(images, ("block1",), pooling="mean")["block1"]
  _close("block1 mean", mean_tok, want["block1"][:, 1:].mean(axis=1))
  dense = ex.embed(images, ("embed",), dense=True)["embed"]
  _close("embed grid", dense, want["embed"][:, 1:].reshape(3, 2, 2, 64))

  # Direct module use with the numpy-dict importer (no torch involved in the conversion).
  cfg = models.ViTConfig(
      image_size=(32, 32), patch_size=16, dim=64, depth=2, heads=4, mlp_dim=128, num_classes=5
  )
  params = models.load_torchvision_vit({k: v.numpy() for k, v in tv.state_dict().items()}, cfg)
  from flax import nnx  # pylint: disable=g-import-not-at-top

  module = models.ViT(cfg, rngs=nnx.Rngs(0))
  models.assign_params(module, params)
  feats = module.features(x, ("block0", "logits"))
  _close("module block0", np.asarray(feats["block0"]), want["block0"])
  _close("module logits", np.asarray(feats["logits"]), want["logits"])


def test_vit_pos_embedding_interpolation_shape():
  tv = torchvision.models.VisionTransformer(
      image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
  )
  cfg = models.ViTConfig(
      image_size=(64, 48), patch_size=16, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=1000
  )
  params = models.load_torchvision_vit({k: v.numpy() for k, v in tv.state_dict().items()}, cfg)
  assert params["pos_embedding"].shape == (1, 1 + 4 * 3, 16)
  np.testing.assert_array_equal(
      params["pos_embedding"][:, 0], tv.encoder.pos_embedding[:, 0].detach().numpy()
  )
  with pytest.raises(ValueError, match="layers"):
    models.load_torchvision_vit(
        {k: v.numpy() for k, v in tv.state_dict().items()},
        models.ViTConfig(image_size=(32, 32), patch_size=16, dim=16, depth=2, heads=2, mlp_dim=32),
    )
