"""No hidden device-to-host copies in the metrics' hot paths (issue 18's "runs on CUDA too").

There is no GPU here, so the test watches what would cost a synchronisation on one: every
``Tensor.cpu()``, ``.numpy()``, ``.item()``, ``.tolist()``, ``float(t)`` and ``bool(t)``, counted
with a :class:`~torch.overrides.TorchFunctionMode` while a metric computes. A perturbation metric
may copy a batch's results to the host once (its correlations and random draws are numpy's, in
Quantus's order), but the count must not grow with the number of perturbation steps: a copy per
step or per image is the round trip that leaves an accelerator idle.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.metrics.test_faithfulness import context, tiny_cnn
from xbench.metrics.exit_agreement import cosine, pearson, ssim, top_iou
from xbench.metrics.localization import roc_auc, top_q_iou
from xbench.registry import METRICS

N, SIZE = 7, 16
SYNCS = frozenset({"cpu", "numpy", "item", "tolist", "__float__", "__bool__"})


class HostCopies(TorchFunctionMode):
    """Counts the tensor calls that copy to the host (and so synchronise a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name in SYNCS:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


#: metric: (params, the same metric with more perturbation steps)
MORE_STEPS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "faithfulness_correlation": ({"nr_runs": 4}, {"nr_runs": 8}),
    "pixel_flipping": ({"steps": 4}, {"steps": 8}),
    "region_perturbation": ({"regions": 4}, {"regions": 8}),
    "selectivity": ({"patch_size": 8}, {"patch_size": 4}),
    "monotonicity_correlation": ({"steps": 4}, {"steps": 8}),
    "road": ({"percentages": [25, 50]}, {"percentages": [10, 25, 50, 75]}),
    "irof": ({"n_segments": 4}, {"n_segments": 8}),
    "insertion_auc": ({"steps": 4}, {"steps": 8}),
    "deletion_auc": ({"steps": 4}, {"steps": 8}),
}


def host_copies(name: str, params: dict[str, Any], batch_size: int) -> int:
    g = torch.Generator().manual_seed(0)
    x, maps = torch.rand(N, 1, SIZE, SIZE, generator=g), torch.rand(N, SIZE, SIZE, generator=g)
    ctx = context(tiny_cnn(1), x, maps, batch_size=batch_size)
    ctx.explanations()  # the maps are the explainer's work, not the metric's
    cls = METRICS.get(name)
    with HostCopies() as copies:
        (result,) = cls(cls.Params(n=N, **params)).compute(ctx)
    assert result.n > 0
    return copies.total


@pytest.mark.parametrize("name", sorted(MORE_STEPS))
def test_host_copies_do_not_grow_with_the_steps(name: str) -> None:
    few, many = MORE_STEPS[name]
    batches = -(-N // 3)
    copies = host_copies(name, few, batch_size=3)
    assert copies == host_copies(name, many, batch_size=3)
    # a few per batch (results, the batch's originals) and a few per call (maps, settings)
    assert copies <= 4 * batches + 6


def test_the_counter_sees_a_copy_per_step() -> None:
    # The check can fail: a loop that copies every step's scores is counted.
    scores = torch.rand(4, 3)
    with HostCopies() as copies:
        for _ in range(5):
            scores[:, 0].cpu()
            float(scores[0, 0])
    assert copies.total == 10


def test_map_similarities_and_localisation_make_no_host_copy() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(9, 20, 20, generator=g), torch.rand(9, 20, 20, generator=g)
    masks = torch.rand(9, 20, 20, generator=g) > 0.6
    with HostCopies() as copies:
        values = [cosine(a, b), pearson(a, b), ssim(a, b), top_iou(a, b, 0.1)]
        values += [roc_auc(a, masks), top_q_iou(a, masks, 0.1)]
    assert copies.total == 0
    assert all(v.shape == (9,) for v in values)


def test_maps_from_the_store_need_no_forward_pass() -> None:
    # A re-run reads the maps from the cache; the classes they explain (the predictions) are not recomputed.
    import dataclasses

    g = torch.Generator().manual_seed(2)
    x, maps = torch.rand(N, 1, SIZE, SIZE, generator=g), torch.rand(N, SIZE, SIZE, generator=g)
    ctx = context(tiny_cnn(1), x, maps)
    stored = dataclasses.replace(ctx, store=lambda name, compute: maps)
    torch.testing.assert_close(stored.explanations(), maps)
    assert not stored.has("predictions")
    fresh = dataclasses.replace(ctx, store=lambda name, compute: compute(), _memo={})
    fresh.explanations()
    assert fresh.has("predictions")  # computing maps does need them
