"""TAME: a trained attention module that explains a frozen classifier.

Paper: M. Ntrougkas, N. Gkalelis, V. Mezaris, "TAME: Attention Mechanism Based Feature
Fusion for Generating Explanation Maps of Convolutional Neural Networks", IEEE ISM 2022,
arXiv 2301.07407. Official code: github.com/bmezaris/TAME
(``scripts/utilities/composite_models.py``, ``scripts/train_script.py``).

TAME does not change the classifier it explains: it trains a small module on the frozen
classifier's feature maps to produce one explanation map per class. Its accuracy is the
classifier's; its rows differ from the baseline's only in the explanation metrics.

Attention module. Taps F_1..F_n (outputs of backbone stages ``taps``; the last three by
default), F_i with C_i channels; the first tap sets the map resolution h × w (capped at
``max_map_size`` per side, 56 in the official code). Branch i:

    B_i = up_{h×w}( ReLU( BN_i(W_i * F_i + b_i) + F_i ) )      (W_i: 1×1 conv C_i → C_i)

and the class maps, one per class (K = number of classes; 1000 in the paper):

    A = σ( V * [B_1; …; B_n] + v ) ∈ (0, 1)^{K×h×w}           (V: 1×1 conv Σ C_i → K)

Training loss, with a_y = A[y] the label class's map, x ∈ [0, 1] the image and f the
frozen classifier (which normalises its input itself, as the official code normalises
after masking):

    L = λ_ce · CE( f( x ⊙ up_{H×W}(a_y) ), y )
      + λ_area · mean( (R + ε)^p )
      + λ_tv · TV(R)

    TV(R) = [ Σ (R[.., i+1, :] − R[.., i, :])² + Σ (R[.., :, j+1] − R[.., :, j])²
              + β · Σ ( R[.., 0, :]² + R[.., h−1, :]² + R[.., :, 0]² + R[.., :, w−1]² ) ] / (2B)

with defaults λ_ce = 1.5, λ_area = 2, ε = 5e-4, p = 0.3, λ_tv = 0.01, β = 0.3 (the
official ``Arrangement`` constants). Checked against ``Arrangement.smoothness_loss`` in
``composite_models.py``: the border term adds the squares of the first and last row and
the first and last column, so the four corner pixels count twice, and the whole sum is
divided by power · B = 2B with B the size of the first dimension (the batch), not the
number of maps.

Resolutions, as in the official code: the cross-entropy term masks the image with a_y
upsampled bilinearly to the input size (``Arrangement.train_policy1``); the area and TV
terms act on R, maps at the attention module's resolution h × w, not upsampled (the
train script passes ``model.get_a(labels)`` to the loss, which indexes the sigmoid
output itself).

R is chosen by ``masking``:

* ``"diagonal"`` (xbench's default): R = (a_{y_b} for each sample b), shape (B, 1, h, w),
  every sample regularised on its own label's map (T-TAME, the later version of this
  work, calls this the diagonal variant).
* ``"official"``: R = A[:, y], shape (B, B, h, w): the official ``get_a(labels)`` indexes
  the class dimension with the whole label vector, so every sample's map for every label
  in the batch is regularised. The official masked forward pass still uses each sample's
  own label map (a ``gather``), so the cross-entropy term is the same in both modes.

Inference (``maps``), as the official evaluation (``scripts/eval_script.py``) does it: one
forward pass, the target class's map of the **pre-sigmoid** output C (``get_c``, not
``get_a``), min-max normalised at the module's resolution h × w (``normalizeMinMax``), then
upsampled bilinearly to the input size; xbench passes the prediction as the target, as
the official code passes the arg-max class. ``maps: sigmoid`` reads A = σ(C) instead. The
sigmoid is monotone, so both give the same pixel order (same deletion/insertion curves) but
different values, which moves Average Drop, Increase in Confidence and every score that
multiplies the image by the map. How much depends on the logits' scale, since σ flattens large
logits: little on random weights (logits near 0, where σ is almost linear), much more for a
trained TAME (BENCHMARKS.md, "Numbers behind the code").

The metrics receive every explainer's maps min-max normalised once more at the input size
(:meth:`xbench.metrics.context.EvalContext.explanations`); the official mask, normalised
before the upsampling, can peak slightly below 1 where xbench's reaches 1 exactly.

Where xbench deviates from the official code, and why:

* ``classifier_mode: eval`` (default): the frozen classifier stays in eval mode throughout
  training (``TAMENet.train`` overrides ``nn.Module.train``). The official script calls
  ``model.train()`` on the whole composite model, so the frozen backbone's BatchNorm layers
  normalise with batch statistics and keep updating their running statistics (and VGG's
  dropout is active) although its weights are frozen. xbench keeps them in eval mode so that
  the model TAME explains is bit for bit the trained baseline, during training and after it:
  the claims compare TAME's maps with Grad-CAM *of the same network*, and the TAME row's
  accuracy is the baseline's. ``classifier_mode: train`` is the official behaviour; the
  classifier then drifts from the baseline (its BN statistics absorb the masked images), so
  its accuracy is measured on its own and Grad-CAM is scored on it as on any other model.
  The attention module's own BatchNorm layers train normally in both modes.
* ``masking: diagonal`` (default): the area and TV terms regularise each sample's own label
  map. The official ``get_a(labels)`` regularises B × B maps (every sample's map of every
  label in the batch), which makes the loss depend on the batch's label mix and size: with
  the official batch of 32 on 1000 classes the off-diagonal maps are mostly of classes the
  image does not show, pushed to zero area, while on a 10-class dataset at batch 128 every
  class appears in every batch and each image's own map is regularised ~13 times over. The
  diagonal form is what T-TAME (the follow-up by the same authors) writes down, and does not
  change with the suite's batch size. ``masking: official`` is the official form.
* The optimiser, schedule, batch size and epochs are the suite's (the training loop is
  shared; only the attention module's parameters are trained). A paper-faithful suite
  would set SGD with Nesterov momentum 0.9, weight decay 5e-4, a OneCycle schedule with
  max lr 1e-3 for 8 epochs (VGG-16) or 1e-4 for 4 epochs (ResNet-50), batch size 32; the
  official code also exempts biases from weight decay and gives them twice the lr,
  which the shared loop does not.
* The number of class maps is the dataset's number of classes, and the map resolution is
  the first tap's (h, w) capped per side, where the official code uses a square of the
  first tap's height.
* The area term always adds ε; the official code adds it only when p ≠ 1, which changes
  the loss by a constant at p = 1 and not its gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from xbench.claims import Claim, Rows
from xbench.methods.base import Method
from xbench.methods.baseline import Classifier
from xbench.models.base import Backbone
from xbench.models.maps import normalise
from xbench.models.output import Batch, ModelOutput
from xbench.registry import METHODS


class TAMEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    taps: list[Annotated[int, Field(le=1023)]] | None = Field(
        None,
        max_length=64,
        description="backbone stages feeding the attention module, increasing; default the last three",
    )
    masking: Literal["diagonal", "official"] = Field(
        "diagonal", description="area/TV on each sample's label map, or on every map × every label (official, B×B)"
    )
    ce_weight: float = Field(1.5, ge=0, description="λ_ce, weight of the masked-image cross-entropy")
    area_weight: float = Field(2.0, ge=0, description="λ_area, weight of the area term")
    area_eps: float = Field(5e-4, ge=0, description="ε in mean((a + ε)^p)")
    area_power: float = Field(0.3, gt=0, description="p in mean((a + ε)^p)")
    tv_weight: float = Field(0.01, ge=0, description="λ_tv, weight of the total-variation term")
    tv_border: float = Field(0.3, ge=0, description="β, weight of the squared border pixels in the TV term")
    max_map_size: int | None = Field(
        56, ge=1, le=4096, description="cap on each side of the map resolution (official: 56)"
    )
    maps: Literal["logits", "sigmoid"] = Field(
        "logits", description="explanation maps from the pre-sigmoid class maps C (official evaluation) or σ(C)"
    )
    classifier_mode: Literal["eval", "train"] = Field(
        "eval", description="frozen classifier's mode while training: eval (stays the baseline) or train (official)"
    )

    @field_validator("taps")
    @classmethod
    def _taps(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or v[0] < 0 or any(b <= a for a, b in pairwise(v))):
            raise ValueError(f"taps must be a non-empty, strictly increasing list of stage indices >= 0, got {v}")
        return v


class TAMEAttention(nn.Module):
    """The attention module: per-tap ``conv1×1 → BN → + input → ReLU → upsample``, concat, ``conv1×1 → σ``."""

    def __init__(self, channels: list[int], num_classes: int, max_map_size: int | None = None) -> None:
        super().__init__()
        self.max_map_size = max_map_size
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 1, bias=True) for c in channels)
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in channels)
        self.fuser = nn.Conv2d(sum(channels), num_classes, 1, bias=True)

    def map_size(self, first: Tensor) -> tuple[int, int]:
        h, w = int(first.shape[-2]), int(first.shape[-1])
        cap = self.max_map_size
        return (h, w) if cap is None else (min(h, cap), min(w, cap))

    def forward(self, taps: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``(A, C)``: (B, K, h, w) class maps after and before the sigmoid."""
        size = self.map_size(taps[0])
        branches = [
            F.interpolate(F.relu(bn(conv(f)) + f), size=size, mode="bilinear", align_corners=False)
            for f, conv, bn in zip(taps, self.convs, self.bns, strict=True)
        ]
        c = self.fuser(torch.cat(branches, dim=1))
        return torch.sigmoid(c), c


class TAMENet(nn.Module):
    """A frozen :class:`Classifier` and the attention module trained on its stage outputs.

    ``forward`` returns the classifier's logits (unchanged) with the class maps in
    ``maps[0]``; :meth:`classify` runs the frozen classifier on other images (the masked
    ones of the loss, see :meth:`TAME.training_step`).
    """

    def __init__(
        self,
        classifier: Classifier,
        taps: list[int],
        num_classes: int,
        max_map_size: int | None,
        classifier_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.classifier_mode = classifier_mode
        self.taps = list(taps)
        channels = [classifier.backbone.stage_channels[t] for t in self.taps]
        self.attention = TAMEAttention(channels, num_classes, max_map_size)
        self.freeze()

    @property
    def backbone(self) -> Backbone:
        """The explained classifier's backbone (so Grad-CAM finds its last stage); not a second copy."""
        return self.classifier.backbone

    def freeze(self) -> None:
        """No gradient into the classifier; in ``classifier_mode`` eval its BatchNorm statistics never update."""
        self.classifier.requires_grad_(False)
        self.classifier.train(self.training and self.classifier_mode == "train")

    def train(self, mode: bool = True) -> TAMENet:
        """Set the attention module's mode; the frozen classifier follows only in ``classifier_mode`` train."""
        super().train(mode)
        self.classifier.train(mode and self.classifier_mode == "train")
        return self

    def classify(self, x: Tensor) -> Tensor:
        """Logits of the frozen classifier."""
        logits: Tensor = self.classifier(x).logits
        return logits

    def forward(self, x: Tensor) -> ModelOutput:
        clf = self.classifier
        stages = clf.backbone.forward_stages(x)
        features = stages[-1]
        logits = clf.logits_of(features)
        a, c = self.attention([stages[t] for t in self.taps])
        return ModelOutput(logits=logits, features=features, maps=[a], extras={"class_logit_maps": c})


def label_maps(a: Tensor, labels: Tensor) -> Tensor:
    """(B, 1, h, w): each sample's map of its own class."""
    return a[torch.arange(a.shape[0], device=a.device), labels][:, None]


def masked_images(a: Tensor, x: Tensor, labels: Tensor) -> Tensor:
    """``x ⊙ up(a_y)``: each image times its label map upsampled bilinearly to the image size."""
    m = F.interpolate(label_maps(a, labels), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return x * m


def area_term(r: Tensor, eps: float, power: float) -> Tensor:
    """``mean((r + ε)^p)`` over every element."""
    return (r + eps).pow(power).mean()


def tv_term(r: Tensor, border: float) -> Tensor:
    """Squared total variation plus ``β``·squared border pixels, over 2·(first dimension) (official form)."""
    dh = (r[..., 1:, :] - r[..., :-1, :]).pow(2).sum()
    dw = (r[..., :, 1:] - r[..., :, :-1]).pow(2).sum()
    rows = r[..., 0, :].pow(2).sum() + r[..., -1, :].pow(2).sum()
    cols = r[..., :, 0].pow(2).sum() + r[..., :, -1].pow(2).sum()
    return (dh + dw + border * (rows + cols)) / (2 * r.shape[0])


@METHODS.register("tame")
class TAME(Method[TAMEParams]):
    """Attention module on a frozen baseline's stage outputs, trained with masked-image CE, area and TV."""

    paper = (
        "M. Ntrougkas, N. Gkalelis, V. Mezaris, TAME: Attention Mechanism Based Feature Fusion for Generating "
        "Explanation Maps of Convolutional Neural Networks, IEEE ISM 2022, arXiv 2301.07407"
    )
    description = "trained attention maps (one per class) over a frozen baseline's last three stages"
    Params = TAMEParams
    requires = "baseline"
    classifies_as_required = True  # the frozen baseline classifies; the attention module only explains
    claims = (
        Claim(
            id="tame.ad",
            statement="TAME's maps give a lower Average Drop than Grad-CAM of the same frozen network",
            paper="TAME below Grad-CAM (ImageNet; VGG-16, ResNet-50)",
            metric="average_drop",
            subject=Rows(method="tame", explainer="native"),
            reference=Rows(method="baseline", explainer="gradcam"),
            relation="<",
        ),
        Claim(
            id="tame.ic",
            statement="TAME's maps give a higher Increase in Confidence than Grad-CAM of the same frozen network",
            paper="TAME above Grad-CAM (ImageNet; VGG-16, ResNet-50)",
            metric="increase_in_confidence",
            subject=Rows(method="tame", explainer="native"),
            reference=Rows(method="baseline", explainer="gradcam"),
            relation=">",
        ),
        # The CAM methods and RISE its official code and follow-up (T-TAME) compare with, each on the same
        # frozen network: scored when the suite lists the explainer (suites/explainers.yaml does).
        *(
            Claim(
                id=f"tame.{short}.{explainer}",
                statement=f"TAME's maps give {better} {label} than {name} of the same frozen network",
                paper=f"TAME {word} {name} (ImageNet; T-TAME, VGG-16 and ResNet-50)",
                metric=metric,
                subject=Rows(method="tame", explainer="native"),
                reference=Rows(method="baseline", explainer=explainer),
                relation=relation,
                optional=True,
            )
            for metric, short, label, better, word, relation in (
                ("average_drop", "ad", "Average Drop", "a lower", "below", "<"),
                ("increase_in_confidence", "ic", "Increase in Confidence", "a higher", "above", ">"),
            )
            for explainer, name in (
                ("gradcam_pp", "Grad-CAM++"),
                ("scorecam", "Score-CAM"),
                ("ablationcam", "Ablation-CAM"),
                ("rise", "RISE"),
            )
        ),
    )

    def build(self) -> nn.Module:
        backbone = self.ctx.build_backbone()
        n = len(backbone.stages)
        taps = self.params.taps if self.params.taps is not None else list(range(max(0, n - 3), n))
        if taps[-1] >= n:
            raise ValueError(f"tame: taps must be stage indices below {n}, got {taps}")
        # The explained network is the required baseline row's, with its head (a zoo model's own classifier).
        head = (self.ctx.required_params or {}).get("head", "gap")
        classifier = Classifier(backbone, self.ctx.num_classes, head)
        return TAMENet(classifier, taps, self.ctx.num_classes, self.params.max_map_size, self.params.classifier_mode)

    def load_required(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Load the baseline's weights into the frozen classifier (strict) and freeze it again."""
        assert isinstance(model, TAMENet)
        model.classifier.load_state_dict(state, strict=True)
        model.freeze()

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        assert isinstance(model, TAMENet)
        return list(model.attention.parameters())

    def regularised_maps(self, a: Tensor, labels: Tensor) -> Tensor:
        """R of the area and TV terms: (B, 1, h, w) label maps, or (B, B, h, w) ``a[:, labels]`` (official)."""
        return label_maps(a, labels) if self.params.masking == "diagonal" else a[:, labels]

    def loss_terms(self, output: ModelOutput, batch: Batch, classify: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
        """The unweighted terms ``ce``, ``area`` and ``tv``; ``classify`` is the frozen classifier."""
        a = output.maps[0]
        logits = classify(masked_images(a, batch.x, batch.y))
        r = self.regularised_maps(a, batch.y)
        return {
            "ce": F.cross_entropy(logits, batch.y),
            "area": area_term(r, self.params.area_eps, self.params.area_power),
            "tv": tv_term(r, self.params.tv_border),
        }

    def objective(self, output: ModelOutput, batch: Batch, classify: Callable[[Tensor], Tensor]) -> Tensor:
        """``ce_weight``·CE(masked images) + ``area_weight``·area + ``tv_weight``·TV."""
        t = self.loss_terms(output, batch, classify)
        p = self.params
        return p.ce_weight * t["ce"] + p.area_weight * t["area"] + p.tv_weight * t["tv"]

    def training_step(self, model: nn.Module, batch: Batch) -> Tensor:
        """The loss needs a second pass of the frozen classifier over the masked images."""
        assert isinstance(model, TAMENet)
        return self.objective(model(batch.x), batch, model.classify)

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        raise TypeError("tame: the loss needs the frozen classifier; call training_step(model, batch) or objective()")

    @classmethod
    def classifies_like_required(cls, params: BaseModel) -> bool:
        """Only while the classifier stays in eval mode is it bit for bit the baseline."""
        return isinstance(params, TAMEParams) and params.classifier_mode == "eval"

    def native_maps(self, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
        """The target class's map of C (or σ(C)), min-max normalised at h × w, upsampled to the input size."""
        with torch.no_grad():
            out = model(x)
            maps = out.extras["class_logit_maps"] if self.params.maps == "logits" else out.maps[0]
            m = normalise(label_maps(maps, target)[:, 0])
            up = F.interpolate(m[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            return up[:, 0]
