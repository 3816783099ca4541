"""Third-party methods and a user's own backbone installed as a package are found through entry points.

The package is ``examples/xbench-plugin-example``, the worked example in the
README; this test installs it with pip into a temporary folder and runs xbench
with that folder on ``PYTHONPATH``, as a user's environment would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xbench.methods.base import MethodContext
from xbench.models.output import Batch
from xbench.report.records import read_records

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "xbench-plugin-example"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = shutil.copytree(EXAMPLE, build / EXAMPLE.name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=build,
    )
    assert list(target.glob("xbench_plugin_example-*.dist-info"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    env["XBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return env


def _xbench(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xbench", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


def test_installed_plugin_is_listed(plugin_env: dict[str, str]) -> None:
    proc = _xbench(["list", "methods"], plugin_env)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^label_smoothing\s+baseline trained with label-smoothed", proc.stdout, re.M)
    assert "Szegedy" in proc.stdout


def test_plugin_runs_in_a_suite_next_to_the_baseline(plugin_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _xbench(
        [
            "run",
            "suites/smoke.yaml",
            "--output",
            str(out),
            "--set",
            "training.epochs=1",
            "--set",
            "methods=[baseline, {name: label_smoothing, params: {smoothing: 0.2}}, mixup]",
        ],
        plugin_env,
    )
    assert proc.returncode == 0, proc.stderr
    md = (out / "leaderboard.md").read_text()
    for row in ("baseline", "label_smoothing", "mixup"):
        assert re.search(rf"^\| {row} \|", md, re.M), row
    top1 = {(r.method, r.seed): r.value for r in read_records(out / "records.jsonl") if r.metric == "top1"}
    assert top1[("mixup", 0)] != top1[("baseline", 0)]  # trained on other inputs: another model


def test_mixup_training_step_by_hand() -> None:
    """The example's training step: λ ~ Beta(α, α) and a permutation from torch's generator, then mixed CE."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from xbench_plugin_example import Mixup, MixupParams
    finally:
        sys.path.remove(str(EXAMPLE))
    method = Mixup(MixupParams(alpha=0.4), MethodContext(3, 1, (8, 8), (0.5,), (0.25,), "resnet_cifar", {}))
    torch.manual_seed(0)
    model = method.build().eval()
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(7)
    loss = method.training_step(model, Batch(x, y, torch.arange(6)))
    torch.manual_seed(7)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    pair = torch.randperm(6)
    assert 0 < lam < 1 and not torch.equal(pair, torch.arange(6))
    mixed = lam * x + (1 - lam) * x[pair]
    log_p = model(mixed).logits.log_softmax(dim=1)
    hand = -(lam * log_p[torch.arange(6), y] + (1 - lam) * log_p[torch.arange(6), y[pair]]).mean()
    torch.testing.assert_close(loss, hand)
    # Not the plain step: the loss of the unmixed batch differs.
    assert not torch.allclose(loss, method.loss(model(x), Batch(x, y, torch.arange(6))))


def test_plugin_params_are_validated(plugin_env: dict[str, str]) -> None:
    proc = _xbench(
        ["validate", "suites/smoke.yaml", "--set", "methods=[{name: label_smoothing, params: {smoothing: 2}}]"],
        plugin_env,
    )
    assert proc.returncode == 2
    assert "methods[0].params.smoothing" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_readme_shows_the_example_that_this_test_installs() -> None:
    """The README's worked example is the file installed above, verbatim."""
    readme = (ROOT / "README.md").read_text()
    package = EXAMPLE / "xbench_plugin_example"
    for path in (package / "__init__.py", package / "backbone.py", EXAMPLE / "pyproject.toml"):
        assert path.read_text().strip() in readme, f"README is out of date with {path.relative_to(ROOT)}"


# -- a user's own backbone: TinyVGG, entry point ``tiny_vgg`` in group ``xbench.backbones`` ----------
TINY_VGG_SUITE = """\
description: the example's TinyVGG backbone under two methods, 1 epoch on tiny synthetic data
datasets:
  - {name: synthetic_shapes, params: {n_train: 96, n_test: 48, image_size: 16, channels: 3, seed: 0}}
backbone: {name: tiny_vgg, params: {width: 4}}
methods: [baseline, egt]
metrics: [top1, params]
explainers: []
seeds: [0]
training: {epochs: 1, batch_size: 32, holdout: 16}
evaluation: {batch_size: 48}
device: cpu
"""


def test_installed_backbone_is_listed(plugin_env: dict[str, str]) -> None:
    proc = _xbench(["list", "backbones"], plugin_env)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^tiny_vgg\s+example plugin: a user's 3-block VGG-style CNN", proc.stdout, re.M)
    assert re.search(r"^resnet_cifar\s", proc.stdout, re.M)  # next to the built-ins


def test_plugin_backbone_runs_a_suite(plugin_env: dict[str, str], tmp_path: Path) -> None:
    suite, out = tmp_path / "tiny_vgg.yaml", tmp_path / "out"
    suite.write_text(TINY_VGG_SUITE)
    proc = _xbench(["run", str(suite), "--output", str(out)], plugin_env)
    assert proc.returncode == 0, proc.stderr
    records = read_records(out / "records.jsonl")
    assert {(r.method, r.metric) for r in records} >= {(m, k) for m in ("baseline", "egt") for k in ("top1", "params")}
    for r in records:
        assert r.status == "ok" and r.value is not None, (r.method, r.metric, r.error)
        assert r.config["backbone"] == {"name": "tiny_vgg", "params": {"width": 4}}
    params = {r.method: r.value for r in records if r.metric == "params" and r.exit is None}
    assert params["egt"] > params["baseline"]  # the same TinyVGG; EGT adds exit heads after its stages
    md = (out / "leaderboard.md").read_text()
    for row in ("baseline", "egt"):
        assert re.search(rf"^\| {row} \|", md, re.M), row


def test_plugin_backbone_params_are_validated(plugin_env: dict[str, str]) -> None:
    proc = _xbench(
        ["validate", "suites/smoke.yaml", "--set", "backbone={name: tiny_vgg, params: {width: 0}}"], plugin_env
    )
    assert proc.returncode == 2, proc.stderr
    assert "backbone.params.width" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
