"""Binary sub-network metrics: thresholds, precision/recall at 1:9, parameter fractions."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from xbench.data.base import ImageSplit
from xbench.methods.base import MethodContext
from xbench.methods.coded_resnext import CodedResNeXtMethod, CodedResNeXtParams
from xbench.methods.coded_resnext_binary import count_binary_parameters
from xbench.metrics.binary import (
    BinaryParamFraction,
    BinaryPrecision,
    BinaryRecall,
    best_f1_threshold,
    binary_scores,
    precision_recall,
    sample_pairs,
)
from xbench.metrics.context import EvalContext
from xbench.metrics.efficiency import count_parameters

K = 4


def test_best_f1_threshold_by_hand() -> None:
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    positive = torch.tensor([True, False, True, False, False])
    # Keeping the top j: F1 = 2·TP/(P + j) = 2/3, 2/4, 4/5, 4/6, 4/7 -> keep 3, cut between 0.7 and 0.6.
    assert best_f1_threshold(scores, positive) == pytest.approx(0.65)
    # A cut may not split tied scores: keeping one of the two 1.0s is not allowed.
    assert best_f1_threshold(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([True, False, False])) == 0.5


def test_precision_recall_by_hand() -> None:
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    positive = torch.tensor([True, False, True, True])
    assert precision_recall(scores, positive, 0.75) == (0.5, pytest.approx(1 / 3))
    assert precision_recall(scores, positive, 2.0) == (0.0, 0.0)  # nothing predicted positive


def test_pairs_have_nine_negatives_per_positive_and_are_seeded() -> None:
    labels = torch.tensor([0] * 2 + [1] * 3 + [2] * 20)
    index, cls = sample_pairs(labels, 3, 9, seed=0)
    for k, positives in enumerate((2, 3, 20)):
        mine = cls == k
        assert int((labels[index[mine]] == k).sum()) == positives
        assert int((labels[index[mine]] != k).sum()) == 9 * positives  # class 2 needs replacement: 180 of 5
    again = sample_pairs(labels, 3, 9, seed=0)
    assert torch.equal(index, again[0]) and torch.equal(cls, again[1])
    assert not torch.equal(index, sample_pairs(labels, 3, 9, seed=1)[0])


class LabelReader(nn.Module):
    """A fake binary classifier of class k; image b carries its label in pixel (0, 0)."""

    def __init__(self, k: int, perfect: bool) -> None:
        super().__init__()
        self.k, self.perfect = k, perfect

    def forward(self, x: Tensor) -> Tensor:
        if not self.perfect:
            return torch.zeros(len(x))
        return -(x[:, 0, 0, 0] * 10 - self.k).abs()


class FakeModel(nn.Module):
    """A model with binary sub-networks that read the label (perfect) or say nothing (constant)."""

    num_classes = K

    def __init__(self, perfect: bool) -> None:
        super().__init__()
        self.perfect = perfect

    def binary_classifier(self, k: int) -> nn.Module:
        return LabelReader(k, self.perfect)


def split(n: int, seed: int) -> ImageSplit:
    labels = torch.arange(n) % K
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    x[:, 0, 0, 0] = labels / 10
    return ImageSplit(x, labels, None, [str(c) for c in range(K)])


def eval_context(model: nn.Module) -> EvalContext:
    method = CodedResNeXtMethod(CodedResNeXtParams(), MethodContext(K, 1, (8, 8), (0.5,), (0.25,), "resnet_cifar", {}))
    return EvalContext(
        model, method, split(40, 1), torch.device("cpu"), batch_size=16, progress=False, train=split(60, 0)
    )


@pytest.mark.parametrize(("perfect", "precision", "recall"), [(True, 1.0, 1.0), (False, 0.1, 1.0)])
def test_precision_and_recall_on_known_scores(perfect: bool, precision: float, recall: float) -> None:
    # Constant scores admit a single cut (everything positive): recall 1, precision = the 1:9 prior.
    ctx = eval_context(FakeModel(perfect))
    (p,) = BinaryPrecision().compute(ctx)
    (r,) = BinaryRecall().compute(ctx)
    assert p.value == pytest.approx(precision) and r.value == pytest.approx(recall)
    assert p.params["classes"] == list(range(K)) and len(p.params["per_class"]) == K
    assert p.n == 10 * 40  # each of the 40 test images is a positive once, with 9 negatives
    assert p.params["negatives_per_positive"] == 9


def test_binary_param_fraction_counts_the_extracted_networks() -> None:
    ctx = MethodContext(K, 1, (16, 16), (0.5,), (0.25,), "resnet_cifar", {})
    model = CodedResNeXtMethod(CodedResNeXtParams(), ctx).build().eval()
    ectx = EvalContext(model, CodedResNeXtMethod(CodedResNeXtParams(), ctx), split(8, 0), torch.device("cpu"), 8)
    (result,) = BinaryParamFraction().compute(ectx)
    total = count_parameters(model)
    expected = [count_binary_parameters(model, k) / total for k in range(K)]
    assert result.params["per_class"] == expected
    assert result.value == pytest.approx(sum(expected) / K)
    assert 0.3 < result.value < 1.0


def test_models_without_binary_subnetworks_give_no_values() -> None:
    ctx = eval_context(nn.Linear(2, 2))
    for metric in (BinaryPrecision(), BinaryRecall(), BinaryParamFraction()):
        assert metric.compute(ctx) == []


def test_metrics_on_a_coded_resnext_agree_with_its_restricted_forward() -> None:
    torch.manual_seed(0)
    ctx = MethodContext(K, 1, (8, 8), (0.5,), (0.25,), "resnet_cifar", {})
    method = CodedResNeXtMethod(CodedResNeXtParams(), ctx)
    model = method.build().eval()
    train, test = split(24, 0), split(16, 1)
    ectx = EvalContext(model, method, test, torch.device("cpu"), 32, progress=False, train=train)
    (p,) = BinaryPrecision().compute(ectx)
    (r,) = BinaryRecall().compute(ectx)

    def scores(data: ImageSplit) -> tuple[Tensor, Tensor, Tensor]:
        index, cls = sample_pairs(data.labels, K, 9, seed=0)
        with torch.no_grad():
            return model.binary_scores(data.images[index], cls), cls, data.labels[index] == cls

    (s_tr, c_tr, pos_tr), (s_te, c_te, pos_te) = scores(train), scores(test)
    expected = []
    for k in range(K):
        tau = best_f1_threshold(s_tr[c_tr == k], pos_tr[c_tr == k])
        expected.append(precision_recall(s_te[c_te == k], pos_te[c_te == k], tau))
    assert p.params["per_class"] == pytest.approx([e[0] for e in expected], abs=1e-6)
    assert r.params["per_class"] == pytest.approx([e[1] for e in expected], abs=1e-6)


def test_binary_latency_times_the_full_model_and_every_extracted_subnetwork(monkeypatch: pytest.MonkeyPatch) -> None:
    from xbench.metrics import binary as binary_module
    from xbench.metrics.binary import BinaryLatency, BinarySpeedup
    from xbench.metrics.latency import LatencyParams

    ctx = MethodContext(K, 1, (16, 16), (0.5,), (0.25,), "resnet_cifar", {})
    method = CodedResNeXtMethod(CodedResNeXtParams(), ctx)
    model = method.build().eval()
    ectx = EvalContext(model, method, split(12, 0), torch.device("cpu"), 8, progress=False)
    timed: list[object] = []
    fake_ms = iter([4.0, 1.0, 2.0, 3.0, 2.0])  # the full model, then classes 0..3

    def fake_time_calls(fn: object, inputs: list[Tensor], warmup: int, device: torch.device) -> list[float]:
        timed.append(fn)
        assert len(inputs) == 6 and all(x.shape == (1, 1, 8, 8) for x in inputs)
        return [next(fake_ms) / 1e3] * len(inputs)

    monkeypatch.setattr(binary_module, "time_calls", fake_time_calls)
    params = LatencyParams(repeats=6, warmup=0)
    (latency,) = BinaryLatency(params).compute(ectx)
    (speedup,) = BinarySpeedup(params).compute(ectx)
    assert len(timed) == 1 + K  # measured once, shared by both metrics
    assert [type(fn).__name__ for fn in timed[1:]] == [type(model.binary_classifier(0)).__name__] * K
    assert latency.value == pytest.approx(2.0) and latency.params["per_class_p50_ms"] == pytest.approx([1, 2, 3, 2])
    assert speedup.value == pytest.approx(4.0 / 2.0)
    assert latency.params["threads"] == torch.get_num_threads() and latency.params["images"] == 6
    assert BinaryLatency.measures_time and BinarySpeedup.higher_is_better


def test_binary_latency_on_a_real_coded_resnext_is_positive() -> None:
    from xbench.metrics.binary import BinaryLatency, BinarySpeedup
    from xbench.metrics.latency import LatencyParams

    ctx = MethodContext(K, 1, (16, 16), (0.5,), (0.25,), "resnet_cifar", {})
    method = CodedResNeXtMethod(CodedResNeXtParams(), ctx)
    ectx = EvalContext(method.build().eval(), method, split(8, 0), torch.device("cpu"), 8, progress=False)
    (latency,) = BinaryLatency(LatencyParams(repeats=5, warmup=1)).compute(ectx)
    assert latency.value > 0 and len(latency.params["per_class_p50_ms"]) == K
    assert BinaryLatency(LatencyParams()).compute(eval_context(nn.Linear(2, 2))) == []
    assert BinarySpeedup(LatencyParams()).compute(eval_context(nn.Linear(2, 2))) == []


def test_shared_front_gives_the_scores_of_the_whole_sub_networks() -> None:
    """Coded ResNeXt's classifiers share the stem and plain first stage: run once per image, same scores."""
    torch.manual_seed(0)
    model = (
        CodedResNeXtMethod(CodedResNeXtParams(), MethodContext(K, 1, (8, 8), (0.5,), (0.25,), "resnet_cifar", {}))
        .build()
        .eval()
    )
    front, stages = model.binary_front()
    assert stages == 1 and len(front) == 2  # narrow: the first stage is plain (10/10), the next two are coded

    class Whole:  # the same classifiers without the shared front: each pair runs its whole sub-network
        num_classes = K
        binary_classifier = model.binary_classifier

    data = split(30, 2)
    index, cls = sample_pairs(data.labels, K, 9, seed=0)
    shared = binary_scores(model, data, index, cls, torch.device("cpu"), batch_size=7)  # 5 chunks of images
    whole = binary_scores(Whole(), data, index, cls, torch.device("cpu"), batch_size=7)  # type: ignore[arg-type]
    assert len(shared) == len(index) == 300 and shared.std() > 0
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-5)
    model.train()  # scoring evaluates copies: the model's own modules keep their mode and statistics
    again = binary_scores(model, data, index, cls, torch.device("cpu"), batch_size=7)
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(again, shared)
