"""Every method on torchvision backbones: one training step, evaluation on pretrained-shaped models, TAME
against the official code, LAP's replacements and EGT's exits on VGG.

1. Each of baseline, egt, lap, ecr and tame builds on every backbone family (resnet_cifar, ResNet-18 with
   the CIFAR stem, VGG-11-BN, MobileNetV3-Small, EfficientNet-B0) at 32 px and trains one step: a finite
   loss, the trainable parameters move, TAME's frozen classifier does not. Coded ResNeXt once (it ignores
   the backbone).
2. ResNet-50 and VGG-16 with a local state-dict file (random init, the torchvision layout): every method
   evaluates at 64 px with (B, K) logits and (B, H, W) native maps; the baseline with ``head: original``
   gives exactly torchvision's logits.
3. TAME on VGG-16 and ResNet-50 against the official code (bmezaris/TAME): tapped layers, their channels,
   the attention module's parameter count for 1000 classes and the map resolution at 224 px.
4. LAP: which max-pools and strided convolutions become LAP layers, the error when there is none,
   ``from_pretrained: baseline`` on VGG.
5. EGT on VGG-11-BN: five exits; ``exit_stream`` and ``forward_exit`` agree with ``forward``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from xbench.errors import ConfigError
from xbench.methods.base import Method, MethodContext
from xbench.methods.egt import EarlyExitNet
from xbench.methods.lap import LAP, LAPNet, LAPParams, LocalAttentionPool
from xbench.methods.tame import TAMEAttention, TAMENet
from xbench.models.base import Backbone, Normalize
from xbench.models.output import Batch
from xbench.models.zoo import IMAGENET_MEAN, IMAGENET_STD
from xbench.registry import METHODS

K = 4
SIZE = 32
B = 4
METHOD_NAMES = ["baseline", "egt", "lap", "ecr", "tame"]
#: Backbone params of each family at 32 px (ResNet-18 with its ImageNet stem would end at 1×1).
BACKBONES = {
    "resnet_cifar": {"depth": 8, "width": 4},
    "resnet18": {"cifar_stem": True},
    "vgg11_bn": {},
    "mobilenet_v3_small": {},
    "efficientnet_b0": {},
}


def context(
    backbone: str,
    params: dict[str, Any] | None = None,
    k: int = K,
    size: int = SIZE,
    required_params: dict[str, Any] | None = None,
) -> MethodContext:
    return MethodContext(
        num_classes=k,
        in_channels=3,
        image_size=(size, size),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        backbone=backbone,
        backbone_params=BACKBONES.get(backbone, {}) if params is None else params,
        required_params=required_params,
    )


def make(name: str, ctx: MethodContext, seed: int = 0, **params: Any) -> tuple[Method, nn.Module]:
    cls = METHODS.get(name)
    method = cls(cls.Params.model_validate(params), ctx)
    torch.manual_seed(seed)
    return method, method.build()


def images(n: int, size: int, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def make_batch(b: int = B, size: int = SIZE, k: int = K) -> Batch:
    mask = torch.zeros(b, 1, size, size, dtype=torch.bool)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    return Batch(images(b, size), torch.arange(b) % k, torch.arange(b), mask)


def imagenet_normalised(x: Tensor) -> Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


# -- 1. one training step on every backbone family ------------------------------------------------------
def train_one_step(method: Method, model: nn.Module, batch: Batch) -> None:
    """``training_step`` → backward → one Adam step; the loss is finite and the trainable parameters move."""
    model.train()
    params = method.trainable_parameters(model)
    assert params, "a method trains something"
    before = [p.detach().clone() for p in params]
    # Adam's first step moves every parameter with a non-negligible gradient by about lr, however small it is.
    opt = torch.optim.Adam(params, lr=1e-2)
    loss = method.training_step(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss), loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = [not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True)]
    assert moved[0] and moved[-1], "the step reaches both ends of the trainable network"
    for p, m in zip(params, moved, strict=True):
        assert p.grad is None or torch.isfinite(p.grad).all()
        if p.grad is not None and float(p.grad.abs().max()) > 1e-6:
            assert m, f"a parameter of shape {tuple(p.shape)} had a gradient and did not move"
    assert all(torch.isfinite(p).all() for p in params)


#: Full matrix in the default run: the zoo backbones build in 0.2 s (VGG-11-BN in ~2.5 s) at 32 px.
@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_trains_one_step_on_every_backbone_family(name: str, backbone: str) -> None:
    ctx = context(backbone)
    method, model = make(name, ctx)
    frozen: dict[str, Tensor] = {}
    if name == "tame":
        assert isinstance(model, TAMENet)
        _, baseline = make("baseline", ctx, seed=1)  # another seed: loading it changes the classifier
        baseline_state = baseline.state_dict()
        method.load_required(model, baseline_state)
        frozen = {k: v.clone() for k, v in model.classifier.state_dict().items()}
        assert all(torch.equal(frozen[k], v) for k, v in baseline_state.items())
        assert {id(p) for p in method.trainable_parameters(model)} == {id(p) for p in model.attention.parameters()}
    train_one_step(method, model, make_batch())
    if name == "tame":
        assert isinstance(model, TAMENet)
        after = model.classifier.state_dict()  # weights and BatchNorm statistics alike
        assert all(torch.equal(after[k], v) for k, v in frozen.items()), "TAME changed the frozen classifier"


def test_coded_resnext_trains_one_step_whatever_the_backbone() -> None:
    method, model = make("coded_resnext", context("vgg11_bn"))  # its own network: the backbone is never built
    assert not any(isinstance(m, Backbone) for m in model.modules())
    train_one_step(method, model, make_batch())


# -- 2. evaluation on pretrained-shaped ResNet-50 and VGG-16 ----------------------------------------------
ZOO = ("resnet50", "vgg16")
ZOO_SIZE = 64  # VGG's five max-pools need 32 px; 64 px keeps every stage above 1×1 but the last
IMAGENET_CLASSES = 1000


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A random-init torchvision state dict of each model, saved as a local weights file."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for i, arch in enumerate(ZOO):
        torch.manual_seed(100 + i)
        path = folder / f"{arch}.pth"
        torch.save(torchvision.models.get_model(arch).state_dict(), path)
        files[arch] = str(path)
    return files


def reference_model(arch: str, path: str) -> nn.Module:
    """torchvision's model holding the file's tensors (built on the meta device: no slow initialisation)."""
    with torch.device("meta"):
        model = torchvision.models.get_model(arch)
    model.load_state_dict(torch.load(path, weights_only=True), assign=True)
    return model.eval()


class ZooModels:
    """Each method built once per model with the file's weights, for 1000 classes; built on first use."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.built: dict[str, dict[str, tuple[Method, nn.Module]]] = {}

    def context(self, arch: str, required_params: dict[str, Any] | None = None) -> MethodContext:
        return context(arch, {"weights": self.files[arch]}, IMAGENET_CLASSES, ZOO_SIZE, required_params)

    def __getitem__(self, arch: str) -> dict[str, tuple[Method, nn.Module]]:
        if arch not in self.built:
            ctx = self.context(arch)
            models = {name: make(name, ctx) for name in ("egt", "lap", "ecr")}
            models["baseline"] = make("baseline", ctx, head="original")
            # TAME explains the baseline row above: its head (the model's own classifier) and its weights.
            tame, model = make("tame", self.context(arch, required_params={"head": "original"}))
            tame.load_required(model, models["baseline"][1].state_dict())
            models["tame"] = (tame, model)
            for _, m in models.values():
                m.eval()
            self.built[arch] = models
        return self.built[arch]


@pytest.fixture(scope="module")
def zoo(weight_files: dict[str, str]) -> Iterator[ZooModels]:
    models = ZooModels(weight_files)
    yield models
    models.built.clear()  # VGG-16 is 0.5 GB a copy


@pytest.mark.parametrize("arch", ZOO)
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_evaluates_on_a_pretrained_shaped_model(zoo: ZooModels, arch: str, name: str) -> None:
    method, model = zoo[arch][name]
    x = images(2, ZOO_SIZE, seed=1)
    with torch.no_grad():
        out = model(x)
    assert out.logits.shape == (2, IMAGENET_CLASSES)
    assert torch.isfinite(out.logits).all()
    for z in out.exit_logits:
        assert z.shape == (2, IMAGENET_CLASSES)
    maps = method.native_maps(model, x, out.logits.argmax(dim=1))
    if name == "baseline":
        assert maps is None  # explained post hoc only
        return
    assert maps is not None
    assert maps.shape == (2, ZOO_SIZE, ZOO_SIZE)
    assert torch.isfinite(maps).all() and (maps >= 0).all()


@pytest.mark.parametrize("arch", ZOO)
def test_baseline_with_the_original_head_gives_torchvision_logits(
    zoo: ZooModels, weight_files: dict[str, str], arch: str
) -> None:
    _, model = zoo[arch]["baseline"]
    reference = reference_model(arch, weight_files[arch])
    x = images(2, ZOO_SIZE, seed=2)
    with torch.no_grad():
        got = model(x).logits  # xbench normalises inside the backbone
        want = reference(imagenet_normalised(x))
    assert got.shape == want.shape == (2, IMAGENET_CLASSES)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # TAME explains exactly that network: its logits are the baseline's.
    with torch.no_grad():
        torch.testing.assert_close(zoo[arch]["tame"][1](x).logits, got, rtol=0, atol=0)


# -- 3. TAME against the official code ---------------------------------------------------------------------
#: bmezaris/TAME: the tapped layers are the README's and the train scripts' LAYERS
#: ("features.16 features.23 features.30" for vgg16, "layer2 layer3 layer4" in
#: scripts/bash scripts/train_eval_ResNet-50.sh); their channels and the 224-px resolution of the first
#: one follow from torchvision's models, which scripts/utilities/model_prep.py loads.
OFFICIAL = {
    "vgg16": {"layers": ["features.16", "features.23", "features.30"], "channels": [256, 512, 512], "map": 28},
    "resnet50": {"layers": ["layer2", "layer3", "layer4"], "channels": [512, 1024, 2048], "map": 28},
}


def official_attention_parameters(channels: list[int]) -> int:
    """The parameters of the official ``AttentionTAME`` (bmezaris/TAME, scripts/utilities/composite_models.py).

    Per tapped layer of C channels: ``nn.Conv2d(C, C, kernel_size=1, bias=True)`` (C·C + C) and
    ``nn.BatchNorm2d(C)`` (weight and bias: 2C; running statistics are buffers). Then the fuser,
    ``nn.Conv2d(sum(C), 1000, kernel_size=1, bias=True)``: sum(C)·1000 + 1000 (1000 is hard-coded there).
    """
    per_tap = sum(c * c + c + 2 * c for c in channels)
    fuser = sum(channels) * IMAGENET_CLASSES + IMAGENET_CLASSES
    return per_tap + fuser


def test_official_attention_parameter_counts_by_hand() -> None:
    # VGG-16: (256² + 3·256) + 2·(512² + 3·512) = 66,304 + 527,360; fuser 1,280·1000 + 1000 = 1,281,000.
    assert official_attention_parameters(OFFICIAL["vgg16"]["channels"]) == 66_304 + 527_360 + 1_281_000 == 1_874_664
    # ResNet-50: 263,680 + 1,051,648 + 4,200,448 = 5,515,776; fuser 3,584·1000 + 1000 = 3,585,000.
    assert official_attention_parameters(OFFICIAL["resnet50"]["channels"]) == 5_515_776 + 3_585_000 == 9_100_776


@pytest.mark.parametrize("arch", ZOO)
def test_tame_taps_the_official_layers_with_their_channels(
    zoo: ZooModels, weight_files: dict[str, str], arch: str
) -> None:
    official = OFFICIAL[arch]
    _, model = zoo[arch]["tame"]
    assert isinstance(model, TAMENet)
    backbone = model.classifier.backbone
    n = len(backbone.stages)
    assert model.taps == [n - 3, n - 2, n - 1]  # the default: the last three stages
    assert [backbone.stage_channels[t] for t in model.taps] == official["channels"]
    assert [conv.in_channels for conv in model.attention.convs] == official["channels"]
    # The tapped stage outputs are the official layers' outputs (same weights, ImageNet-normalised input).
    x = images(1, ZOO_SIZE, seed=3)
    extractor = create_feature_extractor(reference_model(arch, weight_files[arch]), return_nodes=official["layers"])
    with torch.no_grad():
        stages = backbone.forward_stages(x)
        want = extractor(imagenet_normalised(x))
    for t, layer in zip(model.taps, official["layers"], strict=True):
        torch.testing.assert_close(stages[t], want[layer], rtol=0, atol=0, msg=f"stage {t} vs {layer}")


@pytest.mark.parametrize("arch", ZOO)
def test_tame_attention_module_has_the_official_parameter_count(zoo: ZooModels, arch: str) -> None:
    _, model = zoo[arch]["tame"]
    assert isinstance(model, TAMENet)
    ours = sum(p.numel() for p in model.attention.parameters())
    assert ours == official_attention_parameters(OFFICIAL[arch]["channels"])
    assert model.attention.fuser.out_channels == IMAGENET_CLASSES


@pytest.mark.parametrize("arch", ZOO)
def test_tame_map_resolution_at_224_px_is_the_first_taps(zoo: ZooModels, arch: str) -> None:
    """Official: ``feat_height = min(first tap's height, 56)``; 28×28 for both models at 224 px, where
    xbench's ``max_map_size: 56`` does not bind."""
    method, model = zoo[arch]["tame"]
    assert isinstance(model, TAMENet)
    assert method.params.max_map_size == 56
    taps: list[tuple[int, ...]] = []
    hooks = [
        model.classifier.backbone.stages[t].register_forward_hook(lambda _m, _i, o: taps.append(tuple(o.shape)))
        for t in model.taps
    ]
    try:
        with torch.no_grad():
            out = model(images(1, 224, seed=4))  # the one 224-px forward pass of this model
    finally:
        for h in hooks:
            h.remove()
    side = OFFICIAL[arch]["map"]
    assert taps == [(1, c, side >> i, side >> i) for i, c in enumerate(OFFICIAL[arch]["channels"])]
    assert out.maps[0].shape == out.extras["class_logit_maps"].shape == (1, IMAGENET_CLASSES, side, side)
    assert out.logits.shape == (1, IMAGENET_CLASSES)


def test_max_map_size_caps_each_side_of_the_first_taps_resolution() -> None:
    """``max_map_size`` (56, the official cap) only binds when the first tap is larger than 56 px, e.g.
    VGG-16 at 512 px (features.16 at 64×64); the official code then uses 56×56. xbench caps each side on its
    own, so a non-square tap keeps its aspect where the official code makes a square of the height."""
    torch.manual_seed(0)
    attention = TAMEAttention([2, 3], 5, max_map_size=56).eval()
    with torch.no_grad():
        a, c = attention([torch.rand(1, 2, 64, 64), torch.rand(1, 3, 32, 32)])
        assert a.shape == c.shape == (1, 5, 56, 56)
        assert attention([torch.rand(1, 2, 28, 28), torch.rand(1, 3, 14, 14)])[0].shape == (1, 5, 28, 28)
        assert attention([torch.rand(1, 2, 64, 40), torch.rand(1, 3, 32, 20)])[0].shape == (1, 5, 56, 40)
        uncapped = TAMEAttention([2, 3], 5, max_map_size=None).eval()
        assert uncapped([torch.rand(1, 2, 64, 64), torch.rand(1, 3, 32, 32)])[0].shape == (1, 5, 64, 64)


# -- 4. LAP on zoo backbones --------------------------------------------------------------------------------
def lap_layers(module: nn.Module) -> list[LocalAttentionPool]:
    return [m for m in module.modules() if isinstance(m, LocalAttentionPool)]


def test_lap_replaces_every_vgg_max_pool_and_maps_at_the_input_size() -> None:
    method, model = make("lap", context("vgg11_bn"))
    assert isinstance(model, LAPNet)
    assert len(model.inplace) == 5  # VGG-11 has five max-pools, one at the end of each stage
    assert len(lap_layers(model.backbone)) == 5
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert all(isinstance(p, nn.Identity) for p in model.pools)  # VGG has no strided convolution
    x = images(2, SIZE, seed=5)
    with torch.no_grad():
        out = model.eval()(x)
    assert out.logits.shape == (2, K)
    # Score maps of the five in-place layers (their inputs: 32, 16, 8, 4, 2 px) and of the global layer (1 px).
    assert [tuple(s.shape) for s in out.maps] == [(2, 1, s, s) for s in (32, 16, 8, 4, 2, 1)]
    for interpretation in ("last", "product"):
        maps = LAP(LAPParams(interpretation=interpretation), method.ctx).native_maps(model, x, out.logits.argmax(1))
        assert maps.shape == (2, SIZE, SIZE) and torch.isfinite(maps).all()


def test_lap_on_resnet18_replaces_the_stem_max_pool_and_fronts_stages_1_to_3() -> None:
    ctx = context("resnet18", {}, size=64)  # torchvision's ImageNet stem: 7×7 stride-2 conv and a max-pool
    method, model = make("lap", ctx)
    assert isinstance(model, LAPNet)
    stem = model.backbone.stem
    assert isinstance(stem, nn.Sequential)
    assert len(model.inplace) == 1 and model.inplace[0].startswith("backbone.stem.")
    assert isinstance(stem[int(model.inplace[0].split(".")[2])], LocalAttentionPool)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert isinstance(model.pools[0], nn.Identity)
    assert all(isinstance(p, LocalAttentionPool) for p in model.pools[1:])
    assert [p.head[0].in_channels for p in model.pools[1:]] == [64, 128, 256]  # the previous stage's channels
    strided = [m for m in model.backbone.stages.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert not strided, "the stages' stride-2 convolutions became stride 1"
    first = next(m for m in stem.modules() if isinstance(m, nn.Conv2d))
    assert first.stride == (2, 2), "the stem's strided convolution stays"
    x = images(2, 64, seed=6)
    with torch.no_grad():
        out = model.eval()(x)
    # Stem LAP on 32 px, stage LAPs on 16, 8 and 4 px, global on 2 px: torchvision's resolutions.
    assert [tuple(s.shape[-2:]) for s in out.maps] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert out.features is not None and out.features.shape == (2, 512, 2, 2)
    assert method.native_maps(model, x, out.logits.argmax(1)).shape == (2, 64, 64)


class FlatBackbone(Backbone):
    """Nothing to replace: no max-pool and no strided convolution anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(Normalize((0.5,) * 3, (0.25,) * 3), nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU())
        self.stages = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU()), nn.Sequential(nn.Conv2d(4, 8, 3, 1, 1), nn.ReLU())]
        )
        self.stage_channels = [4, 8]
        self.stage_strides = [1, 1]


def test_lap_on_a_backbone_with_nothing_to_replace() -> None:
    with pytest.raises(ConfigError, match="downsample: false") as err:
        LAPNet(FlatBackbone(), K, LAPParams(downsample=True))
    assert "\n" not in str(err.value)
    params = LAPParams(downsample=False)
    model = LAPNet(FlatBackbone(), K, params).eval()
    x = images(2, 8, seed=7)
    with torch.no_grad():
        out = model(x)
    assert out.logits.shape == (2, K)
    assert len(out.maps) == 1  # the global LAP layer only
    assert LAP(params, context("resnet_cifar")).native_maps(model, x, out.logits.argmax(1)).shape == (2, 8, 8)


def test_lap_from_pretrained_baseline_on_vgg_loads_every_baseline_tensor() -> None:
    ctx = context("vgg11_bn")
    _, baseline = make("baseline", ctx, seed=8)
    method, model = make("lap", ctx, seed=9, from_pretrained="baseline")
    assert method.required_method(method.params) == "baseline"
    state = baseline.state_dict()
    method.load_required(model, state)
    ours = model.state_dict()
    for k, v in state.items():
        assert torch.equal(ours[k], v), k
    with pytest.raises(RuntimeError, match="do not fit"):
        method.load_required(model, {**state, "head.weight": torch.zeros(1)})
    train_one_step(method, model, make_batch())  # and it trains from there


def test_lap_from_pretrained_refuses_a_baseline_with_the_original_head() -> None:
    """A zoo model's own classifier has no place in LAP: a one-line ConfigError at build, not a load failure."""
    ctx = context("resnet_cifar", required_params={"head": "original"})
    with pytest.raises(ConfigError, match="head: gap") as err:
        make("lap", ctx, from_pretrained="baseline")
    assert "\n" not in str(err.value)
    make("lap", ctx)  # without from_pretrained the baseline row's head does not matter


# -- 5. EGT on VGG ------------------------------------------------------------------------------------------
def test_egt_on_vgg_has_five_exits_and_its_streams_agree_with_forward() -> None:
    _, model = make("egt", context("vgg11_bn"))
    assert isinstance(model, EarlyExitNet)
    assert model.num_exits == 5 and model.exit_stages == [0, 1, 2, 3, 4]  # 4 early exits + the final one
    x = images(3, SIZE, seed=10)
    model.eval()
    with torch.no_grad():
        out = model(x)
        stream = list(model.exit_stream(x))
        partial = [model.forward_exit(x, i) for i in range(5)]
    assert len(out.exit_logits) == len(stream) == 5
    assert torch.equal(out.exit_logits[-1], out.logits)
    for i in range(5):
        torch.testing.assert_close(stream[i], out.exit_logits[i])
        assert len(partial[i]) == i + 1
        for got, want in zip(partial[i], out.exit_logits[: i + 1], strict=True):
            torch.testing.assert_close(got, want)
