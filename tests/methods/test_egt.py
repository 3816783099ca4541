"""EGT: exits, attention maps, the consistency loss and its gradient, the exit policy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xbench.data.base import ImageSplit
from xbench.methods.base import MethodContext
from xbench.methods.egt import EGT, EarlyExitNet, EGTParams, attention_maps, consistency_loss
from xbench.metrics.context import EvalContext, LogitsOnly
from xbench.metrics.efficiency import count_macs
from xbench.metrics.exits import ExitFraction, ExpectedFlops, FlopsSpeedup, PolicyTop1, exit_costs
from xbench.models.exits import calibrate_thresholds, exit_confidences, exit_indices, policy_predictions
from xbench.models.output import Batch

K = 4


def make_method(**params: object) -> EGT:
    ctx = MethodContext(K, 1, (16, 16), (0.5,), (0.5,), "resnet_cifar", {"depth": 8, "width": 4})
    return EGT(EGTParams.model_validate(params), ctx)


def batch(b: int = 6) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.rand(b, 1, 16, 16, generator=g), torch.arange(b) % K, torch.arange(b))


def test_network_has_an_exit_after_every_stage_and_the_final_exit_is_the_logits() -> None:
    model = make_method().build().eval()
    assert isinstance(model, EarlyExitNet) and model.exit_stages == [0, 1, 2]
    out = model(batch().x)
    assert [z.shape for z in out.exit_logits] == [(6, K)] * 3
    assert torch.equal(out.logits, out.exit_logits[-1])
    custom = make_method(exits=[1]).build()
    assert custom.exit_stages == [1, 2]


def test_exit_weights_must_match_the_exits_the_backbone_has() -> None:
    # ResNet-8 has 3 stages: 2 early exits + the final one need 3 weights, found when the model is built.
    with pytest.raises(ValueError, match=r"exit_weights needs 3 values \(2 early exits \+ final\), got 2"):
        make_method(exit_weights=[1, 1]).build()
    assert make_method(exit_weights=[0.5, 0.5, 1]).build().num_exits == 3
    assert make_method(exits=[1], exit_weights=[0.5, 1]).build().num_exits == 2


def test_forward_exit_matches_forward_and_skips_later_stages() -> None:
    model = make_method().build().eval()
    x = batch().x
    full = model(x)
    ran: list[int] = []
    hooks = [s.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, s in enumerate(model.backbone.stages)]
    for i in range(3):
        ran.clear()
        upto = model.forward_exit(x, i)
        assert len(upto) == i + 1
        for got, want in zip(upto, full.exit_logits, strict=False):
            torch.testing.assert_close(got, want)
        assert ran == list(range(i + 1)), f"exit {i} ran stages {ran}"
    for h in hooks:
        h.remove()


def test_cam_maps_match_a_hand_computation() -> None:
    model = make_method().build().eval()
    b = batch()
    out = model(b.x)
    with torch.no_grad():
        maps = attention_maps(out, b.y, "cam", size=(16, 16))
    f1, w1 = out.extras["exit_features"][1], model.heads[1].fc.weight
    cam = (f1 * w1[b.y][:, :, None, None]).sum(dim=1, keepdim=True)
    cam = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(maps[1], (cam - lo) / (hi - lo + 1e-8))
    assert all(m.shape == (6, 16, 16) for m in maps)
    for m in maps:
        assert float(m.min()) == pytest.approx(0, abs=1e-6) and float(m.max()) == pytest.approx(1, abs=1e-5)


def test_activation_maps_are_mean_squared_features() -> None:
    model = make_method(attention="activation").build().eval()
    out = model(batch().x)
    (m0, *_rest) = attention_maps(out, batch().y, "activation")
    raw = out.extras["exit_features"][0].pow(2).mean(dim=1)  # exit 0 has the largest resolution
    lo, hi = raw.amin(dim=(1, 2), keepdim=True), raw.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(m0, (raw - lo) / (hi - lo + 1e-8))


def test_consistency_loss_is_zero_for_identical_maps_and_one_minus_cosine_otherwise() -> None:
    a = torch.rand(3, 5, 5)
    assert float(consistency_loss([a, a.clone()])) == pytest.approx(0, abs=1e-6)
    b = torch.rand(3, 5, 5)
    expected = (1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)).mean()
    assert float(consistency_loss([a, b])) == pytest.approx(float(expected), rel=1e-6)
    # Two early exits: the terms add up.
    assert float(consistency_loss([a, a, b])) == pytest.approx(2 * float(expected), rel=1e-6)


def test_consistency_gradient_reaches_early_exits_but_not_the_final_map() -> None:
    method = make_method()
    model = method.build().train()
    b = batch()
    maps = attention_maps(model(b.x), b.y, "cam")
    consistency_loss(maps).backward()

    def grad_norm(module: torch.nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad_norm(model.heads[0]) > 0 and grad_norm(model.heads[1]) > 0
    assert grad_norm(model.backbone.stages[0]) > 0  # the early exits' features learn too
    # The final map is a stop-gradient teacher: nothing that only feeds it gets a gradient.
    assert grad_norm(model.heads[2]) == 0
    assert grad_norm(model.backbone.stages[2]) == 0


def test_loss_adds_lambda_times_consistency_to_the_exits_cross_entropies() -> None:
    b = batch()
    for lam in (0.0, 2.5):
        method = make_method(lam=lam, exit_weights=[0.5, 1.0, 2.0], exits=[0, 1])
        torch.manual_seed(0)
        model = method.build().eval()
        out = model(b.x)
        ce = sum(w * F.cross_entropy(z, b.y) for w, z in zip([0.5, 1.0, 2.0], out.exit_logits, strict=True))
        cons = consistency_loss(attention_maps(out, b.y, "cam"))
        assert float(method.loss(out, b).detach()) == pytest.approx(float((ce + lam * cons).detach()), rel=1e-5)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="exit_weights"):
        EGTParams(exits=[0, 1], exit_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="thresholds"):
        EGTParams(exits=[0], thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match="before the last"):
        make_method(exits=[2]).build()


# -- the exit policy ----------------------------------------------------------------------
def test_threshold_zero_exits_everything_at_the_first_exit_and_above_one_nothing_early() -> None:
    logits = [torch.randn(50, K) for _ in range(3)]
    conf = exit_confidences(logits)
    assert exit_indices(conf, [0.0, 0.0]).eq(0).all()
    assert exit_indices(conf, [1.01, 1.01]).eq(2).all()
    preds, idx = policy_predictions(logits, [1.01, 0.0])
    assert idx.eq(1).all() and torch.equal(preds, logits[1].argmax(1))


def test_exit_indices_pick_the_first_confident_exit() -> None:
    conf = torch.tensor([[0.9, 0.2, 0.2, 0.6], [0.1, 0.8, 0.3, 0.7], [0.5, 0.5, 0.5, 0.5]])
    assert exit_indices(conf, [0.6, 0.7]).tolist() == [0, 1, 2, 0]


def test_calibration_keeps_accuracy_within_the_allowed_drop() -> None:
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, K, (2000,), generator=g)
    onehot = F.one_hot(y, K).float()
    logits = [torch.randn(2000, K, generator=g) * s + onehot * c for s, c in ((2, 1), (1, 2), (0.3, 3))]
    final_acc = float((logits[-1].argmax(1) == y).float().mean())
    for drop in (0.0, 0.5, 5.0):
        (tau, tau2) = calibrate_thresholds(logits, y, drop)
        assert tau == tau2
        preds, _idx = policy_predictions(logits, [tau, tau])
        assert float((preds == y).float().mean()) >= final_acc - drop / 100 - 1e-9
    # A larger allowed drop never needs a higher threshold.
    assert calibrate_thresholds(logits, y, 5.0)[0] <= calibrate_thresholds(logits, y, 0.0)[0]


def _context(method: EGT) -> EvalContext:
    g = torch.Generator().manual_seed(2)
    data = ImageSplit(torch.rand(40, 1, 16, 16, generator=g), torch.arange(40) % K, None, [str(i) for i in range(K)])
    model = method.build().eval()
    return EvalContext(model, method, data, torch.device("cpu"), 16, progress=False, train=data)


def test_exit_metrics_with_threshold_zero() -> None:
    ctx = _context(make_method(thresholds=[0.0, 0.0]))
    fractions = ExitFraction().compute(ctx)
    assert [(r.exit, r.value) for r in fractions] == [(0, 1.0), (1, 0.0), (2, 0.0)]
    (acc,) = PolicyTop1().compute(ctx)
    pred = ctx.predictions()
    assert acc.value == pytest.approx(float((pred.exit_logits[0].argmax(1) == pred.labels).float().mean()))
    costs, full = exit_costs(ctx.model, ctx.example_input(1))
    assert costs[0] < costs[1] < costs[2]
    (expected,) = ExpectedFlops().compute(ctx)
    (speedup,) = FlopsSpeedup().compute(ctx)
    assert expected.value == costs[0]
    assert speedup.value == pytest.approx(full / costs[0])
    # The full path without early heads costs less than answering at the last exit with them,
    # and it is what the `flops` metric reports for an early-exit model.
    assert full < costs[2]
    assert full == count_macs(LogitsOnly(ctx.model), ctx.example_input(1))[0]


def test_exit_metrics_with_threshold_above_one() -> None:
    ctx = _context(make_method(thresholds=[1.5, 1.5]))
    assert [r.value for r in ExitFraction().compute(ctx)] == [0.0, 0.0, 1.0]
    costs, full = exit_costs(ctx.model, ctx.example_input(1))
    (speedup,) = FlopsSpeedup().compute(ctx)
    assert speedup.value == pytest.approx(full / costs[2]) and speedup.value < 1


def test_calibrated_policy_records_its_source() -> None:
    ctx = _context(make_method())
    (acc,) = PolicyTop1().compute(ctx)
    assert acc.params["thresholds_from"] == "train" and len(acc.params["thresholds"]) == 2


def test_policy_top1_records_the_accuracy_cost_curve_over_shared_thresholds() -> None:
    ctx = _context(make_method(thresholds=[0.9, 0.9]))
    (acc,) = PolicyTop1().compute(ctx)
    curve = acc.params["curve"]
    pred = ctx.predictions()
    costs, _ = exit_costs(ctx.model, ctx.example_input(1))
    assert [p["threshold"] for p in curve] == sorted(p["threshold"] for p in curve)
    for point in curve:  # each point is the policy with that threshold at both early exits
        preds, idx = policy_predictions(pred.exit_logits, [point["threshold"]] * 2)
        assert point["top1"] == pytest.approx(float((preds == pred.labels).double().mean()))
        share = idx.bincount(minlength=3).double() / len(idx)
        assert point["expected_macs"] == pytest.approx(sum(float(s) * c for s, c in zip(share, costs, strict=True)))
    # A higher threshold never lets more images leave early, so the expected cost never falls.
    macs = [p["expected_macs"] for p in curve]
    assert macs == sorted(macs)
    # Threshold 0 sends every image out at the first exit; 1.0 (almost) every image to the last.
    assert curve[0]["threshold"] == 0.0 and curve[0]["expected_macs"] == pytest.approx(costs[0])
