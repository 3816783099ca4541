"""CAM explainers through pytorch-grad-cam (PyPI ``grad-cam``, pinned to 1.5.7; module ``pytorch_grad_cam``).

Registered names, the library class each one calls, and its channel weights or map at the
layer's resolution:

* ``gradcam_pp``, ``GradCAMPlusPlus``: w_k = Σ_ij relu(g)·α, α = g² / (2g² + Σ_ij A·g³) (0 where g = 0);
* ``scorecam``, ``ScoreCAM``: w = softmax over channels of the target's score on x ⊙ up(A_k);
* ``xgradcam``, ``XGradCAM``: w_k = Σ_ij g·A / (Σ_ij A + 1e-7);
* ``layercam``, ``LayerCAM``: map Σ_k relu(g)·A (element-wise, no channel weights);
* ``eigencam``, ``EigenCAM``: the centred activations projected on their first principal
  direction (SVD); class-agnostic, no gradients;
* ``ablationcam``, ``AblationCAM``: w_k = (y − y_k) / y, y_k the target logit with channel k ablated;
* ``hirescam``, ``HiResCAM``: map Σ_k g·A (element-wise);
* ``fullgrad``, ``FullGrad``: |x·∂y/∂x| plus |b·∂y/∂z| of every Conv2d/BatchNorm2d bias b.

A is the activation of the backbone's last stage (the layer xbench's ``gradcam`` uses; FullGrad
ignores it and takes every bias layer of the model instead), g = ∂y/∂A with y the logit of the
image's target class (``ClassifierOutputTarget``; the gradients of one backward of Σ_b y_b).
The library wants a model that returns a tensor: the xbench model is wrapped in a module returning
``.logits``.

**What the returned maps are.** These explainers return the library's maps unchanged, i.e. what a
user of the library gets. For every explainer except FullGrad the library

1. forms cam = Σ_k w_k·A_k (or the element-wise map above) at the layer's resolution;
2. rectifies it: cam = max(cam, 0);
3. min-max rescales each image's map: cam = (cam − min) / (max(cam − min) + 1e-7);
4. resizes it to (H, W) with ``cv2.resize`` (default INTER_LINEAR: bilinear, half-pixel centres,
   no antialiasing), in float32 numpy on the host;
5. rectifies again, averages over the target layers (one here) and min-max rescales again with
   the same formula.

So every map lies in [0, 1] with maximum ≈ 1, or is all 0 when the rectified map is constant
(e.g. no positive evidence). FullGrad min-max rescales and resizes each channel of |x·∂y/∂x| and of
every |bias·gradient| separately, sums them, and min-max rescales the sum. Activations and
gradients are copied to host memory (the library's hooks call ``.cpu()``).

**Library facts that change results** (read in the 1.5.7 source):

* Grad-CAM++ uses the closed form of Chattopadhay et al.'s eq. 19, which holds for an exponential
  output Y = exp(S) (issue jacobgil/pytorch-grad-cam#369: it is not the general eq. 10 with the
  second and third derivatives of the score). For xbench's heads that are piecewise linear in A
  (global average pooling + linear, VGG's ReLU MLP) the second and third derivatives of S vanish,
  so eq. 10 with Y = exp(S) gives exactly this α, and the paper's weight Σ relu(∂Y/∂A)·α differs
  from the library's by the per-image factor exp(S), which step 3 removes: no reference variant is
  offered. For heads non-linear in A (attention pooling) it is an approximation, and the general
  formula would need the diagonal of the Hessian and third derivatives per activation.
* Score-CAM (``ScoreCAM.get_cam_weights``) upsamples each channel with ``UpsamplingBilinear2d``
  (align_corners=True), min-max normalises it per channel (+1e-8), multiplies the input by it, and
  weighs channel k by the softmax *over channels* of the target's value on x ⊙ up(A_k): with
  ``ClassifierOutputTarget`` that is the logit. The reference code (Wang et al. 2020,
  ``haofanwang/Score-CAM``) weighs by the softmax *probability* p_k of the target class on the
  masked input. ``scores: probability`` gives that weighting through a minimal subclass whose
  target is log p (the library's channel softmax of log p_k is p_k / Σ_j p_j, proportional to
  p_k; the per-image factor disappears in step 3). The library's
  ``ClassifierOutputSoftmaxTarget`` is not used for it: the channel softmax of probabilities,
  exp(p_k) / Σ_j exp(p_j), is not the reference weighting (all weights within a factor e).
  The reference code also differs in skipping constant channels and upsampling with
  align_corners=False.
* Score-CAM builds the masked inputs of all its images at once (images × K × C × H × W, K the
  layer's channels) and scores them ``batch_size`` at a time, one image after the other; it draws
  a tqdm progress bar per image (Ablation-CAM: per batch of images), which xbench turns off
  (:func:`library_bars_off`: its own bar per explained batch stays, and ``--no-progress`` turns that
  off). xbench calls it on max(1, batch // K)
  images at a time, so no forward sees more than ``batch`` images and the masked copies held at
  once are max(K, batch) images.
* Ablation-CAM replaces the target layer by an ``AblationLayer`` that returns the cached
  activations with channel k set to 0 (or to min − 1e7 if the layer's minimum is not 0), and
  divides by the unablated logit y, so a negative target logit flips the sign of every weight.
  xbench calls it on ``batch`` images at a time (the library's first forward sees all its images)
  with a fresh ablation layer (the library's default argument is one shared instance), and puts
  the target layer back if the call fails.
* Eigen-CAM's principal direction has an arbitrary sign (no sign correction in ``EigenCAM``), so
  after step 2 it can show the complement of the salient region; it ignores the target class.
* FullGrad takes every ``Conv2d``/``BatchNorm2d`` with a bias (exact type) in the whole model, BN
  biases from running statistics, and pairs them in registration order with gradients in
  execution order: xbench refuses (ValueError) a model that runs them in another order or not
  once each (EGT's exit heads, LAP's pools, TAME's attention module), or where some get no
  gradient from the logits, instead of returning maps built from mismatched biases.
* The gradient methods get an input that requires grad when some parameter is frozen, so that a
  frozen backbone's activations still carry gradients (the library only does so for FullGrad); the
  maps are unchanged. Otherwise the input is left alone: its gradient would cost a backward through
  the first convolution, about 5% of a gradient CAM's time on ``resnet_cifar``.
* The library puts the model in eval mode and its backward fills ``.grad`` of the parameters;
  xbench restores every module's mode and every parameter's ``.grad`` afterwards.

``param_dict`` adds ``library: grad-cam`` and the installed version, so records and cache keys
change with the library.
"""

from __future__ import annotations

import functools
import importlib.metadata
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from xbench.explain.base import Explainer
from xbench.explain.gradcam import _last_stage
from xbench.methods.base import Method
from xbench.models.output import LogitsOnly
from xbench.params import NoParams, P
from xbench.registry import EXPLAINERS

LIBRARY = "grad-cam"


class LogProbabilityTarget:
    """log softmax(logits)[category]: the library's channel softmax of it is p_k / Σ_j p_j."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return torch.log_softmax(model_output, dim=-1)[..., self.category]


@functools.cache
def probability_score_cam() -> type:
    """The library's ScoreCAM weighing channels by the target's softmax probability (the reference code)."""
    from pytorch_grad_cam import ScoreCAM

    class ProbabilityScoreCAM(ScoreCAM):  # type: ignore[misc,valid-type]
        def get_cam_weights(  # type: ignore[no-untyped-def]
            self, input_tensor: Tensor, target_layer: Any, targets: list, activations: Any, grads: Any
        ):
            targets = [LogProbabilityTarget(t.category) for t in targets]
            return super().get_cam_weights(input_tensor, target_layer, targets, activations, grads)

    return ProbabilityScoreCAM


@contextmanager
def library_bars_off() -> Iterator[None]:
    """Turn off the tqdm bars pytorch-grad-cam draws inside a call (Score-CAM: one per image; Ablation-CAM: one
    per batch): output only, the maps are unchanged. xbench's own bar per explained batch is separate."""
    import tqdm
    from pytorch_grad_cam import ablation_cam, ablation_cam_multilayer, score_cam

    modules = (score_cam, ablation_cam, ablation_cam_multilayer)
    saved = [m.tqdm for m in modules]  # each calls ``tqdm.tqdm(...)`` on the module it imported
    silent = types.SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))
    for m in modules:
        m.tqdm = silent  # type: ignore[assignment]
    try:
        yield
    finally:
        for m, bar in zip(modules, saved, strict=True):
            m.tqdm = bar  # type: ignore[assignment]


@contextmanager
def _state_kept(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval mode and every parameter's ``.grad`` on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, g in grads:
            p.grad = g


def library_cam(
    cam_class: Callable[..., Any],
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    images_per_call: int | None = None,
    gradients: bool = True,
    layer: nn.Module | None = None,
    configure: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> Tensor:
    """(B, H, W) maps of ``cam_class`` (a pytorch-grad-cam class) for class ``target`` of images ``x``.

    Args:
        cam_class: the library's CAM class, called as ``cam_class(wrapped_model, [layer], **kwargs)``.
        model: an xbench model (forward returns ``ModelOutput``).
        x: (B, C, H, W) images; target: (B,) class indices.
        images_per_call: images per library call (None: all at once).
        gradients: whether the method backpropagates (otherwise it runs under ``no_grad``).
        layer: the target layer; the backbone's last stage by default; none is passed to FullGrad.
        configure: called on the CAM object before use (Score-CAM's ``batch_size``).
    """
    from pytorch_grad_cam import AblationCAM, FullGrad
    from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapped = LogitsOnly(model)
    if cam_class is FullGrad:  # it takes every bias layer instead (and warns when given a layer)
        layers: list[nn.Module] = []
    else:
        target_layer = layer if layer is not None else _last_stage(model)
        layers = [target_layer]
    step = images_per_call or x.shape[0]
    # An input that requires grad makes the activations require it under a frozen backbone.
    input_grad = gradients and not all(p.requires_grad for p in model.parameters())
    maps = []
    with _state_kept(model), library_bars_off():
        cam = cam_class(wrapped, layers, **kwargs)
        if configure is not None:
            configure(cam)
        try:
            with torch.set_grad_enabled(gradients):
                for s in range(0, x.shape[0], step):
                    targets = [ClassifierOutputTarget(c) for c in target[s : s + step].tolist()]
                    xs = x[s : s + step].detach().requires_grad_(input_grad)
                    maps.append(torch.from_numpy(cam(xs, targets)))
        except TypeError as e:
            if cam_class is AblationCAM and "AblationLayer" in str(e):
                raise TypeError(
                    f"Ablation-CAM replaces the target layer by a module that takes only its input, but "
                    f"{type(model).__name__} calls its last stage with more arguments ({e})"
                ) from e
            raise
        finally:
            cam.activations_and_grads.release()
            if cam_class is AblationCAM:  # a failed call leaves the ablation layer in the model
                replace_layer_recursive(wrapped, cam.ablation_layer, target_layer)
    return torch.cat(maps).to(x.device)


class _LibraryCam(Explainer[P]):
    """An explainer that records the library and its version with its params."""

    def param_dict(self) -> dict[str, object]:
        return {**super().param_dict(), "library": LIBRARY, "library_version": importlib.metadata.version(LIBRARY)}


class _GradientCam(_LibraryCam[NoParams]):
    """A gradient CAM on the backbone's last stage, computed for the whole batch in one library call."""

    class_name: ClassVar[str]

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        import pytorch_grad_cam

        return library_cam(getattr(pytorch_grad_cam, self.class_name), model, x, target)


@EXPLAINERS.register("gradcam_pp")
class GradCamPlusPlus(_GradientCam):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018) through pytorch-grad-cam: the closed form for exp(score)."""

    description = "Grad-CAM++ through pytorch-grad-cam (eq. 19, exact for exp(score) and piecewise-linear heads)"
    class_name = "GradCAMPlusPlus"


@EXPLAINERS.register("xgradcam")
class XGradCam(_GradientCam):
    """XGrad-CAM (Fu et al., BMVC 2020) through pytorch-grad-cam."""

    description = "XGrad-CAM through pytorch-grad-cam on the backbone's last stage"
    class_name = "XGradCAM"


@EXPLAINERS.register("layercam")
class LayerCam(_GradientCam):
    """LayerCAM (Jiang et al., TIP 2021) through pytorch-grad-cam."""

    description = "LayerCAM through pytorch-grad-cam on the backbone's last stage"
    class_name = "LayerCAM"


@EXPLAINERS.register("hirescam")
class HiResCam(_GradientCam):
    """HiResCAM (Draelos & Carin, 2020) through pytorch-grad-cam."""

    description = "HiResCAM through pytorch-grad-cam on the backbone's last stage"
    class_name = "HiResCAM"


def check_fullgrad_applies(model: nn.Module, x: Tensor) -> None:
    """Raise ValueError unless the model runs its bias layers once each, in the order it registers them.

    FullGrad pairs each bias (in module-registration order) with the gradients its hooks collect (in
    execution order): in another order the maps are wrong, silently when the channel counts agree.
    """
    from pytorch_grad_cam.utils.find_layers import find_layer_predicate_recursive

    def with_bias(layer: nn.Module) -> bool:  # the library's predicate: exact types
        return type(layer) in (nn.Conv2d, nn.BatchNorm2d) and getattr(layer, "bias", None) is not None

    layers = find_layer_predicate_recursive(LogitsOnly(model), with_bias)
    ran: list[nn.Module] = []
    handles = [layer.register_forward_hook(lambda m, _i, _o: ran.append(m)) for layer in layers]
    try:
        with torch.no_grad(), _state_kept(model):
            model.eval()
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if len(ran) != len(layers) or any(a is not b for a, b in zip(ran, layers, strict=False)):
        raise ValueError(
            f"FullGrad (pytorch-grad-cam) needs every Conv2d/BatchNorm2d bias layer to run once, in the order "
            f"the model registers it; {type(model).__name__} runs {len(ran)} calls of its {len(layers)} such layers "
            "in another order, so the library would pair biases with the wrong gradients"
        )


@EXPLAINERS.register("fullgrad")
class FullGradCam(_GradientCam):
    """FullGrad (Srinivas & Fleuret, NeurIPS 2019) through pytorch-grad-cam: every Conv2d/BatchNorm2d bias."""

    description = "FullGrad through pytorch-grad-cam (input gradient and every conv/BN bias-gradient)"
    class_name = "FullGrad"

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        check_fullgrad_applies(model, x)
        try:
            return super().explain(method, model, x, target, seed)
        except AssertionError as e:  # the library asserts one gradient per bias layer
            raise ValueError(
                f"FullGrad (pytorch-grad-cam): some Conv2d/BatchNorm2d bias layers of {type(model).__name__} get no "
                "gradient from the logits (early-exit heads, frozen layers)"
            ) from e


@EXPLAINERS.register("eigencam")
class EigenCam(_LibraryCam[NoParams]):
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020) through pytorch-grad-cam: class-agnostic, no gradients."""

    description = "Eigen-CAM through pytorch-grad-cam (first principal component; ignores the class)"

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from pytorch_grad_cam import EigenCAM

        return library_cam(EigenCAM, model, x, target, gradients=False)


class ScoreCamParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch: int = Field(32, ge=1, le=65_536, description="masked images per forward (the library's batch_size)")
    scores: Literal["logit", "probability"] = Field(
        "logit",
        description="logit: the library's channel softmax of the target logit; probability: the reference "
        "code's weighting by the target's softmax probability on the masked input",
    )


@EXPLAINERS.register("scorecam")
class ScoreCam(_LibraryCam[ScoreCamParams]):
    """Score-CAM (Wang et al., CVPR-W 2020) through pytorch-grad-cam, in batches of masked images."""

    description = "Score-CAM through pytorch-grad-cam (scores: logit, the library's; probability, the reference's)"
    Params = ScoreCamParams

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from pytorch_grad_cam import ScoreCAM

        batch = self.params.batch
        stage_channels = getattr(getattr(model, "backbone", None), "stage_channels", None)
        channels = int(stage_channels[-1]) if stage_channels else 1  # unknown: batch images per call
        cls = ScoreCAM if self.params.scores == "logit" else probability_score_cam()

        def configure(cam: Any) -> None:
            cam.batch_size = batch

        return library_cam(
            cls, model, x, target, images_per_call=max(1, batch // channels), gradients=False, configure=configure
        )


class AblationCamParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch: int = Field(32, ge=1, le=65_536, description="ablated copies (and images) per forward (batch_size)")


@EXPLAINERS.register("ablationcam")
class AblationCam(_LibraryCam[AblationCamParams]):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020) through pytorch-grad-cam, in batches of ablated copies."""

    description = "Ablation-CAM through pytorch-grad-cam: the drop of the target logit per ablated channel"
    Params = AblationCamParams

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from pytorch_grad_cam import AblationCAM, AblationLayer

        batch = self.params.batch
        return library_cam(
            AblationCAM,
            model,
            x,
            target,
            images_per_call=batch,
            gradients=False,
            batch_size=batch,
            ablation_layer=AblationLayer(),
        )
