"""The captum explainers against captum called directly, and DeepLift's and LRP's completeness.

Each explainer must give what captum gives for the same model, images, params and seed, after the
documented channel reduction (sum, or sum of absolute values, over channels): on ``resnet_cifar``
(depth 8, width 4, 16 px) and torchvision's ``resnet18`` (``cifar_stem``, 32 px), both built by the
``baseline`` method. Batch norm gets random statistics so that it is not the identity it is at
initialisation. DeepLift's and LRP's completeness holds on the hook-safe ``resnet_cifar`` and fails
on a copy with the old block (a reused in-place ReLU, a functional ReLU and ``+``): the proof that
hook safety matters.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import captum
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    LRP,
    DeepLift,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from pydantic import ValidationError
from torch import Tensor, nn

from xbench.explain.attribution import baseline_images, cell_mask, gaussian_blur
from xbench.explain.captum_explainers import lrp_rules
from xbench.methods.base import Method, MethodContext
from xbench.models.layers import plain_relus
from xbench.models.output import LogitsOnly
from xbench.registry import EXPLAINERS, METHODS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:captum.*")

NUM_CLASSES = 5
BATCH = 3
SEED = 1234
CAPTUM = [
    "saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "guided_backprop", "guided_gradcam",
    "deeplift", "gradient_shap", "occlusion", "lime", "kernel_shap", "lrp",
]  # fmt: skip


def build(backbone: str, params: dict[str, Any], size: int) -> tuple[Method, nn.Module]:
    ctx = MethodContext(
        num_classes=NUM_CLASSES, in_channels=3, image_size=(size, size), mean=(0.5,) * 3, std=(0.25,) * 3,
        backbone=backbone, backbone_params=params,
    )  # fmt: skip
    cls = METHODS.get("baseline")
    method = cls(cls.Params(), ctx)
    torch.manual_seed(0)
    return method, method.build().eval()


def randomise_batch_norm(model: nn.Module, seed: int, shifts: bool = True) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if shifts:
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                    m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)


MODELS: dict[str, tuple[str, dict[str, Any], int]] = {
    "resnet_cifar": ("resnet_cifar", {"depth": 8, "width": 4}, 16),
    "resnet18": ("resnet18", {"cifar_stem": True}, 32),
}


@pytest.fixture(scope="module", params=list(MODELS))
def setup(request: pytest.FixtureRequest) -> tuple[str, Method, nn.Module, Tensor, Tensor]:
    backbone, params, size = MODELS[request.param]
    method, model = build(backbone, params, size)
    randomise_batch_norm(model, 7)
    x = torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(3))
    return request.param, method, model, x, torch.tensor([0, 3, 1])


# -- captum called directly ----------------------------------------------------------------------------
def grid(size: int, cell: int) -> Tensor:
    """Cells numbered row by row, built another way than the module's cell_mask."""
    n = math.ceil(size / cell)
    cells = torch.arange(n * n).view(n, n).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    return cells[:size, :size][None, None]


def direct(name: str, p: dict[str, Any], f: LogitsOnly, x: Tensor, t: Tensor, seed: int) -> Tensor:
    """captum's attributions for explainer ``name`` with params ``p`` (every param given explicitly)."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # GradientShap draws its baselines and path points from numpy
    base = baseline_images(x, p.get("baseline", "zero"), p.get("blur_sigma"))
    if name == "saliency":
        return Saliency(f).attribute(x, target=t, abs=p["abs"])
    if name == "input_x_gradient":
        return InputXGradient(f).attribute(x, target=t)
    if name == "integrated_gradients":
        return IntegratedGradients(f).attribute(
            x, baselines=base, target=t, n_steps=p["steps"], internal_batch_size=p["internal_batch_size"]
        )
    if name == "smoothgrad":
        return NoiseTunnel(Saliency(f)).attribute(
            x, nt_type="smoothgrad", nt_samples=p["samples"], nt_samples_batch_size=p["batch"], stdevs=p["stdev"],
            target=t, abs=p["abs"],
        )  # fmt: skip
    if name == "guided_backprop":
        return GuidedBackprop(f).attribute(x, target=t)
    if name == "guided_gradcam":
        return GuidedGradCam(f, f.model.backbone.stages[-1]).attribute(x, target=t, interpolate_mode=p["interpolate"])
    if name == "deeplift":
        return DeepLift(f).attribute(x, baselines=base, target=t)
    if name == "gradient_shap":
        refs = torch.rand(p["n_baselines"], *x.shape[1:], generator=torch.Generator().manual_seed(seed))
        return GradientShap(f).attribute(x, baselines=refs, n_samples=p["samples"], stdevs=p["stdev"], target=t)
    if name == "occlusion":
        c, w, s = x.shape[1], p["window"], p["stride"]
        return Occlusion(f).attribute(
            x, sliding_window_shapes=(c, w, w), strides=(c, s, s), baselines=base, target=t,
            perturbations_per_eval=p["batch"],
        )  # fmt: skip
    if name in ("lime", "kernel_shap"):
        from captum._utils.models.linear_model import SkLearnLasso
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        kernel = get_exp_kernel_similarity_function("cosine", kernel_width=p.get("kernel_width", 1.0))
        explainer = (
            Lime(f, interpretable_model=SkLearnLasso(alpha=p["alpha"]), similarity_func=kernel)
            if name == "lime"
            else KernelShap(f)
        )
        return explainer.attribute(
            x, baselines=base, target=t, feature_mask=grid(x.shape[-1], p["cell"]), n_samples=p["samples"],
            perturbations_per_eval=p["batch"], return_input_shape=True,
        )  # fmt: skip
    if name == "lrp":
        rules = lrp_rules(f, p["epsilon"], p["batchnorm"])
        assert rules is not None
        for m, rule in rules.items():
            m.rule = rule
        return LRP(f).attribute(x, target=t)
    raise AssertionError(name)


#: Small settings (the 32-px resnet18 runs every sample), with a non-default baseline or rule here and there.
CASES: dict[str, dict[str, Any]] = {
    "saliency": {"abs": False},
    "input_x_gradient": {},
    "integrated_gradients": {"steps": 4, "internal_batch_size": 5, "baseline": "blur", "channels": "abs_sum"},
    "smoothgrad": {"samples": 3, "batch": 2, "stdev": 0.2},
    "guided_backprop": {},
    "guided_gradcam": {},
    "deeplift": {"baseline": "mean"},
    "gradient_shap": {"samples": 3, "n_baselines": 4, "stdev": 0.05},
    "occlusion": {"window": 8, "stride": 8, "batch": 8},
    "lime": {"samples": 16, "cell": 8, "batch": 8},
    "kernel_shap": {"samples": 16, "cell": 8, "batch": 8, "baseline": "mean"},
    "lrp": {"epsilon": 1e-6},
}


def test_every_captum_explainer_is_registered_and_covered() -> None:
    assert set(CAPTUM) <= set(EXPLAINERS.names())
    assert set(CASES) == set(CAPTUM)


@pytest.mark.parametrize("name", CAPTUM)
def test_explainer_equals_captum(setup: tuple[str, Method, nn.Module, Tensor, Tensor], name: str) -> None:
    _, method, model, x, t = setup
    cls = EXPLAINERS.get(name)
    explainer = cls(cls.Params(**CASES[name]))
    p = explainer.params.model_dump()
    state, np_state = torch.random.get_rng_state(), np.random.get_state()[1]
    ours = explainer.explain(method, model, x, t, SEED)
    assert torch.equal(torch.random.get_rng_state(), state), "the caller's random state is untouched"
    assert (np.random.get_state()[1] == np_state).all()
    assert ours is not None
    assert ours.shape == (BATCH, *x.shape[-2:])
    assert torch.isfinite(ours).all() and ours.abs().sum() > 0 and not ours.requires_grad

    f = LogitsOnly(copy.deepcopy(model))
    # captum looks activations up by exact type: xbench's no-grad in-place ReLU is an nn.ReLU to it.
    with torch.enable_grad(), plain_relus(f):
        attr = direct(name, p, f, x, t, SEED)
    assert attr.shape == x.shape
    want = attr.abs().sum(1) if p["channels"] == "abs_sum" else attr.sum(1)
    torch.testing.assert_close(ours, want.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", CAPTUM)
def test_defaults_give_finite_maps_and_leave_the_model_as_it_was(name: str) -> None:
    method, model = build("resnet_cifar", {"depth": 8, "width": 4}, 16)
    x = torch.rand(BATCH, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([1, 2, 4])
    with torch.no_grad():
        before = model(x).logits
    explainer = EXPLAINERS.get(name)()
    with torch.no_grad():  # explainers turn gradients on themselves
        maps = explainer.explain(method, model, x, t, 0)
    assert maps is not None and maps.shape == (BATCH, 16, 16) and torch.isfinite(maps).all()
    again = explainer.explain(method, model, x, t, 0)
    assert again is not None and torch.equal(maps, again), "seeded: the same maps twice"
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert "rule" not in m.__dict__ and "activations" not in m.__dict__
    with torch.no_grad():
        assert torch.equal(model(x).logits, before)
    record = explainer.param_dict()
    assert record["library"] == "captum" and record["library_version"] == captum.__version__
    assert set(record) == set(explainer.Params.model_fields) | {"library", "library_version"}


def test_params_are_checked() -> None:
    ig = EXPLAINERS.get("integrated_gradients")
    assert ig.Params().steps == 16
    with pytest.raises(ValidationError):
        ig.Params(n_steps=4)  # extra=forbid
    with pytest.raises(ValidationError):
        ig.Params(steps=0)
    with pytest.raises(ValidationError):
        EXPLAINERS.get("saliency").Params(channels="max")
    with pytest.raises(ValidationError):
        EXPLAINERS.get("occlusion").Params(baseline="noise")
    smooth = EXPLAINERS.get("smoothgrad").Params()
    assert (smooth.samples, smooth.stdev) == (8, 0.15)
    assert EXPLAINERS.get("lime").Params().samples == 64


def test_defaults_follow_the_image_size() -> None:
    """Occlusion's window max(4, side // 16), stride = window; LIME's cells ceil(side / 6)."""
    from xbench.explain.attribution import default_cell, default_window

    assert [default_window(s, s) for s in (16, 32, 64, 128, 224)] == [4, 4, 4, 8, 14]
    assert [default_cell(s, s) for s in (16, 24, 32, 224)] == [3, 4, 6, 38]
    mask = cell_mask(7, 5, 3)
    assert mask.shape == (1, 1, 7, 5)
    assert mask[0, 0].tolist() == [[0, 0, 0, 1, 1]] * 3 + [[2, 2, 2, 3, 3]] * 3 + [[4, 4, 4, 5, 5]]
    assert torch.equal(cell_mask(24, 24, 4), grid(24, 4))


def test_baselines() -> None:
    x = torch.rand(2, 3, 12, 12)
    assert torch.equal(baseline_images(x, "zero"), torch.zeros_like(x))
    mean = baseline_images(x, "mean")
    torch.testing.assert_close(mean, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    flat = torch.full((1, 2, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 2.0), flat)  # constant images stay (edges replicated)
    blurred = baseline_images(x, "blur", 1.5)
    assert blurred.shape == x.shape and blurred.std() < x.std()


def test_occlusion_default_window_is_four_pixels_on_small_images() -> None:
    """With window 4 on 16 px (16 patches), each pixel's value is the logit drop of its own patch."""
    method, model = build("resnet_cifar", {"depth": 8, "width": 4}, 16)
    x = torch.rand(1, 3, 16, 16)
    t = torch.tensor([2])
    maps = EXPLAINERS.get("occlusion")().explain(method, model, x, t, 0)
    assert maps is not None
    occluded = x.clone()
    occluded[..., 4:8, 8:12] = 0
    with torch.no_grad():
        drop = model(x).logits[0, 2] - model(occluded).logits[0, 2]
    torch.testing.assert_close(maps[0, 4:8, 8:12], torch.full((4, 4), 3 * float(drop)), rtol=1e-4, atol=1e-5)


def test_lrp_does_not_apply_without_rules() -> None:
    method, model = build("mobilenet_v3_small", {}, 32)  # Hardswish and squeeze-excitation have no rule
    maps = EXPLAINERS.get("lrp")().explain(method, model, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), 0)
    assert maps is None


# -- completeness: hook safety matters ---------------------------------------------------------------------
class CommittedBlock(nn.Module):
    """The block before hook safety, verbatim: an in-place ReLU module, then ``+`` and ``F.relu``."""

    def forward(self, x: Tensor) -> Tensor:
        b: Any = self
        out = b.relu(b.bn1(b.conv1(x)))
        out = b.bn2(b.conv2(out))
        return F.relu(out + b.shortcut(x))


class ReusedBlock(nn.Module):
    """Worse: one in-place ReLU module called twice, ``+`` in the forward."""

    def forward(self, x: Tensor) -> Tensor:
        b: Any = self
        out = b.relu(b.bn1(b.conv1(x)))
        out = b.bn2(b.conv2(out))
        return b.relu(out + b.shortcut(x))  # type: ignore[no-any-return]


def unsafe_copy(model: nn.Module, block: type[nn.Module]) -> nn.Module:
    """``model`` with every residual block as ``block`` (same weights; the test checks the same outputs)."""
    old = copy.deepcopy(model)
    for stage in old.backbone.stages:
        for b in stage:
            del b.relu1, b.relu2, b.add
            b.relu = nn.ReLU(inplace=True)
            b.__class__ = block
    return old


def completeness_gap(name: str, model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    """|sum of the map - the explained logit difference| per image, over the logit scale."""
    maps = EXPLAINERS.get(name)().explain(METHOD, model, x, t, 0)
    assert maps is not None
    with torch.no_grad():
        logits = model(x).logits.gather(1, t[:, None])[:, 0]
        if name == "deeplift":
            logits = logits - model(torch.zeros_like(x)).logits.gather(1, t[:, None])[:, 0]
    return (maps.sum(dim=(1, 2)) - logits).abs() / logits.abs().clamp_min(1e-3)


#: The method argument of explain (DeepLift and LRP do not read it).
METHOD = build("resnet_cifar", {"depth": 8, "width": 4}, 16)[0]


@pytest.fixture(scope="module")
def bias_free() -> tuple[nn.Module, Tensor, Tensor]:
    """resnet_cifar whose every layer is linear up to ReLUs (no batch-norm shift, no final bias): LRP conserves."""
    _, model = build("resnet_cifar", {"depth": 8, "width": 4}, 16)
    randomise_batch_norm(model, 11, shifts=False)
    with torch.no_grad():
        model.fc.bias.zero_()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    return model, x, torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("name", ["deeplift", "lrp"])
def test_completeness_on_the_hook_safe_model(bias_free: tuple[nn.Module, Tensor, Tensor], name: str) -> None:
    model, x, t = bias_free
    gap = completeness_gap(name, model, x, t)
    assert gap.max() < 1e-3, gap


@pytest.mark.parametrize("name", ["deeplift", "lrp"])
def test_completeness_fails_silently_on_the_committed_block(
    bias_free: tuple[nn.Module, Tensor, Tensor], name: str
) -> None:
    model, x, t = bias_free
    old = unsafe_copy(model, CommittedBlock)
    with torch.no_grad():
        assert torch.equal(old(x).logits, model(x).logits)  # the same function, explained wrongly:
    assert completeness_gap(name, old, x, t).max() > 0.1  # F.relu escapes DeepLift; LRP gives + relevance twice


def test_guided_backprop_misses_a_functional_relu(bias_free: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, t = bias_free
    gbp = EXPLAINERS.get("guided_backprop")()
    safe = gbp.explain(METHOD, model, x, t, 0)
    old = gbp.explain(METHOD, unsafe_copy(model, CommittedBlock), x, t, 0)
    assert safe is not None and old is not None
    assert not torch.allclose(safe, old, atol=1e-4)


def test_a_reused_relu_breaks_deeplift_and_lrp(bias_free: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, t = bias_free
    old = unsafe_copy(model, ReusedBlock)
    with torch.no_grad():
        assert torch.equal(old(x).logits, model(x).logits)
    with pytest.raises(RuntimeError, match="DeepLift"):  # captum sees the module's saved input overwritten
        completeness_gap("deeplift", old, x, t)
    assert completeness_gap("lrp", old, x, t).max() > 0.1  # nothing detects it: wrong relevance


def test_lrp_batch_norm_rules_agree_without_shifts(bias_free: tuple[nn.Module, Tensor, Tensor]) -> None:
    """Without shifts, batch norm's epsilon rule and the identity rule both conserve relevance."""
    model, x, t = bias_free
    cls = EXPLAINERS.get("lrp")
    for rule in ("epsilon", "identity"):
        maps = cls(cls.Params(batchnorm=rule)).explain(METHOD, model, x, t, 0)
        assert maps is not None
        with torch.no_grad():
            logits = model(x).logits.gather(1, t[:, None])[:, 0]
        torch.testing.assert_close(maps.sum(dim=(1, 2)), logits, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["occlusion", "lime", "kernel_shap"])
def test_perturbation_explainers_keep_the_in_place_relus(name: str) -> None:
    """Under no_grad they need no plain nn.ReLU (faster in place: BENCHMARKS.md); the gradient ones get it."""
    from xbench.models.layers import ReLU

    method, model = build("resnet_cifar", {"depth": 8, "width": 4}, 16)
    relu = next(m for m in model.modules() if type(m) is ReLU)
    seen: list[type] = []
    handle = relu.register_forward_hook(lambda m, _i, _o: seen.append(type(m)))
    x, t = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    try:
        cls = EXPLAINERS.get(name)
        cls(cls.Params(**({"batch": 4} if name == "occlusion" else {"samples": 8}))).explain(method, model, x, t, 0)
        assert seen and set(seen) == {ReLU}
        seen.clear()
        EXPLAINERS.get("deeplift")().explain(method, model, x, t, 0)
        assert seen and set(seen) == {nn.ReLU}
    finally:
        handle.remove()
    assert type(relu) is ReLU
