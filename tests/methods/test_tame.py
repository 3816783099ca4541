"""TAME: the frozen classifier stays bit for bit the baseline, the loss terms, maps, loading, a suite run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from xbench.data.base import ImageSplit
from xbench.engine.driver import RunOptions, run_suite
from xbench.engine.train import train
from xbench.methods.base import MethodContext
from xbench.methods.baseline import Baseline
from xbench.methods.tame import TAME, TAMENet, TAMEParams
from xbench.models.output import Batch, ModelOutput
from xbench.params import NoParams
from xbench.suite import Suite, TrainingConfig

K = 4


def context(width: int = 4) -> MethodContext:
    return MethodContext(K, 3, (16, 16), (0.5,) * 3, (0.5,) * 3, "resnet_cifar", {"depth": 8, "width": width})


def make_method(**params: object) -> TAME:
    return TAME(TAMEParams.model_validate(params), context())


def baseline_state(seed: int = 0, width: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return Baseline(NoParams(), context(width)).build().state_dict()


def tame_model(method: TAME) -> TAMENet:
    torch.manual_seed(1)
    model = method.build()
    assert isinstance(model, TAMENet)
    method.load_required(model, baseline_state())
    return model


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# -- 1. training touches only the attention module ----------------------------------------
def test_training_changes_no_classifier_tensor_and_does_change_the_attention_module() -> None:
    method = make_method()
    model = tame_model(method)
    # Make the baseline's BN running statistics non-trivial, so a reset would show too.
    for m in model.classifier.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    frozen = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    attention = {k: v.clone() for k, v in model.attention.state_dict().items()}
    data = ImageSplit(images(24), torch.arange(24) % K, None, [str(i) for i in range(K)])
    cfg = TrainingConfig(epochs=2, batch_size=8, lr=0.05, schedule="constant", augment=["flip"])
    stats = train(method, model, data, cfg, torch.device("cpu"), seed=0, progress=False)
    assert stats.steps == 6
    after = model.classifier.state_dict()
    assert after.keys() == frozen.keys()
    changed = [k for k, v in frozen.items() if not torch.equal(v, after[k])]
    assert changed == [], f"training changed frozen tensors: {changed}"
    assert not model.classifier.training and all(not m.training for m in model.classifier.modules())
    assert all(not p.requires_grad for p in model.classifier.parameters())
    moved = [k for k, v in attention.items() if not torch.equal(v, model.attention.state_dict()[k])]
    assert "fuser.weight" in moved and "convs.0.weight" in moved and "bns.0.running_mean" in moved
    assert {id(p) for p in method.trainable_parameters(model)} == {id(p) for p in model.attention.parameters()}


def test_train_mode_keeps_the_classifier_in_eval_mode() -> None:
    model = tame_model(make_method())
    model.train()
    assert model.training and model.attention.training
    assert not any(m.training for m in model.classifier.modules())
    model.eval()
    assert not model.attention.training


def test_official_classifier_mode_trains_the_frozen_classifiers_batchnorm_statistics() -> None:
    method = make_method(classifier_mode="train")
    model = tame_model(method).train()
    assert model.classifier.training and all(m.training for m in model.classifier.modules())
    before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    model(images(8))
    after = model.classifier.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all("running_" in k or "num_batches" in k for k in moved)  # statistics only, no weight
    assert all(not p.requires_grad for p in model.classifier.parameters())
    assert not any(m.training for m in model.eval().classifier.modules())
    # It no longer classifies as the baseline bit for bit, so it is not treated as the baseline.
    assert not TAME.classifies_like_required(method.params)
    assert TAME.classifies_like_required(make_method().params)


# -- 2. the loss against plain arithmetic ---------------------------------------------------
def _bilinear(img: list[list[float]], out_h: int, out_w: int) -> list[list[float]]:
    """torch's bilinear upsampling with align_corners=False, by hand."""
    h, w = len(img), len(img[0])

    def coords(i: int, n_in: int, n_out: int) -> tuple[int, int, float]:
        s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = math.floor(s)
        return i0, min(i0 + 1, n_in - 1), s - i0

    out = []
    for i in range(out_h):
        r0, r1, fr = coords(i, h, out_h)
        row = []
        for j in range(out_w):
            c0, c1, fc = coords(j, w, out_w)
            top = img[r0][c0] * (1 - fc) + img[r0][c1] * fc
            bottom = img[r1][c0] * (1 - fc) + img[r1][c1] * fc
            row.append(top * (1 - fr) + bottom * fr)
        out.append(row)
    return out


def _area(maps: list[list[list[float]]], eps: float, p: float) -> float:
    values = [(v + eps) ** p for m in maps for row in m for v in row]
    return sum(values) / len(values)


def _tv(maps: list[list[list[float]]], batch: int, beta: float) -> float:
    total = 0.0
    for m in maps:
        h, w = len(m), len(m[0])
        total += sum((m[i + 1][j] - m[i][j]) ** 2 for i in range(h - 1) for j in range(w))
        total += sum((m[i][j + 1] - m[i][j]) ** 2 for i in range(h) for j in range(w - 1))
        border = sum(m[0][j] ** 2 + m[h - 1][j] ** 2 for j in range(w))
        border += sum(m[i][0] ** 2 + m[i][w - 1] ** 2 for i in range(h))
        total += beta * border
    return total / (2 * batch)


@pytest.mark.parametrize("masking", ["diagonal", "official"])
def test_loss_terms_match_a_hand_computation(masking: str) -> None:
    b, k, h, w, size = 3, 3, 2, 3, 4
    g = torch.Generator().manual_seed(3)
    a = torch.rand(b, k, h, w, generator=g, dtype=torch.float64) * 0.9 + 0.05
    x = torch.rand(b, 1, size, size, generator=g, dtype=torch.float64)
    y = torch.tensor([2, 0, 2])
    weight = [0.7, -1.3, 2.1]
    bias = [0.1, 0.0, -0.4]

    def classify(images: torch.Tensor) -> torch.Tensor:  # a linear classifier of the pixel sum
        s = images.sum(dim=(1, 2, 3))
        return s[:, None] * torch.tensor(weight, dtype=s.dtype) + torch.tensor(bias, dtype=s.dtype)

    method = make_method(masking=masking)
    out = ModelOutput(logits=torch.zeros(b, k), maps=[a])
    terms = method.loss_terms(out, Batch(x, y, torch.arange(b)), classify)
    total = method.objective(out, Batch(x, y, torch.arange(b)), classify)

    al, xl, yl = a.tolist(), x[:, 0].tolist(), y.tolist()
    ce = 0.0
    for i in range(b):
        up = _bilinear(al[i][yl[i]], size, size)  # the label's map at the input size
        s = sum(xl[i][r][c] * up[r][c] for r in range(size) for c in range(size))
        z = [weight[c] * s + bias[c] for c in range(k)]
        ce += -(z[yl[i]] - math.log(sum(math.exp(v) for v in z)))
    ce /= b
    # Area and TV act on the maps at the attention resolution (h × w), not upsampled.
    if masking == "diagonal":
        reg = [al[i][yl[i]] for i in range(b)]
    else:  # every sample's map for every label of the batch: B × B maps
        reg = [al[i][yl[j]] for i in range(b) for j in range(b)]
    assert len(reg) == (b if masking == "diagonal" else b * b)
    area = _area(reg, 5e-4, 0.3)
    tv = _tv(reg, b, 0.3)

    assert float(terms["ce"]) == pytest.approx(ce, rel=1e-9)
    assert float(terms["area"]) == pytest.approx(area, rel=1e-9)
    assert float(terms["tv"]) == pytest.approx(tv, rel=1e-9)
    assert float(total) == pytest.approx(1.5 * ce + 2 * area + 0.01 * tv, rel=1e-9)


def test_loss_constants_are_params_and_the_gradient_reaches_only_the_attention_module() -> None:
    method = make_method(ce_weight=0.0, area_weight=1.0, tv_weight=0.0, area_eps=0.0, area_power=1.0)
    model = tame_model(method).train()
    x, y = images(4), torch.arange(4) % K
    out = model(x)
    loss = method.training_step(model, Batch(x, y, torch.arange(4)))
    torch.testing.assert_close(loss, out.maps[0][torch.arange(4), y].mean())
    full = make_method()
    full.training_step(model, Batch(x, y, torch.arange(4))).backward()
    assert all(p.grad is None for p in model.classifier.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.attention.parameters())


# -- 3. shapes and logits ------------------------------------------------------------------
def test_maps_logits_and_native_maps() -> None:
    x = images(5)
    torch.manual_seed(0)
    base = Baseline(NoParams(), context()).build().eval()
    for taps, hw in ((None, (16, 16)), ([1, 2], (8, 8))):
        method = make_method(taps=taps)
        model = method.build()
        method.load_required(model, base.state_dict())
        for mode in (True, False):  # the frozen classifier's logits do not depend on the mode
            model.train(mode)
            out = model(x)
            assert out.maps[0].shape == (5, K, *hw)
            assert torch.equal(out.logits, base(x).logits)
        a = out.maps[0].detach()
        assert float(a.min()) > 0 and float(a.max()) < 1  # sigmoid
        target = torch.tensor([3, 0, 1, 2, 3])
        maps = method.native_maps(model, x, target)
        assert maps.shape == (5, 16, 16)
        assert float(maps.amin()) >= 0 and float(maps.amax()) <= 1
    # The native map is the target class's map: a different target gives a different map.
    assert not torch.equal(maps, method.native_maps(model, x, (target + 1) % K))


def _min_max(m: list[list[float]]) -> list[list[float]]:
    lo, hi = min(min(r) for r in m), max(max(r) for r in m)
    return [[(v - lo) / (hi - lo) for v in r] for r in m]


@pytest.mark.parametrize("maps", ["logits", "sigmoid"])
def test_native_maps_follow_the_official_evaluation_by_hand(maps: str) -> None:
    # Official eval_script.py: cam = normalizeMinMax(get_c(class)) at the module's resolution, then a
    # bilinear upsampling to the input size. maps: sigmoid reads get_a (σ of the same logits) instead.
    x = images(2)
    method = make_method(taps=[1, 2], maps=maps)  # an 8 × 8 module resolution, a 16 × 16 input
    model = tame_model(method).eval()
    target = torch.tensor([2, 1])
    got = method.native_maps(model, x, target)
    with torch.no_grad():
        c = model(x).extras["class_logit_maps"]
    for b in range(2):
        cam = c[b, int(target[b])].tolist()
        if maps == "sigmoid":
            cam = [[1 / (1 + math.exp(-v)) for v in r] for r in cam]
        expected = torch.tensor(_bilinear(_min_max(cam), 16, 16))
        torch.testing.assert_close(got[b], expected, atol=1e-5, rtol=0)


def test_logit_and_sigmoid_maps_rank_pixels_alike_but_differ_in_value() -> None:
    x = images(4)
    logits, sigmoid = (make_method(taps=[1, 2], maps=m) for m in ("logits", "sigmoid"))
    model = tame_model(logits).eval()
    target = torch.tensor([0, 1, 2, 3])
    a, b = logits.native_maps(model, x, target), sigmoid.native_maps(model, x, target)
    assert float((a - b).abs().mean()) > 1e-3
    with torch.no_grad():
        c = model(x).extras["class_logit_maps"][torch.arange(4), target]
    assert torch.equal(c.flatten(1).argsort(dim=1), torch.sigmoid(c).flatten(1).argsort(dim=1))


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="taps"):
        TAMEParams(taps=[2, 1])
    with pytest.raises(ValueError, match="taps"):
        TAMEParams(taps=[])
    with pytest.raises(ValueError):
        TAMEParams.model_validate({"masking": "bxb"})
    with pytest.raises(ValueError, match="below 3"):
        make_method(taps=[1, 3]).build()


# -- 4. loading the baseline ----------------------------------------------------------------
def test_load_required_loads_the_baseline_strictly_and_refreezes() -> None:
    state = baseline_state(seed=5)
    method = make_method()
    model = method.build()
    assert isinstance(model, TAMENet)
    model.classifier.requires_grad_(True)
    model.classifier.train()
    method.load_required(model, state)
    loaded = model.classifier.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert all(not p.requires_grad for p in model.classifier.parameters())
    assert not model.classifier.training
    with pytest.raises(RuntimeError):  # another backbone width
        method.load_required(model, baseline_state(width=8))
    with pytest.raises(RuntimeError):  # a missing key
        method.load_required(model, {k: v for k, v in state.items() if not k.startswith("fc.")})
    with pytest.raises(RuntimeError):  # the TAME model's own state is not a baseline's
        method.load_required(model, model.state_dict())


# -- 5. a suite run: the runner trains the baseline cell first --------------------------------
def _suite(tmp: Path, method: str) -> Suite:
    return Suite.model_validate(
        {
            "name": f"tiny-{method}",
            "datasets": [
                {
                    "name": "synthetic_shapes",
                    "params": {"n_train": 192, "n_test": 64, "image_size": 16, "channels": 3, "seed": 0},
                }
            ],
            "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
            "methods": [method],
            "metrics": ["top1"],
            "explainers": ["native"],
            "seeds": [0],
            "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "schedule": "constant"},
            "evaluation": {"batch_size": 64},
            "device": "cpu",
            "output": str(tmp / f"out-{method}"),
            "cache_dir": str(tmp / f"cache-{method}"),
        }
    )


def test_suite_with_tame_only_trains_the_baseline_first(tmp_path: Path) -> None:
    lines: list[str] = []
    tame = run_suite(_suite(tmp_path, "tame"), RunOptions(progress=False, fail_fast=True, echo=lines.append))
    assert tame.failed_cells == [], lines
    assert len(list((tmp_path / "cache-tame" / "models").rglob("*.pt"))) == 2  # the baseline's and TAME's
    base = run_suite(_suite(tmp_path, "baseline"), RunOptions(progress=False, fail_fast=True, echo=lines.append))
    (tame_top1,) = [r for r in tame.records if r.metric == "top1"]
    (base_top1,) = [r for r in base.records if r.metric == "top1"]
    assert tame_top1.method == "tame" and tame_top1.status == "ok"
    assert tame_top1.value == base_top1.value and tame_top1.n == base_top1.n == 64
