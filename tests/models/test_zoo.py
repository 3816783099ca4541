"""torchvision's and timm's CNNs as xbench backbones, checked against torchvision, timm and fvcore called directly.

Weights are random (``torch.manual_seed``) and saved to local files: the tests never download.
"""

from __future__ import annotations

import hashlib
import socket
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torchvision
from fvcore.nn import FlopCountAnalysis
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from xbench.cli import main
from xbench.errors import CheckpointError, ConfigError, UnknownNameError
from xbench.methods.baseline import Classifier
from xbench.models import weights as wts
from xbench.models import zoo
from xbench.models.base import Backbone, Normalize
from xbench.models.output import LogitsOnly
from xbench.registry import BACKBONES

SEED = 0
SIZE = 64
#: ImageNet's statistics as torchvision's own weights declare them.
IMAGENET = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
IMAGENET_MEAN = tuple(IMAGENET.mean)
IMAGENET_STD = tuple(IMAGENET.std)
#: Dataset statistics unlike ImageNet's, so that using the wrong ones shows.
DATA_MEAN = (0.1, 0.2, 0.3)
DATA_STD = (0.4, 0.5, 0.6)
TORCHVISION = [
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg11_bn",
    "vgg16",
    "vgg16_bn",
    "mobilenet_v3_large",
    "efficientnet_b0",
]
TIMM = ["resnet18", "efficientnet_b0", "convnext_atto"]


def build(name: str, in_channels: int = 3, mean: Any = DATA_MEAN, std: Any = DATA_STD, **params: Any) -> Backbone:
    cls = BACKBONES.get(name)
    backbone: Backbone = cls(cls.Params(**params), in_channels, mean, std)
    return backbone.eval()


def normalize_of(backbone: Backbone) -> Normalize:
    found = [m for m in backbone.stem.modules() if isinstance(m, Normalize)]
    assert len(found) == 1
    return found[0]


def stats_of(backbone: Backbone) -> tuple[list[float], list[float]]:
    norm = normalize_of(backbone)
    return norm.mean.flatten().tolist(), norm.std.flatten().tolist()


def normalized(x: Tensor, mean: Any, std: Any) -> Tensor:
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def images(channels: int = 3, n: int = 2, size: int = SIZE) -> Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(1))


def first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, x: Tensor) -> float:
    analysis = FlopCountAnalysis(module, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return float(analysis.total())


def assert_one_line(err: pytest.ExceptionInfo[BaseException], *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


class Zoo:
    """torchvision models with seeded random weights saved to files, and the backbones built from the files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._models: dict[str, tuple[Path, nn.Module]] = {}
        self._backbones: dict[str, Backbone] = {}

    def reference(self, name: str) -> tuple[Path, nn.Module]:
        """``(file, torchvision model holding the file's state, in eval mode)``."""
        if name not in self._models:
            torch.manual_seed(SEED)
            model = torchvision.models.get_model(name).eval()
            path = self.root / f"{name}.pth"
            torch.save(model.state_dict(), path)
            model.load_state_dict(torch.load(path, weights_only=True))
            self._models[name] = (path, model)
        return self._models[name]

    def backbone(self, name: str) -> Backbone:
        """``name`` built with the file's weights, RGB data, default parameters (shared: do not modify)."""
        if name not in self._backbones:
            self._backbones[name] = build(name, weights=str(self.reference(name)[0]))
        return self._backbones[name]


@pytest.fixture(scope="module")
def tv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    zoo_ = Zoo(tmp_path_factory.mktemp("torchvision"))
    with torch.no_grad():
        yield zoo_


@pytest.fixture(autouse=True)
def _no_grad() -> Iterator[None]:
    with torch.no_grad():
        yield


# -- the registry -----------------------------------------------------------------------------------------
def test_list_backbones_names_the_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "backbones"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {*TORCHVISION, "resnet_cifar", "timm:<name>"} <= listed


# -- torchvision models, cut and put together again --------------------------------------------------------
@pytest.mark.parametrize("name", TORCHVISION)
def test_original_head_classifier_is_torchvision_model(tv: Zoo, name: str) -> None:
    _, ref = tv.reference(name)
    model = Classifier(tv.backbone(name), 1000, head="original").eval()
    assert count_params(model) == count_params(ref)
    x = images(n=1)
    xn = normalized(x, IMAGENET_MEAN, IMAGENET_STD)
    assert count_macs(LogitsOnly(model), x) == count_macs(ref, xn) > 0
    x = images()
    want = ref(normalized(x, IMAGENET_MEAN, IMAGENET_STD))
    got = model(x).logits
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def stage_outputs(ref: nn.Module, nodes: list[str], x: Tensor) -> list[Tensor]:
    out = create_feature_extractor(ref, return_nodes=nodes)(x)
    return [out[n] for n in nodes]


@pytest.mark.parametrize(
    ("name", "nodes", "strides", "channels"),
    [
        ("resnet50", ["layer1", "layer2", "layer3", "layer4"], [4, 8, 16, 32], [256, 512, 1024, 2048]),
        (
            "vgg16",
            ["features.4", "features.9", "features.16", "features.23", "features.30"],
            [2, 4, 8, 16, 32],
            [64, 128, 256, 512, 512],
        ),
        (
            "mobilenet_v3_large",
            ["features.3", "features.6", "features.12", "features.16"],
            [4, 8, 16, 32],
            [24, 40, 112, 960],
        ),
        (
            "efficientnet_b0",
            ["features.2", "features.3", "features.5", "features.8"],
            [4, 8, 16, 32],
            [24, 40, 112, 1280],
        ),
    ],
)
def test_stage_table(tv: Zoo, name: str, nodes: list[str], strides: list[int], channels: list[int]) -> None:
    _, ref = tv.reference(name)
    backbone = tv.backbone(name)
    assert backbone.stage_strides == strides
    assert backbone.stage_channels == channels
    x = images()
    got = backbone.forward_stages(x)
    want = stage_outputs(ref, nodes, normalized(x, IMAGENET_MEAN, IMAGENET_STD))
    assert len(got) == len(want)
    for g, w, stride in zip(got, want, strides, strict=True):
        assert g.shape == w.shape
        assert g.shape[-1] == SIZE // stride
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * float(w.abs().max()))
    torch.testing.assert_close(backbone(x), got[-1])


def test_resnet_stages_are_torchvisions_layers(tv: Zoo) -> None:
    backbone = tv.backbone("resnet50")
    assert [type(s[0]).__name__ for s in backbone.stages] == ["Sequential"] * 4
    assert [len(s[0]) for s in backbone.stages] == [3, 4, 6, 3]  # resnet50's bottleneck blocks per layer
    assert [type(m).__name__ for m in backbone.stem] == ["Normalize", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]


def test_vgg16_tame_taps_are_its_last_three_stages(tv: Zoo) -> None:
    _, ref = tv.reference("vgg16")
    backbone = tv.backbone("vgg16")
    x = images()
    got = backbone.forward_stages(x)[2:]
    want = stage_outputs(ref, ["features.16", "features.23", "features.30"], normalized(x, IMAGENET_MEAN, IMAGENET_STD))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * float(w.abs().max()))


# -- cifar_stem ----------------------------------------------------------------------------------------
def test_cifar_stem_resnet18_keeps_every_weight_but_conv1(tv: Zoo) -> None:
    path, _ = tv.reference("resnet18")
    state = torch.load(path, weights_only=True)
    backbone = build("resnet18", weights=str(path), cifar_stem=True)
    conv = first_conv(backbone)
    assert conv.kernel_size == (3, 3)
    assert conv.stride == (1, 1)
    assert conv.padding == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in backbone.modules())
    assert backbone.stage_strides == [1, 2, 4, 8]
    assert backbone.stage_channels == [64, 128, 256, 512]
    assert backbone.forward_stages(images(size=32))[0].shape[-1] == 32

    # every tensor of the file, under torchvision's names, except the replaced conv1
    mine = {f"stem.{k}": v for k, v in backbone.stem.state_dict().items()}
    mine |= {f"stages.{k}": v for k, v in backbone.stages.state_dict().items()}
    renamed: dict[str, Tensor] = {}
    for key, value in mine.items():
        if key.startswith("stem.2."):
            renamed["bn1." + key.removeprefix("stem.2.")] = value
        elif key.startswith("stages."):
            i, _, rest = key.removeprefix("stages.").partition(".0.")
            renamed[f"layer{int(i) + 1}.{rest}"] = value
    renamed |= {"fc." + k.removeprefix("2."): v for k, v in backbone.original_head(1000).state_dict().items()}
    compared = [k for k in state if k != "conv1.weight"]
    assert sorted(compared) == sorted(renamed)
    for key in compared:
        torch.testing.assert_close(renamed[key], state[key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(backbone.stages[0][0][0].conv1.weight, state["layer1.0.conv1.weight"], rtol=0, atol=0)
    assert conv.weight.shape == (64, 3, 3, 3) != state["conv1.weight"].shape


def test_cifar_stem_on_vgg16_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        build("vgg16", cifar_stem=True)
    assert_one_line(err, "vgg16", "cifar_stem")


# -- greyscale data ------------------------------------------------------------------------------------
def test_greyscale_with_weights_repeats_the_channel(tv: Zoo) -> None:
    path, ref = tv.reference("resnet18")
    backbone = build("resnet18", in_channels=1, mean=(0.5,), std=(0.25,), weights=str(path))
    assert first_conv(backbone).in_channels == 3
    x = images(channels=1)
    rgb = x.repeat(1, 3, 1, 1)
    torch.testing.assert_close(backbone(x), backbone(rgb), rtol=0, atol=0)
    want = ref(normalized(rgb, IMAGENET_MEAN, IMAGENET_STD))
    got = Classifier(backbone, 1000, head="original").eval()(x).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_greyscale_without_weights_takes_one_channel(name: str) -> None:
    backbone = build(name, in_channels=1, mean=(0.5,), std=(0.25,))
    conv = first_conv(backbone)
    assert conv.in_channels == 1
    assert stats_of(backbone) == ([0.5], [0.25])
    ref = torchvision.models.get_model(name)
    ref_conv = first_conv(ref)
    assert (conv.out_channels, conv.kernel_size, conv.stride) == (
        ref_conv.out_channels,
        ref_conv.kernel_size,
        ref_conv.stride,
    )
    head = backbone.original_head(1000)
    removed = ref_conv.weight.numel() - conv.weight.numel()
    assert removed == 2 * ref_conv.weight.numel() // 3
    assert count_params(backbone) + count_params(head) == count_params(ref) - removed
    outs = backbone.forward_stages(images(channels=1))
    assert [o.shape[1] for o in outs] == backbone.stage_channels


def test_weights_and_other_channel_counts_are_a_config_error(tv: Zoo) -> None:
    path, _ = tv.reference("resnet18")
    with pytest.raises(ConfigError) as err:
        build("resnet18", in_channels=4, mean=(0.5,) * 4, std=(0.5,) * 4, weights=str(path))
    assert_one_line(err, "resnet18", "4 channels")


# -- normalize -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("with_file", "normalize", "imagenet"),
    [(True, "auto", True), (False, "auto", False), (True, "dataset", False), (False, "imagenet", True)],
)
def test_normalize(tv: Zoo, with_file: bool, normalize: str, imagenet: bool) -> None:
    params: dict[str, Any] = {"normalize": normalize}
    if with_file:
        params["weights"] = str(tv.reference("resnet18")[0])
    mean, std = stats_of(build("resnet18", **params))
    want_mean, want_std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else (DATA_MEAN, DATA_STD)
    assert mean == pytest.approx(want_mean)
    assert std == pytest.approx(want_std)


# -- the original head ------------------------------------------------------------------------------------
def test_original_head_for_10_classes_replaces_only_the_last_linear(tv: Zoo) -> None:
    path, _ = tv.reference("vgg16")
    state = torch.load(path, weights_only=True)
    backbone = tv.backbone("vgg16")
    head = backbone.original_head(10)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(25088, 4096), (4096, 4096), (4096, 10)]
    for m, key in zip(linears[:2], ["classifier.0", "classifier.3"], strict=True):
        torch.testing.assert_close(m.weight, state[f"{key}.weight"], rtol=0, atol=0)
        torch.testing.assert_close(m.bias, state[f"{key}.bias"], rtol=0, atol=0)
    # the backbone's own head is untouched (a copy was changed), and 1000 classes keep the file's last layer
    again = [m for m in backbone.original_head(1000).modules() if isinstance(m, nn.Linear)]
    torch.testing.assert_close(again[-1].weight, state["classifier.6.weight"], rtol=0, atol=0)
    assert head[-1] is not backbone.original_head(1000)[-1]
    model = Classifier(backbone, 10, head="original").eval()
    assert model(images()).logits.shape == (2, 10)


# -- named torchvision weights, offline --------------------------------------------------------------------
@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An empty torch hub in ``tmp_path`` and no network: returns the URLs a download was attempted for."""
    attempts: list[str] = []

    def refuse(url: str, *args: Any, **kwargs: Any) -> None:
        attempts.append(url)
        raise urllib.error.URLError("no network")

    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test
    torch.hub.set_dir(str(home / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return attempts


def test_named_weights_offline_then_from_the_cache(offline_hub: list[str], tmp_path: Path, monkeypatch: Any) -> None:
    enum = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    with pytest.raises(CheckpointError) as err:
        build("resnet18", weights="IMAGENET1K_V1")
    assert_one_line(err, "IMAGENET1K_V1", enum.url, "pass")
    assert offline_hub == [enum.url]
    target = wts.hub_file(enum.url)
    assert target == tmp_path / "torch" / "hub" / "checkpoints" / Path(enum.url).name
    assert not target.exists()

    torch.manual_seed(SEED + 1)
    ref = torchvision.models.resnet18().eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ref.state_dict(), target)
    offline_hub.clear()
    # the weights' own statistics, not xbench's ImageNet fallback for files
    monkeypatch.setattr(zoo, "IMAGENET_MEAN", (0.0, 0.0, 0.0))
    monkeypatch.setattr(zoo, "IMAGENET_STD", (1.0, 1.0, 1.0))
    backbone = build("resnet18", weights="IMAGENET1K_V1")
    assert offline_hub == []
    transform = enum.transforms()
    mean, std = stats_of(backbone)
    assert mean == pytest.approx(list(transform.mean))
    assert std == pytest.approx(list(transform.std))
    x = images()
    want = ref(normalized(x, transform.mean, transform.std))
    got = Classifier(backbone, 1000, head="original").eval()(x).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))

    cls = BACKBONES.get("resnet18")
    identity = cls.weights_identity(cls.Params(weights="IMAGENET1K_V1"))
    assert identity == {"name": "IMAGENET1K_V1", "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
    assert offline_hub == []


def test_unknown_weight_name_lists_the_known_ones(offline_hub: list[str]) -> None:
    with pytest.raises(CheckpointError) as err:
        build("resnet18", weights="IMAGENET9K")
    known = list(torchvision.models.ResNet18_Weights.__members__)
    assert_one_line(err, "IMAGENET9K", "resnet18", *known)
    assert offline_hub == []


def test_weights_identity_of_a_file_and_of_none(tv: Zoo) -> None:
    path, _ = tv.reference("resnet18")
    cls = BACKBONES.get("resnet18")
    assert cls.weights_identity(cls.Params(weights=str(path))) == {
        "name": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert cls.weights_identity(cls.Params()) is None


# -- timm ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def timm_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, nn.Module]]:
    root = tmp_path_factory.mktemp("timm")
    made: dict[str, tuple[Path, nn.Module]] = {}

    def get(name: str) -> tuple[Path, nn.Module]:
        if name not in made:
            torch.manual_seed(SEED)
            model = timm.create_model(name).eval()
            path = root / f"{name}.pth"
            torch.save(model.state_dict(), path)
            made[name] = (path, model)
        return made[name]

    return get


@pytest.mark.parametrize("name", TIMM)
def test_timm_backbone_matches_timm(timm_file: Callable[[str], tuple[Path, nn.Module]], name: str) -> None:
    path, ref = timm_file(name)
    backbone = build(f"timm:{name}", weights=str(path))
    features = timm.create_model(name, features_only=True)
    keep = [i for i, r in enumerate(features.feature_info.reduction()) if r > 2]
    assert backbone.stage_channels == [features.feature_info.channels()[i] for i in keep]
    assert backbone.stage_strides == [features.feature_info.reduction()[i] for i in keep]

    cfg = ref.pretrained_cfg
    mean, std = stats_of(backbone)
    assert mean == pytest.approx(list(cfg["mean"]))
    assert std == pytest.approx(list(cfg["std"]))

    taps = [i["module"] for i in ref.feature_info if i["reduction"] > 2]
    assert len(taps) == len(keep)
    seen: dict[str, Tensor] = {}
    handles = [
        ref.get_submodule(t).register_forward_hook(lambda _m, _i, out, t=t: seen.__setitem__(t, out)) for t in taps
    ]
    x = images()
    try:
        want_logits = ref(normalized(x, cfg["mean"], cfg["std"]))
    finally:
        for h in handles:
            h.remove()
    got = backbone.forward_stages(x)
    for g, t in zip(got, taps, strict=True):
        torch.testing.assert_close(g, seen[t], rtol=1e-4, atol=1e-5 * float(seen[t].abs().max()), msg=t)
    model = Classifier(backbone, ref.num_classes, head="original").eval()
    assert count_params(model) == count_params(ref)
    got_logits = model(x).logits
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-5 * float(want_logits.abs().max()))


def test_timm_unknown_model() -> None:
    with pytest.raises(UnknownNameError) as err:
        BACKBONES.get("timm:not_a_model")
    assert_one_line(err, "timm:not_a_model")
    assert "timm:not_a_model" not in BACKBONES


@pytest.fixture
def no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Hugging Face offline with an empty cache, and any socket connection refused: returns the attempts."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch" / "hub"))
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_timm_pretrained_tag_offline(no_network: list[Any]) -> None:
    assert "resnet18.a1_in1k" in timm.list_pretrained("resnet18.a1_in1k")
    with pytest.raises(CheckpointError) as err:
        build("timm:resnet18", weights="a1_in1k")
    assert_one_line(err, "resnet18.a1_in1k", "download", "pass the file")
    assert no_network == []


def test_timm_unknown_pretrained_tag(no_network: list[Any]) -> None:
    with pytest.raises(CheckpointError) as err:
        build("timm:resnet18", weights="no_such_tag")
    assert_one_line(err, "no_such_tag", "resnet18")
    assert no_network == []
