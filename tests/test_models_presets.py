"""Shapes, layer names, jittability, weights round trip and input errors of face_jax.models."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from face_jax import models
from face_jax.models import preprocess as pp

REQUIRED = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vit_ti16",
    "vit_s16",
    "vit_b16",
    "cnn_tiny",
    "cnn_small",
    "cnn_base",
    "mlp",
    "resnet_mini",
    "vit_mini",
    "all-minilm-l6-v2",
]


def _images(n, h, w, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def _abstract(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def test_list_presets():
  names = models.list_presets()
  assert names == sorted(names)
  for r in REQUIRED:
    assert r in names
  assert set(models.describe_presets()) == set(names)


# name, options, layer names, default layer, {layer: pooled dim}, {dense layer: [h, w, C]}
SMALL = [
    (
        "cnn_tiny",
        dict(image_size=16),
        ("block1", "block2", "pool"),
        "pool",
        {"block1": 16, "block2": 32, "pool": 32},
        {"block1": (16, 16, 16), "block2": (8, 8, 32)},
    ),
    (
        "cnn_small",
        dict(image_size=16, num_classes=4),
        ("block1", "block2", "block3", "pool", "logits"),
        "pool",
        {"block3": 128, "logits": 4},
        {"block3": (4, 4, 128)},
    ),
    (
        "cnn_base",
        dict(image_size=8, widths=(8, 16), convs_per_block=2),
        ("block1", "block2", "pool"),
        "pool",
        {"pool": 16},
        {"block2": (4, 4, 16)},
    ),
    (
        "mlp",
        dict(image_size=8, hidden=(32, 16), num_classes=3),
        ("dense1", "dense2", "logits"),
        "dense2",
        {"dense1": 32, "dense2": 16, "logits": 3},
        {},
    ),
    (
        "resnet_mini",
        dict(image_size=16, depth=8),
        ("stem", "layer1", "layer2", "layer3", "pool"),
        "pool",
        {"stem": 16, "layer3": 64, "pool": 64},
        {"stem": (16, 16, 16), "layer2": (8, 8, 32), "layer3": (4, 4, 64)},
    ),
    (
        "vit_mini",
        dict(image_size=16, depth=2, num_classes=6),
        ("embed", "block0", "block1", "norm", "pool", "logits"),
        "pool",
        {"embed": 64, "block1": 64, "pool": 64, "logits": 6},
        {"embed": (4, 4, 64), "norm": (4, 4, 64)},
    ),
]


@pytest.mark.parametrize("name,opts,layers,default,dims,dense", SMALL, ids=[s[0] for s in SMALL])
def test_small_presets(name, opts, layers, default, dims, dense):
  ex = models.get(name, **opts)
  assert ex.name == name and ex.input_kind == "image"
  assert ex.layer_names == layers
  assert ex.default_layer == default
  for l, d in dims.items():
    assert ex.feature_dim(l) == d
  images = _images(3, 12, 20)  # non-square, other size: resized + cropped on device
  fn = jax.jit(ex.feature_fn(layers))
  out = fn(ex.params, jax.device_put(ex.host_preprocess(images)))
  assert set(out) == set(layers)
  for l in layers:
    assert out[l].shape == (3, ex.feature_dim(l)) and out[l].dtype == jnp.float32
    assert np.isfinite(np.asarray(out[l])).all()
  # One forward pass for several layers == separate passes.
  single = ex.embed(images, default)
  np.testing.assert_allclose(single[default], np.asarray(out[default]), rtol=1e-5, atol=1e-6)
  assert tuple(ex.dense_layer_names) == tuple(dense) or set(dense) <= set(ex.dense_layer_names)
  if dense:
    dmaps = ex.embed(images, list(dense), dense=True)
    for l, shp in dense.items():
      assert dmaps[l].shape == (3,) + shp
  else:
    with pytest.raises(ValueError, match="no layer with a spatial map|no spatial map"):
      ex.feature_fn(dense=True)


def test_cnn_dense_pooling_consistency():
  ex = models.get("cnn_tiny", image_size=16, seed=3)
  images = _images(2, 16, 16)
  d = ex.embed(images, ["block2"], dense=True)["block2"]
  avg = ex.embed(images, ["block2"])["block2"]
  mx = ex.embed(images, ["block2"], pooling="max")["block2"]
  np.testing.assert_allclose(avg, d.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mx, d.max(axis=(1, 2)), rtol=1e-6)
  # dense=True without layers -> last spatial layer.
  assert set(ex.embed(images, dense=True)) == {"block2"}


@pytest.mark.parametrize(
    "name,dim,n_blocks",
    [
        ("resnet18", 512, 4),
        ("resnet34", 512, 4),
        ("resnet50", 2048, 4),
        ("resnet101", 2048, 4),
        ("resnet152", 2048, 4),
        ("vit_ti16", 192, 12),
        ("vit_s16", 384, 12),
        ("vit_b16", 768, 12),
    ],
)
def test_large_presets_shapes(name, dim, n_blocks):
  """Built at a tiny image size; checked with eval_shape only (no forward computation)."""
  ex = models.get(name, image_size=32, num_classes=10)
  if name.startswith("resnet"):
    assert ex.layer_names == ("stem", "layer1", "layer2", "layer3", "layer4", "pool", "logits")
    expect_dense = {"stem": (8, 8, 64), "layer4": (1, 1, dim)}
  else:
    assert ex.layer_names == (
        ("embed",) + tuple(f"block{i}" for i in range(n_blocks)) + ("norm", "pool", "logits")
    )
    expect_dense = {"embed": (2, 2, dim), "block11": (2, 2, dim)}
  assert ex.default_layer == "pool" and ex.num_classes == 10
  assert ex.feature_dim() == dim and ex.feature_dim("logits") == 10
  assert ex.image_preprocess.mean == pp.IMAGENET_MEAN
  batch = {"image": jax.ShapeDtypeStruct((2, 40, 48, 3), jnp.uint8)}
  out = jax.eval_shape(ex.feature_fn(ex.layer_names), _abstract(ex.params), batch)
  for l in ex.layer_names:
    assert out[l].shape[0] == 2 and out[l].shape[-1] == ex.feature_dim(l)
  dense = jax.eval_shape(ex.feature_fn(list(expect_dense), dense=True), _abstract(ex.params), batch)
  for l, shp in expect_dense.items():
    assert dense[l].shape == (2,) + shp


def test_default_imagenet_preprocessing():
  ex = models.get("resnet18")
  ipp = ex.image_preprocess
  assert ipp.size == (224, 224) and ipp.crop_fraction == 0.875
  assert ipp.resized_shape(500, 375) == (341, 256)  # shorter side 256, as torchvision Resize(256)
  assert ipp.resized_shape(64, 64) == (256, 256)
  assert models.get("cnn_tiny").image_preprocess.size == (32, 32)


def test_preprocess_matches_numpy_reference():
  cfg = pp.ImagePreprocess(size=(4, 6), channels=3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
  x = _images(2, 4, 6)
  got = np.asarray(jax.jit(lambda a: pp.preprocess_images(a, cfg))(x))
  want = (x / 255.0 - np.array(cfg.mean)) / np.array(cfg.std)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # "crop": an image already at the resize size is only center-cropped (no resampling).
  cfg = pp.ImagePreprocess(size=(224, 224), crop_fraction=0.875)
  x = _images(1, 256, 256)
  got = np.asarray(jax.jit(lambda a: pp.preprocess_images(a, cfg))(x))
  want = (x[:, 16:240, 16:240] / 255.0 - np.array(pp.IMAGENET_MEAN)) / np.array(pp.IMAGENET_STD)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # "squash": straight resize; constant images stay constant.
  cfg = pp.ImagePreprocess(size=(5, 3), mode="squash", mean=(0.5,) * 3, std=(0.5,) * 3)
  got = np.asarray(pp.preprocess_images(jnp.full((1, 9, 14, 3), 255, jnp.uint8), cfg))
  assert got.shape == (1, 5, 3, 3)
  np.testing.assert_allclose(got, 1.0, atol=1e-6)


def test_channel_conversion():
  ex = models.get("cnn_tiny", image_size=8)
  grey = _images(2, 8, 8, 1)
  a = ex.embed(grey)["pool"]
  b = ex.embed(np.repeat(grey, 3, axis=-1))["pool"]
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  ex1 = models.get("cnn_tiny", image_size=8, in_channels=1)
  rgb = _images(2, 8, 8, 3)
  luma = np.round(rgb @ np.array(pp.LUMA)).astype(np.uint8)[..., None]
  np.testing.assert_allclose(ex1.embed(rgb)["pool"], ex1.embed(luma)["pool"], atol=0.05)
  assert ex1.embed(luma)["pool"].shape == (2, 32)


def test_feature_fn_is_pure_and_traced_once():
  ex = models.get("resnet_mini", depth=8, image_size=8)
  traces = []
  inner = ex.feature_fn(["layer1", "pool"])

  def counted(params, batch):
    traces.append(1)
    return inner(params, batch)

  fn = jax.jit(counted)
  before = jax.tree.map(np.asarray, ex.params)
  batch = jax.device_put(ex.host_preprocess(_images(4, 8, 8)))
  o1 = fn(ex.params, batch)
  o2 = fn(ex.params, batch)
  assert len(traces) == 1
  for l in o1:
    np.testing.assert_array_equal(np.asarray(o1[l]), np.asarray(o2[l]))
  after = jax.tree.map(np.asarray, ex.params)
  jax.tree.map(np.testing.assert_array_equal, before, after)  # BN statistics untouched
  # Replicated params on an explicit mesh work as well.
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  rep = jax.device_put(ex.params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  o3 = fn(rep, batch)
  np.testing.assert_allclose(np.asarray(o3["pool"]), np.asarray(o1["pool"]), rtol=1e-6)


def test_no_implicit_transfers(tmp_path):
  """get (random init, checkpoint, fresh head) and embed only use explicit transfers."""
  with jax.transfer_guard("disallow"):
    ex = models.get("vit_mini", image_size=8, patch_size=4, depth=1)
    out = ex.embed(_images(5, 8, 8), ["block0", "pool"], batch_size=2, pooling="mean")
    path = tmp_path / "vit.msgpack"
    models.save_params(path, ex.params)
    ex2 = models.get(
        "vit_mini", image_size=8, patch_size=4, depth=1, weights=str(path), num_classes=3
    )
    out2 = ex2.embed(_images(5, 8, 8), ["pool", "logits"], batch_size=2)
  np.testing.assert_allclose(out2["pool"], ex.embed(_images(5, 8, 8), "pool")["pool"], rtol=1e-6)
  assert out2["logits"].shape == (5, 3)
  assert out["pool"].shape == (5, 64) and out["pool"].dtype == np.float32
  # padding of the last batch does not change the kept rows
  full = ex.embed(_images(5, 8, 8), ["block0"], batch_size=5, pooling="mean")
  np.testing.assert_allclose(out["block0"], full["block0"], rtol=1e-5, atol=1e-6)


def test_train_mode_and_optax_step():
  ex = models.get("cnn_tiny", image_size=8, num_classes=3, seed=0)
  model = ex.module
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8, 8, 3)), jnp.float32)
  y = jnp.arange(8) % 3
  eval_feats = ex.embed(_images(2, 8, 8))["pool"]
  model.train()
  opt = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, x, y):
    def loss_fn(m):
      return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss

  mean0 = np.asarray(model.blocks[0][0].bn.mean[...])
  losses = [float(step(model, opt, x, y)) for _ in range(5)]
  assert losses[-1] < losses[0]
  assert not np.allclose(np.asarray(model.blocks[0][0].bn.mean[...]), mean0)  # running stats
  # Features follow the trained params and always use running averages (eval mode), even for a
  # feature_fn created while the module is in train mode.
  new_feats = ex.embed(_images(2, 8, 8))["pool"]
  assert not np.allclose(new_feats, eval_feats)
  batch = jax.device_put(ex.host_preprocess(_images(2, 8, 8)))
  made_in_train_mode = np.asarray(jax.jit(ex.feature_fn())(ex.params, batch)["pool"])
  batch_stats_feats = np.asarray(
      nnx.clone(model).features(  # clone: train mode updates stats
          pp.preprocess_images(batch["image"], ex.image_preprocess), ("pool",)
      )["pool"]
  )
  assert not np.allclose(batch_stats_feats, new_feats, atol=1e-3)  # train mode differs...
  np.testing.assert_allclose(made_in_train_mode, new_feats, rtol=1e-5, atol=1e-6)  # ...not used
  model.eval()
  np.testing.assert_allclose(ex.embed(_images(2, 8, 8))["pool"], new_feats, rtol=1e-6)


def test_save_load_round_trip(tmp_path):
  ex = models.get("resnet_mini", depth=8, image_size=8, num_classes=5, seed=7)
  path = tmp_path / "ckpt.msgpack"
  models.save_params(path, ex.params)
  loaded = models.load_params(path)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, ex.params), loaded)
  images = _images(3, 8, 8)
  ex2 = models.get("resnet_mini", depth=8, image_size=8, weights=str(path))
  assert ex2.num_classes == 5
  np.testing.assert_array_equal(
      ex2.embed(images, "logits")["logits"], ex.embed(images, "logits")["logits"]
  )
  # num_classes=0 drops the head; a matching size keeps it; another size is an error.
  assert models.get("resnet_mini", depth=8, weights=str(path), num_classes=0).num_classes is None
  assert models.get("resnet_mini", depth=8, weights=str(path), num_classes=5).num_classes == 5
  with pytest.raises(ValueError, match="5-way classifier head"):
    models.get("resnet_mini", depth=8, weights=str(path), num_classes=4)
  # A headless checkpoint + num_classes: the backbone is loaded, the head is fresh.
  headless = {k: v for k, v in loaded.items() if k != "head"}
  ex3 = models.get("resnet_mini", depth=8, image_size=8, weights=headless, num_classes=2)
  np.testing.assert_array_equal(ex3.embed(images)["pool"], ex.embed(images)["pool"])
  assert ex3.feature_dim("logits") == 2
  # Wrong architecture -> clear error.
  with pytest.raises(ValueError, match="do not fit the model"):
    models.get("resnet_mini", depth=14, weights=str(path))
  with pytest.raises(ValueError, match="not a msgpack"):
    (tmp_path / "junk.msgpack").write_bytes(b"\x00\x01 not msgpack")
    models.load_params(tmp_path / "junk.msgpack")
  with pytest.raises(FileNotFoundError):
    models.load_params(tmp_path / "absent.msgpack")


def test_input_errors():
  ex = models.get("cnn_tiny", image_size=8)
  with pytest.raises(TypeError, match="uint8"):
    ex.host_preprocess(np.zeros((1, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match="1 or 3 channels"):
    ex.host_preprocess(np.zeros((1, 8, 8, 4), np.uint8))
  with pytest.raises(ValueError, match="1 or 3 channels"):
    ex.host_preprocess(np.zeros((1, 3, 8, 8), np.uint8)[:, :2])
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    ex.host_preprocess(np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(TypeError, match="image model"):
    ex.host_preprocess(["a sentence"])
  fn = ex.feature_fn()
  with pytest.raises(TypeError, match="uint8"):
    jax.eval_shape(
        fn, _abstract(ex.params), {"image": jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)}
    )
  with pytest.raises(KeyError, match="image"):
    jax.eval_shape(
        fn, _abstract(ex.params), {"pixels": jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.uint8)}
    )
  with pytest.raises(ValueError, match="unknown preset"):
    models.get("resnet19")
  with pytest.raises(ValueError, match="unknown option"):
    models.get("resnet18", depth=50)
  with pytest.raises(ValueError, match="unknown layer"):
    ex.feature_fn(["block1", "layer9"])
  with pytest.raises(ValueError, match="unknown layer"):
    ex.feature_dim("nope")
  with pytest.raises(ValueError, match="pooling 'cls' is not valid"):
    ex.feature_fn("block1", pooling="cls")
  with pytest.raises(ValueError, match="no spatial map"):
    ex.feature_fn("pool", dense=True)
  with pytest.raises(ValueError, match="torchvision weights are supported"):
    models.get("cnn_tiny", weights="model.pth")
  with pytest.raises(ValueError, match="6n \\+ 2"):
    models.get("resnet_mini", depth=10)
  with pytest.raises(ValueError, match="divisible"):
    models.get("vit_mini", image_size=30)
  with pytest.raises(ValueError, match="batch_size"):
    ex.embed(_images(1, 8, 8), batch_size=0)


def test_precision_option():
  images = _images(1, 8, 8)
  for precision, want in ((None, "None"), ("highest", "HIGHEST")):
    ex = models.get("cnn_tiny", image_size=8, precision=precision)
    assert ex.precision == precision
    jaxpr = jax.make_jaxpr(ex.feature_fn())(ex.params, ex.host_preprocess(images))
    convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert convs and all(want in str(e.params["precision"]) for e in convs)
  with pytest.raises(ValueError, match="precision must be"):
    models.get("cnn_tiny", precision="fast")


def test_seeded_initialisation():
  p1 = models.get("resnet_mini", depth=8, seed=1).params
  p1b = models.get("resnet_mini", depth=8, seed=1).params
  p2 = models.get("resnet_mini", depth=8, seed=2).params
  jax.tree.map(np.testing.assert_array_equal, p1, p1b)
  k1 = np.asarray(p1["stages"][2][0]["conv2"]["kernel"])  # [3, 3, 64, 64]
  assert not np.array_equal(k1, np.asarray(p2["stages"][2][0]["conv2"]["kernel"]))
  # torchvision's kaiming_normal_(fan_out): std sqrt(2 / (9 * 64)); 36864 draws -> ~0.4% s.e.
  np.testing.assert_allclose(k1.std(), np.sqrt(2.0 / (9 * 64)), rtol=0.03)
  assert abs(k1.mean()) < 0.003
  np.testing.assert_array_equal(np.asarray(p1["stages"][2][0]["bn2"]["var"]), 1.0)
  vit = models.get("vit_mini", depth=1).params["blocks"][0]
  qkv = np.asarray(vit["qkv"]["kernel"])  # xavier uniform, limit sqrt(6 / (64 + 192))
  limit = np.sqrt(6.0 / (64 + 192))
  assert np.abs(qkv).max() <= limit and np.abs(qkv).max() > 0.95 * limit
  with pytest.raises(ValueError, match="seed must be"):
    models.get("cnn_tiny", seed=-1)
