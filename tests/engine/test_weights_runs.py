"""Backbone weights, checkpoints and row backbones through whole runs of ``xbench run``.

Tiny suites (synthetic shapes at 32 px, ``training: {epochs: 0}`` where the model is to be
evaluated as built) run through the CLI entry point in-process, so that a test may monkeypatch
(the download of named weights) and need not import torch again. Checked:

* a local weights file is what the model computes with: the run's top-1 equals the top-1 of
  torchvision's model loaded by hand with the same file, and the file's sha256 is in every record,
  the setup hash and the cache key (a changed file is not served from the cache);
* a method row's ``checkpoint:`` is loaded whole (top-1 of that model computed by hand) and recorded;
* bad weights and checkpoints are one-line errors (exit 2) before anything is written;
* two backbones in one suite: each TAME builds on the baseline of its own backbone;
* suites without the new keys record and write exactly what they did before.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
import yaml
from torch import nn

from xbench.cli import main
from xbench.data.base import ImageSplit
from xbench.engine.plan import Plan
from xbench.methods.base import MethodContext
from xbench.methods.tame import TAMEAttention
from xbench.models.zoo import IMAGENET_MEAN, IMAGENET_STD
from xbench.registry import BACKBONES, DATASETS, METHODS
from xbench.report.records import Record, read_records
from xbench.suite import load_suite

DATA = {"name": "synthetic_shapes", "params": {"n_train": 64, "n_test": 32, "image_size": 32, "seed": 0}}
TINY = {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}}
R18_CIFAR = {"name": "resnet18", "params": {"cifar_stem": True}}
#: ``config.backbone`` of TINY's cells: its name and every validated param, and no ``weights`` key.
TINY_IDENTITY = {"name": "resnet_cifar", "params": BACKBONES.get("resnet_cifar").Params(**TINY["params"]).model_dump()}


# -- helpers ---------------------------------------------------------------------------------------
def suite_file(path: Path, **changes: Any) -> Path:
    """A tiny suite (one baseline row, top-1 and params, no explainers, epochs 0) with ``changes`` applied."""
    data: dict[str, Any] = {
        "name": "weights",
        "datasets": [DATA],
        "backbone": TINY,
        "methods": ["baseline"],
        "metrics": ["top1", "params"],
        "explainers": [],
        "seeds": [0],
        "training": {"epochs": 0, "batch_size": 32},
        "evaluation": {"explain_limit": 8},
        "resources": {"cpus": 1},
        "device": "cpu",
        **changes,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def run_args(suite: Path, out: Path, cache: Path) -> list[str]:
    return ["run", str(suite), "--output", str(out), "--cache-dir", str(cache), "--no-progress"]


def run_ok(suite: Path, out: Path, cache: Path) -> tuple[str, list[Record]]:
    """``(stdout, records)`` of a successful run."""
    code, stdout, stderr = run_cli(run_args(suite, out, cache))
    assert code == 0, stderr
    records = read_records(out / "records.jsonl")
    assert records and all(r.status == "ok" for r in records), [r.error for r in records]
    return stdout, records


def value(records: list[Record], method: str, metric: str) -> float:
    (r,) = [r for r in records if r.method == method and r.metric == metric and r.exit is None]
    assert r.value is not None
    return r.value


def splits() -> tuple[ImageSplit, ImageSplit]:
    """The suite's training and test images, loaded the way the run loads them."""
    cls = DATASETS.get(DATA["name"])
    dataset = cls(cls.Params.model_validate(DATA["params"]), None, False)
    return dataset.load("train"), dataset.load("test")


def imagenet_normalized(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def calibrate_bn(model: nn.Module, forward: Any) -> None:
    """Set every BatchNorm's running statistics to those of ``forward()`` (train mode, cumulative)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        forward()
    model.eval()


def save_random_resnet(path: Path, seed: int, arch: str = "resnet18", **kwargs: Any) -> None:
    """A random-init torchvision state dict; BatchNorm statistics of the training images, so that the
    predictions of a random head differ between images (and between seeds)."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    train, _ = splits()
    calibrate_bn(model, lambda: model(imagenet_normalized(train.images)))
    torch.save(model.state_dict(), path)


def torchvision_top1(weights: Path, head: dict[str, torch.Tensor], test: ImageSplit) -> float:
    """Top-1 of torchvision's resnet18 with ``weights`` and a 6-class ``fc`` (``head``), ImageNet-normalised
    input (``normalize: auto`` with a weights file)."""
    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.fc = nn.Linear(512, test.num_classes)
    model.fc.load_state_dict(head)
    model.eval()
    with torch.no_grad():
        predicted = model(imagenet_normalized(test.images)).argmax(1)
    return float((predicted == test.labels).float().mean())


def cached_models(cache: Path) -> set[Path]:
    return set((cache / "models").rglob("*.pt"))


def tiny_baseline(seed: int = 0, backbone: dict[str, Any] = TINY) -> nn.Module:
    """``baseline``'s model as a run builds it for the suite's data (``torch.manual_seed(seed)`` first)."""
    train, _ = splits()
    ctx = MethodContext(
        num_classes=train.num_classes, in_channels=train.in_channels, image_size=train.image_size,
        mean=tuple(train.mean), std=tuple(train.std), backbone=backbone["name"],
        backbone_params=backbone["params"], seed=seed,
    )  # fmt: skip
    method = METHODS.get("baseline")
    torch.manual_seed(seed)
    model: nn.Module = method(method.Params(), ctx).build()
    return model


def model_top1(model: nn.Module, test: ImageSplit) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model(test.images).logits.argmax(1)
    return float((predicted == test.labels).float().mean())


# -- 1. a weights file -----------------------------------------------------------------------------
def test_weights_file_is_what_the_run_evaluates_and_is_in_records_and_cache_key(tmp_path: Path) -> None:
    _, test = splits()
    weights, cache = tmp_path / "r18.pth", tmp_path / "cache"
    suite = suite_file(tmp_path / "s.yaml", backbone={"name": "resnet18", "params": {"weights": str(weights)}})

    def run(out: Path) -> tuple[str, list[Record], float]:
        """stdout, records and the hand-computed top-1 of the model the run cached (only its head is not the file's)."""
        before = cached_models(cache) if cache.exists() else set()
        stdout, records = run_ok(suite, out, cache)
        (new,) = cached_models(cache) - before
        state = torch.load(new, weights_only=True)
        assert {k for k in state if not k.startswith("backbone.")} == {"fc.weight", "fc.bias"}
        head = {"weight": state["fc.weight"], "bias": state["fc.bias"]}
        return stdout, records, torchvision_top1(weights, head, test)

    save_random_resnet(weights, seed=1)
    first_sha = sha256(weights)
    stdout, first, by_hand = run(tmp_path / "out1")
    assert "(trained" in stdout
    assert value(first, "baseline", "top1") == pytest.approx(by_hand, abs=1e-9)
    for r in first:
        assert r.config["backbone"]["weights"] == {"name": str(weights), "sha256": first_sha}
        assert r.config["backbone"]["params"]["weights"] == str(weights)

    # The same file name with other contents: a new setup and cache key; the cached model is not reused.
    save_random_resnet(weights, seed=2)
    second_sha = sha256(weights)
    assert second_sha != first_sha
    stdout, second, by_hand_2 = run(tmp_path / "out2")
    assert "(trained" in stdout and "(cached" not in stdout, stdout
    assert by_hand_2 != by_hand  # the comparison tells the two files apart
    assert value(second, "baseline", "top1") == pytest.approx(by_hand_2, abs=1e-9)
    assert {r.config["backbone"]["weights"]["sha256"] for r in second} == {second_sha}
    assert {r.setup for r in first}.isdisjoint({r.setup for r in second})
    assert len(cached_models(cache)) == 2

    # The same contents again: the same setup and the cached model.
    save_random_resnet(weights, seed=1)
    assert sha256(weights) == first_sha
    code, stdout, stderr = run_cli(run_args(suite, tmp_path / "out3", cache))
    assert code == 0, stderr
    assert "(cached" in stdout and "(trained" not in stdout, stdout
    third = read_records(tmp_path / "out3" / "records.jsonl")
    assert {r.setup for r in third} == {r.setup for r in first}
    assert value(third, "baseline", "top1") == value(first, "baseline", "top1")


# -- 2. a checkpoint on a method row ---------------------------------------------------------------
def test_checkpoint_on_a_method_row_is_loaded_whole_and_recorded(tmp_path: Path) -> None:
    train, test = splits()
    model = tiny_baseline()
    fresh = model_top1(model, test)  # what the run evaluates without the checkpoint
    calibrate_bn(model, lambda: model(train.images))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5 * p.std().nan_to_num(1.0))
    by_hand = model_top1(model, test)
    assert by_hand != fresh  # the comparison tells a loaded checkpoint from none
    checkpoint = tmp_path / "ckpt.pth"
    torch.save(model.state_dict(), checkpoint)

    suite = suite_file(
        tmp_path / "s.yaml", methods=["baseline", {"name": "baseline", "label": "ckpt", "checkpoint": str(checkpoint)}]
    )
    _, records = run_ok(suite, tmp_path / "out", tmp_path / "cache")
    assert value(records, "ckpt", "top1") == pytest.approx(by_hand, abs=1e-9)
    assert value(records, "baseline", "top1") == pytest.approx(fresh, abs=1e-9)
    expected = {"path": str(checkpoint), "sha256": sha256(checkpoint)}
    for r in records:
        if r.method == "ckpt":
            assert r.config["checkpoint"] == expected
        else:
            assert "checkpoint" not in r.config
    assert len({r.setup for r in records}) == 2


# -- 3. bad input ----------------------------------------------------------------------------------
class CreatesMarker:
    """A pickle payload: unpickling it with ``weights_only=False`` creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def truncated(path: Path) -> Path:
    save_random_resnet(path, seed=0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def pickle_payload(path: Path) -> Path:
    torch.save({"conv1.weight": torch.zeros(1), "evil": CreatesMarker(path.with_name("marker"))}, path)
    return path


def assert_rejected(tmp_path: Path, suite: Path, fragments: list[str]) -> str:
    """The bad-input contract: exit 2, one line naming the problem, no traceback, nothing written."""
    out, cache = tmp_path / "results" / "run", tmp_path / "cache"
    code, stdout, stderr = run_cli(run_args(suite, out, cache))
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert code == 2, line
    assert line.startswith("xbench: error: ") and "Traceback" not in stderr, line
    assert stdout == ""
    paths = [f for f in fragments if f.startswith(str(tmp_path))]
    words = line
    for path in sorted(paths, key=len, reverse=True):
        assert path in line, f"{path!r} not in {line!r}"
        words = words.replace(path, "<path>")
    for fragment in fragments:
        # Other fragments outside the paths (tmp_path holds the test's name, e.g. "weights").
        assert fragment in paths or fragment in words.replace(str(tmp_path), "<tmp>"), f"{fragment!r} not in {line!r}"
    assert not out.parent.exists(), "the output folder (or its staging folder) was created"
    assert not cache.exists(), "the cache was created"
    return line


def _weights_case(make: Any, key: str = "backbone") -> Any:
    """A case with ``weights:`` of the suite's resnet18 made by ``make(path)``; the line names ``key``."""

    def case(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
        path = make(tmp_path / "w.pth")
        return {"backbone": {"name": "resnet18", "params": {"weights": str(path)}}}, [str(path), key, "weights"]

    return case


def _row_weights_case(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    """A missing weights file of a method row's own backbone."""
    path = tmp_path / "w.pth"
    row = {"name": "baseline", "label": "b18", "backbone": {"name": "resnet18", "params": {"weights": str(path)}}}
    return {"methods": ["baseline", row]}, [str(path), "methods[1].backbone.params.weights"]


def _checkpoint_case(make: Any, backbone: dict[str, Any] = R18_CIFAR) -> Any:
    """A case with ``checkpoint:`` (made by ``make(path)``) on the second method row, on ``backbone``."""

    def case(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
        path = make(tmp_path / "ckpt.pth")
        row = {"name": "baseline", "label": "b18", "backbone": backbone, "checkpoint": str(path)}
        return {"methods": ["baseline", row]}, [str(path), "methods[1].checkpoint"]

    return case


def _save_tiny_baseline(path: Path) -> Path:
    torch.save(tiny_baseline().state_dict(), path)
    return path


CASES = {
    "missing weights": _weights_case(lambda p: p, "backbone.params.weights"),
    "missing weights of a row backbone": _row_weights_case,
    "truncated weights": _weights_case(truncated),
    "pickled code as weights": _weights_case(pickle_payload),
    "resnet34 weights into resnet18": _weights_case(lambda p: save_random_resnet(p, 0, "resnet34") or p),
    "weights of the wrong shape": _weights_case(lambda p: save_random_resnet(p, 0, num_classes=10) or p),
    "missing checkpoint": _checkpoint_case(lambda p: p),
    "truncated checkpoint": _checkpoint_case(truncated),
    "pickled code as checkpoint": _checkpoint_case(pickle_payload),
    "checkpoint of another model": _checkpoint_case(_save_tiny_baseline),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_weights_or_checkpoint_is_one_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    changes, fragments = CASES[case](tmp_path)
    suite = suite_file(tmp_path / "s.yaml", **changes)
    line = assert_rejected(tmp_path, suite, [str(suite), *fragments])
    assert not (tmp_path / "marker").exists(), "the pickle payload ran"
    if "pickled" in case:  # it would have: an unsafe load runs it
        torch.load(fragments[0], weights_only=False)["evil"].close()
        assert (tmp_path / "marker").exists()
    if case.startswith(("resnet34", "weights of the wrong", "checkpoint of another")):
        assert "does not fit" in line, line


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"datasets": [{**DATA, "checkpoint": "ckpt.pth"}]}, "datasets[0].checkpoint"),
        ({"metrics": [{"name": "top1", "backbone": R18_CIFAR}, "params"]}, "metrics[0].backbone"),
        ({"backbone": {**TINY, "checkpoint": "ckpt.pth"}}, "backbone.checkpoint"),
        (
            {"methods": [{"name": "baseline", "backbone": {**R18_CIFAR, "checkpoint": "ckpt.pth"}}]},
            "methods[0].backbone.checkpoint",
        ),
    ],
    ids=["checkpoint on a dataset row", "backbone on a metric row", "checkpoint on the backbone", "nested checkpoint"],
)
def test_new_keys_on_the_wrong_rows_are_validation_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], fragment: str
) -> None:
    monkeypatch.setattr(DATASETS.get("synthetic_shapes"), "load", lambda *a: pytest.fail("data loaded"))
    suite = suite_file(tmp_path / "s.yaml", **changes)
    assert_rejected(tmp_path, suite, [str(suite), fragment])


def test_named_weights_that_cannot_be_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch_home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    calls: list[str] = []

    def no_network(url: str, *args: Any, **kwargs: Any) -> None:
        calls.append(url)
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    suite = suite_file(tmp_path / "s.yaml", backbone={"name": "resnet18", "params": {"weights": "IMAGENET1K_V1"}})
    fragments = [str(suite), "backbone.params.weights", "IMAGENET1K_V1", "no network in this test"]
    line = assert_rejected(tmp_path, suite, fragments)
    (url,) = set(calls)
    assert url in line and url.rsplit("/", 1)[1] in line
    assert not [p for p in torch_home.rglob("*") if p.is_file()], "a partial download was left"


# -- 4. two backbones in one suite -----------------------------------------------------------------
def test_two_backbones_each_tame_builds_on_its_own_baseline(tmp_path: Path) -> None:
    methods = [
        "baseline",
        "tame",
        {"name": "baseline", "label": "b18", "backbone": R18_CIFAR, "params": {"head": "original"}},
        {"name": "tame", "label": "t18", "backbone": R18_CIFAR},
    ]
    training = {"epochs": 1, "batch_size": 32}
    suite = suite_file(tmp_path / "s.yaml", methods=methods, training=training)
    plan = Plan(load_suite(suite), str(suite))
    required = {c.method.display: plan.required_cell(c) for c in plan.cells()}
    assert required["baseline"] is None and required["b18"] is None
    assert required["tame"] is not None and required["tame"].method.display == "baseline"
    assert required["t18"] is not None and required["t18"].method.display == "b18"

    _, records = run_ok(suite, tmp_path / "out", tmp_path / "cache")
    backbone = {r.method: r.config["backbone"] for r in records}
    r18 = {"name": "resnet18", "params": {"weights": None, "cifar_stem": True, "normalize": "auto"}}
    assert backbone["b18"] == backbone["t18"] == r18
    assert backbone["baseline"] == backbone["tame"] == TINY_IDENTITY
    assert {r.config["method"]["params"].get("head") for r in records if r.method == "b18"} == {"original"}
    # The frozen baseline classifies (TAME: classifies_as_required) after one epoch of training: the same top-1.
    assert value(records, "tame", "top1") == value(records, "baseline", "top1")
    assert value(records, "t18", "top1") == value(records, "b18", "top1")
    # TAME on resnet18 = its baseline (original head) + the attention module on layer2..layer4.
    attention = sum(p.numel() for p in TAMEAttention([128, 256, 512], 6).parameters())
    assert value(records, "t18", "params") == value(records, "b18", "params") + attention


def test_tame_without_a_baseline_row_on_its_backbone_builds_on_the_default_baseline(tmp_path: Path) -> None:
    """The suite's only baseline row is on another backbone (and has other params): TAME on the suite's
    backbone builds on baseline's defaults there, a cell of its own (not that row's params, backbone or id)."""
    methods = [
        {"name": "baseline", "params": {"head": "original"}, "backbone": R18_CIFAR},
        "tame",
        {"name": "tame", "label": "t18", "backbone": R18_CIFAR},
    ]
    scored = suite_file(tmp_path / "scored.yaml", methods=methods, metrics=["pointing_game"], explainers=["gradcam"])
    plan = Plan(load_suite(scored), str(scored))
    cells = {c.method.display: c for c in plan.cells()}
    own = plan.required_cell(cells["tame"])
    assert own is not None and own.method.name == "baseline"
    assert own.id not in {c.id for c in plan.cells()}
    assert plan.dump("methods", own.method) == {}  # head: gap, not the listed row's head: original
    assert plan.backbone_identity(own.method) == TINY_IDENTITY
    listed = plan.required_cell(cells["t18"])
    assert listed is not None and listed.method is methods_row(plan, "baseline")
    # Grad-CAM of a TAME repeats its baseline's only when the suite scores that baseline.
    assert plan.explains("gradcam", cells["tame"])
    assert not plan.explains("gradcam", cells["t18"])

    suite = suite_file(tmp_path / "s.yaml", methods=methods)
    _, records = run_ok(suite, tmp_path / "out", tmp_path / "cache")
    _, test = splits()
    assert value(records, "tame", "top1") == pytest.approx(model_top1(tiny_baseline(), test), abs=1e-9)
    baseline_params = sum(p.numel() for p in tiny_baseline().parameters())
    attention = sum(p.numel() for p in TAMEAttention([4, 8, 16], 6).parameters())
    assert value(records, "tame", "params") == baseline_params + attention
    assert value(records, "t18", "top1") == value(records, "baseline", "top1")


def methods_row(plan: Plan, label: str) -> Any:
    return next(m for m in plan.suite.methods if m.display == label)


# -- 5. suites without the new keys ----------------------------------------------------------------
def test_suite_without_new_keys_records_and_writes_what_it_did_before(tmp_path: Path) -> None:
    suite = suite_file(tmp_path / "s.yaml", methods=["baseline", "tame"])
    out = tmp_path / "out"
    _, records = run_ok(suite, out, tmp_path / "cache")
    for r in records:
        assert "checkpoint" not in r.config
        assert r.config["backbone"] == TINY_IDENTITY
        assert "head" not in r.config["method"]["params"]
    text = (out / "config.yaml").read_text(encoding="utf-8")
    written = yaml.safe_load(text)
    rows = [written["backbone"], *(row for kind in ("datasets", "methods", "metrics") for row in written[kind])]
    for row in rows:
        assert "backbone" not in row and "checkpoint" not in row, row
    assert "null" not in "\n".join(line for line in text.splitlines() if "backbone" in line or "checkpoint" in line)
    assert load_suite(out / "config.yaml").methods == load_suite(suite).methods
