"""Hand-made records for report tests: :func:`make_record` fills every field a ``Record`` needs.

Importable as ``helpers`` from any test module: ``tests/`` has no ``__init__.py``, so pytest's
default import mode puts it on ``sys.path`` when it loads ``tests/conftest.py``.
"""

from __future__ import annotations

from typing import Any

from xbench.report.records import Record

TOP1 = {"label": "Top-1", "unit": "%", "scale": 100.0, "decimals": 2}
TIME = {"label": "Time", "unit": "s", "scale": 1.0, "decimals": 2}
PARAMS = {"label": "Params", "unit": "M", "scale": 1e-6, "decimals": 3}
MACS = {"label": "MACs", "unit": "M", "scale": 1e-6, "decimals": 2}
EMACS = {"label": "E[MACs]", "unit": "M", "scale": 1e-6, "decimals": 2}
BRANCH_ENERGY = {"label": "Energy on code", "unit": "%", "scale": 100.0, "decimals": 1}

#: ``metric -> (category, higher_is_better, display)`` as the registered metrics declare them
#: (``tests/report/test_records.py`` checks that they agree); ``time`` stands for a metric
#: without a direction. Other names get :data:`OTHER`.
METRIC_FIELDS: dict[str, tuple[str, bool | None, dict[str, Any]]] = {
    "top1": ("accuracy", True, TOP1),
    "top5": ("accuracy", True, {"label": "Top-5", "unit": "%", "scale": 100.0, "decimals": 2}),
    "policy_top1": ("accuracy", True, {"label": "Top-1 (policy)", "unit": "%", "scale": 100.0, "decimals": 2}),
    "params": ("efficiency", False, PARAMS),
    "flops": ("efficiency", False, MACS),
    "expected_flops": ("efficiency", False, EMACS),
    "time": ("efficiency", None, TIME),
    "pointing_game": ("localization", True, {"label": "Pointing game", "unit": "", "scale": 1.0, "decimals": 3}),
    "branch_energy": ("consistency", True, BRANCH_ENERGY),
}
#: Fields of a metric :data:`METRIC_FIELDS` does not know: an accuracy-like number shown as it is.
OTHER: tuple[str, bool | None, dict[str, Any]] = ("accuracy", True, {})


def make_record(
    method: str = "egt", seed: int = 0, metric: str = "top1", value: float | None = 0.8, **overrides: Any
) -> Record:
    """A valid record of ``metric`` for ``method`` and ``seed``; any field can be overridden.

    ``category``, ``higher_is_better`` and ``display`` follow the metric (:data:`METRIC_FIELDS`);
    an unknown metric is an accuracy-like number labelled by its name. ``value=None`` makes a
    failed record (``status="failed"`` with an error message). The cell is
    ``dataset/method/seed``; the record was made on the CPU with xbench 0.1.0 outside git.
    """
    category, higher_is_better, display = METRIC_FIELDS.get(metric, OTHER)
    dataset = overrides.get("dataset", "fmnist")
    fields: dict[str, Any] = {
        "suite": "quick",
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "metric": metric,
        "value": value,
        "n": 100,
        "higher_is_better": higher_is_better,
        "category": category,
        "display": display,
        "params": {},
        "versions": {"xbench": "0.1.0"},
        "git": None,
        "device": "cpu",
        "time_s": 0.1,
        "method_name": method,
        "cell": f"{dataset}/{method}/{seed}",
    }
    if value is None:
        fields.update(status="failed", error="RuntimeError: boom")
    fields.update(overrides)
    return Record(**fields)


def make_seeds(method: str, metric: str, values: list[float | None], **overrides: Any) -> list[Record]:
    """One record per value, seeds 0, 1, ... in order."""
    return [make_record(method, seed, metric, value, **overrides) for seed, value in enumerate(values)]


#: Codewords of two coded blocks of 4 branches (2 active each) for 3 classes.
ENERGY_CODEWORDS = [
    [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]],
    [[1, 0, 1, 0], [0, 1, 0, 1], [0, 1, 1, 0]],
]
#: Classes with test images in :func:`make_energy_record` (class 1 has none).
ENERGY_CLASSES = [0, 2]


def make_energy_record(method: str, seed: int, energy: list[list[list[float]]], **overrides: Any) -> Record:
    """A ``branch_energy`` record as :class:`xbench.metrics.branch_energy.BranchEnergy` writes it.

    ``energy[l]`` is block l's (2, 4) matrix, rows for classes 0 and 2 (``shirt``, ``boot``), each
    row summing to 1; codewords are :data:`ENERGY_CODEWORDS`; the value is the mean share on the codes.
    """
    blocks = []
    for i, (matrix, codes) in enumerate(zip(energy, ENERGY_CODEWORDS, strict=True)):
        share = [
            sum(e * w for e, w in zip(row, codes[k], strict=True))
            for row, k in zip(matrix, ENERGY_CLASSES, strict=True)
        ]
        blocks.append(
            {
                "block": i,
                "n_branches": 4,
                "n_active": 2,
                "value": sum(share) / len(share),
                "share": share,
                "energy": matrix,
                "codewords": codes,
            }
        )
    params = {
        "split": "test",
        "classes": ENERGY_CLASSES,
        "class_names": ["shirt", "boot"],
        "chance": 0.5,
        "blocks": blocks,
    }
    value = sum(b["value"] for b in blocks) / len(blocks)
    return make_record(method, seed, "branch_energy", value, params=params, method_name="coded_resnext", **overrides)
