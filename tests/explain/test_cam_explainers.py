"""The pytorch-grad-cam explainers: the library's own maps, on xbench's models, batched and bounded.

Each explainer must equal the library called directly (the same class, target layer and
``ClassifierOutputTarget``) on a tiny ``resnet_cifar`` and on torchvision's ``resnet18``; Score-CAM's
``scores: probability`` must equal a hand computation of the reference code's weighting; the
masked-image explainers must respect their ``batch``; the model must come back as it went in.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
from pydantic import ValidationError
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import Tensor, nn

from xbench.explain.base import Explainer
from xbench.explain.cam_explainers import AblationCamParams, ScoreCamParams
from xbench.methods.base import MethodContext
from xbench.models.output import LogitsOnly, ModelOutput
from xbench.registry import EXPLAINERS, METHODS

NUM_CLASSES = 5
CAMS = {
    "gradcam_pp": pgc.GradCAMPlusPlus,
    "scorecam": pgc.ScoreCAM,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
    "eigencam": pgc.EigenCAM,
    "ablationcam": pgc.AblationCAM,
    "hirescam": pgc.HiResCAM,
    "fullgrad": pgc.FullGrad,
}
#: (backbone, params, image size)
BACKBONES = {
    "resnet_cifar": ("resnet_cifar", {"depth": 8, "width": 4}, 24),
    "resnet18": ("resnet18", {"cifar_stem": True}, 32),
}


def build(backbone: str, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A baseline model (eval mode) on ``backbone``, 3 images and their targets."""
    name, params, size = BACKBONES[backbone]
    ctx = MethodContext(
        num_classes=NUM_CLASSES,
        in_channels=3,
        image_size=(size, size),
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        backbone=name,
        backbone_params=params,
    )
    torch.manual_seed(seed)
    method = METHODS.get("baseline")(METHODS.get("baseline").Params(), ctx)
    model = method.build().eval()
    g = torch.Generator().manual_seed(seed)
    return model, torch.rand(3, 3, size, size, generator=g), torch.tensor([0, 3, 1])


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[nn.Module, Tensor, Tensor]]:
    return {name: build(name) for name in BACKBONES}


def library(
    cam_class: type, model: nn.Module, x: Tensor, target: Tensor, targets: type = ClassifierOutputTarget
) -> Tensor:
    """The library called directly, as its README does."""
    layers = [] if cam_class is pgc.FullGrad else [model.backbone.stages[-1]]
    cam = cam_class(LogitsOnly(model), layers)
    try:
        return torch.from_numpy(cam(x, [targets(int(c)) for c in target]))
    finally:
        cam.activations_and_grads.release()


def explainer(name: str, **params: object) -> Explainer:
    cls = EXPLAINERS.get(name)
    return cls(cls.Params(**params))


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("name", list(CAMS))
def test_explainer_equals_the_library(models: dict, name: str, backbone: str) -> None:
    model, x, target = models[backbone]
    if backbone == "resnet18" and name in ("scorecam", "ablationcam"):
        x, target = x[:1], target[:1]  # 512 masked forwards of resnet18 per image: one image keeps it quick
    ours = explainer(name).explain(None, model, x, target, seed=0)  # type: ignore[arg-type]
    theirs = library(CAMS[name], model, x, target)
    assert ours is not None and ours.shape == (x.shape[0], *x.shape[-2:])
    peaks = ours.amax(dim=(1, 2))
    assert peaks.gt(0.99).any(), "a non-trivial comparison"
    assert (peaks.gt(0.99) | peaks.eq(0)).all(), "the library rescales each map to max 1 (0: nothing positive)"
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_param_dict_records_the_library() -> None:
    assert importlib.metadata.version("grad-cam") == "1.5.7"  # pinned in pyproject.toml
    for name in CAMS:
        d = explainer(name).param_dict()
        assert d["library"] == "grad-cam" and d["library_version"] == "1.5.7"
    assert explainer("scorecam").param_dict() == {
        "batch": 32,
        "scores": "logit",
        "library": "grad-cam",
        "library_version": "1.5.7",
    }
    assert explainer("ablationcam").param_dict()["batch"] == 32


def test_params_are_checked() -> None:
    for bad in ({"batch": 0}, {"scores": "softmax"}, {"batch_size": 8}):
        with pytest.raises(ValidationError):
            ScoreCamParams(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        AblationCamParams(batch=0)
    with pytest.raises(ValidationError):
        EXPLAINERS.get("gradcam_pp").Params(layer="stage3")


def hand_probability_score_cam(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Score-CAM with the reference code's weights: w_k = softmax(model(x ⊙ up(A_k)))[c], then the library's
    post-processing (rectify, min-max, cv2 resize, min-max) on Σ_k w_k A_k."""
    saved: list[Tensor] = []
    handle = model.backbone.stages[-1].register_forward_hook(lambda _m, _i, out: saved.append(out))
    with torch.no_grad():
        model(x)
        handle.remove()
        acts = saved[0]
        cams = []
        for a, image, c in zip(acts, x, target.tolist(), strict=True):
            up = nn.UpsamplingBilinear2d(size=x.shape[-2:])(a[:, None])  # (K, 1, H, W), as the library upsamples
            lo = up.amin(dim=(2, 3), keepdim=True)
            hi = up.amax(dim=(2, 3), keepdim=True)
            masks = (up - lo) / (hi - lo + 1e-8)
            w = torch.softmax(model(image[None] * masks).logits, dim=-1)[:, c]  # (K,) probabilities
            cams.append((w[:, None, None] * a).sum(0).clamp(min=0).numpy())
    h, w_ = x.shape[-2:]
    scaled = np.maximum(scale_cam_image(np.stack(cams), (w_, h)), 0)
    return torch.from_numpy(scale_cam_image(scaled))


def test_scorecam_probability_is_the_reference_weighting() -> None:
    model, x, target = build("resnet_cifar", seed=3)
    with torch.no_grad():
        model.fc.weight.mul_(20)  # confident logits: probabilities far from uniform, as in a trained model
    prob = explainer("scorecam", scores="probability").explain(None, model, x, target, seed=0)  # type: ignore[arg-type]
    logit = explainer("scorecam").explain(None, model, x, target, seed=0)  # type: ignore[arg-type]
    assert prob is not None and logit is not None
    torch.testing.assert_close(prob, hand_probability_score_cam(model, x, target), rtol=1e-4, atol=1e-4)
    assert (prob - logit).abs().max() > 0.05, "the two weightings give different maps"
    # The library's softmax target is not the reference: its channel softmax of probabilities is ~uniform.
    softmax_target = library(pgc.ScoreCAM, model, x, target, targets=ClassifierOutputSoftmaxTarget)
    assert (softmax_target - prob).abs().max() > 0.05


class CountForwards:
    """Records the batch size of every forward of ``model``."""

    def __init__(self, model: nn.Module) -> None:
        self.sizes: list[int] = []
        self.handle = model.register_forward_hook(lambda _m, inp, _o: self.sizes.append(inp[0].shape[0]))


@pytest.mark.parametrize("name", ["scorecam", "ablationcam"])
def test_masked_forwards_respect_batch(models: dict, name: str) -> None:
    model, x, target = models["resnet_cifar"]  # 16 channels in the last stage
    counter = CountForwards(model)
    try:
        small = explainer(name, batch=4).explain(None, model, x, target, seed=0)  # type: ignore[arg-type]
    finally:
        counter.handle.remove()
    assert counter.sizes and max(counter.sizes) <= 4
    assert sum(counter.sizes) >= 3 * 16, "every channel of every image was scored"
    torch.testing.assert_close(small, library(CAMS[name], model, x, target), rtol=1e-5, atol=1e-5)


def test_model_comes_back_unchanged(models: dict) -> None:
    model, x, target = build("resnet_cifar", seed=1)
    model.train()
    model.backbone.stem.eval()  # a mixed state must survive too
    stage = model.backbone.stages[-1]
    modes = [m.training for m in model.modules()]
    for name in CAMS:
        explainer(name).explain(None, model, x, target, seed=0)  # type: ignore[arg-type]
        assert [m.training for m in model.modules()] == modes, name
        assert all(p.grad is None for p in model.parameters()), name
        assert model.backbone.stages[-1] is stage, name  # Ablation-CAM put the stage back


def test_frozen_backbone_keeps_its_gradients(models: dict) -> None:
    model, x, target = build("resnet_cifar", seed=2)
    expected = explainer("gradcam_pp").explain(None, model, x, target, seed=0)  # type: ignore[arg-type]
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = explainer("gradcam_pp").explain(None, model, x, target, seed=0)  # type: ignore[arg-type]
    torch.testing.assert_close(frozen, expected)


class OutOfOrder(nn.Module):
    """Registers its convolutions in the reverse of the order it runs them (same channel counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.second = nn.Conv2d(4, 4, 3, padding=1)
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, NUM_CLASSES)

    def forward(self, x: Tensor) -> ModelOutput:
        h = torch.relu(self.second(torch.relu(self.first(x))))
        return ModelOutput(logits=self.fc(h.mean(dim=(2, 3))))


def test_fullgrad_refuses_a_model_that_runs_its_biases_out_of_order() -> None:
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="FullGrad"):
        explainer("fullgrad").explain(None, OutOfOrder().eval(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["scorecam", "ablationcam"])
def test_library_progress_bars_are_off(models: dict, name: str, capfd: pytest.CaptureFixture[str]) -> None:
    """The library's tqdm bar per image (Score-CAM) or batch (Ablation-CAM) is off, and put back afterwards."""
    from pytorch_grad_cam import ablation_cam, score_cam

    model, x, target = models["resnet_cifar"]
    before = (score_cam.tqdm, ablation_cam.tqdm)
    library(CAMS[name], model, x[:1], target[:1])
    assert "it/s" in capfd.readouterr().err, "the library called directly draws a bar"
    maps = explainer(name).explain(None, model, x, target, seed=0)  # type: ignore[arg-type]
    assert capfd.readouterr().err == ""
    assert (score_cam.tqdm, ablation_cam.tqdm) == before
    torch.testing.assert_close(maps, library(CAMS[name], model, x, target), rtol=1e-5, atol=1e-5)
