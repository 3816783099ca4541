"""The suite's typed schema: rows (PluginSpec), training, evaluation, resources, report, and Suite."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from xbench.params import OmitDefaults
from xbench.suite.messages import format_validation_error, number_problem


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot be a file or folder path on any common OS, or None."""
    if "\0" in text:
        return "must not contain a NUL character"
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) > 4096:
        return f"a path of {len(raw)} bytes (at most 4096)"
    if any(len(part) > 255 for part in raw.split(b"/")):
        return "a path component longer than 255 bytes"
    return None


def _checked_path(v: Any) -> Any:
    problem = path_problem(str(v)) if isinstance(v, str | Path) else None
    if problem is not None:
        raise ValueError(problem)
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


SEED_LIMIT = 2**32  # seeds are multiplied by ~1e6 to derive per-image seeds; torch takes < 2**64
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]

# Bounds on every count and size, far above what the papers need (ImageNet: 1.28M training images,
# 90-300 epochs, batches up to 8k), so that a value off by a few zeros fails validation instead of
# a run that has started other cells (xbench.engine.memory checks combinations that do not fit).
MAX_IMAGES = 10_000_000
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_ROWS = 256  # datasets, methods, explainers, or row filters in one suite
MAX_SEEDS = 1_000
MAX_NAME = 200  # characters of a name or a label (a dataset's label names a file)


class PluginSpec(_Strict):
    """A plugin by name with its parameters; ``label`` names the leaderboard row."""

    name: str = Field(max_length=MAX_NAME)
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(None, max_length=MAX_NAME)
    datasets: list[str] | None = Field(
        None,
        max_length=MAX_ROWS,
        description="method rows only: the dataset rows (labels) this method runs on; null: every dataset",
    )
    methods: list[str] | None = Field(
        None,
        max_length=MAX_ROWS,
        description="explainer rows only: the method rows (labels) this explainer is scored for; null: every method",
    )
    training: dict[str, Any] | None = Field(
        None,
        description=(
            "method rows only: training settings that differ for this method's cells (e.g. a paper's own "
            "schedule); validated like `training:`, part of the cell's settings and cache key"
        ),
    )

    backbone: PluginSpec | None = Field(
        None,
        description="method rows only: the backbone of this method's cells, when it is not the suite's (e.g. "
        "one suite comparing VGG-16 and ResNet-50); part of the cell's settings and cache key",
    )
    checkpoint: Path | None = Field(
        None,
        description="method rows only: a state dict of the whole model (torch.save(model.state_dict())), loaded "
        "with weights_only=True after the model is built and before training (epochs: 0 evaluates it as is); "
        "its sha256 is recorded",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    _checkpoint_path = field_validator("checkpoint", mode="before")(_checked_path)

    @property
    def display(self) -> str:
        return self.label or self.name


class RandAugmentConfig(_Strict):
    """torchvision's RandAugment (Cubuk et al., NeurIPS 2020) on each training image.

    ``num_ops`` operations drawn per image, each at ``magnitude`` of ``num_magnitude_bins - 1``
    steps of its range. timm's ``rand-mM-nN`` (Coded ResNeXt's official code) corresponds to
    ``num_ops: N, magnitude: M, num_magnitude_bins: 11`` (timm's levels go 0…10); timm also applies
    each operation with probability 0.5 and has a few other operations, torchvision applies each.
    """

    name: Literal["randaugment"]
    num_ops: int = Field(2, ge=1, le=64)
    magnitude: int = Field(9, ge=0, le=1023)
    num_magnitude_bins: int = Field(31, ge=2, le=1024)

    @model_validator(mode="after")
    def _magnitude(self) -> RandAugmentConfig:
        if self.magnitude >= self.num_magnitude_bins:
            raise ValueError(f"magnitude must be below num_magnitude_bins ({self.num_magnitude_bins})")
        return self


#: Training keys a method row may not override: they choose the images, which every method of a
#: dataset shares (the split is loaded once per dataset row).
SHARED_TRAINING_KEYS = frozenset({"limit", "holdout"})


class TrainingConfig(_Strict, OmitDefaults):
    """The one training loop's settings, shared by every method of a suite.

    The keys added after suites had records (``omit_at_default``) are left out of dumps while they
    hold their default, so the settings (and cache keys) of the suites written before stay the same.
    """

    omit_at_default: ClassVar[frozenset[str]] = frozenset({"log_interval", "precision", "channels_last", "compile"})

    epochs: int = Field(2, ge=0, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "cosine", "step", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_EPOCHS)
    step_epochs: list[Annotated[int, Field(ge=0, le=MAX_EPOCHS)]] = Field(
        default_factory=list, max_length=MAX_EPOCHS, description="epochs at which 'step' divides lr by 10"
    )
    limit: int | None = Field(None, ge=1, le=MAX_IMAGES, description="use only this many training images")
    holdout: int = Field(
        0,
        ge=0,
        le=MAX_IMAGES,
        description="training images held out (never trained on) for calibration, e.g. exit thresholds",
    )
    # "randaugment" is listed so that an unknown name's error names it; the validator below turns it
    # into a RandAugmentConfig before the union is tried, so a plain "randaugment" never stays a string.
    augment: list[Literal["flip", "crop", "randaugment"] | RandAugmentConfig] = Field(
        default_factory=list,
        max_length=16,
        description="batched in this order: crop, flip, then randaugment ('randaugment' or {name: randaugment, ...})",
    )
    log_interval: int = Field(
        50,
        ge=1,
        le=1_000_000,
        description="log the mean training loss every this many steps and at each epoch's end (the losses stay on "
        "the device in between: no host synchronisation per step); a non-finite loss is caught at these points",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="training steps under autocast on the cell's device: bf16, or fp16 with a gradient scaler "
        "(and fused optimizer steps, so the scaler's inf check needs no host synchronisation); fp32: no autocast",
    )
    channels_last: bool = Field(
        False,
        description="train with the model and each batch channels-last (NHWC), whatever resources.channels_last "
        "says; the model goes back to that layout after training. resources.channels_last (default true) keeps "
        "the weights, hence conv activations, NHWC everywhere and is a speed setting outside the cache key; this "
        "one changes the training (and its key) only, and with resources.channels_last true adds just the batches' "
        "layout",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for the training steps; where it cannot compile (no C++ compiler, "
        "an unsupported model) one line says so and training continues uncompiled",
    )

    @field_validator("augment", mode="before")
    @classmethod
    def _randaugment_by_name(cls, v: Any) -> Any:
        return [{"name": "randaugment"} if item == "randaugment" else item for item in v] if isinstance(v, list) else v

    @property
    def randaugment(self) -> RandAugmentConfig | None:
        return next((a for a in self.augment if isinstance(a, RandAugmentConfig)), None)


class EvaluationConfig(_Strict):
    limit: int | None = Field(None, ge=1, le=MAX_IMAGES, description="evaluate on this many test images")
    batch_size: int = Field(500, ge=1, le=MAX_BATCH)
    explain_limit: int | None = Field(
        1000,
        ge=1,
        le=MAX_IMAGES,
        description="explanation metrics use this many test images (a seeded subset; null: all)",
    )
    explain_datasets: list[str] | None = Field(
        None,
        max_length=MAX_ROWS,
        description="dataset rows (labels) that explanation metrics run on; null: every dataset",
    )


class DataConfig(_Strict):
    dir: Path | None = None
    download: bool = True

    _dir_path = field_validator("dir", mode="before")(_checked_path)


class ResourcesConfig(_Strict):
    """What one cell uses: Ray requests it per task; ``cpus`` is also each cell's torch thread count."""

    cpus: int | None = Field(
        None,
        ge=1,
        le=65_536,
        description="CPU threads per cell; null: all cores in a serial run, cores // jobs with --jobs, 1 on Ray. "
        "Results are bitwise reproducible for a given device, thread count and channels_last",
    )
    gpus: float = Field(0.0, ge=0, le=1024, description="GPUs per cell (Ray only; a fraction shares a GPU)")
    channels_last: bool = Field(
        True,
        description="keep models' 4-D weights, hence conv activations, channels-last (NHWC): the same functions, "
        "1.3-1.4x faster training of these small CNNs on CPU (grouped convs 2-3x); float rounding differs "
        "from false as it does between thread counts",
    )
    jobs: Annotated[int, Field(ge=1, le=65_536)] | Literal["auto"] = Field(
        1,
        description="cells at a time with the local executor (worker processes when > 1); auto: cores // cpus "
        "(cpus defaults to 1 then). The --jobs flag overrides it",
    )

    @field_validator("jobs", mode="before")
    @classmethod
    def _jobs(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML yes/no: not a count
            raise ValueError(f"must be a count of cells or 'auto', got {v!r}")
        return v


class ReportConfig(_Strict):
    """What the run's report shows (``xbench report --view`` and ``xbench run --view`` override it)."""

    view: Literal["paper", "full"] = Field(
        "paper",
        description="paper: compact tables (at most 7 metric columns per category, per-exit values in their "
        "own method x exit tables); full: every column, one per exit. The CSV files hold everything either way",
    )


_PLUGIN_KEYS = ("datasets", "methods", "metrics", "explainers")


class Suite(_Strict):
    """A resolved suite: datasets × methods × seeds, and how to train and measure them."""

    name: str = Field(max_length=MAX_NAME)
    description: str = ""
    datasets: list[PluginSpec] = Field(min_length=1, max_length=MAX_ROWS)
    backbone: PluginSpec = Field(default_factory=lambda: PluginSpec(name="resnet_cifar"))
    methods: list[PluginSpec] = Field(min_length=1, max_length=MAX_ROWS)
    metrics: list[PluginSpec] = Field(
        default_factory=lambda: [PluginSpec(name=n) for n in ("top1", "top5", "params", "flops")],
        min_length=1,
        max_length=4 * MAX_ROWS,
    )
    explainers: list[PluginSpec] = Field(
        default_factory=lambda: [PluginSpec(name=n) for n in ("native", "gradcam", "random")],
        max_length=MAX_ROWS,
        description="explainers every explanation metric is reported for",
    )
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_SEEDS)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: str = "auto"
    output: Path | None = None
    cache_dir: Path | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    # load_suite's validated plugin params and the rows they were validated from: a Plan built
    # from this suite reuses them instead of validating every plugin again (see validated_plugins).
    _plugins: tuple[str, dict[str, dict[str, BaseModel]]] | None = PrivateAttr(default=None)

    def plugin_rows(self) -> str:
        """The rows whose params the registries validate, as canonical JSON."""
        rows = {k: [s.model_dump(mode="json") for s in getattr(self, k)] for k in _PLUGIN_KEYS}
        return json.dumps({**rows, "backbone": self.backbone.model_dump(mode="json")}, sort_keys=True)

    def validated_plugins(self) -> dict[str, dict[str, BaseModel]] | None:
        """The plugin params ``load_suite`` validated, if this suite's rows are still the ones it validated."""
        if self._plugins is None or self._plugins[0] != self.plugin_rows():
            return None
        return self._plugins[1]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # The name is the default output folder: results/<name>.
        if not v.strip() or v in (".", "..") or "/" in v or "\\" in v or "\0" in v:
            raise ValueError("must be a plain folder name (no '/'), e.g. quick")
        return _checked_path(v)  # type: ignore[no-any-return]

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d{1,4})?|mps", v):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v

    @field_validator("output", "cache_dir", mode="before")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            raise ValueError("must be a folder path, not empty")  # Path("") would be the working directory
        return _checked_path(v)

    @model_validator(mode="after")
    def _unique_rows(self) -> Suite:
        for kind in ("datasets", "methods", "explainers"):
            labels = [s.display for s in getattr(self, kind)]
            dup = sorted({x for x in labels if labels.count(x) > 1})
            if dup:
                raise ValueError(f"{kind}: duplicate row {dup[0]!r}; give each a distinct 'label'")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: duplicate seeds")
        for i, row in enumerate(self.datasets):  # a dataset's label names its saliency file
            if row.display in (".", "..") or any(c in row.display for c in "/\\\0"):
                key = "label" if row.label else "name"
                raise ValueError(f"datasets[{i}].{key}: {row.display!r} names a file; use no '/', '\\' or NUL")
        labels = [d.display for d in self.datasets]
        for i, name in enumerate(self.evaluation.explain_datasets or []):
            if name not in labels:
                raise ValueError(f"evaluation.explain_datasets[{i}]: {name!r} is not one of the datasets {labels}")
        self._check_row_filters()
        self._check_training_overrides()
        return self

    def _check_training_overrides(self) -> None:
        """``training``, ``backbone`` and ``checkpoint`` on method rows only; training without the data-split keys,
        valid over the suite's own."""
        for kind in ("datasets", "metrics", "explainers", "backbone"):
            rows = [self.backbone] if kind == "backbone" else getattr(self, kind)
            for i, row in enumerate(rows):
                where = kind if kind == "backbone" else f"{kind}[{i}]"
                if row.training is not None:
                    raise ValueError(f"{where}.training: only method rows can override training settings")
                for key in ("backbone", "checkpoint"):
                    if getattr(row, key) is not None:
                        raise ValueError(f"{where}.{key}: only method rows can set their own {key}")
        for i, row in enumerate(self.methods):
            if row.backbone is not None:
                for key in ("datasets", "methods", "training", "backbone", "checkpoint"):
                    if getattr(row.backbone, key) is not None:
                        raise ValueError(f"methods[{i}].backbone.{key}: not a backbone setting")
        for i, row in enumerate(self.methods):
            for key in sorted(set(row.training or {}) & SHARED_TRAINING_KEYS):
                raise ValueError(
                    f"methods[{i}].training.{key}: set it for the whole suite (training.{key}); "
                    "every method of a dataset trains on the same images"
                )
            if row.training is not None:
                self.training_for(row, where=f"methods[{i}].training")

    def training_for(self, method: PluginSpec, where: str = "training") -> TrainingConfig:
        """The training settings of ``method``'s cells: the suite's, with the row's ``training`` applied."""
        if not method.training:
            return self.training
        raw = {**self.training.model_dump(), **method.training}
        try:
            merged = TrainingConfig.model_validate(raw)
        except ValidationError as err:
            raise ValueError(format_validation_error(err, TrainingConfig, where)) from None
        problem = number_problem(method.training, merged.model_dump(), where)
        if problem is not None:
            raise ValueError(problem)
        return merged

    def _check_row_filters(self) -> None:
        """Row filters (``datasets`` on method rows, ``methods`` on explainer rows) name existing rows."""
        for key, owner in (("datasets", "methods"), ("methods", "explainers")):
            labels = [row.display for row in getattr(self, key)]
            for kind in ("datasets", "methods", "metrics", "explainers", "backbone"):
                rows = [self.backbone] if kind == "backbone" else getattr(self, kind)
                for i, row in enumerate(rows):
                    where, names = (kind if kind == "backbone" else f"{kind}[{i}]"), getattr(row, key)
                    if names is None:
                        continue
                    if kind != owner:
                        raise ValueError(f"{where}.{key}: only {owner[:-1]} rows can be restricted to {key}")
                    if not names:
                        raise ValueError(
                            f"{where}.{key}: empty; list {key[:-1]} rows, or drop the key for every {key[:-1]}"
                        )
                    for j, name in enumerate(names):
                        if name not in labels:
                            raise ValueError(f"{where}.{key}[{j}]: {name!r} is not one of the {key} {labels}")

    @property
    def output_dir(self) -> Path:
        return self.output if self.output is not None else Path("results") / self.name


# -- loading -----------------------------------------------------------------------
