"""Suites: YAML files mapped one-to-one onto typed config objects.

Precedence is defaults < YAML (after ``extends:``) < ``--set key.path=value``.
Every problem is reported as one :class:`~xbench.errors.ConfigError` line that
names the file and the key at fault, e.g.::

    suites/x.yaml: training.epochs: Input should be a valid integer (got 'ten')
    suites/x.yaml: methods[0].name: unknown method 'baselin'; did you mean 'baseline'?

Stricter than plain YAML + pydantic: a key given twice in one mapping is an error (PyYAML
would keep the last), a YAML boolean is never read as a number (``epochs: yes`` is not 1),
and numbers, plugin parameters included, must be finite.

A suite file::

    name: quick                    # defaults to the file's stem
    extends: base.yaml             # optional; relative to this file
    datasets: [fashion_mnist]      # a name, or {name, params, label}
    backbone: {name: resnet_cifar, params: {depth: 8, width: 16}}
    methods: [baseline]
    metrics: [top1, top5, params, flops]
    seeds: [0]
    training: {epochs: 2, batch_size: 128, optimizer: sgd, lr: 0.1, schedule: cosine}
    evaluation: {limit: null, batch_size: 500}
    device: auto                   # auto | cpu | cuda | cuda:N
    output: results/quick
    report: {view: paper}          # paper | full: what the tables show
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xbench.errors import ConfigError, UnknownNameError
from xbench.params import OmitDefaults


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


SEED_LIMIT = 2**32  # seeds are multiplied by ~1e6 to derive per-image seeds; torch takes < 2**64
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]


class PluginSpec(_Strict):
    """A plugin by name with its parameters; ``label`` names the leaderboard row."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    datasets: list[str] | None = Field(
        None, description="method rows only: the dataset rows (labels) this method runs on; null: every dataset"
    )
    methods: list[str] | None = Field(
        None,
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
    num_ops: int = Field(2, ge=1)
    magnitude: int = Field(9, ge=0)
    num_magnitude_bins: int = Field(31, ge=2)

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

    epochs: int = Field(2, ge=0)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "cosine", "step", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_epochs: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, description="epochs at which 'step' divides lr by 10"
    )
    limit: int | None = Field(None, ge=1, description="use only this many training images")
    holdout: int = Field(
        0, ge=0, description="training images held out (never trained on) for calibration, e.g. exit thresholds"
    )
    # "randaugment" is listed so that an unknown name's error names it; the validator below turns it
    # into a RandAugmentConfig before the union is tried, so a plain "randaugment" never stays a string.
    augment: list[Literal["flip", "crop", "randaugment"] | RandAugmentConfig] = Field(
        default_factory=list,
        description="batched in this order: crop, flip, then randaugment ('randaugment' or {name: randaugment, ...})",
    )
    log_interval: int = Field(
        50,
        ge=1,
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
    limit: int | None = Field(None, ge=1, description="evaluate on this many test images")
    batch_size: int = Field(500, ge=1)
    explain_limit: int | None = Field(
        1000, ge=1, description="explanation metrics use this many test images (a seeded subset; null: all)"
    )
    explain_datasets: list[str] | None = Field(
        None, description="dataset rows (labels) that explanation metrics run on; null: every dataset"
    )


class DataConfig(_Strict):
    dir: Path | None = None
    download: bool = True


class ResourcesConfig(_Strict):
    """What one cell uses: Ray requests it per task; ``cpus`` is also each cell's torch thread count."""

    cpus: int | None = Field(
        None,
        ge=1,
        description="CPU threads per cell; null: all cores in a serial run, cores // jobs with --jobs, 1 on Ray. "
        "Results are bitwise reproducible for a given device, thread count and channels_last",
    )
    gpus: float = Field(0.0, ge=0, description="GPUs per cell (Ray only; a fraction shares a GPU)")
    channels_last: bool = Field(
        True,
        description="keep models' 4-D weights, hence conv activations, channels-last (NHWC): the same functions, "
        "1.3-1.4x faster training of these small CNNs on CPU (grouped convs 2-3x); float rounding differs "
        "from false as it does between thread counts",
    )
    jobs: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
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


class Suite(_Strict):
    """A resolved suite: datasets × methods × seeds, and how to train and measure them."""

    name: str
    description: str = ""
    datasets: list[PluginSpec] = Field(min_length=1)
    backbone: PluginSpec = Field(default_factory=lambda: PluginSpec(name="resnet_cifar"))
    methods: list[PluginSpec] = Field(min_length=1)
    metrics: list[PluginSpec] = Field(
        default_factory=lambda: [PluginSpec(name=n) for n in ("top1", "top5", "params", "flops")], min_length=1
    )
    explainers: list[PluginSpec] = Field(
        default_factory=lambda: [PluginSpec(name=n) for n in ("native", "gradcam", "random")],
        description="explainers every explanation metric is reported for",
    )
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: str = "auto"
    output: Path | None = None
    cache_dir: Path | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # The name is the default output folder: results/<name>.
        if not v.strip() or v in (".", "..") or "/" in v or "\\" in v:
            raise ValueError("must be a plain folder name (no '/'), e.g. quick")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v

    @field_validator("output", "cache_dir", mode="before")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            raise ValueError("must be a folder path, not empty")  # Path("") would be the working directory
        return v

    @model_validator(mode="after")
    def _unique_rows(self) -> Suite:
        for kind in ("datasets", "methods", "explainers"):
            labels = [s.display for s in getattr(self, kind)]
            dup = sorted({x for x in labels if labels.count(x) > 1})
            if dup:
                raise ValueError(f"{kind}: duplicate row {dup[0]!r}; give each a distinct 'label'")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: duplicate seeds")
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
class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" may be overridden by later keys
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.setdefault(key, key_node)
        except TypeError:  # an unhashable key: the standard constructor reports it
            continue
        if first is not key_node:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {first.start_mark.line + 1})", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; any problem is a one-line ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such suite file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only
    except yaml.reader.ReaderError as err:  # a control character such as NUL: no mark, a position
        line = text.count("\n", 0, err.position) + 1
        char = err.character if isinstance(err.character, str) else chr(err.character)
        problem = f"character #x{ord(char):04x} is not allowed in YAML"
        raise ConfigError(f"{path}: line {line}: YAML syntax error: {problem}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: {where}YAML syntax error: {problem}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite must be a mapping of keys, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in ``over`` replace those in ``base``.

    A plugin given by another ``name`` replaces the base's whole mapping: its params belong to the
    old plugin (a child suite that switches ``backbone`` from resnet_cifar to resnet50 must not
    inherit ``depth``).
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        if both and not ("name" in v and v["name"] != out[k].get("name")):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve_extends(
    path: Path, seen: tuple[Path, ...] = (), chain: list[tuple[Path, Any]] | None = None
) -> dict[str, Any]:
    """Merge ``path`` over the suites it extends; ``chain`` collects (file, raw data), child first."""
    path = path.resolve() if path.exists() else path
    if path in seen:
        cycle = " -> ".join(p.name for p in (*seen, path))
        raise ConfigError(f"{seen[0]}: extends: circular ({cycle})")
    data = read_yaml(path)
    if chain is not None:
        chain.append((path, copy.deepcopy(data)))
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: must be a file path, got {parent!r}")
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not parent_path.is_file():
        raise ConfigError(f"{path}: extends: no such suite file {parent!r}")
    base = _resolve_extends(parent_path, (*seen, path), chain)
    base.pop("name", None)  # a child is its own suite unless it names itself
    base.pop("output", None)
    return _merge(base, data)


_SEGMENT = re.compile(r"[^.\[\]]+|\[\d+\]")


def _split_path(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for seg in _SEGMENT.findall(key):
        parts.append(int(seg[1:-1]) if seg.startswith("[") else (int(seg) if seg.isdigit() else seg))
    return parts


def apply_override(data: dict[str, Any], assignment: str, source: str = "--set") -> None:
    """Apply one ``key.path=value`` (value parsed as YAML) to raw suite data in place."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{source} {assignment!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} {key}: value {raw!r} is not valid YAML") from err
    path = _split_path(key.strip())
    if not path:
        raise ConfigError(f"{source} {assignment!r}: expected key.path=value")
    node: Any = data
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, list):
            part = _index(node, part, key, source)
            if isinstance(node[part], str):  # a shorthand plugin name: expand to a mapping
                node[part] = {"name": node[part]}
            node = node[part]
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(nxt, int) else {}
            elif isinstance(node[part], str) and not isinstance(nxt, int):
                node[part] = {"name": node[part]}
            node = node[part]
        else:  # e.g. training.epochs.x.y: epochs holds a number
            raise ConfigError(f"{source} {key}: cannot set a key inside {type(node).__name__} value")
    last = path[-1]
    if isinstance(node, list):
        node[_index(node, last, key, source)] = value
    elif isinstance(node, dict):
        node[str(last)] = value
    else:
        raise ConfigError(f"{source} {key}: cannot set a key inside {type(node).__name__} value")


def _index(node: list[Any], part: str | int, key: str, source: str) -> int:
    """``part`` as an index into the list ``node``, or a ConfigError for the ``--set`` path ``key``."""
    if not isinstance(part, int):
        raise ConfigError(f"{source} {key}: {part!r} is not an index; that key holds a list (use [0], [1], ...)")
    if part >= len(node):
        raise ConfigError(f"{source} {key}: index {part} out of range (list of {len(node)})")
    return part


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_from_name()]", "function-before[_from_name()]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The valid keys at ``loc`` (for "unknown key" messages)."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current is not None else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return None
    return sorted(current.model_fields) if current is not None else None


# pydantic puts the union member an error belongs to into its location ("literal['flip','crop']",
# "function-after[...]"); they are not keys a user wrote.
_UNION_TAGS = ("function-", "literal[")


def _union_errors(errors: list[Any]) -> list[Any]:
    """One error per value: of a union's members, the one that fits the input's kind (a mapping: the model's)."""
    kept: list[Any] = []
    seen: set[tuple[Any, ...]] = set()
    for e in errors:
        loc = tuple(e["loc"])
        tag = next((i for i, p in enumerate(loc) if isinstance(p, str) and p.startswith(_UNION_TAGS)), None)
        if tag is None:
            kept.append(e)
            continue
        if isinstance(e.get("input"), dict) and str(loc[tag]).startswith("literal["):
            continue  # a mapping was never meant as one of the names
        if loc[:tag] not in seen:
            seen.add(loc[:tag])
            kept.append(e)
    return kept or errors


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """The first error of ``err`` as ``key.path: message``."""
    errors = _union_errors(err.errors())
    e = errors[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(_UNION_TAGS)))
    more = f" [+{len(errors) - 1} more]" if len(errors) > 1 else ""
    if e["type"] == "invalid_key" or loc[-1:] == ("[key]",):  # a key that is not a string, e.g. 5:
        key = e.get("input")
        parent = ".".join(x for x in (prefix, _loc(loc[:-2] if loc[-1:] == ("[key]",) else loc[:-1])) if x)
        return f"{parent + ': ' if parent else ''}key {key!r}: keys must be strings{more}".replace(".[", "[")
    where = _loc(loc)
    full = ".".join(x for x in (prefix, where) if x).replace(".[", "[")
    if e["type"] == "extra_forbidden":
        keys = _model_keys(model, loc)
        valid = f" (valid keys: {', '.join(keys)})" if keys else ""
        return f"{full}: unknown key{valid}"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    shown = "" if isinstance(got, dict | list) or e["type"] == "missing" else f" (got {got!r})"
    if not full:  # a whole-suite check; its message names the key itself
        return f"{msg}{more}"
    return f"{full}: {msg}{shown}{more}"


def number_problem(raw: Any, validated: Any, where: str = "") -> str | None:
    """The first number that validation let through but should not have, as ``key.path: problem``.

    pydantic reads ``true`` as 1 for a number field (``epochs: yes`` would mean one epoch) and
    accepts ``.inf``/``.nan`` unless told not to. ``validated`` is the validated model's
    ``model_dump()``, which mirrors the layout of ``raw``.
    """
    if isinstance(raw, bool):
        return None if isinstance(validated, bool) else f"{where}: expected a number, not a boolean (got {raw!r})"
    if isinstance(validated, float) and not math.isfinite(validated):
        return f"{where}: Input should be a finite number (got {raw!r})"
    pairs: list[tuple[str, Any, Any]] = []
    if isinstance(raw, dict) and isinstance(validated, dict):
        pairs = [(f"{where}.{k}" if where else str(k), v, validated[k]) for k, v in raw.items() if k in validated]
    elif isinstance(raw, list) and isinstance(validated, list | tuple) and len(raw) == len(validated):
        pairs = [(f"{where}[{i}]", v, validated[i]) for i, v in enumerate(raw)]
    for key, value, done in pairs:
        found = number_problem(value, done, key)
        if found is not None:
            return found
    return None


def validate_plugins(suite: Suite, source: str) -> dict[str, dict[str, BaseModel]]:
    """Check every plugin name and its params against the registries.

    Returns the validated params per kind and row label, so callers need not
    validate them again.
    """
    from xbench.params import Configurable
    from xbench.registry import BACKBONES, DATASETS, EXPLAINERS, METHODS, METRICS, Registry

    validated: dict[str, dict[str, BaseModel]] = {}
    prefix = f"{source}: " if source else ""
    groups: list[tuple[str, Registry[type[Configurable]], list[PluginSpec]]] = [
        ("datasets", DATASETS, suite.datasets),
        ("methods", METHODS, suite.methods),
        ("metrics", METRICS, suite.metrics),
        ("explainers", EXPLAINERS, suite.explainers),
        ("backbone", BACKBONES, [suite.backbone]),
        ("row_backbones", BACKBONES, [m.backbone for m in suite.methods if m.backbone is not None]),
    ]
    for key, registry, specs in groups:
        validated[key] = {}
        rows = [i for i, m in enumerate(suite.methods) if m.backbone is not None]
        for i, spec in enumerate(specs):
            if key == "row_backbones":
                where = f"methods[{rows[i]}].backbone"
            else:
                where = key if key == "backbone" else f"{key}[{i}]"
            try:
                cls = registry.get(spec.name)
            except UnknownNameError as err:
                raise ConfigError(f"{prefix}{where}.name: {err}") from err
            try:
                params = cls.Params.model_validate(spec.params)
            except ValidationError as err:
                raise ConfigError(f"{prefix}{format_validation_error(err, cls.Params, f'{where}.params')}") from err
            problem = number_problem(spec.params, params.model_dump(), f"{where}.params")
            if problem is not None:
                raise ConfigError(f"{prefix}{problem}")
            # A row backbone is validated under its method row's label (two rows may give it different params).
            validated[key][suite.methods[rows[i]].display if key == "row_backbones" else spec.display] = params
    if not suite.explainers:  # explanation metrics would silently report nothing
        for i, spec in enumerate(suite.metrics):
            if getattr(METRICS.get(spec.name), "uses_explanations", False):
                raise ConfigError(
                    f"{prefix}explainers: empty, but metrics[{i}] ({spec.name}) scores explanations; "
                    "list explainers (e.g. [native, gradcam, random]) or drop the explanation metrics"
                )
    return validated


def _has_path(data: Any, where: str) -> bool:
    """Whether raw YAML ``data`` sets the key path ``where`` (e.g. ``methods[0].params.lam``)."""
    node = data
    for part in _split_path(where):
        in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if not (in_list or (isinstance(node, dict) and part in node)):
            return isinstance(node, str) and part == "name"  # a plugin shorthand string is its name
        node = node[part]
    return True


def _blame(message: str, path: Path, chain: list[tuple[Path, Any]], overrides: tuple[str, ...] | list[str]) -> str:
    """Prefix ``key: problem`` with what set the key: a ``--set`` flag, the file, or a parent it extends."""
    where = message.split(":", 1)[0]
    for assignment in reversed(overrides):
        key = assignment.partition("=")[0].strip()
        norm = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)
        if where == norm or where.startswith((norm + ".", norm + "[")) or norm.startswith((where + ".", where + "[")):
            return f"{path}: --set {message}"
    for file, raw in chain[1:]:
        if not _has_path(chain[0][1], where) and _has_path(raw, where):
            return f"{file} (extended by {path}): {message}"
    return f"{path}: {message}"


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = (), check_plugins: bool = True) -> Suite:
    """Load, merge ``extends:``, apply ``--set`` overrides and validate a suite file."""
    path = Path(path)
    chain: list[tuple[Path, Any]] = []
    data = _resolve_extends(path, chain=chain)
    for assignment in overrides:
        apply_override(data, assignment, source=f"{path}: --set")
    data.setdefault("name", path.stem)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_blame(format_validation_error(err, Suite), path, chain, overrides)) from err
    problem = number_problem(data, suite.model_dump())
    if problem is not None:
        raise ConfigError(_blame(problem, path, chain, overrides))
    if suite.output is None:
        suite = suite.model_copy(update={"output": suite.output_dir})
    if check_plugins:
        try:
            validate_plugins(suite, "")
        except ConfigError as err:
            raise ConfigError(_blame(str(err), path, chain, overrides)) from err
    return suite


def dump_suite(suite: Suite) -> str:
    """The resolved suite as YAML (written next to the results)."""
    data = suite.model_dump(mode="json")
    for row in [
        data["backbone"],
        *(r for kind in ("datasets", "methods", "metrics", "explainers") for r in data[kind]),
    ]:
        for key in ("datasets", "methods", "training", "backbone", "checkpoint"):  # unset filters and overrides
            if row.get(key) is None:
                row.pop(key, None)
        if isinstance(row.get("backbone"), dict):
            for key in ("datasets", "methods", "training", "backbone", "checkpoint"):
                if row["backbone"].get(key) is None:
                    row["backbone"].pop(key, None)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
