"""torchvision's and timm's CNNs as xbench backbones: a stem, stages at each resolution, the original head.

Every method attaches to a backbone's stages (exits after them, attention on their outputs,
local attention pooling in their downsampling), so a zoo model is cut into the same shape as
:class:`~xbench.models.resnet.ResNetCifar`. The cut is a *stage table* per family, under
torchvision's own names:

============================  =====================================================  ==============
family                        stages                                                 strides
============================  =====================================================  ==============
ResNet, ResNeXt, Wide ResNet  ``layer1`` .. ``layer4`` (stem: conv1, bn1, relu,        4, 8, 16, 32
                              maxpool)
VGG                           the blocks of ``features`` that end at each max-pool    2, 4, .., 32
MobileNetV3, EfficientNet     ``features`` split where a block downsamples; the      4, 8, 16, 32
                              blocks at stride 2 stay in the stem
``timm:<name>``               timm's ``feature_info`` modules; those at stride 2     as timm says
                              stay in the stem
============================  =====================================================  ==============

So TAME's official taps are the defaults (the last three stages: VGG-16 ``features.16/23/30``,
ResNet-50 ``layer2/3/4``). The model's own classifier (``avgpool`` + ``fc`` or VGG's fully
connected layers) is kept aside, not as a submodule, for ``baseline``'s ``head: original``.

Cutting is checked, not trusted: when the backbone is built, the stem, stages and head run in
sequence must give the zoo model's own logits (eval mode, one small batch), otherwise the model's
modules do not run in the order they are listed and it cannot be used.

Parameters (all backbones here):

* ``weights``: torchvision's weight name (``IMAGENET1K_V1``, ``DEFAULT``), timm's pretrained tag
  (``a1_in1k``), or a local state-dict file (``.pth``/``.safetensors``, see
  :mod:`xbench.models.weights`) in the zoo model's own layout; none: random initialisation.
* ``cifar_stem``: for 32-px data, the stem's first convolution becomes 3×3 with stride 1 (a 7×7
  one is replaced and freshly initialised; a 3×3 one keeps its weights) and its max-pool goes.
* ``normalize``: ``auto`` normalises with the weights' own statistics (ImageNet's for a file),
  or the dataset's without weights; ``dataset`` and ``imagenet`` force one.

Greyscale data on a model with weights is repeated to three channels (exactly what the weights
saw); without weights the first convolution takes the data's channels.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from xbench.errors import CheckpointError, ConfigError, UnknownNameError
from xbench.models import weights as wts
from xbench.models.base import Backbone, Normalize
from xbench.models.layers import Add, ReLU
from xbench.registry import BACKBONES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Side of the images the cut is checked with (and stage channels and strides read off).
PROBE_SIZE = 64


class ZooParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: str | None = Field(
        None,
        description="torchvision weight name (IMAGENET1K_V1, DEFAULT), timm pretrained tag, or a local "
        ".pth/.safetensors state dict; null: random initialisation",
        min_length=1,
        max_length=4096,
    )
    cifar_stem: bool = Field(False, description="3x3 stride-1 first convolution and no stem max-pool (32-px data)")
    normalize: Literal["auto", "dataset", "imagenet"] = Field(
        "auto", description="auto: the weights' statistics (ImageNet's for a file), the dataset's without weights"
    )


class RepeatChannels(nn.Module):
    """Greyscale to RGB by repetition: what a model with ImageNet weights expects of a grey image."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x


class ZooBackbone(Backbone):
    """A zoo model cut into stem, stages and head (subclasses say how to create and cut it)."""

    Params = ZooParams
    arch: ClassVar[str]
    family: ClassVar[str]

    def __init__(
        self,
        params: ZooParams,
        in_channels: int,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
    ) -> None:
        super().__init__()
        model, stats = self.create(params)
        stem, stages, head = self.cut(model)
        self._check_cut(model, stem, stages, head)
        self.weights_name = params.weights
        if params.cifar_stem:
            self._cifar_stem(stem, stages)
        pretrained = params.weights is not None
        body = nn.Sequential(*stem, *(m for s in stages for m in s))  # shares the modules: replacing in it works
        first = _first_conv(body)
        entry: list[nn.Module] = []
        if in_channels != first.in_channels and not pretrained:
            _replace(body, first, _conv_like(first, in_channels=in_channels))
            stem, stages = _regroup(body, stem, stages)
        elif in_channels != first.in_channels:
            if in_channels != 1:
                raise ConfigError(
                    f"backbone {self.name}: its weights take {first.in_channels}-channel images, the data has "
                    f"{in_channels} channels"
                )
            entry.append(RepeatChannels(first.in_channels))
        if params.normalize == "imagenet" or (params.normalize == "auto" and pretrained and stats is None):
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        elif params.normalize == "auto" and stats is not None:
            mean, std = stats
        self.stem = nn.Sequential(*entry, Normalize(mean, std), *stem)
        self.stages = nn.ModuleList(nn.Sequential(*s) for s in stages)
        self._head = (nn.Sequential(*head),)  # a tuple: not a submodule, so it adds no parameters unless used
        self.stage_channels, self.stage_strides = self._probe(in_channels)

    # -- what subclasses provide ---------------------------------------------------------------------
    @classmethod
    def create(cls, params: ZooParams) -> tuple[nn.Module, tuple[tuple[float, ...], tuple[float, ...]] | None]:
        """The zoo model with its weights loaded, and the weights' (mean, std) if they declare them."""
        raise NotImplementedError

    @classmethod
    def cut(cls, model: nn.Module) -> tuple[list[nn.Module], list[list[nn.Module]], list[nn.Module]]:
        """``(stem modules, modules of each stage, head modules)`` of ``model``, in execution order."""
        raise NotImplementedError

    # -- the contract -----------------------------------------------------------------------------------
    def original_head(self, num_classes: int) -> nn.Module:
        """The model's own classifier on the last stage's output; its last linear layer is replaced
        (freshly initialised) when the data has another number of classes than the weights."""
        head = copy.deepcopy(self._head[0])
        linears = [(name, m) for name, m in head.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"backbone {self.name}: its head has no linear layer to classify with")
        name, last = linears[-1]
        if last.out_features != num_classes:
            _set_submodule(head, name, nn.Linear(last.in_features, num_classes, bias=last.bias is not None))
        return head

    @classmethod
    def weights_identity(cls, params: BaseModel) -> dict[str, Any] | None:
        """What the cache key and records say of the weights: their name and the file's sha256."""
        name = getattr(params, "weights", None)
        if name is None:
            return None
        path = cls.weights_file(name)
        return {"name": name, "sha256": None if path is None else wts.file_sha256(path)}

    @classmethod
    def weights_file(cls, name: str) -> str | None:
        """The local file behind ``name`` (fetched into the zoo's cache if it is a zoo name), if any."""
        return name if wts.is_file_reference(name) else None

    # -- helpers --------------------------------------------------------------------------------------
    def _check_cut(self, model: nn.Module, stem: list[nn.Module], stages: list[list[nn.Module]], head: list) -> None:
        was = model.training
        model.eval()
        x = torch.rand(
            2, _first_conv(model).in_channels, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0)
        )
        with torch.no_grad():
            want = model(x)
            got = nn.Sequential(*stem, *(m for s in stages for m in s), *head)(x)
        model.train(was)
        if (
            not isinstance(want, Tensor)
            or want.shape != got.shape
            or not torch.allclose(want, got, atol=1e-4, rtol=1e-3)
        ):
            raise ConfigError(
                f"backbone {self.name}: its modules do not run in the order they are listed, so xbench cannot cut "
                "it into stages; wrap it as your own backbone (README, 'Your own model')"
            )

    def _cifar_stem(self, stem: list[nn.Module], stages: list[list[nn.Module]]) -> None:
        """Make the first conv 3x3 stride 1 and drop the max-pools before the first stage's blocks, in place."""
        changed = False
        lead = [*stem, *stages[0]]
        holder = nn.Sequential(*lead)
        conv = _first_conv(holder)
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1):
            if conv.kernel_size == (3, 3):
                conv.stride = (1, 1)
            else:
                _replace(holder, conv, _conv_like(conv, kernel_size=3, stride=1, padding=1))
            changed = True
        # A max-pool of the stem (torchvision's ResNets) or opening the first stage (timm's); not one that
        # closes the first stage (VGG's: that one is the stage's own downsampling).
        opening = next((i for i, m in enumerate(stages[0]) if not isinstance(m, nn.MaxPool2d)), len(stages[0]))
        for i in range(len(stem) + opening):
            if isinstance(holder[i], nn.MaxPool2d):
                holder[i] = nn.Identity()
                changed = True
        if not changed:
            raise ConfigError(f"backbone {self.name}: cifar_stem: it has no ImageNet stem (strided conv or max-pool)")
        new_stem, new_stages = _regroup(holder, stem, [stages[0]])
        stem[:] = new_stem
        stages[0] = new_stages[0]

    def _probe(self, in_channels: int) -> tuple[list[int], list[int]]:
        was = self.training
        self.eval()
        with torch.no_grad():
            outs = self.forward_stages(torch.zeros(1, in_channels, PROBE_SIZE, PROBE_SIZE))
        self.train(was)
        return [int(o.shape[1]) for o in outs], [PROBE_SIZE // int(o.shape[-1]) for o in outs]


def _regroup(
    body: nn.Sequential, stem: list[nn.Module], stages: list[list[nn.Module]]
) -> tuple[list[nn.Module], list[list[nn.Module]]]:
    """The stem and stages again, from ``body``'s children after a replacement (same lengths as before)."""
    items = list(body)
    new_stem, at = items[: len(stem)], len(stem)
    new_stages = []
    for s in stages:
        new_stages.append(items[at : at + len(s)])
        at += len(s)
    return new_stem, new_stages + stages[len(new_stages) :]


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


def _conv_like(conv: nn.Conv2d, **changes: Any) -> nn.Conv2d:
    args = {
        "in_channels": conv.in_channels, "out_channels": conv.out_channels, "kernel_size": conv.kernel_size,
        "stride": conv.stride, "padding": conv.padding, "bias": conv.bias is not None,
    }  # fmt: skip
    new = nn.Conv2d(**{**args, **changes})
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    return new


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    name = next(n for n, m in root.named_modules() if m is old)
    _set_submodule(root, name, new)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if leaf.isdigit() and isinstance(parent, nn.Sequential | nn.ModuleList):
        parent[int(leaf)] = new
    else:
        setattr(parent, leaf, new)


# -- torchvision --------------------------------------------------------------------------------------
class TorchvisionBackbone(ZooBackbone):
    """A torchvision classification model."""

    @classmethod
    def create(cls, params: ZooParams) -> tuple[nn.Module, tuple[tuple[float, ...], tuple[float, ...]] | None]:
        import torchvision

        model = torchvision.models.get_model(cls.arch, weights=None)
        stats = None
        if params.weights is not None:
            where = f"backbone {cls.arch}: weights"
            if wts.is_file_reference(params.weights):
                state = wts.read_state_dict(params.weights, where)
                source = params.weights
            else:
                enum = wts.torchvision_weights(cls.arch, params.weights, where)
                path = wts.fetch_torchvision(cls.arch, params.weights, where)
                state = wts.read_state_dict(path, where)
                source = f"{params.weights} ({path})"
                transform = enum.transforms()
                stats = (tuple(transform.mean), tuple(transform.std))
            wts.load_checked(model, state, f"{where} {source}")
        return make_hook_safe(model), stats

    @classmethod
    def weights_file(cls, name: str) -> str | None:
        if wts.is_file_reference(name):
            return name
        return str(wts.fetch_torchvision(cls.arch, name, f"backbone {cls.arch}: weights"))

    @classmethod
    def cut(cls, model: nn.Module) -> tuple[list[nn.Module], list[list[nn.Module]], list[nn.Module]]:
        m: Any = model
        if cls.family == "resnet":
            stem = [m.conv1, m.bn1, m.relu, m.maxpool]
            return stem, [[m.layer1], [m.layer2], [m.layer3], [m.layer4]], [m.avgpool, nn.Flatten(1), m.fc]
        head = [m.avgpool, nn.Flatten(1), m.classifier]
        blocks = list(m.features)
        if cls.family == "vgg":
            stages, current = [], []
            for block in blocks:
                current.append(block)
                if isinstance(block, nn.MaxPool2d):
                    stages.append(current)
                    current = []
            return [], stages, head
        # MobileNetV3, EfficientNet: a stage starts at each block that halves the resolution; the blocks
        # before stride 4 (the strided stem conv and the stride-1 blocks after it) are the stem.
        sizes = _block_sizes(blocks, PROBE_SIZE)
        starts = [i for i in range(1, len(blocks)) if sizes[i] < sizes[i - 1]]
        stem = blocks[: starts[0]]
        bounds = [*starts, len(blocks)]
        return stem, [blocks[a:b] for a, b in itertools.pairwise(bounds)], head


# -- hook safety: one ReLU module per use, the residual sum as a module (xbench.models.layers) ------------
def make_hook_safe(model: nn.Module) -> nn.Module:
    """``model`` made readable by hook-based attribution (captum's DeepLift, LRP, Guided Backprop), in place.

    Every module with a boolean ``inplace`` flag (activations, dropout) stops working in place, and every
    torchvision ResNet ``BasicBlock``/``Bottleneck`` becomes a subclass of its class (``isinstance`` still
    holds) whose forward calls a separate ReLU module per use (``relu1``, ``relu2``, ``relu3``; the shared
    ``relu`` goes) and sums the shortcut with an :class:`~xbench.models.layers.Add` module. The same
    operations run in the same order, so the outputs are bitwise torchvision's; ReLU and Add hold no
    tensors, so the state dict keeps its keys.
    """
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False  # type: ignore[assignment]
        if type(m) is nn.ReLU:
            m.__class__ = ReLU  # in place again where no gradient is taken (xbench.models.layers)
    safe = _hook_safe_blocks()
    for m in list(model.modules()):
        if type(m) not in safe:
            continue
        cls, relus = safe[type(m)]
        del m.relu
        m.__class__ = cls
        for i in range(1, relus + 1):
            m.add_module(f"relu{i}", ReLU())
        m.add_module("add", Add(reuse_first=True))
    return model


_HOOK_SAFE: dict[type, tuple[type, int]] = {}


def _hook_safe_blocks() -> dict[type, tuple[type, int]]:
    """torchvision's ResNet block classes -> (hook-safe subclass, ReLUs per block); created once, as torchvision
    is imported lazily."""
    if _HOOK_SAFE:
        return _HOOK_SAFE
    from torchvision.models import resnet as tv

    class HookSafeBasicBlock(tv.BasicBlock):
        def forward(self, x: Tensor) -> Tensor:
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu2(self.add(out, identity))  # type: ignore[no-any-return]

    class HookSafeBottleneck(tv.Bottleneck):
        def forward(self, x: Tensor) -> Tensor:
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.relu2(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu3(self.add(out, identity))  # type: ignore[no-any-return]

    _HOOK_SAFE.update({tv.BasicBlock: (HookSafeBasicBlock, 2), tv.Bottleneck: (HookSafeBottleneck, 3)})
    return _HOOK_SAFE


def _block_sizes(blocks: list[nn.Module], size: int) -> list[int]:
    """Output side of each block of a sequence, run in eval mode on a zero image."""
    x = torch.zeros(1, _first_conv(blocks[0]).in_channels, size, size)
    out = []
    with torch.no_grad():
        for b in blocks:
            was = b.training
            b.eval()
            x = b(x)
            b.train(was)
            out.append(int(x.shape[-1]))
    return out


#: torchvision models registered as backbones, under torchvision's names, with their family's stage table.
TORCHVISION = {
    "resnet": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2"),
    "vgg": ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"),
    "mobilenet": ("mobilenet_v3_large", "mobilenet_v3_small"),
    "efficientnet": ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3"),
}
_STAGES = {
    "resnet": "layer1..layer4",
    "vgg": "the feature blocks ending at each max-pool",
    "mobilenet": "features cut at each downsampling block",
    "efficientnet": "features cut at each downsampling block",
}

for _family, _archs in TORCHVISION.items():
    for _arch in _archs:
        BACKBONES.register(
            _arch,
            type(
                f"Torchvision_{_arch}",
                (TorchvisionBackbone,),
                {
                    "arch": _arch,
                    "family": _family,
                    "description": f"torchvision's {_arch}; stages: {_STAGES[_family]}",
                    "__module__": __name__,
                },
            ),
        )


# -- timm ---------------------------------------------------------------------------------------------
class TimmBackbone(ZooBackbone):
    """A timm CNN (``timm:<model name>``), cut at its ``feature_info`` modules."""

    family = "timm"

    @classmethod
    def create(cls, params: ZooParams) -> tuple[nn.Module, tuple[tuple[float, ...], tuple[float, ...]] | None]:
        import timm

        where = f"backbone timm:{cls.arch}: weights"
        name, state = cls.arch, None
        if params.weights is not None and wts.is_file_reference(params.weights):
            state = wts.read_state_dict(params.weights, where)
        elif params.weights is not None:
            name = f"{cls.arch}.{params.weights}"
            if name not in timm.list_pretrained(name):
                raise CheckpointError(
                    f"{where}: {params.weights!r} is not a pretrained tag of timm's {cls.arch} nor a file"
                )
        try:
            model = timm.create_model(name, pretrained=state is None and params.weights is not None)
        except CheckpointError:
            raise
        except Exception as err:  # huggingface_hub/urllib errors: the download failed
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{where}: timm's {name} needs a download, which failed ({reason}); without internet, fetch its "
                "weights elsewhere and pass the file: weights: /path/model.safetensors"
            ) from err
        if state is not None:
            wts.load_checked(model, state, f"{where} {params.weights}")
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        stats = (tuple(cfg["mean"]), tuple(cfg["std"])) if params.weights is not None and "mean" in cfg else None
        return model, stats

    @classmethod
    def cut(cls, model: nn.Module) -> tuple[list[nn.Module], list[list[nn.Module]], list[nn.Module]]:
        info = [i for i in getattr(model, "feature_info", []) if isinstance(i, dict) and "module" in i]
        if not info:
            raise ConfigError(f"backbone timm:{cls.arch}: timm gives it no feature_info (not a CNN with stages)")
        sequence = _flatten(model, {i["module"] for i in info})
        names = [n for n, _ in sequence]
        mods = [m for _, m in sequence]
        missing = [i["module"] for i in info if i["module"] not in names]
        if missing:
            raise ConfigError(f"backbone timm:{cls.arch}: feature module {missing[0]!r} is not a step of the model")
        # Features at stride 2 or less stay in the stem; each later one ends a stage; the rest (pooling,
        # classifier, timm's head convs) is the head, which the cut check runs in this order.
        stem_end = max((names.index(i["module"]) + 1 for i in info if i.get("reduction", 4) <= 2), default=0)
        ends = [names.index(i["module"]) + 1 for i in info if i.get("reduction", 4) > 2]
        bounds = [stem_end, *ends]
        return mods[:stem_end], [mods[a:b] for a, b in itertools.pairwise(bounds)], mods[ends[-1] :]


def _flatten(model: nn.Module, wanted: set[str]) -> list[tuple[str, nn.Module]]:
    """``model``'s children in order, containers opened where a wanted module lies inside (timm's rule)."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        inside = any(w.startswith(name + ".") for w in wanted)
        if inside and isinstance(child, nn.Sequential | nn.ModuleList):
            out += [
                (f"{name}.{n}", m)
                for n, m in _flatten(child, {w[len(name) + 1 :] for w in wanted if w.startswith(name + ".")})
            ]
        else:
            out.append((name, child))
    return out


_TIMM_CACHE: dict[str, type[TimmBackbone]] = {}


def timm_backbone(model_name: str) -> type[TimmBackbone]:
    """The backbone class of ``timm:<model_name>`` (created once per name)."""
    if model_name in _TIMM_CACHE:
        return _TIMM_CACHE[model_name]
    try:
        import timm
    except ImportError as err:
        raise ConfigError(f"backbone timm:{model_name} needs timm: pip install 'xbench[timm]'") from err
    base = model_name.split(".", 1)[0]
    if not re.fullmatch(r"[A-Za-z0-9_]+", base) or not timm.is_model(base):
        close = timm.list_models(f"*{base[:6]}*")[:5] if re.fullmatch(r"[A-Za-z0-9_]+", base) else []
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown backbone 'timm:{model_name}': timm has no model {base!r}{hint}")
    cls = type(
        f"Timm_{base}",
        (TimmBackbone,),
        {"arch": base, "description": f"timm's {base}", "__module__": __name__, "name": f"timm:{base}"},
    )
    _TIMM_CACHE[model_name] = cls
    return cls
