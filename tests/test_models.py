"""The model zoo: published parameter counts, shapes, CAM layers, determinism, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from part.errors import PartError
from part.models import MODELS, ModelError, build_model, list_models

ALL_MODELS = ["cnn_small", "cnn_small_gn", "preact_resnet18", "resnet18", "wrn34_10"]
# WRN-34-10 forwards take seconds on 2 cores.
MODEL_PARAMS = [pytest.param(name, marks=pytest.mark.slow) if name == "wrn34_10" else name
                for name in ALL_MODELS]

# (C, downsampling of the CAM map) per model; ResNets halve 3 times with ceil (28 -> 4).
CAM_FEATURES = {
    "resnet18": (512, lambda s: -(-s // 8)),
    "preact_resnet18": (512, lambda s: -(-s // 8)),
    "wrn34_10": (640, lambda s: s // 4),
    "cnn_small": (128, lambda s: s // 4),
    "cnn_small_gn": (128, lambda s: s // 4),
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _BuiltModels(dict):
    """Builds each (name, in_channels) model on first use, once per test module."""

    def __missing__(self, key: tuple[str, int]) -> nn.Module:
        name, channels = key
        self[key] = build_model(name, num_classes=10, in_channels=channels).eval()
        return self[key]


@pytest.fixture(scope="module")
def models_by_channels() -> dict[tuple[str, int], nn.Module]:
    torch.manual_seed(0)
    return _BuiltModels()


def test_registry_lists_every_model() -> None:
    assert list_models() == ALL_MODELS
    assert set(MODELS) == set(ALL_MODELS)


@pytest.mark.parametrize(("name", "expected"), [
    ("resnet18", 11_173_962),  # the published CIFAR ResNet-18 count
    ("wrn34_10", 46_160_474),  # the published WRN-34-10 count (without TRADES' dead sub_block1)
    ("preact_resnet18", 11_172_170),
    ("cnn_small", 94_762),
    ("cnn_small_gn", 94_762),  # GroupNorm has the affine parameters of batch norm
])
def test_parameter_counts_for_cifar10(models_by_channels, name: str, expected: int) -> None:
    assert count_params(models_by_channels[(name, 3)]) == expected


def test_stem_and_head_follow_channels_and_classes() -> None:
    base = count_params(build_model("resnet18", num_classes=10, in_channels=3))
    grey_100 = count_params(build_model("resnet18", num_classes=100, in_channels=1))
    # stem conv 64x3x3 per input channel; head 512 weights + 1 bias per class
    assert grey_100 - base == -2 * 64 * 9 + 90 * 513


@pytest.mark.parametrize("name", MODEL_PARAMS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_logits_and_cam_map_shapes(models_by_channels, name: str, channels: int,
                                   size: int) -> None:
    model = models_by_channels[(name, channels)]
    captured = {}
    hook = model.get_submodule(model.cam_layer).register_forward_hook(
        lambda module, inputs, output: captured.__setitem__("features", output))
    try:
        with torch.no_grad():
            logits = model(torch.rand(1, channels, size, size))
    finally:
        hook.remove()
    width, downsample = CAM_FEATURES[name]
    assert logits.shape == (1, 10)
    assert torch.isfinite(logits).all()
    assert captured["features"].shape == (1, width, downsample(size), downsample(size))


def _head(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """What each architecture does after its CAM layer."""
    if model.model_name == "wrn34_10":
        features = model.relu(model.bn1(features))  # block3 is pre-activation
    pooled = features.mean(dim=(2, 3))
    return (model.fc if hasattr(model, "fc") else model.linear)(pooled)


@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_cam_layer_is_the_map_the_classifier_pools(models_by_channels, name: str) -> None:
    model = models_by_channels[(name, 3)]
    captured = {}
    hook = model.get_submodule(model.cam_layer).register_forward_hook(
        lambda module, inputs, output: captured.__setitem__("features", output))
    try:
        with torch.no_grad():
            logits = model(torch.rand(2, 3, 32, 32))
            from_features = _head(model, captured["features"])
    finally:
        hook.remove()
    torch.testing.assert_close(from_features, logits, rtol=1e-4, atol=1e-5)
    if name != "wrn34_10":  # post-activation maps: what CAM (Zhou et al.) assumes
        assert (captured["features"] >= 0).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_knows_its_name_and_sizes(models_by_channels, name: str) -> None:
    model = models_by_channels[(name, 1)]
    assert (model.model_name, model.num_classes, model.in_channels) == (name, 10, 1)
    assert isinstance(model.cam_layer, str)


@pytest.mark.parametrize("name", ["resnet18", "cnn_small", "preact_resnet18"])
def test_build_is_deterministic_under_manual_seed(name: str) -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(name).state_dict()

    first, again, other = build(3), build(3), build(4)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_input_gradients_flow_for_attacks() -> None:
    model = build_model("cnn_small", in_channels=1).eval()
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    assert x.grad is not None and (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_unknown_name_lists_the_allowed_names() -> None:
    with pytest.raises(ModelError) as info:
        build_model("resnet19")
    message = str(info.value)
    assert "'resnet19'" in message
    assert all(name in message for name in ALL_MODELS)
    assert isinstance(info.value, PartError)


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": "10"}, "num_classes"),
    ({"in_channels": True}, "in_channels"),
    ({"in_channels": -1}, "in_channels"),
])
def test_bad_sizes_are_rejected(kwargs: dict, named: str) -> None:
    with pytest.raises(ModelError, match=named):
        build_model("cnn_small", **kwargs)


@pytest.mark.parametrize("name", ["cnn_small", "preact_resnet18", "resnet18"])
def test_gradcam_at_cam_layer_is_the_classic_cam(models_by_channels, name: str) -> None:
    """Oracle: torchcam's GradCAM at `cam_layer` equals Zhou et al.'s CAM (pool + linear head)."""
    import copy

    from torchcam.methods import GradCAM

    model = copy.deepcopy(models_by_channels[(name, 3)])
    head = model.fc if hasattr(model, "fc") else model.linear
    with torch.no_grad():  # positive weights: the CAM is not all zero at random init
        head.weight.abs_()
    x = torch.rand(2, 3, 32, 32)
    captured = {}
    model.get_submodule(model.cam_layer).register_forward_hook(
        lambda module, inputs, output: captured.__setitem__("features", output.detach()))
    with GradCAM(model, target_layer=model.cam_layer) as extractor:
        logits = model(x)
        classes = logits.argmax(dim=1).tolist()
        gradcam = extractor(classes, logits)[0]
    classic = torch.relu(torch.einsum("bk,bkhw->bhw", head.weight[classes], captured["features"]))
    classic = classic - classic.amin(dim=(1, 2), keepdim=True)
    classic = classic / classic.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(gradcam, classic, rtol=1e-4, atol=1e-4)


def test_an_import_path_builds_an_own_architecture_with_its_cam_layer():
    from part.models.registry import ModelError

    model = build_model("user_models.example:tiny_net", num_classes=4, in_channels=1)
    assert model.cam_layer == "features" and model.model_name == "user_models.example:tiny_net"
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 4)
    chosen = build_model("user_models.example:tiny_net", 4, 1, cam_layer="features.0")
    assert chosen.cam_layer == "features.0"
    for name, says in (("user_models.nowhere:net", "cannot import user_models.nowhere"),
                       ("user_models.example:absent", "no callable absent"),
                       ("user_models.example:TinyNet.cam_layer", "unknown model"),
                       ("torch:zeros", "give the factory these two keyword arguments"),
                       ("builtins:dict", "returned a dict, not a torch.nn.Module")):
        with pytest.raises(ModelError, match=says):
            build_model(name, 4, 1)
    with pytest.raises(ModelError, match="names CAM layer 'nowhere'"):
        build_model("user_models.example:tiny_net", 4, 1, cam_layer="nowhere")
