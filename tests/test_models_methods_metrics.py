"""Contract tests over every registered method, backbone and metric, plus known values.

Every method must build a model for grey and colour inputs whose forward returns
``ModelOutput``, whose loss is a finite scalar that trains the network, and whose
explanations are (B, H, W) non-negative finite maps. Grad-CAM, top-k accuracy,
parameter and MAC counts are checked against hand computations.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn

from xbench.data.base import ImageSplit
from xbench.explain.base import default_explanation
from xbench.explain.gradcam import grad_cam
from xbench.methods.base import Method, MethodContext
from xbench.metrics.accuracy import topk_accuracy
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext, LogitsOnly
from xbench.metrics.efficiency import count_macs, count_parameters
from xbench.models.base import Backbone
from xbench.models.output import Batch, ModelOutput
from xbench.registry import BACKBONES, METHODS, METRICS

NUM_CLASSES = 5
SIZE = 16
BACKBONE = {"depth": 8, "width": 4}


def context(channels: int, backbone: str = "resnet_cifar", params: dict | None = None) -> MethodContext:
    return MethodContext(
        num_classes=NUM_CLASSES,
        in_channels=channels,
        image_size=(SIZE, SIZE),
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        backbone=backbone,
        backbone_params=BACKBONE if params is None else params,
    )


def make_method(name: str, channels: int) -> Method:
    cls = METHODS.get(name)
    return cls(cls.Params(), context(channels))


def make_batch(channels: int, b: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, channels, SIZE, SIZE, generator=g)
    y = torch.arange(b) % NUM_CLASSES
    mask = torch.zeros(b, 1, SIZE, SIZE, dtype=torch.bool)
    mask[:, :, 4:12, 4:12] = True
    return Batch(x, y, torch.arange(b), mask)


# -- methods ---------------------------------------------------------------------------------
CHANNELS = pytest.mark.parametrize("channels", [1, 3], ids=["grey", "colour"])
EVERY_METHOD = pytest.mark.parametrize("name", METHODS.names())


@EVERY_METHOD
def test_method_metadata(name: str) -> None:
    cls = METHODS.get(name)
    assert issubclass(cls, Method)
    assert isinstance(cls.paper, str) and cls.paper, "a method names its paper (or says it has none)"
    assert isinstance(cls.description, str) and cls.description
    assert issubclass(cls.Params, BaseModel)
    cls.Params()  # every parameter has a default


@EVERY_METHOD
@CHANNELS
def test_method_forward_loss_backward(name: str, channels: int) -> None:
    torch.manual_seed(0)
    method = make_method(name, channels)
    model = method.build()
    assert isinstance(model, nn.Module)
    batch = make_batch(channels)
    model.train()
    out = model(batch.x)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (4, NUM_CLASSES)
    assert torch.isfinite(out.logits).all()
    for exit_logits in out.exit_logits:
        assert exit_logits.shape == (4, NUM_CLASSES)

    loss = method.training_step(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    params = method.trainable_parameters(model)
    assert params, "a method trains something"
    grads = [p.grad for p in params]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    # The gradient reaches both ends of the network: the first and the last trainable tensors.
    for p in (params[0], params[-1]):
        assert p.grad is not None and p.grad.abs().sum() > 0


@EVERY_METHOD
@CHANNELS
def test_method_explain(name: str, channels: int) -> None:
    torch.manual_seed(0)
    method = make_method(name, channels)
    model = method.build().eval()
    batch = make_batch(channels, b=3)
    maps = default_explanation(method, model, batch.x, batch.y)
    assert maps.shape == (3, SIZE, SIZE)
    assert torch.isfinite(maps).all()
    assert (maps >= 0).all()
    assert not maps.requires_grad


# -- backbones ----------------------------------------------------------------------------------
#: One backbone of each family (the zoo's are slow to build; tests/models/test_zoo.py covers every name).
REPRESENTATIVE = ["resnet_cifar", "resnet18", "vgg11_bn", "mobilenet_v3_small", "efficientnet_b0"]


def test_representative_backbones_cover_every_family() -> None:
    from xbench.models.zoo import TORCHVISION

    assert set(REPRESENTATIVE) <= set(BACKBONES.names())
    assert all(any(name in archs for name in REPRESENTATIVE) for archs in TORCHVISION.values())


@pytest.mark.parametrize("name", REPRESENTATIVE)
@CHANNELS
def test_backbone_stages_match_their_metadata(name: str, channels: int) -> None:
    backbone = context(channels, name, {}).build_backbone().eval()  # eval: EfficientNet's stochastic depth
    assert isinstance(backbone, Backbone)
    size = SIZE if name == "resnet_cifar" else 32  # VGG's five max-pools need 32 px
    x = torch.rand(2, channels, size, size)
    stages = backbone.forward_stages(x)
    assert len(stages) == len(backbone.stages) == len(backbone.stage_channels) == len(backbone.stage_strides)
    for h, c, s in zip(stages, backbone.stage_channels, backbone.stage_strides, strict=True):
        side = -(-size // s)  # a stride-2 step rounds up (padded convolutions), as at the metadata's probe size
        assert h.shape == (2, c, side, side)
    assert torch.equal(backbone(x), stages[-1])
    assert len(backbone.forward_stages(x, upto=0)) == 1


@pytest.mark.parametrize(("depth", "blocks"), [(8, 1), (14, 2), (20, 3)])
def test_resnet_cifar_depth(depth: int, blocks: int) -> None:
    backbone = context(3, "resnet_cifar", {"depth": depth, "width": 2}).build_backbone()
    assert [len(stage) for stage in backbone.stages] == [blocks] * 3
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 3x3 convs plus the final linear layer make the depth


# -- Grad-CAM ------------------------------------------------------------------------------------
def hand_grad_cam(model: nn.Module, layer: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Selvaraju et al.: w_c = mean_ij dy/dA_cij; map = ReLU(sum_c w_c A_c), upsampled bilinearly."""
    saved: dict[str, Tensor] = {}

    def keep(_module: nn.Module, _inp: object, out: Tensor) -> None:
        out.retain_grad()
        saved["A"] = out

    handle = layer.register_forward_hook(keep)
    try:
        logits = model(x).logits
    finally:
        handle.remove()
    logits.gather(1, target[:, None]).sum().backward()
    a, g = saved["A"], saved["A"].grad
    weights = g.mean(dim=(2, 3))
    cam = F.relu((weights[:, :, None, None] * a).sum(dim=1, keepdim=True))
    up = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return up.squeeze(1).detach()


@pytest.mark.parametrize("channels", [1, 3])
def test_grad_cam_matches_hand_computation(channels: int) -> None:
    torch.manual_seed(1)
    model = make_method("baseline", channels).build().eval()
    x = torch.rand(4, channels, SIZE, SIZE)
    target = torch.tensor([0, 1, 2, 4])
    ours = grad_cam(model, x, target)
    hand = hand_grad_cam(model, model.backbone.stages[-1], x, target)
    assert ours.shape == hand.shape == (4, SIZE, SIZE)
    assert hand.abs().sum() > 0  # a non-trivial comparison
    torch.testing.assert_close(ours, hand, rtol=1e-4, atol=1e-6)


def test_grad_cam_on_an_explicit_layer() -> None:
    torch.manual_seed(2)
    model = make_method("baseline", 3).build().eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    target = torch.tensor([3, 3])
    layer = model.backbone.stages[1]
    torch.testing.assert_close(
        grad_cam(model, x, target, layer=layer), hand_grad_cam(model, layer, x, target), rtol=1e-4, atol=1e-6
    )


def test_grad_cam_needs_a_backbone() -> None:
    class Bare(nn.Module):
        def forward(self, x: Tensor) -> ModelOutput:
            return ModelOutput(logits=x.flatten(1)[:, :2])

    with pytest.raises(TypeError, match=r"override Method\.explain"):
        grad_cam(Bare(), torch.rand(1, 1, 4, 4), torch.tensor([0]))


# -- accuracy ---------------------------------------------------------------------------------------
LOGITS = torch.tensor(
    [
        [0.9, 0.05, 0.05],  # label 0: top-1 hit
        [0.2, 0.5, 0.3],  # label 2: second largest
        [0.1, 0.3, 0.6],  # label 0: third largest
        [0.3, 0.4, 0.3],  # label 1: top-1 hit
    ]
)
LABELS = torch.tensor([0, 2, 0, 1])


@pytest.mark.parametrize(("k", "expected"), [(1, 0.5), (2, 0.75), (3, 1.0), (5, 1.0)])
def test_topk_accuracy_known_values(k: int, expected: float) -> None:
    assert topk_accuracy(LOGITS, LABELS, k) == pytest.approx(expected)


def test_topk_accuracy_perfect_and_wrong() -> None:
    labels = torch.arange(6) % 4
    perfect = F.one_hot(labels, 4).float()
    assert topk_accuracy(perfect, labels, 1) == 1.0
    assert topk_accuracy(-perfect, labels, 1) == 0.0
    assert topk_accuracy(-perfect, labels, 3) == 0.0  # the label is the smallest of four
    assert topk_accuracy(-perfect, labels, 4) == 1.0


# -- efficiency ------------------------------------------------------------------------------------
def test_count_parameters_by_hand() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False), nn.BatchNorm1d(2))
    expected = (3 * 4 + 4) + 4 * 2 + (2 + 2)  # BN's running stats are buffers, not parameters
    assert count_parameters(model) == expected
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == expected  # frozen parameters still count


class Wrapped(nn.Module):
    """Returns ``ModelOutput`` like every xbench model."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(logits=self.layer(x))


@pytest.mark.parametrize(
    ("layer", "shape", "macs"),
    [
        (nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10), 3 * 8 * 9 * 100),
        (nn.Conv2d(3, 8, 3, padding=1, bias=False), (2, 3, 10, 10), 2 * 3 * 8 * 9 * 100),
        (nn.Linear(10, 4), (1, 10), 40),
        (nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 4)), (1, 3, 2, 2), 12 * 6 + 6 * 4),
    ],
    ids=["conv", "conv-batch2", "linear", "mlp"],
)
def test_count_macs_by_hand(layer: nn.Module, shape: tuple[int, ...], macs: int) -> None:
    total, _skipped = count_macs(LogitsOnly(Wrapped(layer)), torch.rand(shape))
    assert total == macs


# -- metrics -----------------------------------------------------------------------------------------
def tiny_split(channels: int = 3, n: int = 10) -> ImageSplit:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.bool)
    masks[:, :, 3:10, 5:13] = True
    return ImageSplit(
        torch.rand(n, channels, SIZE, SIZE, generator=g),
        torch.arange(n) % NUM_CLASSES,
        masks,
        [f"c{i}" for i in range(NUM_CLASSES)],
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )


@pytest.fixture(scope="module")
def eval_context() -> EvalContext:
    torch.manual_seed(0)
    method = make_method("baseline", 3)
    model = method.build().eval()
    return EvalContext(model, method, tiny_split(), torch.device("cpu"), batch_size=4, progress=False)


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_contract(name: str, eval_context: EvalContext) -> None:
    cls = METRICS.get(name)
    assert issubclass(cls, Metric)
    assert isinstance(cls.category, str) and cls.category
    assert cls.higher_is_better in (True, False, None)
    assert isinstance(cls.requires_masks, bool)
    assert issubclass(cls.Params, BaseModel)
    assert set(cls.display()) == {"label", "unit", "scale", "decimals"}
    results = cls(cls.Params()).compute(eval_context)
    if cls.requires_exits:  # the context's model is a baseline, without exits
        assert results == []
        return
    assert results and all(isinstance(r, MetricResult) for r in results)
    for r in results:
        assert isinstance(r.value, float) and math.isfinite(r.value)
        assert isinstance(r.params, dict)


def test_accuracy_metrics_agree_with_topk(eval_context: EvalContext) -> None:
    pred = eval_context.predictions()
    assert pred.logits.shape == (10, NUM_CLASSES)
    for name, k in (("top1", 1), ("top5", 5)):
        (result,) = METRICS.get(name)().compute(eval_context)
        assert result.value == topk_accuracy(pred.logits, pred.labels, k)
        assert result.n == 10 and result.params == {"k": k}


def test_efficiency_metrics_agree_with_counts(eval_context: EvalContext) -> None:
    (params,) = METRICS.get("params")().compute(eval_context)
    assert params.value == count_parameters(eval_context.model)
    (flops,) = METRICS.get("flops")().compute(eval_context)
    total, _ = count_macs(LogitsOnly(eval_context.model), eval_context.example_input(1))
    assert flops.value == total > 0
    assert flops.params["input_shape"] == [1, 3, SIZE, SIZE]
