"""LAP: Local Attention Pooling, a self-interpretable pooling layer.

Paper: R. G. Modegh, A. Salimi, A. Dizaji, H. R. Rabiee, "LAP: An Attention-Based Module
for Faithful Interpretation and Knowledge Injection in Convolutional Neural Networks",
arXiv 2201.11808 (v1–v3, 2022; v5, 2023, retitles it "... Concept Based
Self-Interpretation ..."). No official code was found.

Which version this follows. The paper's full text (any version) could not be read here:
the search tool holds only its abstract (v1–v3 and v5 wording), and no section or
equation of it. So neither form below is confirmed as the paper's equations; both are
named, and a suite says which one it scores (``form``):

* ``form: score`` (default): a learned score map, one per layer, with a softmax per window
  shared across channels (the LIP-style layer of xbench's first specification). It is the
  default because it is the form that carries what the abstract claims of LAP: one spatial
  map per layer that *is* the model's interpretation (the pooling weights every channel
  uses), and that weak supervision can act on (knowledge injection pulls that map toward
  a mask). The distance form has no single map per layer to interpret or supervise.
* ``form: distance``: the form of third-party public code that cites the paper (a
  TensorFlow ``LAP_2D`` layer): per channel and window, w_j = exp(−α² (max_W x − x_j)²)
  with one learnable α per layer (initialised at 0.1), output mean_{j∈W} w_j·x_j, not
  normalised. xbench's interpretation of it is the channel mean of w, the share of the
  channels for which a location is near its window's maximum. It does not support
  knowledge injection (there is no score to supervise).

The score layer. A head scores every location of the input feature map x (C × H × W):

    s = conv1×1(ReLU(conv3×3(x)))                       (1 × H × W)

Inside each k×k window W (stride k), the weights are a softmax of the scores and the
output is the weighted average of the features, per channel:

    w_j = exp(s_j) / Σ_{i∈W} exp(s_i),    y_c = Σ_{j∈W} w_j · x_{c,j}

With constant scores every w_j = 1/k² and LAP is average pooling; the distance layer is
average pooling at α = 0. A global LAP layer uses one window covering the whole map and
replaces global average pooling.

Where it goes in xbench's backbones. CIFAR ResNets have no pooling layers but the final
global average pool; they downsample with stride-2 convolutions. ``downsample: true``
(default) turns each stage's stride-2 convolutions into stride-1 ones and puts a 2×2
LAP layer in front of that stage, so the stage sees the same resolution and costs the
same; the final global pool is always a global LAP layer. The stem's strided convolution is
left alone. Zoo backbones (:mod:`xbench.models.zoo`) also downsample with max-pools (VGG's blocks,
the ResNet stem): each max-pool becomes a 2×2 LAP layer in its place. A backbone with nothing to
replace is an error, not a LAP model without LAP layers.

Added to an already trained CNN (``from_pretrained: baseline``), as the paper says LAP
can be: the cell builds on the baseline cell of the same dataset and seed (trained first
if needed, like TAME's), copies every backbone and classifier weight into the LAP model
(strictly: every baseline tensor must fit), and trains the whole model with the row's
training settings (e.g. ``training: {epochs: 2, lr: 0.01}`` to fine-tune).

Interpretation (``native_maps``): the map of the last (global) LAP layer (``score``: its
scores; ``distance``: its channel-mean weights), upsampled bilinearly to the input and
min-max normalised (``interpretation: last``), or the product of every LAP layer's
normalised, upsampled map (``product``). The maps are class-agnostic: LAP weighs
locations before the classifier sees them.

Knowledge injection (optional, ``injection > 0``, score form): on a fixed fraction of
training samples (chosen by a hash of the sample's index) that have a ground-truth mask,
every LAP layer's scores are pulled toward the mask with a binary cross-entropy against
the fraction of object pixels in each score cell:

    L = CE(z, y) + injection · mean_l BCE(s_l, avgpool(mask)_l)

Rows trained this way used ground-truth masks and are marked so in the leaderboard.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from xbench.claims import Claim, Rows
from xbench.data.base import ImageSplit
from xbench.errors import ConfigError
from xbench.methods.base import Method
from xbench.models.base import Backbone
from xbench.models.maps import normalise
from xbench.models.output import Batch, ModelOutput
from xbench.registry import METHODS


class LAPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    downsample: bool = Field(True, description="replace stride-2 downsampling by 2×2 LAP layers (else global only)")
    hidden: int = Field(16, ge=1, le=4096, description="channels of the scoring head's 3×3 conv")
    interpretation: Literal["last", "product"] = "last"
    injection: float = Field(0.0, ge=0, description="weight of the mask loss (0: no knowledge injection)")
    injection_fraction: float = Field(0.1, gt=0, le=1, description="fraction of training samples whose masks are used")
    form: Literal["score", "distance"] = Field(
        "score", description="score: learned score map, window softmax; distance: exp(−α²(max − x)²) per channel"
    )
    from_pretrained: Literal["baseline"] | None = Field(
        None, description="start from the trained baseline cell's weights (LAP added to a trained CNN)"
    )

    @model_validator(mode="after")
    def _injection_needs_scores(self) -> LAPParams:
        if self.injection > 0 and self.form != "score":
            raise ValueError("injection needs form: score (the distance form has no score map to supervise)")
        return self


def window_weights(scores: Tensor, kernel: int) -> Tensor:
    """(B, H/k, W/k, k·k) softmax of ``scores`` (B, 1, H, W) within each k×k window.

    Maps whose sides are not multiples of k are padded on the bottom/right with −∞
    scores, which get zero weight (like ``ceil_mode`` pooling).
    """
    return _windows(scores, kernel, float("-inf"))[:, 0].softmax(dim=-1)


def local_attention_pool(x: Tensor, scores: Tensor, kernel: int | None) -> Tensor:
    """Pool ``x`` (B, C, H, W) with window-softmax weights of ``scores``; ``kernel=None`` is global (B, C)."""
    if kernel is None:
        w = scores.flatten(2).softmax(dim=-1)  # (B, 1, HW)
        return (x.flatten(2) * w).sum(dim=-1)
    return (_windows(x, kernel, 0.0) * window_weights(scores, kernel)[:, None]).sum(dim=-1)


def _windows(x: Tensor, kernel: int, fill: float) -> Tensor:
    """(B, C, H/k, W/k, k·k) non-overlapping k×k windows of ``x``, the bottom/right padded with ``fill``."""
    b, c, h, w = x.shape
    ph, pw = (-h) % kernel, (-w) % kernel
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=fill)
    hh, ww = (h + ph) // kernel, (w + pw) // kernel
    return x.view(b, c, hh, kernel, ww, kernel).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hh, ww, kernel * kernel)


class LocalAttentionPool(nn.Module):
    """A LAP layer: a scoring head and window-softmax pooling; returns ``(pooled, scores)``."""

    def __init__(self, channels: int, hidden: int, kernel: int | None) -> None:
        super().__init__()
        self.kernel = kernel
        self.head = nn.Sequential(nn.Conv2d(channels, hidden, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.head(x)
        return local_attention_pool(x, scores, self.kernel), scores


def _unwindow(windows: Tensor, h: int, w: int) -> Tensor:
    """Inverse of :func:`_windows`: (B, C, H', W', k·k) back to (B, C, h, w), the padding dropped."""
    b, c, hh, ww, kk = windows.shape
    k = round(kk**0.5)
    full = windows.view(b, c, hh, ww, k, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hh * k, ww * k)
    return full[..., :h, :w]


def distance_pool(x: Tensor, alpha: Tensor, kernel: int | None) -> tuple[Tensor, Tensor]:
    """``(y, w)``: y_c = mean_{j∈W} w_cj·x_cj with w_cj = exp(−α²(max_W x_c − x_cj)²), and w (B, C, H, W).

    ``kernel=None`` pools the whole map (y is (B, C)); otherwise k×k windows with stride k,
    bottom/right windows that overhang the map averaged over their real pixels only.
    """
    b, c, h, wd = x.shape
    if kernel is None:
        flat = x.flatten(2)
        w = torch.exp(-(alpha**2) * (flat.amax(dim=-1, keepdim=True) - flat) ** 2)
        return (w * flat).mean(dim=-1), w.view(b, c, h, wd)
    xw = _windows(x, kernel, float("-inf"))
    real = torch.isfinite(xw)
    peak = xw.amax(dim=-1, keepdim=True)
    xw = torch.where(real, xw, torch.zeros_like(xw))
    w = torch.where(real, torch.exp(-(alpha**2) * (peak - xw) ** 2), torch.zeros_like(xw))
    y = (w * xw).sum(dim=-1) / real.sum(dim=-1).clamp_min(1)
    return y, _unwindow(w, h, wd)


class DistancePool(nn.Module):
    """A LAP layer of the distance form; returns ``(pooled, weight map)``, the map the channel mean of w."""

    def __init__(self, kernel: int | None, alpha: float = 0.1) -> None:
        super().__init__()
        self.kernel = kernel
        self.alpha = nn.Parameter(torch.tensor([alpha]))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, w = distance_pool(x, self.alpha, self.kernel)
        return y, w.mean(dim=1, keepdim=True)


def lap_layer(params: LAPParams, channels: int, kernel: int | None) -> nn.Module:
    """One LAP layer of the configured ``form``."""
    if params.form == "distance":
        return DistancePool(kernel)
    return LocalAttentionPool(channels, params.hidden, kernel)


def _unstride(stage: nn.Module, where: str) -> bool:
    """Make every stride-2 convolution of ``stage`` stride 1; whether there was one.

    Only a "same" convolution (odd kernel, padding k // 2) keeps its meaning at stride 1; a
    strided patchify convolution (ConvNeXt's 2×2) cannot be replaced and is an error.
    """
    found = False
    for m in stage.modules():
        if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
            k, pad = m.kernel_size, m.padding
            if isinstance(pad, str) or any(kk % 2 == 0 or p != kk // 2 for kk, p in zip(k, pad, strict=True)):
                raise ConfigError(
                    f"lap: {where} downsamples with a {k[0]}x{k[1]} stride-2 convolution (padding {pad}), which LAP "
                    "cannot replace; use a backbone that downsamples with 'same' convolutions or max-pools"
                )
            m.stride = (1, 1)
            found = True
    return found


def _last_conv_channels(module: nn.Module, default: int) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels if convs else default


class LAPNet(nn.Module):
    """A backbone whose downsampling and final pooling are LAP layers, and a linear head.

    Downsampling is replaced two ways: a stage (after the first) with stride-2 convolutions gets
    them at stride 1 and a 2×2 LAP layer in front of it (``pools``); a max-pool that is a direct
    step of the stem or of a stage (VGG's blocks, the ResNet stem's) becomes a 2×2 LAP layer in
    its place. A backbone with neither is an error with ``downsample: true``, never a silent no-op.
    """

    def __init__(self, backbone: Backbone, num_classes: int, params: LAPParams) -> None:
        super().__init__()
        self.backbone = backbone
        name = getattr(backbone, "name", type(backbone).__name__)
        pools: list[nn.Module] = []
        for i, stage in enumerate(backbone.stages):
            c_in = backbone.stage_channels[i - 1] if i > 0 else None
            if params.downsample and c_in is not None and _unstride(stage, f"stage {i} of {name}"):
                pools.append(lap_layer(params, c_in, 2))
            else:
                pools.append(nn.Identity())
        self.pools = nn.ModuleList(pools)
        #: state-dict prefixes of the LAP layers that took a max-pool's place (no baseline weights there)
        self.inplace: list[str] = self._replace_max_pools(params) if params.downsample else []
        if params.downsample and not self.inplace and all(isinstance(p, nn.Identity) for p in pools):
            raise ConfigError(
                f"lap: backbone {name} has no stride-2 convolution after its first stage and no max-pool to "
                "replace; set downsample: false to use LAP as the global pooling only"
            )
        self.global_pool = lap_layer(params, backbone.out_channels, None)
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def _replace_max_pools(self, params: LAPParams) -> list[str]:
        replaced = []
        channels = 0
        blocks = [("backbone.stem", self.backbone.stem)] + [
            (f"backbone.stages.{i}", stage) for i, stage in enumerate(self.backbone.stages)
        ]
        for prefix, block in blocks:
            if not isinstance(block, nn.Sequential):
                channels = _last_conv_channels(block, channels)
                continue
            for j, step in enumerate(block):
                if isinstance(step, nn.MaxPool2d):
                    block[j] = lap_layer(params, channels, 2)
                    replaced.append(f"{prefix}.{j}.")
                else:
                    channels = _last_conv_channels(step, channels)
        return replaced

    def _run(self, block: nn.Module, h: Tensor, scores: list[Tensor]) -> Tensor:
        """``block(h)``, stepping through a Sequential that holds LAP layers to collect their scores."""
        if not self.inplace or not isinstance(block, nn.Sequential):
            out: Tensor = block(h)
            return out
        for step in block:
            if isinstance(step, LocalAttentionPool | DistancePool):
                h, s = step(h)
                scores.append(s)
            else:
                h = step(h)
        return h

    def forward(self, x: Tensor) -> ModelOutput:
        scores: list[Tensor] = []
        h = self._run(self.backbone.stem, x, scores)
        for pool, stage in zip(self.pools, self.backbone.stages, strict=True):
            if not isinstance(pool, nn.Identity):
                h, s = pool(h)
                scores.append(s)
            h = self._run(stage, h, scores)
        pooled, s = self.global_pool(h)
        scores.append(s)
        return ModelOutput(logits=self.fc(pooled), features=h, maps=scores)


def _normalised(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 1, h, w) score maps upsampled bilinearly to ``size`` and min-max normalised: (B, H, W)."""
    return normalise(F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0])


def injected(index: Tensor, fraction: float) -> Tensor:
    """Whether each training sample is in the fixed ``fraction`` whose masks are used (Knuth's hash)."""
    return ((index.long() * 2654435761) % 4294967296).double() / 4294967296 < fraction


@METHODS.register("lap")
class LAP(Method[LAPParams]):
    """Local attention pooling in place of the backbone's downsampling and global pooling."""

    paper = "R. G. Modegh et al., LAP: An Attention-Based Module for Faithful Interpretation ..., arXiv 2201.11808"
    description = "attention-weighted local pooling; its score maps are the interpretation; optional mask injection"
    Params = LAPParams
    claims = (
        Claim(
            id="lap.faithfulness",
            statement="LAP's own maps are more faithful to the model than Grad-CAM of the same model",
            paper="more faithful than white-box explainers (no figure found)",
            metric="faithfulness_correlation",
            subject=Rows(method="lap", explainer="native"),
            reference=Rows(method="lap", explainer="gradcam"),
            relation=">",
        ),
        # "The commonly used white-box explainers" (abstract): the gradient family, on the same LAP model;
        # scored when the suite lists the explainer (suites/explainers.yaml does).
        *(
            Claim(
                id=f"lap.faithfulness.{explainer}",
                statement=f"LAP's own maps are more faithful to the model than {name} of the same model",
                paper="more faithful than white-box explainers (no figure found)",
                metric="faithfulness_correlation",
                subject=Rows(method="lap", explainer="native"),
                reference=Rows(method="lap", explainer=explainer),
                relation=">",
                optional=True,
            )
            for explainer, name in (
                ("saliency", "gradient saliency"),
                ("integrated_gradients", "Integrated Gradients"),
                ("guided_backprop", "Guided Backprop"),
            )
        ),
        Claim(
            id="lap.accuracy",
            statement="LAP costs at most 0.5 points of top-1 against the baseline",
            paper="no performance loss (v5)",
            metric="top1",
            subject=Rows(method="lap"),
            reference=Rows(method="baseline"),
            relation=">=",
            threshold=-0.005,
        ),
    )

    def build(self) -> nn.Module:
        required_head = (self.ctx.required_params or {}).get("head", "gap")
        if self.params.from_pretrained is not None and required_head != "gap":
            # LAP's global LAP layer and linear head take the place of global pooling + fc; a zoo model's
            # own classifier (VGG's fully connected layers) has no counterpart to copy into.
            raise ConfigError(
                f"lap: from_pretrained: {self.params.from_pretrained} needs that row with head: gap, it has "
                f"head: {required_head} (LAP replaces the global pooling and linear head)"
            )
        return LAPNet(self.ctx.build_backbone(), self.ctx.num_classes, self.params)

    @classmethod
    def required_method(cls, params: BaseModel) -> str | None:
        return params.from_pretrained if isinstance(params, LAPParams) else None

    def load_required(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        """Copy the trained baseline's backbone and classifier into the LAP model; every tensor must fit."""
        assert isinstance(model, LAPNet)
        missing, unexpected = model.load_state_dict(state, strict=False)
        own = ("pools.", "global_pool.", *model.inplace)
        left = [k for k in missing if not k.startswith(own)]
        if unexpected or left:
            raise RuntimeError(
                f"lap: the {self.params.from_pretrained} weights do not fit: "
                f"unexpected {sorted(unexpected)[:3]}, missing {sorted(left)[:3]}"
            )

    def uses_masks(self, data: ImageSplit) -> bool:
        return self.params.injection > 0 and data.masks is not None

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        ce = F.cross_entropy(output.logits, batch.y)
        if self.params.injection == 0 or batch.mask is None:
            return ce
        chosen = injected(batch.index, self.params.injection_fraction).to(batch.y.device)
        if not bool(chosen.any()):
            return ce
        mask = batch.mask[chosen].float()
        terms = []
        for s in output.maps:
            target = F.adaptive_avg_pool2d(mask, (int(s.shape[-2]), int(s.shape[-1])))
            terms.append(F.binary_cross_entropy_with_logits(s[chosen], target))
        return ce + self.params.injection * torch.stack(terms).mean()

    def native_maps(self, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
        """The last LAP layer's score map (or the product over layers), at the input size, in [0, 1]."""
        size = (int(x.shape[-2]), int(x.shape[-1]))
        with torch.no_grad():
            scores = model(x).maps
        if self.params.interpretation == "last":
            return _normalised(scores[-1], size)
        out = torch.ones(x.shape[0], *size, device=x.device)
        for s in scores:
            out = out * _normalised(s, size)
        return out
