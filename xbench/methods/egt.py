"""EGT: explanation-guided training of early-exit networks.

Paper: Y. Zhao, "Attention Consistency Regularization for Interpretable Early-Exit
Neural Networks", arXiv 2601.08891 (2026). Two pages, no public code.

The paper states a multi-objective loss — the classification losses of all exits
plus an attention-consistency term aligning each early exit's attention map with
the final exit's — and reports up to 98.97 % accuracy (equal to the baseline), a
1.97× inference speedup and up to 18.5 % better attention consistency. It does not
state the backbone, exit positions, map construction, loss form or weight, or the
thresholds; xbench's choices below are configurable defaults.

Exits. An exit after backbone stage s (``exits``; every stage but the last by
default, and the final exit always after the last stage) is a head
``[conv3×3-BN-ReLU] → global average pool → linear``; the conv is optional.

Attention map of exit i for class k, on the head's feature map F_i (C_i × h_i × w_i):

    CAM:        M_i = Σ_c W_i[k, c] · F_i[c]        (W_i: the exit's linear weights)
    activation: M_i = (1/C_i) Σ_c F_i[c]²

upsampled bilinearly to the largest exit resolution and min-max normalised per
sample: A_i = (M_i − min M_i) / (max M_i − min M_i + ε).

Loss, with K exits (the K-th is final), class k = the label during training:

    L = Σ_i w_i · CE(z_i, y) + λ · Σ_{i<K} (1 − cos(A_i, sg(A_K)))

where sg stops the gradient: the final exit's map is the teacher and is shaped by its
own classification loss only. Defaults: w_i = 1, λ = 1.

Exit policy: stop at the first exit whose top softmax probability is ≥ τ_i; the
thresholds are given (``thresholds``) or calibrated on held-out data so that accuracy
drops at most ``max_accuracy_drop`` points below the final exit's
(:mod:`xbench.models.exits`). ``λ = 0`` gives the same early-exit network without
consistency, the row that isolates what the consistency loss adds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from xbench.claims import Claim, Rows
from xbench.methods.base import Method
from xbench.models.base import Backbone
from xbench.models.exits import Confidence, ExitSettings
from xbench.models.output import Batch, ModelOutput
from xbench.registry import METHODS


class EGTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lam: float = Field(1.0, ge=0, description="λ, weight of the attention-consistency loss")
    exits: list[Annotated[int, Field(le=1023)]] | None = Field(
        None, max_length=64, description="backbone stages with an early exit; default all but the last"
    )
    exit_weights: list[float] | None = Field(None, max_length=65, description="w_i per exit, final last; default all 1")
    head_conv: bool = Field(True, description="a 3×3 conv-BN-ReLU in each early-exit head")
    attention: Literal["cam", "activation"] = "cam"
    thresholds: list[Confidence] | None = Field(
        None, max_length=64, description="τ_i per early exit (above 1: never exits); default: calibrated"
    )
    max_accuracy_drop: float = Field(0.5, ge=0, description="calibration target, in accuracy points")

    @model_validator(mode="after")
    def _lengths(self) -> EGTParams:
        if self.exits is not None and (len(set(self.exits)) != len(self.exits) or any(e < 0 for e in self.exits)):
            raise ValueError(f"exits must be distinct stage indices >= 0, got {self.exits}")
        if self.exits is not None and self.exit_weights is not None and len(self.exit_weights) != len(self.exits) + 1:
            raise ValueError(f"exit_weights needs {len(self.exits) + 1} values (early exits + final)")
        if self.exits is not None and self.thresholds is not None and len(self.thresholds) != len(self.exits):
            raise ValueError(f"thresholds needs {len(self.exits)} values, one per early exit")
        return self


class ExitHead(nn.Module):
    """``[conv3×3-BN-ReLU] → GAP → linear``; returns the map features and the logits."""

    def __init__(self, channels: int, num_classes: int, conv: bool) -> None:
        super().__init__()
        self.conv: nn.Module = (
            nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
            if conv
            else nn.Identity()
        )
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.conv(x)
        return h, self.fc(h.mean(dim=(2, 3)))


class EarlyExitNet(nn.Module):
    """A backbone with exit heads after chosen stages; the last head is the final exit.

    ``forward`` evaluates every exit (training and evaluation); ``forward_exit(x, i)``
    computes only what the policy needs to answer at exit ``i``: the stages up to it and
    the heads of exits ``0..i``, whose confidences the policy checks on the way.
    """

    def __init__(self, backbone: Backbone, num_classes: int, exits: list[int], head_conv: bool) -> None:
        super().__init__()
        last = len(backbone.stages) - 1
        self.backbone = backbone
        self.exit_stages = [*sorted(exits), last]
        self.heads = nn.ModuleList(
            ExitHead(backbone.stage_channels[s], num_classes, head_conv and s != last) for s in self.exit_stages
        )

    @property
    def num_exits(self) -> int:
        return len(self.exit_stages)

    def forward(self, x: Tensor) -> ModelOutput:
        h = self.backbone.stem(x)
        feats, logits = [], []
        head_iter = iter(zip(self.exit_stages, self.heads, strict=True))
        stage, head = next(head_iter)
        for s, block in enumerate(self.backbone.stages):
            h = block(h)
            if s == stage:
                f, z = head(h)
                feats.append(f)
                logits.append(z)
                stage, head = next(head_iter, (-1, head))
        # The heads' weights travel with the output so that CAMs (and the loss) need only the output.
        weights = [head.fc.weight for head in self.heads.children() if isinstance(head, ExitHead)]
        return ModelOutput(
            logits=logits[-1], features=h, exit_logits=logits, extras={"exit_features": feats, "exit_weights": weights}
        )

    def exit_stream(self, x: Tensor) -> Iterator[Tensor]:
        """Logits of exit 0, 1, ... computed lazily: stages after the last exit consumed never run.

        Early-exit inference (:func:`xbench.models.exits.early_exit`) stops consuming at the
        first confident exit.
        """
        h = self.backbone.stem(x)
        k = 0
        for s, block in enumerate(self.backbone.stages):
            h = block(h)
            if s == self.exit_stages[k]:
                yield self.heads[k](h)[1]
                k += 1
                if k == len(self.exit_stages):
                    return

    def forward_exit(self, x: Tensor, i: int) -> list[Tensor]:
        """Logits of exits ``0..i``: what the policy sees on its way to exit ``i``.

        Runs only the stages up to exit ``i`` and the heads ``0..i``. Every head's logits
        are returned because the policy reads each of them; a tracer counting operations
        would otherwise drop the unused heads as dead code.
        """
        h = self.backbone.stem(x)
        logits: list[Tensor] = []
        for s, block in enumerate(self.backbone.stages[: self.exit_stages[i] + 1]):
            h = block(h)
            if s == self.exit_stages[len(logits)]:
                logits.append(self.heads[len(logits)](h)[1])
        return logits


def attention_maps(
    output: ModelOutput, target: Tensor, kind: str = "cam", size: tuple[int, int] | None = None
) -> list[Tensor]:
    """(B, H, W) min-max normalised attention map of every exit for class ``target``.

    Maps are upsampled to ``size``, by default the largest exit resolution.
    """
    feats: list[Tensor] = output.extras["exit_features"]
    weights: list[Tensor] = output.extras["exit_weights"]
    hw = max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1])
    size = size or (int(hw[0]), int(hw[1]))
    maps = []
    for f, w in zip(feats, weights, strict=True):
        m = torch.einsum("bchw,bc->bhw", f, w[target]) if kind == "cam" else f.pow(2).mean(dim=1)
        m = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        lo = m.flatten(1).amin(dim=1)[:, None, None]
        hi = m.flatten(1).amax(dim=1)[:, None, None]
        maps.append((m - lo) / (hi - lo + 1e-8))
    return maps


def consistency_loss(maps: list[Tensor]) -> Tensor:
    """Σ_{i<K} (1 − cos(A_i, sg(A_K))), averaged over the batch."""
    teacher = maps[-1].detach().flatten(1)
    terms = [1 - F.cosine_similarity(m.flatten(1), teacher, dim=1, eps=1e-8) for m in maps[:-1]]
    return torch.stack(terms).sum(dim=0).mean() if terms else teacher.new_zeros(())


@METHODS.register("egt")
class EGT(Method[EGTParams]):
    """Early-exit network trained with an attention-consistency loss."""

    paper = (
        "Y. Zhao, Attention Consistency Regularization for Interpretable Early-Exit Neural Networks, arXiv 2601.08891"
    )
    description = "early exits after each stage + loss aligning each exit's CAM with the final exit's"
    Params = EGTParams
    claims = (
        Claim(
            id="egt.speedup",
            statement="early exits run at least 1.97x faster at the baseline's accuracy",
            paper="1.97x, accuracy equal to the baseline's",
            metric="latency_speedup",
            subject=Rows(method="egt", params={"lam": 1.0}),
            relation=">=",
            threshold=1.97,
            also=[
                Claim(
                    id="egt.speedup.accuracy",
                    statement="at most 0.5 points below the baseline's top-1",
                    paper="equal accuracy",
                    metric="policy_top1",
                    reference_metric="top1",
                    subject=Rows(method="egt", params={"lam": 1.0}),
                    reference=Rows(method="baseline"),
                    relation=">=",
                    threshold=-0.005,
                )
            ],
        ),
        Claim(
            id="egt.consistency",
            statement="the consistency loss makes the first exit's attention more consistent with the final exit's",
            paper="up to +18.5%",
            metric="attention_consistency",
            subject=Rows(method="egt", params={"lam": 1.0}, exit=0),
            reference=Rows(method="egt", params={"lam": 0.0}, exit=0),
            relation=">",
        ),
    )

    def exit_settings(self) -> ExitSettings:
        given = self.params.thresholds
        return ExitSettings(None if given is None else [float(t) for t in given], self.params.max_accuracy_drop)

    def build(self) -> nn.Module:
        backbone = self.ctx.build_backbone()
        last = len(backbone.stages) - 1
        exits = self.params.exits if self.params.exits is not None else list(range(last))
        if any(e >= last for e in exits):
            raise ValueError(f"egt: exits must be stages before the last ({last}), got {exits}")
        if self.params.thresholds is not None and len(self.params.thresholds) != len(exits):
            raise ValueError(f"egt: thresholds needs {len(exits)} values, one per early exit")
        given = self.params.exit_weights
        if given is not None and len(given) != len(exits) + 1:  # zip(strict=True) would fail at the first loss
            raise ValueError(
                f"egt: exit_weights needs {len(exits) + 1} values ({len(exits)} early exits + final), got {len(given)}"
            )
        return EarlyExitNet(backbone, self.ctx.num_classes, exits, self.params.head_conv)

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        weights = self.params.exit_weights or [1.0] * len(output.exit_logits)
        ce = sum(w * F.cross_entropy(z, batch.y) for w, z in zip(weights, output.exit_logits, strict=True))
        assert isinstance(ce, Tensor)
        if self.params.lam == 0:
            return ce
        maps = attention_maps(output, batch.y, self.params.attention)
        return ce + self.params.lam * consistency_loss(maps)

    def exit_maps(self, model: nn.Module, x: Tensor, target: Tensor) -> list[Tensor]:
        """(B, H, W) map of every exit for ``target``, final last, at the input size."""
        with torch.no_grad():
            out = model(x)
            return attention_maps(out, target, self.params.attention, size=(int(x.shape[-2]), int(x.shape[-1])))

    def native_maps(self, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
        """The final exit's own attention map (its CAM by default)."""
        return self.exit_maps(model, x, target)[-1]
