"""captum's attribution methods as explainers: gradients, paths, perturbations, surrogates and LRP.

Every explainer here calls one captum attribution class on ``model(x).logits`` for the target
class and turns its (B, C, H, W) pixel attributions into one (B, H, W) map at the input size by
:func:`attribution_map`: the ``channels`` param (all of them take it) sums the signed attributions
over the colour channels (``sum``, the default) or their absolute values (``abs_sum``). captum's
outputs already have the input's size; the bilinear resize there only acts on a smaller map. The
maps are signed; the metrics' min-max normalisation (:func:`xbench.explain.normalise`) comes later.
Images are in [0, 1] and the model normalises them itself, so every attribution, baseline and noise
level is in pixel space. ``param_dict`` adds ``library: captum`` and its version to the params, so
records and cache keys name the implementation.

Randomness (SmoothGrad's noise, GradientSHAP's baselines and path points, LIME's and KernelSHAP's
samples) comes from the global generators captum draws from, torch's and (GradientSHAP) numpy's:
each call seeds both with the cell's ``seed`` and restores them after (:func:`seeded`), so maps are
reproducible and the caller's random state is untouched. A random draw covers the whole batch, so
an image's map depends on its place in the batch (the engine's batches are fixed, hence the maps).

What captum computes, per explainer (``x``: image, ``x'``: baseline, ``f``: target logit):

``saliency``
    ``Saliency``: ∂f/∂x, absolute per channel with ``abs: true`` (captum's default).
``input_x_gradient``
    ``InputXGradient``: x ⊙ ∂f/∂x.
``integrated_gradients``
    ``IntegratedGradients``: (x − x') ⊙ the mean gradient on the straight path from x' to x, with
    ``steps`` Gauss-Legendre points (captum's default rule); ``internal_batch_size`` images per pass.
``smoothgrad``
    ``NoiseTunnel(Saliency)``, ``nt_type="smoothgrad"``: the mean saliency of ``samples`` copies of
    x + N(0, stdev²) (absolute gradients by default, as captum's Saliency); ``batch`` noise draws per pass.
``guided_backprop``
    ``GuidedBackprop``: gradients whose backward through every ``nn.ReLU`` *module* is replaced by a
    ReLU of the incoming gradient. A functional ``F.relu`` keeps its plain gradient.
``guided_gradcam``
    ``GuidedGradCam``: guided backprop ⊙ Grad-CAM of the backbone's last stage (the layer ``gradcam``
    uses), the CAM ReLU'd by captum and resized to the input with ``interpolate``.
``deeplift``
    ``DeepLift`` (rescale rule): through every nn.ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus,
    Softmax and MaxPool *module* the gradient becomes the multiplier Δout/Δin between the image's
    and the baseline's forward passes (one pass of 2B images); other operations pass plain
    gradients. Attributions are (x − x') ⊙ multipliers and sum to f(x) − f(x') when every
    non-linearity is such a module (not in place, called once).
``gradient_shap``
    ``GradientShap``: expected gradients. For each of ``samples`` draws per image: a baseline picked
    at random from a set (``n_baselines`` uniform-noise images drawn with the seed, or the zero image),
    a point x' + α(x − x') with α ~ U(0, 1), plus N(0, stdev²) noise (0: none); the mean of
    (x − x') ⊙ ∂f at those points. All B · samples images run in one pass (captum has no batching
    option here). With the default uniform baselines a black pixel (x = 0) gets −x' ⊙ ∂f: noise as
    large as the object's attributions, so on black-background data the map is mostly background.
    That is expected gradients with these baselines, not a defect: on the cluttered Fashion-MNIST
    baseline of ``suites/explainers.yaml`` (seed 0, 64 images) its pointing game is 0.30 (0.33 with
    64 samples), random maps' 0.14, and 0.83 with ``baselines: zero``, as integrated gradients'.
``occlusion``
    ``Occlusion``: a C × window × window patch slides over the image with ``stride``, replaced by the
    baseline; a pixel gets the mean of f(x) − f(occluded) over the patches that cover it (a patch that
    would cross the border is cut there, so every pixel is covered). ``batch`` occlusions per pass
    (B · batch images).
``lime``
    ``Lime``: the image is cut into square cells of ``cell`` px (the interpretable features);
    ``samples`` random on/off patterns (Bernoulli ½; off cells show the baseline) are scored, and a
    Lasso (scikit-learn, ``alpha``) weighted by an exponential kernel of the cosine distance
    (``kernel_width``) is fitted to f; each cell's coefficient is spread over its pixels.
``kernel_shap``
    ``KernelShap``: the same cells and sampling, Shapley-kernel weights and a linear regression: an
    estimate of each cell's Shapley value.
``lrp``
    ``LRP``: see below.

LIME and KernelSHAP fit one surrogate per image: captum loops over the batch's images itself (after
one forward pass of the whole batch) and ``batch`` sets its ``perturbations_per_eval``, the perturbed
copies of one image per pass. Every other explainer runs the batch through captum at once.

**LRP: captum's, not zennit.** captum's ``LRP`` works on these ResNets with batch norm once the
model is hook-safe (:mod:`xbench.models.layers`: one ``nn.ReLU`` per use, not in place, residual sums
as ``Add`` modules; ``resnet_cifar`` and torchvision's ResNets are) and every leaf module has a rule.
The rules set here: the ε-rule (``epsilon``; captum's default 1e-9 is LRP-0) on Conv2d, Linear, the
pooling layers and the residual ``Add`` (which so splits relevance between the branch and the
shortcut in proportion to their contributions, relevance that a plain ``+`` would hand to both in
full); on batch norm the ε-rule too (``batchnorm: epsilon``, captum's default), which gives exactly
the relevance of the ε-rule on the convolution with the batch norm folded into it, i.e. what
zennit's canonizers produce (checked numerically), its shift absorbing relevance, or ``identity``
(relevance passes unchanged: conserving, but on a trained ``resnet_cifar`` LRP-0 then reaches
relevances of 10⁴ that cancel); the input ``Normalize`` passes relevance unchanged (IdentityRule);
``nn.Identity``, ``nn.Flatten`` and the grey-to-RGB repetition pass it as their gradient (a reshape
keeps relevance); ReLU and dropout pass it through. Relevance then sums to the logit up to what
the biases absorb (batch norm's shifts and the last linear layer's bias): exactly, in a model
without biases. A model with another leaf type (Hardswish, squeeze-excitation's gates, a method's
own layers) has no rule here: ``lrp`` returns None (does not apply) and logs the types. zennit was
not needed: it would add a dependency, its ResNet canonizer matches only torchvision's own blocks
(not ``resnet_cifar``), and its batch-norm folding is what captum's ε-rule on batch norm computes.

DeepLift, LRP and guided backprop are only as exact as the model's modules: functional
activations, in-place or reused ReLUs and ``+`` in a forward escape captum's hooks (captum #1082,
#578, #837) without any error; ``xbench.models`` keeps its ResNets hook-safe for this.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, ClassVar, Literal, TypeVar, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from xbench.explain.attribution import (
    BaselineKind,
    ChannelRule,
    attribution_map,
    baseline_images,
    cell_mask,
    default_cell,
    default_window,
    seeded,
)
from xbench.explain.base import Explainer
from xbench.explain.gradcam import _last_stage
from xbench.methods.base import Method
from xbench.models.base import Normalize
from xbench.models.layers import Add, plain_relus
from xbench.models.output import LogitsOnly
from xbench.registry import EXPLAINERS

log = logging.getLogger(__name__)

#: captum's warnings that say what this module does on purpose (hooks on activations, LIME per image).
_EXPECTED_WARNINGS = (
    r"Setting forward, backward hooks and attributes on non-linear",
    r"Setting backward hooks on ReLU activations",
    r"You are providing multiple inputs for Lime / Kernel SHAP",
    r"Input Tensor \d+ did not already require gradients",
)


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


# -- params ---------------------------------------------------------------------------------------------
class ChannelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: ChannelRule = Field(
        "sum", description="one map from the channels' attributions: their sum, or the sum of their absolute values"
    )


class BaselineParams(ChannelParams):
    baseline: BaselineKind = Field("zero", description="x': zero (black), mean (each image's channel means), blur")
    blur_sigma: float | None = Field(
        None, gt=0, le=1024, description="sigma of the blur baseline in px; null: min(H, W) / 8"
    )


class SaliencyParams(ChannelParams):
    abs: bool = Field(True, description="absolute gradients (captum's default)")


class IntegratedGradientsParams(BaselineParams):
    steps: int = Field(16, ge=1, le=1024, description="points on the path (Gauss-Legendre)")
    internal_batch_size: int | None = Field(
        64, ge=1, le=65536, description="images per forward/backward pass; null: all B · steps at once"
    )


class SmoothGradParams(ChannelParams):
    samples: int = Field(8, ge=1, le=1024, description="noisy copies per image")
    stdev: float = Field(0.15, ge=0, le=1, description="noise sigma in pixel units (images in [0, 1])")
    abs: bool = Field(True, description="average absolute gradients (captum's Saliency default)")
    batch: int | None = Field(
        4, ge=1, le=1024, description="noise draws per pass (B · batch images); null: all samples at once"
    )


class GradientShapParams(ChannelParams):
    samples: int = Field(8, ge=1, le=1024, description="random (baseline, path point) draws per image")
    stdev: float = Field(0.0, ge=0, le=1, description="Gaussian noise sigma added to each draw (px units); 0: none")
    baselines: Literal["uniform", "zero"] = Field(
        "uniform", description="the baseline distribution: n_baselines uniform-noise images (seeded), or black"
    )
    n_baselines: int = Field(16, ge=1, le=1024, description="uniform baselines drawn with the cell's seed")


class OcclusionParams(BaselineParams):
    window: int | None = Field(None, ge=1, le=4096, description="patch side in px; null: max(4, min(H, W) // 16)")
    stride: int | None = Field(None, ge=1, le=4096, description="patch step in px; null: the window (no overlap)")
    batch: int = Field(16, ge=1, le=4096, description="occlusions per forward pass (B · batch images)")


class SurrogateParams(BaselineParams):
    samples: int = Field(64, ge=2, le=100_000, description="perturbed copies per image")
    cell: int | None = Field(None, ge=1, le=4096, description="feature cell side in px; null: ceil(min(H, W) / 6)")
    batch: int = Field(
        16, ge=1, le=4096, description="perturbed copies per forward pass (captum's perturbations_per_eval)"
    )


class LimeParams(SurrogateParams):
    alpha: float = Field(0.01, ge=0, le=100, description="Lasso penalty (captum's default)")
    kernel_width: float = Field(1.0, gt=0, le=100, description="width of the exponential cosine-distance kernel")


class LRPParams(ChannelParams):
    epsilon: float = Field(1e-9, gt=0, le=100, description="epsilon of the epsilon rule (1e-9, captum's: LRP-0)")
    batchnorm: Literal["epsilon", "identity"] = Field(
        "epsilon",
        description="batch norm's rule: epsilon (= folding it into the conv; its shift absorbs relevance), or "
        "identity (relevance passes unchanged)",
    )


# -- the explainers ------------------------------------------------------------------------------------------
C = TypeVar("C", bound=ChannelParams)
S = TypeVar("S", bound=SurrogateParams)


class CaptumExplainer(Explainer[C]):
    """An explainer computed by captum: params plus captum's name and version in ``param_dict``."""

    #: False for the perturbation explainers, which run under ``no_grad`` and hook no activation: they keep
    #: xbench's in-place ReLUs (``plain_relus`` made occlusion 1.2x slower: BENCHMARKS.md).
    hooks_activations: ClassVar[bool] = True

    def param_dict(self) -> dict[str, object]:
        import captum

        return {**self.params.model_dump(mode="json"), "library": "captum", "library_version": captum.__version__}

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        relus = plain_relus(model) if self.hooks_activations else nullcontext()
        with torch.enable_grad(), _quiet(), seeded(seed, x.device), relus:
            attr = self.attribute(LogitsOnly(model), x, target, seed)
        if attr is None:
            return None
        return attribution_map(attr, (x.shape[-2], x.shape[-1]), self.params.channels)

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        """(B, C, H, W) captum attributions of ``target`` for ``x`` (None: does not apply)."""
        raise NotImplementedError


def _baseline(p: BaselineParams, x: Tensor) -> Tensor:
    return baseline_images(x, p.baseline, p.blur_sigma)


@EXPLAINERS.register("saliency")
class SaliencyExplainer(CaptumExplainer[SaliencyParams]):
    """Gradient saliency (Simonyan et al., 2014) through captum's ``Saliency``."""

    description = "captum Saliency: |d logit / d pixel|, summed over channels"
    Params = SaliencyParams

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import Saliency

        return Saliency(f).attribute(x, target=target, abs=self.params.abs)


@EXPLAINERS.register("input_x_gradient")
class InputXGradientExplainer(CaptumExplainer[ChannelParams]):
    """Input × gradient (Shrikumar et al., 2016) through captum's ``InputXGradient``."""

    description = "captum InputXGradient: pixel x d logit / d pixel"
    Params = ChannelParams

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import InputXGradient

        return cast(Tensor, InputXGradient(f).attribute(x, target=target))


@EXPLAINERS.register("integrated_gradients")
class IntegratedGradientsExplainer(CaptumExplainer[IntegratedGradientsParams]):
    """Integrated gradients (Sundararajan et al., ICML 2017) through captum's ``IntegratedGradients``."""

    description = "captum IntegratedGradients from a zero/mean/blur baseline"
    Params = IntegratedGradientsParams

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import IntegratedGradients

        p = self.params
        return cast(
            Tensor,
            IntegratedGradients(f).attribute(
                x, baselines=_baseline(p, x), target=target, n_steps=p.steps, internal_batch_size=p.internal_batch_size
            ),
        )


@EXPLAINERS.register("smoothgrad")
class SmoothGradExplainer(CaptumExplainer[SmoothGradParams]):
    """SmoothGrad (Smilkov et al., 2017) through captum's ``NoiseTunnel`` over ``Saliency``."""

    description = "captum NoiseTunnel(Saliency), smoothgrad: mean saliency of noisy copies"
    Params = SmoothGradParams

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import NoiseTunnel, Saliency

        p = self.params
        return cast(
            Tensor,
            NoiseTunnel(Saliency(f)).attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=p.samples,
                nt_samples_batch_size=p.batch,
                stdevs=p.stdev,
                target=target,
                abs=p.abs,
            ),
        )


@EXPLAINERS.register("guided_backprop")
class GuidedBackpropExplainer(CaptumExplainer[ChannelParams]):
    """Guided backpropagation (Springenberg et al., 2015) through captum's ``GuidedBackprop``."""

    description = "captum GuidedBackprop: gradients with ReLU'd backward through every ReLU module"
    Params = ChannelParams

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import GuidedBackprop

        return cast(Tensor, GuidedBackprop(f).attribute(x, target=target))


class GuidedGradCamParams(ChannelParams):
    interpolate: Literal["bilinear", "nearest"] = Field(
        "bilinear", description="how the CAM reaches the input size (the paper: bilinear; captum's default: nearest)"
    )


@EXPLAINERS.register("guided_gradcam")
class GuidedGradCamExplainer(CaptumExplainer[GuidedGradCamParams]):
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017) through captum's ``GuidedGradCam`` on the last stage."""

    description = "captum GuidedGradCam: guided backprop x Grad-CAM of the backbone's last stage"
    Params = GuidedGradCamParams

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import GuidedGradCam

        gc = GuidedGradCam(f, _last_stage(f.model))
        return cast(Tensor, gc.attribute(x, target=target, interpolate_mode=self.params.interpolate))


@EXPLAINERS.register("deeplift")
class DeepLiftExplainer(CaptumExplainer[BaselineParams]):
    """DeepLIFT's rescale rule (Shrikumar et al., ICML 2017) through captum's ``DeepLift``."""

    description = "captum DeepLift (rescale rule) from a zero/mean/blur baseline"
    Params = BaselineParams

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import DeepLift

        return cast(Tensor, DeepLift(f).attribute(x, baselines=_baseline(self.params, x), target=target))


def uniform_baselines(x: Tensor, n: int, seed: int) -> Tensor:
    """``n`` uniform-noise images shaped like ``x``'s, drawn on the CPU with ``seed`` (device-independent)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *x.shape[1:], generator=g).to(device=x.device, dtype=x.dtype)


@EXPLAINERS.register("gradient_shap")
class GradientShapExplainer(CaptumExplainer[GradientShapParams]):
    """Expected gradients (Erion et al., 2021), i.e. GradientSHAP (Lundberg & Lee, 2017), through captum."""

    description = "captum GradientShap: expected gradients over seeded uniform (or zero) baselines"
    Params = GradientShapParams

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import GradientShap

        p = self.params
        refs = uniform_baselines(x, p.n_baselines, seed) if p.baselines == "uniform" else torch.zeros_like(x[:1])
        return cast(
            Tensor, GradientShap(f).attribute(x, baselines=refs, n_samples=p.samples, stdevs=p.stdev, target=target)
        )


@EXPLAINERS.register("occlusion")
class OcclusionExplainer(CaptumExplainer[OcclusionParams]):
    """Occlusion (Zeiler & Fergus, ECCV 2014) through captum's ``Occlusion``."""

    description = "captum Occlusion: logit drop when a sliding patch shows the baseline"
    Params = OcclusionParams
    hooks_activations = False

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import Occlusion

        p = self.params
        c, h, w = x.shape[1:]
        window = min(p.window or default_window(h, w), h, w)
        stride = p.stride or window
        with torch.no_grad():
            return cast(
                Tensor,
                Occlusion(f).attribute(
                    x,
                    sliding_window_shapes=(c, window, window),
                    strides=(c, stride, stride),
                    baselines=_baseline(p, x),
                    target=target,
                    perturbations_per_eval=p.batch,
                ),
            )


class _Surrogate(CaptumExplainer[S]):
    hooks_activations = False

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        p = self.params
        h, w = x.shape[-2:]
        mask = cell_mask(h, w, p.cell or default_cell(h, w), x.device)
        with torch.no_grad():
            return cast(
                Tensor,
                self.captum(f).attribute(
                    x,
                    baselines=_baseline(p, x),
                    target=target,
                    feature_mask=mask,
                    n_samples=p.samples,
                    perturbations_per_eval=p.batch,
                    return_input_shape=True,
                ),
            )

    def captum(self, f: LogitsOnly) -> Any:
        raise NotImplementedError


@EXPLAINERS.register("lime")
class LimeExplainer(_Surrogate[LimeParams]):
    """LIME (Ribeiro et al., KDD 2016) over square cells through captum's ``Lime``."""

    description = "captum Lime: a Lasso on random on/off patterns of square cells"
    Params = LimeParams

    def captum(self, f: LogitsOnly) -> Any:
        from captum._utils.models.linear_model import SkLearnLasso
        from captum.attr import Lime
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        p = self.params
        return Lime(
            f,
            interpretable_model=SkLearnLasso(alpha=p.alpha),
            similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=p.kernel_width),
        )


@EXPLAINERS.register("kernel_shap")
class KernelShapExplainer(_Surrogate[SurrogateParams]):
    """Kernel SHAP (Lundberg & Lee, NeurIPS 2017) over square cells through captum's ``KernelShap``."""

    description = "captum KernelShap: Shapley-kernel regression on square cells"
    Params = SurrogateParams

    def captum(self, f: LogitsOnly) -> Any:
        from captum.attr import KernelShap

        return KernelShap(f)


# -- LRP ------------------------------------------------------------------------------------------------
def lrp_rules(model: nn.Module, epsilon: float = 1e-9, batchnorm: str = "epsilon") -> dict[nn.Module, Any] | None:
    """The LRP rule of every leaf module of ``model`` (None: ReLU/dropout, which pass relevance); None if
    some leaf has no rule here (the offending types are logged)."""
    from captum.attr._utils.custom_modules import Addition_Module
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    from xbench.models.zoo import RepeatChannels

    epsilon_types = (
        nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, Add, Addition_Module,
    )  # fmt: skip
    rules: dict[nn.Module, Any] = {}
    missing: set[str] = set()
    for m in model.modules():
        if next(m.children(), None) is not None:
            continue
        if isinstance(m, nn.BatchNorm2d):
            rules[m] = IdentityRule() if batchnorm == "identity" else EpsilonRule(epsilon)
        elif isinstance(m, epsilon_types):
            rules[m] = EpsilonRule(epsilon)
        elif isinstance(m, Normalize):
            rules[m] = IdentityRule()
        elif isinstance(m, nn.Identity | nn.Flatten | RepeatChannels):
            rules[m] = _passthrough_rule()
        elif type(m) in (nn.ReLU, nn.Dropout, nn.Tanh):
            continue
        else:
            missing.add(type(m).__name__)
    if missing:
        log.warning("lrp: no LRP rule for %s; the explainer does not apply to this model", ", ".join(sorted(missing)))
        return None
    return rules


def _passthrough_rule() -> Any:
    from captum.attr._utils.lrp_rules import PropagationRule

    class PassThroughRule(PropagationRule):
        """Relevance crosses the module as its gradient (no tensor hooks): right for reshapes and identities."""

        def forward_hook(self, module: nn.Module, inputs: Any, outputs: Tensor) -> None:
            return None

        def _manipulate_weights(self, module: nn.Module, inputs: Any, outputs: Tensor) -> None:
            return None

    return PassThroughRule()


@EXPLAINERS.register("lrp")
class LRPExplainer(CaptumExplainer[LRPParams]):
    """Layer-wise relevance propagation (Bach et al., 2015) through captum's ``LRP`` on a hook-safe model."""

    description = "captum LRP: epsilon rule, residual sums split by contribution; hook-safe ResNets only"
    Params = LRPParams

    def attribute(self, f: LogitsOnly, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from captum.attr import LRP

        p = self.params
        rules = lrp_rules(f, p.epsilon, p.batchnorm)
        if rules is None:
            return None
        for m, rule in rules.items():
            m.rule = rule
        try:
            return cast(Tensor, LRP(f).attribute(x, target=target))
        finally:
            # captum removes the rules but leaves each layer's saved inputs (``activations``) behind.
            for m in f.modules():
                for name in ("rule", "activations"):
                    if name in m.__dict__:
                        delattr(m, name)
