"""``suites/tame_imagenet.yaml`` end to end on a generated miniature ImageNet, with local random weights.

The suite is TAME's paper protocol for ImageNet and a GPU; here only its sizes change, through ``--set``
as a user would: the fixture's root, small images, a few epochs, and local weight files instead of the
downloads (torchvision's own state dicts of random VGG-16 and ResNet-50, so the rows load them exactly
as they would load the ImageNet files).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from tests.data.imagenet_fixture import make_imagenet
from xbench.cli import main

SUITE = Path(__file__).resolve().parents[2] / "suites" / "tame_imagenet.yaml"


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for arch in ("vgg16", "resnet50"):
        torch.manual_seed(0)
        files[arch] = folder / f"{arch}-random.pth"
        torch.save(torchvision.models.get_model(arch).state_dict(), files[arch])
    return files


@pytest.mark.slow  # about a minute on 2 idle cores: VGG-16 (138M parameters) is built and loaded several times
def test_tame_imagenet_suite_runs_on_the_fixture(tmp_path: Path, weight_files: dict[str, Path]) -> None:
    suite = yaml.safe_load(SUITE.read_text())
    rows = {m["label"]: i for i, m in enumerate(suite["methods"])}
    root = make_imagenet(tmp_path / "imagenet", per_class_train=2, per_class_val=2, size=(72, 64))
    listed = ["ILSVRC2012_val_00000002.JPEG 1", "ILSVRC2012_val_00000004.JPEG 0", "ILSVRC2012_val_00000006.JPEG 2"]
    (tmp_path / "list.txt").write_text("\n".join(listed) + "\n")
    overrides = [
        f"datasets.0.params.root={root}",
        f"datasets.0.params.image_list={tmp_path / 'list.txt'}",
        "datasets.0.params.resize=72",
        "datasets.0.params.image_size=64",
        "datasets.0.params.train_per_class=2",
        "evaluation.explain_limit=null",
        "evaluation.batch_size=4",
        "resources.cpus=2",
    ]
    for label, i in rows.items():
        arch = "vgg16" if "VGG" in label else "resnet50"
        overrides.append(f"methods.{i}.backbone.params.weights={weight_files[arch]}")
        if label.startswith("TAME"):
            overrides.append(f"methods.{i}.training.epochs=1")
            overrides.append(f"methods.{i}.training.batch_size=6")
    out = tmp_path / "out"
    args = ["run", str(SUITE), "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0

    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == set(rows)
    # The evaluation list restricts the test split to its three images, in every cell.
    top1 = [r for r in records if r["metric"] == "top1"]
    assert {r["n"] for r in top1} == {3}
    # Every row records its backbone's weights file and hash.
    for r in records:
        arch = "vgg16" if "VGG" in r["method"] else "resnet50"
        assert r["config"]["backbone"]["name"] == arch
        weights = r["config"]["backbone"]["weights"]
        assert weights["sha256"] == hashlib.sha256(weight_files[arch].read_bytes()).hexdigest()
    # AD/IC at the three kept fractions and ROAD, for TAME's own maps and Grad-CAM of the frozen network.
    metrics = {(r["method"], r["metric"], r.get("explainer")) for r in records}
    for label in ("AD 100%", "AD 50%", "AD 15%", "IC 100%", "IC 50%", "IC 15%", "road"):
        for arch in ("VGG-16", "ResNet-50"):
            assert (f"TAME ({arch})", label, "native") in metrics
            assert (arch, label, "gradcam") in metrics
    # The baselines are the torchvision models as loaded (epochs: 0), their own heads' last layer for the
    # fixture's 3 classes: torchvision's parameters.
    params = {r["method"]: r["value"] for r in records if r["metric"] == "params"}
    for arch, label in (("vgg16", "VGG-16"), ("resnet50", "ResNet-50")):
        model = torchvision.models.get_model(arch, num_classes=3)
        assert params[label] == sum(p.numel() for p in model.parameters())
