"""Coded ResNeXt: ResNeXt branches assigned to classes by a code.

Paper: A. Avranas, M. Kountouris, "Towards Disentangling Information Paths with Coded
ResNeXt", NeurIPS 2022, arXiv 2202.05343. Official code: ``avranasa/Coded-ResNeXt``
(read to understand it; this method's modules are written from the equations below).

The method builds its own ResNeXt and ignores the suite's ``backbone``. A stage is
[C_out, d, N_act/N] × blocks: N branches ("subNNs") of width d, of which the N_act
given by the class's codeword w_k ∈ {0,1}^N serve class k (:mod:`coding_scheme`);
r = N_act/N. A block maps h (C_in channels) to C_out channels:

    u   = ReLU(BN(conv1×1(h)))              C_in → N·d; branch n owns channels [n·d, (n+1)·d)
    u   = ReLU(BN(gconv3×3_N(u)))           N groups, stride s
    r = 1 (plain):  t = conv1×1(u)          N·d → C_out
    r < 1 (coded):  t_n = gconv1×1_N(u)_n   N·d → N·C_out, one C_out-channel output per branch
        E_n = mean_{c,h,w} t_n²                                energy of branch n
        ρ² = (1/N) Σ_n E_n;  t_n ← t_n/ρ;  E_n ← E_n/ρ²          so that Σ_n E_n = N
        t_n ← m_n·t_n/(1−p),  m_n ~ Bernoulli(1−p) per (sample, n)   DropSubNNs, training only;
                              consecutive blocks with the same scheme reuse m
        t = Σ_n t_n
    out = ReLU(BN(t) + skip(h))             BN's γ starts at 0; skip = conv1×1-BN when the shape changes

Loss, with coded blocks l, labels y and q = ``loss_power`` (4 in the paper):

    L = CE(z, y) + μ · Σ_l (1/(B·N)) Σ_{b,n} |r_l·E_{l,n}(x_b) − w_{l,y_b,n}|^q

Early decoding at coded block l: v = N_act·E_l/Σ_n E_{l,n}, and class k scores

    s_k = −‖v − w_{l,k}‖₂ / T

whose softmax is the official code's decoding confidence (T = ``decode_temperature`` = 1
there). ``exit_logits`` holds s at every coded block, then the final logits, so the generic
confidence policy (:mod:`xbench.models.exits`) turns them into decoding exits. The paper
reports per-block decoding accuracy and defines no exit policy; the thresholds are ours.

Binary classifier of class k: in every coded block, multiply t_n by w_{l,k,n} before the
energy normalisation (ρ still averages over all N branches), and keep logit z_k.
:func:`~xbench.methods.coded_resnext_binary.extract_binary_classifier` builds it as a network that
holds only what it uses; :func:`~xbench.methods.coded_resnext_binary.count_binary_parameters` counts
that network (see its docstring for the convention).

Configurations ([C_out, d, N_act/N] × blocks; stem conv3×3 with 16 channels and stride 2
(narrow) or 64 channels and stride 1 (ResNeXt-29, as in the paper)):

    narrow, K ≤ 10:     [32, 4, 10/10]×2, [64, 8, 5/10]×2, [128, 16, 3/10]×2   (the default)
    narrow, K > 10:     [32, 2, 20/20]×2, [64, 4, 8/20]×2, [128, 8, 4/20]×2
    resnext29_10x11d:   [256, 11, 10/10]×3, [512, 22, 5/10]×3, [1024, 44, 3/10]×3   (paper, CIFAR-10)
    resnext29_20x6d:    [256, 6, 20/20]×3, [512, 12, 8/20]×3, [1024, 24, 4/20]×3    (paper, CIFAR-100)

``blocks`` changes the blocks per stage of a named architecture (one number, or one per stage);
``stages`` overrides the architecture's. μ = 6 and p = 0.1 are the paper's CIFAR values.
A coded block never materialises the N branch outputs t_n (see ``ResNeXtBlock._coded``):
the same function, computed several times faster on CPU.

Code: this module holds the configuration, the model (decoding exits, binary classifiers) and the
method (loss, build); the blocks and backbone are in :mod:`xbench.methods.coded_resnext_network`,
the codewords, the decoding and the coding loss in :mod:`xbench.methods.coding_scheme`, the
extraction of binary sub-networks in :mod:`xbench.methods.coded_resnext_binary`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Literal

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from xbench.claims import Claim, Rows
from xbench.methods.base import Method, MethodContext
from xbench.methods.coded_resnext_binary import extract_binary_classifier
from xbench.methods.coded_resnext_network import ResNeXtBackbone, ResNeXtBlock, ResNeXtStage, _Pass
from xbench.methods.coding_scheme import coding_loss, coding_scheme, decoding_logits
from xbench.models.base import Normalize
from xbench.models.exits import Confidence, ExitSettings
from xbench.models.fields import BRANCH_ENERGIES, BranchEnergies  # noqa: F401 (BranchEnergies: re-exported)
from xbench.models.output import Batch, ModelOutput
from xbench.registry import METHODS

# -- configuration ---------------------------------------------------------------------------------
BlockCount = Annotated[int, Field(gt=0, le=256)]


class StageSpec(BaseModel):
    """One stage: ``blocks`` ResNeXt blocks [out_channels, d, n_active/n_branches]."""

    model_config = ConfigDict(extra="forbid")
    out_channels: int = Field(gt=0, le=4096)
    d: int = Field(gt=0, le=4096, description="width (channels) of each branch")
    n_branches: int = Field(
        gt=0,
        le=64,
        description="N, the cardinality; at most 64 (the papers use 10-32; the coding-scheme search for 64 "
        "branches takes about 30 s, for 1024 hours)",
    )
    n_active: int | None = Field(None, gt=0, le=64, description="N_act branches per class; None = N (a plain stage)")
    blocks: int = Field(1, gt=0, le=256)
    stride: Literal[1, 2] | None = Field(None, description="stride of the stage's first block; default 1 first, then 2")

    @model_validator(mode="after")
    def _active(self) -> StageSpec:
        if self.n_active is not None and self.n_active > self.n_branches:
            raise ValueError(f"n_active ({self.n_active}) must be ≤ n_branches ({self.n_branches})")
        return self

    @property
    def active(self) -> int:
        return self.n_branches if self.n_active is None else self.n_active


Architecture = Literal["narrow", "resnext29_10x11d", "resnext29_20x6d"]


class CodedResNeXtParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    architecture: Architecture = Field(
        "narrow",
        description="narrow (CPU-sized; 10 branches up to 10 classes, else 20), or the paper's ResNeXt-29 "
        "10×11d (CIFAR-10) / 20×6d (CIFAR-100)",
    )
    stages: list[StageSpec] | None = Field(
        None, max_length=16, description="explicit stages; overrides the architecture's"
    )
    blocks: BlockCount | Annotated[list[BlockCount], Field(max_length=16)] | None = Field(
        None,
        description="blocks per stage of the named architecture (one number, or one per stage); "
        "default 2 narrow, 3 ResNeXt-29",
    )
    stem_channels: int | None = Field(
        None, gt=0, le=4096, description="3×3 stem conv width; default 16 narrow, 64 ResNeXt-29"
    )
    stem_stride: Literal[1, 2] | None = Field(
        None, description="stride of the stem conv; default 2 narrow (4× cheaper on CPU), 1 ResNeXt-29 (the paper's)"
    )
    mu: float = Field(6.0, ge=0, description="μ, weight of the coding loss")
    drop_p: float = Field(0.1, ge=0, lt=1, description="p, DropSubNNs probability in coded blocks")
    shared_drop_mask: bool = Field(True, description="consecutive blocks with the same scheme reuse one mask")
    loss_power: float = Field(4.0, gt=0, description="q, exponent of the coding loss")
    decode_temperature: float = Field(1.0, gt=0, description="T in the decoding softmax over −distance/T")
    code_seed: int = Field(0, ge=0, lt=2**32, description="seed of the coding-scheme search")
    thresholds: list[Confidence] | None = Field(
        None, max_length=1024, description="τ per coded block (decoding exit); default: calibrated"
    )
    max_accuracy_drop: float = Field(0.5, ge=0, description="calibration target, in accuracy points")
    coded: bool = Field(
        True,
        description="false: the paper's uncoded control, the same ResNeXt with every block r = 1 "
        "(plain blocks: no coding loss, no DropSubNNs, no decoding exits)",
    )

    @model_validator(mode="after")
    def _blocks_or_stages(self) -> CodedResNeXtParams:
        if self.blocks is not None and self.stages is not None:
            raise ValueError("blocks applies to a named architecture; with stages, give each stage's blocks")
        if isinstance(self.blocks, list) and len(self.blocks) != 3:
            raise ValueError(f"blocks: {len(self.blocks)} values for the architecture's 3 stages")
        return self


def architecture_stages(architecture: Architecture, num_classes: int) -> tuple[int, list[StageSpec]]:
    """``(stem_channels, stages)`` of a named architecture for ``num_classes`` classes."""
    if architecture == "resnext29_10x11d":
        n, active, d, stem, blocks = 10, (10, 5, 3), 11, 64, 3
        widths = (256, 512, 1024)
    elif architecture == "resnext29_20x6d":
        n, active, d, stem, blocks = 20, (20, 8, 4), 6, 64, 3
        widths = (256, 512, 1024)
    else:  # narrow: the paper's ratio patterns on a network that trains on 2 CPU cores
        n, active, d, stem, blocks = (10, (10, 5, 3), 4, 16, 2) if num_classes <= 10 else (20, (20, 8, 4), 2, 16, 2)
        widths = (32, 64, 128)
    stages = [
        StageSpec(out_channels=c, d=d * 2**i, n_branches=n, n_active=a, blocks=blocks)
        for i, (c, a) in enumerate(zip(widths, active, strict=True))
    ]
    return stem, stages


# -- the model -----------------------------------------------------------------------------------------
class CodedResNeXt(nn.Module):
    """ResNeXt with coded blocks, decoding exits and per-class binary sub-networks.

    ``forward(x)`` returns the final logits, the decoding logits of every coded block
    (``exit_logits``, final last) and the energies for the coding loss; ``forward(x,
    restrict_to=k)`` runs the binary classifiers of classes ``k`` (one per sample).
    """

    def __init__(self, backbone: ResNeXtBackbone, num_classes: int, decode_temperature: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(backbone.stage_channels[-1], num_classes, bias=False)
        self.num_classes = num_classes
        self.decode_temperature = decode_temperature

    @property
    def blocks(self) -> list[ResNeXtBlock]:
        return [block for stage in self.backbone.stages for block in stage.blocks]  # type: ignore[union-attr]

    @property
    def coded_blocks(self) -> list[ResNeXtBlock]:
        return [block for block in self.blocks if block.codes is not None]

    @property
    def num_exits(self) -> int:
        return len(self.coded_blocks) + 1

    def forward(self, x: Tensor, restrict_to: Tensor | None = None) -> ModelOutput:
        state = _Pass(restrict_to=restrict_to)
        features = self.backbone(x, state)
        logits = self.fc(self.pool(features).flatten(1))
        decoded = [
            decoding_logits(e.detach(), c, self.decode_temperature)
            for e, c in zip(state.energies, state.codes, strict=True)
        ]
        ratios = [block.n_active / block.n_branches for block in self.coded_blocks]
        extras = {"energies": state.energies, "codes": state.codes, "ratios": ratios, "drop_masks": state.drop_masks}
        return ModelOutput(logits=logits, features=features, exit_logits=[*decoded, logits], extras=extras)

    def exit_stream(self, x: Tensor) -> Iterator[Tensor]:
        """Decodings of coded blocks 0, 1, ..., then the final logits, computed lazily (see EGT's)."""
        state = _Pass()
        h = self.backbone.stem(x)
        seen = 0
        for block in self.blocks:
            h = block(h, state)
            while seen < len(state.energies):
                yield decoding_logits(state.energies[seen], state.codes[seen], self.decode_temperature)
                seen += 1
        yield self.fc(self.pool(h).flatten(1))

    def forward_exit(self, x: Tensor, i: int) -> list[Tensor]:
        """Logits of exits ``0..i`` (decodings of coded blocks ``0..i``), computed up to exit ``i`` only.

        The policy reads every decoding on its way to exit ``i``, so all are returned (see
        :mod:`xbench.metrics.exits`); the last exit is the full network.
        """
        if i == self.num_exits - 1:
            return self.forward(x).exit_logits
        state = _Pass()
        h = self.backbone.stem(x)
        for block in self.blocks:
            h = block(h, state)
            if len(state.energies) == i + 1:
                break
        return [
            decoding_logits(e, c, self.decode_temperature) for e, c in zip(state.energies, state.codes, strict=True)
        ]

    def binary_scores(self, x: Tensor, classes: Tensor) -> Tensor:
        """(B,) score z_k of the binary classifier of class ``classes[b]`` on each image."""
        return self.forward(x, restrict_to=classes).logits.gather(1, classes[:, None]).squeeze(1)

    def binary_classifier(self, k: int) -> nn.Module:
        return extract_binary_classifier(self, k)

    def binary_front(self) -> tuple[nn.Module, int]:
        """``(front, stages)``: the stem and the leading plain stages, which every binary classifier
        runs unchanged; ``binary_classifier(k).forward_from(front(x), stages)`` equals its ``forward(x)``."""
        plain = 0
        for stage in self.backbone.stages:
            if any(block.codes is not None for block in stage.blocks):  # type: ignore[union-attr]
                break
            plain += 1
        return nn.Sequential(self.backbone.stem, *self.backbone.stages[:plain]), plain


# -- the method ---------------------------------------------------------------------------------
def build_coded_resnext(params: CodedResNeXtParams, ctx: MethodContext) -> CodedResNeXt:
    """The network that ``params`` describe, for ``ctx``'s data.

    Raises:
        ValueError: if a stage's scheme cannot give every class its own codeword.
    """
    stem_channels, stages = architecture_stages(params.architecture, ctx.num_classes)
    if params.blocks is not None:
        per_stage = params.blocks if isinstance(params.blocks, list) else [params.blocks] * len(stages)
        stages = [spec.model_copy(update={"blocks": b}) for spec, b in zip(stages, per_stage, strict=True)]
    stages = params.stages if params.stages is not None else stages
    if not params.coded:  # the control: every block keeps all N branches for every class (r = 1)
        stages = [spec.model_copy(update={"n_active": None}) for spec in stages]
    stem_channels = params.stem_channels or stem_channels
    k = ctx.num_classes
    for i, spec in enumerate(stages):
        if spec.active < spec.n_branches and math.comb(spec.n_branches, spec.active) < k:
            raise ValueError(
                f"coded_resnext: stage {i}: C({spec.n_branches}, {spec.active}) = "
                f"{math.comb(spec.n_branches, spec.active)} codewords < {k} classes; "
                "use more branches or another n_active"
            )
    stem_stride = params.stem_stride or (2 if params.architecture == "narrow" else 1)
    stem_conv = nn.Conv2d(ctx.in_channels, stem_channels, 3, stem_stride, 1, bias=False)
    nn.init.kaiming_normal_(stem_conv.weight, mode="fan_out", nonlinearity="relu")
    stem = nn.Sequential(Normalize(ctx.mean, ctx.std), stem_conv, nn.BatchNorm2d(stem_channels), nn.ReLU())
    in_channels = stem_channels
    built = []
    for i, spec in enumerate(stages):
        codes = None
        if spec.active < spec.n_branches:
            codes = coding_scheme(k, spec.n_branches, spec.active, params.code_seed)
        blocks = []
        for j in range(spec.blocks):
            stride = (spec.stride if spec.stride is not None else (1 if i == 0 else 2)) if j == 0 else 1
            blocks.append(
                ResNeXtBlock(
                    in_channels,
                    spec.out_channels,
                    spec.d,
                    spec.n_branches,
                    stride,
                    codes=codes,
                    drop_p=params.drop_p,
                    shared_drop_mask=params.shared_drop_mask,
                )
            )
            in_channels = spec.out_channels
        built.append(ResNeXtStage(blocks))
    backbone = ResNeXtBackbone(stem, built, [spec.out_channels for spec in stages])
    return CodedResNeXt(backbone, k, params.decode_temperature)


@METHODS.register("coded_resnext")
class CodedResNeXtMethod(Method[CodedResNeXtParams]):
    """Coded ResNeXt: coding loss, DropSubNNs, early decoding, per-class binary sub-networks."""

    paper = (
        "A. Avranas, M. Kountouris, Towards Disentangling Information Paths with Coded ResNeXt, "
        "NeurIPS 2022, arXiv 2202.05343"
    )
    description = (
        "ResNeXt (its own network; ignores the suite backbone) whose branches are assigned to classes by a code; "
        "CE + coding loss, DropSubNNs, early decoding exits, per-class binary sub-networks; Grad-CAM on the last stage"
    )
    Params = CodedResNeXtParams
    output_fields = (BRANCH_ENERGIES,)
    claims = (
        Claim(
            id="coded_resnext.top1",
            statement="coding the branches raises top-1 above the same ResNeXt uncoded",
            paper="94.41 vs 93.66 (CIFAR-10), 78.28 vs 76.86 (CIFAR-100)",
            metric="top1",
            subject=Rows(method="coded_resnext", params={"coded": True}),
            reference=Rows(method="coded_resnext", params={"coded": False}),
            relation=">",
        ),
        Claim(
            id="coded_resnext.binary_params",
            statement="a class's binary sub-network keeps at most 40% of the parameters",
            paper="38% (CIFAR-10), 27% (CIFAR-100)",
            metric="binary_param_fraction",
            subject=Rows(method="coded_resnext", params={"coded": True}),
            relation="<=",
            threshold=0.40,
        ),
    )

    def exit_settings(self) -> ExitSettings:
        given = self.params.thresholds
        return ExitSettings(None if given is None else [float(t) for t in given], self.params.max_accuracy_drop)

    def build(self) -> CodedResNeXt:
        model = build_coded_resnext(self.params, self.ctx)
        n_coded = model.num_exits - 1
        if self.params.thresholds is not None and len(self.params.thresholds) != n_coded:
            raise ValueError(f"coded_resnext: thresholds needs {n_coded} values, one per coded block")
        return model

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        loss = F.cross_entropy(output.logits, batch.y)
        if self.params.mu == 0:
            return loss
        terms = [
            coding_loss(e, c[batch.y], r, self.params.loss_power)
            for e, c, r in zip(output.extras["energies"], output.extras["codes"], output.extras["ratios"], strict=True)
        ]
        return loss + self.params.mu * sum(terms, loss.new_zeros(()))
