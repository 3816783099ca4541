"""The order cells start in: longest critical path first, from an estimated cost per cell.

With more cells than workers, the order decides when the run ends (LPT scheduling). The cost
is estimated, not declared: a forward pass of the cell's untrained model is timed on 16 test
images and multiplied by the images the cell will push through it. A MACs count would be
simpler but wrong where it matters: Coded ResNeXt's grouped convolutions take far more time per
MAC than the baseline's dense ones (BENCHMARKS.md, "Numbers behind the code").
"""

from __future__ import annotations

import logging

import torch

from xbench.engine.cell import build_model
from xbench.engine.resolved import ResolvedCell
from xbench.engine.worker import Worker
from xbench.metrics.latency import time_calls

log = logging.getLogger(__name__)

#: Forward passes per explained image and explainer that a suite's explanation metrics make (the
#: quick suite's faithfulness metrics make about 150); only the cost estimate uses it.
EXPLAIN_FORWARDS = 150


class CostModel:
    """Estimated seconds of one thread per cell of ``worker``'s plan."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._per_image: dict[tuple[str, str], float] = {}

    def cell_cost(self, cell: ResolvedCell) -> float:
        """:meth:`seconds_per_image` × :meth:`images_through`."""
        return self.seconds_per_image(cell) * self.images_through(cell)

    def seconds_per_image(self, cell: ResolvedCell) -> float:
        """One timed forward pass of the untrained model on 16 test images (CPU, the cells' thread count).

        Measured once per (dataset, method row): seeds change the weights, not the network.
        """
        key = (cell.dataset.display, cell.method.display)
        if key not in self._per_image:
            self._per_image[key] = self._time_forward(cell)
        return self._per_image[key]

    def _time_forward(self, cell: ResolvedCell) -> float:
        data = self.worker.data_for(cell.dataset)
        method = cell.method_for(data)
        threads = torch.get_num_threads()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.set_num_threads(self.worker.plan.suite.resources.cpus or 1)
                x = data.test.images[:16]
                model = build_model(method, cell.channels_last).eval()
                (seconds,) = time_calls(model, [x], warmup=1, device=torch.device("cpu"))
                return seconds / len(x)
        finally:
            torch.set_num_threads(threads)

    def images_through(self, cell: ResolvedCell) -> int:
        """Images the cell pushes through its model, counted in forward passes.

        3 per training image and epoch (forward and backward) unless the model is cached, one
        per test image, and ``EXPLAIN_FORWARDS`` per explained image and explainer.
        """
        data = self.worker.data_for(cell.dataset)
        images = len(data.test)
        if not self.worker.services.cache.has_model(cell.model_key):
            limit = cell.training.limit
            n_train = len(data.train) if limit is None else min(limit, len(data.train))
            images += 3 * n_train * cell.training.epochs
        if any(m.uses_explanations for _, m in cell.metrics):
            explained = min(cell.evaluation.explain_limit or len(data.test), len(data.test))
            images += EXPLAIN_FORWARDS * explained * len(cell.scored)
        return images

    def start_order(self, cells: list[ResolvedCell], needs: dict[int, int | None]) -> list[int]:
        """Cell indices, longest critical path first: a cell's own cost plus that of what waits on it."""
        try:
            cost = [self.cell_cost(c) for c in cells]
        except Exception:  # an estimate only: a cell that cannot even be built fails in its worker, with its error
            log.debug("cell cost estimate failed; starting cells in suite order", exc_info=True)
            return list(range(len(cells)))
        path = list(cost)
        for _ in cells:  # chains are short; relax until stable (a cycle is reported by the caller)
            for i, parent in needs.items():
                if parent is not None:
                    path[parent] = max(path[parent], cost[parent] + path[i])
        order = sorted(range(len(cells)), key=lambda i: -path[i])
        log.info("start order: %s", ", ".join(f"{cells[i].id} ({path[i]:.0f}s)" for i in order))
        return order
