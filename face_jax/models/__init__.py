"""face_jax.models: Flax (nnx) feature extractors with preset preprocessing and weight import.

Synopsis:
  >>> import numpy as np
  >>> from face_jax import models
  >>> ex = models.get("resnet_mini", depth=8)
  >>> feats = ex.embed(np.zeros((3, 32, 32, 3), np.uint8), ["layer2", "pool"])
  >>> feats["pool"].shape
  (3, 64)

Families: ResNet v1.5 (torchvision layout, `resnet18`..`resnet152`, CIFAR-style `resnet_mini`),
ViT (`vit_ti16`, `vit_s16`, `vit_b16`, `vit_mini`), plain CNNs (`cnn_tiny`, `cnn_small`,
`cnn_base`), `mlp`, and the all-MiniLM-L6-v2 text encoder (`all-minilm-l6-v2`).
Model collections (a directory of checkpoints with a manifest, e.g. the bundled zoo in
`benchmarks/zoo/weights`): `load_collection`, `add_to_collection` (see `face_jax.models.collection`).
"""

from face_jax.models.bert import BertConfig
from face_jax.models.bert import BertEncoder
from face_jax.models.bert import MINILM_L6_CONFIG
from face_jax.models.cnn import CNNConfig
from face_jax.models.cnn import MLP
from face_jax.models.cnn import MLPConfig
from face_jax.models.cnn import SmallCNN
from face_jax.models.collection import add_to_collection
from face_jax.models.collection import Collection
from face_jax.models.collection import CollectionEntry
from face_jax.models.collection import load_collection
from face_jax.models.extractor import FeatureExtractor
from face_jax.models.preprocess import ImagePreprocess
from face_jax.models.preprocess import TextTokenizer
from face_jax.models.registry import describe_presets
from face_jax.models.registry import get
from face_jax.models.registry import list_presets
from face_jax.models.resnet import ResNet
from face_jax.models.resnet import ResNetConfig
from face_jax.models.resnet import resnet_config
from face_jax.models.resnet import resnet_mini_config
from face_jax.models.vit import ViT
from face_jax.models.vit import ViTConfig
from face_jax.models.weights import assign_params
from face_jax.models.weights import load_hf_bert
from face_jax.models.weights import load_minilm
from face_jax.models.weights import load_params
from face_jax.models.weights import load_torchvision_resnet
from face_jax.models.weights import load_torchvision_vit
from face_jax.models.weights import save_params

__all__ = (
    "BertConfig",
    "BertEncoder",
    "CNNConfig",
    "Collection",
    "CollectionEntry",
    "FeatureExtractor",
    "ImagePreprocess",
    "MINILM_L6_CONFIG",
    "MLP",
    "MLPConfig",
    "ResNet",
    "ResNetConfig",
    "SmallCNN",
    "TextTokenizer",
    "ViT",
    "ViTConfig",
    "add_to_collection",
    "assign_params",
    "describe_presets",
    "get",
    "list_presets",
    "load_collection",
    "load_hf_bert",
    "load_minilm",
    "load_params",
    "load_torchvision_resnet",
    "load_torchvision_vit",
    "resnet_config",
    "resnet_mini_config",
    "save_params",
)
