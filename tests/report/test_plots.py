"""Plots: Pareto front, seed aggregation, titles, files, and the saliency file format and grid."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ENERGY_CLASSES, ENERGY_CODEWORDS, make_energy_record
from helpers import make_record as rec
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from scipy import stats

from xbench.errors import DataError
from xbench.report.plots import (
    figure_accuracy_per_exit,
    figure_accuracy_vs_macs,
    figure_branch_energy,
    figure_category,
    figure_saliency_grid,
    mean_ci,
    normalize_maps,
    pareto_front,
    read_saliency,
    saliency_mosaic,
    save_figure,
    write_plots,
    write_saliency,
)
from xbench.report.records import Record

POINTING = {"label": "Pointing game", "unit": "%", "scale": 100.0}
IOU: dict[str, Any] = {"display": {"label": "IoU"}, "higher_is_better": None}
DPI = 40


def curve(offset: float) -> list[dict[str, float]]:
    return [
        {"threshold": 0.5, "top1": 0.70 + offset, "expected_macs": 1e6},
        {"threshold": 0.9, "top1": 0.80 + offset, "expected_macs": 2e6},
        {"threshold": 1.0, "top1": 0.85 + offset, "expected_macs": 4e6},
    ]


def tradeoff_records() -> list[Record]:
    """egt: exits with a curve (2 seeds); base: policy point; plain: no exit metrics at all."""
    records = []
    for seed, offset in enumerate([0.0, 0.02]):
        records += [
            rec("egt", seed, "policy_top1", 0.80 + offset, params={"curve": curve(offset)}),
            rec("egt", seed, "expected_flops", 2e6),
            rec("base", seed, "policy_top1", 0.75),
            rec("base", seed, "expected_flops", 3e6),
            rec("plain", seed, "top1", 0.90),
            rec("plain", seed, "flops", 8e6),
        ]
    return records


def title(fig: Figure) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


def labelled(fig: Figure, label: str) -> Any:
    """The line labelled ``label``: a plain line, or the data line of an error-bar container."""
    lines = [line for ax in fig.axes for line in ax.get_lines() if line.get_label() == label]
    lines += [c.lines[0] for ax in fig.axes for c in ax.containers if c.get_label() == label]
    assert len(lines) == 1, f"expected one line labelled {label!r}"
    return lines[0]


# ----------------------------------------------------------------------------- pure helpers


def test_pareto_front_keeps_only_non_dominated_points_in_cost_order() -> None:
    costs = [4.0, 1.0, 2.0, 3.0, 2.5, 1.0, 2.0]
    accs = [0.9, 0.5, 0.7, 0.6, 0.7, 0.4, 0.7]
    # (3, .6) loses to (2, .7); (2.5, .7) costs more than (2, .7) for the same accuracy;
    # (1, .4) loses to (1, .5); the two identical (2, .7) points both stay.
    assert pareto_front(costs, accs).tolist() == [1, 2, 6, 0]


def test_pareto_front_ignores_nan_and_handles_edge_cases() -> None:
    assert pareto_front([1.0, math.nan, 2.0], [0.5, 0.99, 0.4]).tolist() == [0]
    assert pareto_front([], []).tolist() == []
    with pytest.raises(ValueError, match="equal length"):
        pareto_front([1.0, 2.0], [0.5])


def test_mean_ci_is_the_student_t_half_width() -> None:
    mean, ci = mean_ci([0.80, 0.82, 0.84])
    assert mean == pytest.approx(0.82)
    assert ci == pytest.approx(stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3))
    assert math.isnan(mean_ci([0.5])[1])


def test_normalize_maps_scales_each_map_to_unit_range() -> None:
    maps = np.stack([np.arange(4.0).reshape(2, 2) * 10 - 5, np.full((2, 2), 3.0)])
    out = normalize_maps(maps)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [[0, 1 / 3], [2 / 3, 1]], rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0)


# ----------------------------------------------------------------------------- accuracy vs MACs


def test_accuracy_vs_macs_draws_curves_in_display_units_and_the_pareto_front() -> None:
    fig = figure_accuracy_vs_macs(tradeoff_records(), "fmnist")
    assert fig is not None
    assert "fmnist" in title(fig) and "E[MACs]" in title(fig) and "Top-1 (policy)" in title(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("E[MACs] [M]")
    assert ax.get_ylabel() == "Top-1 (policy) [%] (higher is better)"
    # egt's curve: averaged over the two seeds per threshold, in M and %.
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert len(curves) == 1
    np.testing.assert_allclose(curves[0].get_xdata(), [1.0, 2.0, 4.0])
    np.testing.assert_allclose(curves[0].get_ydata(), [71.0, 81.0, 86.0])
    # Points: curve (1, 71) (2, 81) (4, 86); egt (2, 81); base (3, 75); plain (8, 90).
    front = labelled(fig, "Pareto front")
    np.testing.assert_allclose(front.get_xdata(), [1.0, 2.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(front.get_ydata(), [71.0, 81.0, 81.0, 86.0, 90.0])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"egt", "base", "plain (no exits)", "Pareto front"} <= set(legend)


def test_accuracy_vs_macs_without_curves_is_one_point_per_method() -> None:
    records = [r for r in tradeoff_records() if r.method != "plain"]
    records = [r.model_copy(update={"params": {}}) for r in records]
    fig = figure_accuracy_vs_macs(records, "fmnist")
    assert fig is not None
    ax = fig.axes[0]
    assert all(len(line.get_xdata()) == 1 for line in ax.get_lines() if line.get_label() != "Pareto front")
    np.testing.assert_allclose(labelled(fig, "Pareto front").get_xdata(), [2.0])  # base: more MACs, less accurate
    assert [t.get_text() for t in ax.get_legend().get_texts()].count("egt") == 1


def test_accuracy_vs_macs_needs_policy_records() -> None:
    records = [r for r in tradeoff_records() if r.method == "plain"]
    assert figure_accuracy_vs_macs(records, "fmnist") is None
    assert figure_accuracy_vs_macs(tradeoff_records(), "other-dataset") is None


# ----------------------------------------------------------------------------- per exit and categories


def test_accuracy_per_exit_has_one_line_per_method_over_exits() -> None:
    records = [rec("egt", s, "top1", 0.5 + 0.1 * e + 0.01 * s, exit=e) for s in range(2) for e in range(3)]
    records += [rec("ee", 0, "top1", 0.4 + 0.2 * e, exit=e) for e in range(2)]
    records.append(rec("egt", 0, "top1", 0.99))  # final output: not an exit
    fig = figure_accuracy_per_exit(records, "fmnist")
    assert fig is not None
    assert title(fig).startswith("fmnist: Top-1 at each exit")
    egt, ee = labelled(fig, "egt"), labelled(fig, "ee")
    np.testing.assert_array_equal(egt.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(egt.get_ydata(), [50.5, 60.5, 70.5])
    np.testing.assert_allclose(ee.get_ydata(), [40.0, 60.0])
    assert fig.axes[0].get_ylabel() == "Top-1 [%] (higher is better)"
    assert figure_accuracy_per_exit([rec("egt", 0, "top1", 0.9)], "fmnist") is None


def bar_widths(ax: Any) -> dict[int, float]:
    """Row (y centre) -> bar width of the one bar collection of a facet."""
    (bars,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    widths = {}
    for path in bars.get_paths():
        x, y = path.vertices[:, 0], path.vertices[:, 1]
        assert x.min() == 0 or x.max() == 0  # every bar starts at 0
        widths[round(float(y.mean()))] = float(x.max() + x.min())
    return widths


def bar_values(ax: Any, names: list[str] | None = None) -> dict[str, float]:
    """Row name -> bar width; the names are the facet's tick labels unless given."""
    names = names if names is not None else [t.get_text() for t in ax.get_yticklabels()]
    widths = bar_widths(ax)
    assert set(widths) <= set(range(len(names)))
    return {names[row]: width for row, width in widths.items()}


def test_category_bars_facet_per_metric_with_explainer_rows_and_ci() -> None:
    records = []
    for seed, value in enumerate([0.4, 0.6]):
        records += [
            rec("egt", seed, "pointing", value, explainer="native", category="localization", display=POINTING),
            rec("egt", seed, "pointing", 0.1, explainer="gradcam", category="localization", display=POINTING),
            rec("egt", seed, "iou", 0.3, explainer="native", category="localization", **IOU),
        ]
    records.append(rec("egt", 0, "top1", 0.9))  # another category
    fig = figure_category(records, "fmnist", "localization")
    assert fig is not None
    assert title(fig) == "fmnist: localization metrics (mean ± 95% CI over seeds)"
    assert len(fig.axes) == 2
    pointing, iou = fig.axes
    assert pointing.get_title() == "Pointing game [%] ↑"
    assert iou.get_title() == "IoU"
    values = bar_values(pointing)
    assert values == pytest.approx({"egt (native)": 50.0, "egt (gradcam)": 10.0})
    # The error bar of egt (native) spans the 95% CI of 0.4 and 0.6, in %.
    ci = 100 * stats.t.ppf(0.975, 1) * np.std([0.4, 0.6], ddof=1) / math.sqrt(2)
    (errors,) = [c for c in pointing.collections if type(c) is LineCollection]
    segments = errors.get_segments()
    widths = sorted(abs(seg[1][0] - seg[0][0]) for seg in segments)
    assert widths[-1] == pytest.approx(2 * ci)
    assert figure_category(records, "fmnist", "sanity") is None


def test_category_facets_with_the_same_rows_name_them_once_per_line() -> None:
    metrics = [f"metric{k}" for k in range(7)]
    methods = ["egt", "tame", "lap"]
    records = [
        rec(m, 0, metric, 0.1 * (i + 1) + 0.01 * k, explainer="native", category="faithfulness", display=POINTING)
        for k, metric in enumerate(metrics)
        for i, m in enumerate(methods)
    ]
    fig = figure_category(records, "fmnist", "faithfulness")
    assert fig is not None
    assert len(fig.axes) == 7
    assert [ax.get_title() for ax in fig.axes] == ["Pointing game [%] ↑"] * 7
    lines = {ax.get_subplotspec().rowspan.start for ax in fig.axes}
    assert len(lines) > 1  # several lines of facets
    names = ["egt (native)", "tame (native)", "lap (native)"]
    for k, ax in enumerate(fig.axes):
        first = ax.get_subplotspec().colspan.start == 0
        # The first facet of each line names the rows; the others line up with it, unnamed.
        assert [t.get_text() for t in ax.get_yticklabels()] == (names if first else [])
        assert ax.get_ylim() == fig.axes[0].get_ylim()
        expected = {name: 100 * (0.1 * (i + 1) + 0.01 * k) for i, name in enumerate(names)}
        assert bar_values(ax, names) == pytest.approx(expected)


def test_failed_records_are_skipped_and_the_last_duplicate_wins() -> None:
    records = [
        rec("a", 0, "top1", 0.1),
        rec("a", 0, "top1", 0.7),  # re-run replaces the first
        rec("b", 0, "top1", 0.5),
        rec("b", 0, "top1", None),  # a later failure replaces the success: no bar
        rec("c", 0, "top1", 0.6, config={"uses_masks": True}),
    ]
    fig = figure_category(records, "fmnist", "accuracy")
    assert fig is not None
    assert bar_values(fig.axes[0]) == pytest.approx({"a": 70.0, "c †": 60.0})
    assert not [c for c in fig.axes[0].collections if type(c) is LineCollection]  # one seed: no CI to draw


# ----------------------------------------------------------------------------- files


def test_save_figure_writes_png_and_pdf_with_the_title(tmp_path: Path) -> None:
    fig = figure_accuracy_per_exit([rec("egt", 0, "top1", 0.5, exit=0)], "fmnist")
    assert fig is not None
    png, pdf = save_figure(fig, tmp_path / "plots", "per exit/fmnist", dpi=DPI)
    assert png == tmp_path / "plots" / "per-exit-fmnist.png" and pdf.suffix == ".pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    with Image.open(png) as image:
        assert image.text["Title"] == title(fig)
        assert image.mode == "RGB"  # opaque: no alpha channel
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["per-exit-fmnist.pdf", "per-exit-fmnist.png"]
    assert fig.get_layout_engine() is not None and fig.dpi == 100  # the figure is left as it was


def test_save_figure_saves_the_whole_figure_unless_something_is_drawn_outside(tmp_path: Path) -> None:
    fig = Figure(figsize=(2, 1))
    fig.text(0.5, 0.5, "inside", ha="center")
    png, _ = save_figure(fig, tmp_path, "inside", dpi=50)
    with Image.open(png) as image:
        assert image.size == (100, 50)
    fig.text(1.2, 0.5, "outside")  # right of the figure: saved too, as with bbox_inches="tight"
    png, pdf = save_figure(fig, tmp_path, "outside", dpi=50)
    with Image.open(png) as image:
        assert image.size[0] > 100  # wider than the figure
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_write_plots_writes_what_has_data_and_skips_the_rest(tmp_path: Path) -> None:
    records = tradeoff_records()
    sal = tmp_path / "run" / "saliency"
    rng = np.random.default_rng(0)
    write_saliency(
        sal / "fmnist.npz", rng.random((2, 1, 8, 8)), np.array([0, 1]), None, {("egt", "native"): rng.random((2, 8, 8))}
    )
    paths = write_plots(records, tmp_path / "report", saliency=sal, dpi=DPI)
    names = [p.name for p in paths]
    assert names == [
        "accuracy_vs_macs_fmnist.png",
        "accuracy_vs_macs_fmnist.pdf",
        "accuracy_fmnist.png",
        "accuracy_fmnist.pdf",
        "efficiency_fmnist.png",
        "efficiency_fmnist.pdf",
        "saliency_fmnist.png",
        "saliency_fmnist.pdf",
    ]  # no exit records: no per-exit plot; no localization records: no such chart
    assert all(p.parent == tmp_path / "report" / "plots" and p.stat().st_size > 0 for p in paths)
    assert write_plots([], tmp_path / "empty", saliency=None) == []
    assert not (tmp_path / "empty" / "plots").exists()


# ----------------------------------------------------------------------------- branch energy

# Two seeds of one Coded ResNeXt row: block l's rows are classes 0 and 2, each summing to 1.
ENERGY_SEED0 = [[[0.5, 0.5, 0.0, 0.0], [0.5, 0.0, 0.0, 0.5]], [[0.25, 0.25, 0.25, 0.25], [0.0, 0.5, 0.5, 0.0]]]
ENERGY_SEED1 = [[[0.3, 0.3, 0.2, 0.2], [0.5, 0.0, 0.0, 0.5]], [[0.25, 0.25, 0.25, 0.25], [0.0, 0.3, 0.3, 0.4]]]


def energy_records() -> list[Record]:
    return [make_energy_record("coded_resnext", 0, ENERGY_SEED0), make_energy_record("coded_resnext", 1, ENERGY_SEED1)]


def heatmap_axes(fig: Figure) -> list[Any]:
    """The heatmap of each block (the colour bar has an axis of its own)."""
    return [ax for ax in fig.axes if ax.get_title().startswith("block ")]


def outlined_cells(ax: Any) -> set[tuple[int, int]]:
    """(column, row) of every cell with a white outline."""
    return {
        (round(p.get_x()), round(p.get_y()))
        for p in ax.patches
        if isinstance(p, Rectangle) and p.get_edgecolor()[:3] == (1.0, 1.0, 1.0)
    }


def test_branch_energy_heatmap_per_block_averages_seeds_and_outlines_the_codewords() -> None:
    fig = figure_branch_energy([*energy_records(), rec("coded_resnext", 0, "top1", 0.9)], "fmnist", "coded_resnext")
    assert fig is not None
    assert title(fig) == (
        "fmnist: coded_resnext: branch energy share per class and coded block\n"
        "(rows sum to 1; codeword branches outlined; mean over 2 seeds)"
    )
    axes = heatmap_axes(fig)
    assert len(axes) == 2
    # Block 0: class 0 (code 1100) [.4 .4 .1 .1] -> 80% on code; class 2 (code 1001) [.5 0 0 .5] -> 100%: 90%.
    # Block 1: class 0 (code 1010) uniform -> 50%; class 2 (code 0110) [0 .4 .4 .2] -> 80%: 65%.
    assert [ax.get_title() for ax in axes] == [
        "block 0: 90% on code\n(2 of 4 branches per class)",
        "block 1: 65% on code\n(2 of 4 branches per class)",
    ]
    for ax, first, second in zip(axes, ENERGY_SEED0, ENERGY_SEED1, strict=True):
        shown = np.asarray(ax.collections[0].get_array()).reshape(2, 4)
        np.testing.assert_allclose(shown, (np.asarray(first) + np.asarray(second)) / 2)
    for ax, codes in zip(axes, ENERGY_CODEWORDS, strict=True):
        expected = {(n, row) for row, k in enumerate(ENERGY_CLASSES) for n, w in enumerate(codes[k]) if w}
        assert outlined_cells(ax) == expected  # class 2's codeword on the second row: rows follow "classes"
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["shirt", "boot"]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["0", "1", "2", "3"]
    assert axes[0].get_xlabel() == "branch" and axes[0].get_ylabel() == "class"
    colorbars = [ax for ax in fig.axes if ax not in axes]
    assert len(colorbars) == 1 and colorbars[0].get_ylabel() == "share of the class's energy"


def test_branch_energy_heatmap_needs_matrices() -> None:
    records = energy_records()
    assert figure_branch_energy(records, "fmnist", "egt") is None
    assert figure_branch_energy(records, "cifar10", "coded_resnext") is None
    bare = [r.model_copy(update={"params": {}}) for r in records]
    assert figure_branch_energy(bare, "fmnist", "coded_resnext") is None
    one = figure_branch_energy(records[:1], "fmnist", "coded_resnext")
    assert one is not None and title(one).endswith("; 1 seed)")


def test_write_plots_writes_a_branch_energy_heatmap_per_coded_row(tmp_path: Path) -> None:
    records = [
        *energy_records(),
        make_energy_record("coded μ", 0, ENERGY_SEED0),
        make_energy_record("coded λ", 0, ENERGY_SEED1),  # slugs like "coded μ": gets a suffix, not overwritten
    ]
    paths = write_plots(records, tmp_path, dpi=DPI)
    names = [p.name for p in paths]
    assert names == [
        "consistency_fmnist.png",
        "consistency_fmnist.pdf",
        "branch_energy_fmnist_coded_resnext.png",
        "branch_energy_fmnist_coded_resnext.pdf",
        "branch_energy_fmnist_coded.png",
        "branch_energy_fmnist_coded.pdf",
        "branch_energy_fmnist_coded-2.png",
        "branch_energy_fmnist_coded-2.pdf",
    ]
    assert all(p.stat().st_size > 0 for p in paths)
    with Image.open(tmp_path / "plots" / "branch_energy_fmnist_coded-2.png") as image:
        assert image.text["Title"].startswith("fmnist: coded λ: branch energy share per class and coded block")


# ----------------------------------------------------------------------------- saliency


def saliency_arrays(n: int = 3, masks: bool = True) -> tuple[Any, ...]:
    rng = np.random.default_rng(1)
    images = rng.random((n, 3, 6, 5)).astype(np.float32)
    labels = np.arange(n, dtype=np.int64)
    mask = np.zeros((n, 1, 6, 5), dtype=bool)
    mask[:, :, 1:4, 1:3] = True
    maps = {
        ("EGT/ours", "native"): rng.random((n, 6, 5)).astype(np.float32),
        ("egt", "gradcam"): rng.random((n, 6, 5)).astype(np.float32),
        ("resnet", "random"): rng.random((n, 6, 5)).astype(np.float32),
    }
    return images, labels, (mask if masks else None), maps


def test_saliency_file_round_trip(tmp_path: Path) -> None:
    images, labels, masks, maps = saliency_arrays()
    path = write_saliency(tmp_path / "saliency" / "fmnist.npz", images, labels, masks, maps)
    assert path == tmp_path / "saliency" / "fmnist.npz"
    with np.load(path) as npz:
        assert set(npz.files) == {
            "images",
            "labels",
            "masks",
            "maps/EGT/ours/native",
            "maps/egt/gradcam",
            "maps/resnet/random",
        }
    back = read_saliency(path)
    np.testing.assert_array_equal(back.images, images)
    np.testing.assert_array_equal(back.labels, labels)
    assert back.masks is not None and back.masks.dtype == np.bool_
    np.testing.assert_array_equal(back.masks, masks)
    assert list(back.maps) == list(maps)  # order kept; a method label may contain "/"
    for key, array in maps.items():
        np.testing.assert_array_equal(back.maps[key], array)
        assert back.maps[key].dtype == np.float32


def test_saliency_without_masks_round_trips_to_none(tmp_path: Path) -> None:
    images, labels, _, maps = saliency_arrays(masks=False)
    back = read_saliency(write_saliency(tmp_path / "s.npz", images, labels, None, maps))
    assert back.masks is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": np.zeros((3, 6, 5))}, "images must be"),
        ({"labels": np.zeros(2, dtype=np.int64)}, "labels must be"),
        ({"masks": np.zeros((3, 1, 5, 5), dtype=bool)}, "masks must have shape"),
        ({"maps": {("egt", "native"): np.full((3, 6, 5), 2.0)}}, r"must lie in \[0, 1\]"),
        ({"maps": {("egt", "native"): np.zeros((3, 6, 6))}}, "must have shape"),
        ({"maps": {("egt", "grad/cam"): np.zeros((3, 6, 5))}}, "must not contain '/'"),
    ],
)
def test_write_saliency_rejects_malformed_arrays(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    images, labels, masks, maps = saliency_arrays()
    args = {"images": images, "labels": labels, "masks": masks, "maps": maps, **change}
    with pytest.raises(ValueError, match=message):
        write_saliency(tmp_path / "s.npz", **args)
    assert not (tmp_path / "s.npz").exists()


def test_read_saliency_reports_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.npz"):
        read_saliency(bad)
    np.savez(tmp_path / "partial.npz", images=np.zeros((1, 1, 2, 2), dtype=np.float32))
    with pytest.raises(DataError, match="lacks"):
        read_saliency(tmp_path / "partial.npz")


def grid_of(fig: Figure) -> tuple[Any, np.ndarray]:
    """The one axes holding the whole grid, and the mosaic image drawn on it."""
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.images) == 1
    return ax, np.asarray(ax.images[0].get_array())


def tile(mosaic: np.ndarray, pitch: tuple[int, int], row: int, col: int, h: int = 6, w: int = 5) -> np.ndarray:
    return mosaic[row * pitch[0] : row * pitch[0] + h, col * pitch[1] : col * pitch[1] + w]


def outline_tiles(ax: Any, pitch: tuple[int, int]) -> dict[tuple[int, int], tuple[float, ...]]:
    """(row, column) of every tile with a white outline -> the outline's extent in tile pixels (x0, x1, y0, y1)."""
    white = [c for c in ax.collections if np.allclose(c.get_edgecolor()[0][:3], 1.0)]
    assert len(white) == 1
    extents = {}
    for path in white[0].get_paths():
        for poly in path.to_polygons(closed_only=False):
            row, col = int(poly[:, 1].min() // pitch[0]), int(poly[:, 0].min() // pitch[1])
            x, y = poly[:, 0] - col * pitch[1], poly[:, 1] - row * pitch[0]
            assert (row, col) not in extents, "one outline per tile"
            extents[(row, col)] = (x.min(), x.max(), y.min(), y.max())
    return extents


def test_saliency_grid_has_a_row_per_image_and_a_column_per_map_set_with_masks_outlined(tmp_path: Path) -> None:
    images, labels, masks, maps = saliency_arrays(n=3)
    saliency = read_saliency(write_saliency(tmp_path / "s.npz", images, labels, masks, maps))
    fig = figure_saliency_grid(saliency, "fmnist")
    assert fig is not None
    assert title(fig) == "fmnist: saliency maps of 3 test images, ground-truth mask outlined"
    ax, shown = grid_of(fig)
    layout = saliency_mosaic(saliency, 3, list(maps))
    (ph, pw), gap = layout.pitch, layout.gap
    assert (ph, pw) == (6 + gap, 5 + gap) and gap >= 1
    assert layout.rgb.shape == (3 * ph - gap, 4 * pw - gap, 3)  # 3 rows, the image + 3 map sets
    k = shown.shape[0] // layout.rgb.shape[0]  # each mosaic pixel drawn as k × k pixels
    assert shown.shape == (k * layout.rgb.shape[0], k * layout.rgb.shape[1], 3)
    np.testing.assert_array_equal(shown[::k, ::k], layout.rgb)
    assert ax.images[0].get_extent() == pytest.approx([-0.5, 4 * pw - gap - 0.5, 3 * ph - gap - 0.5, -0.5])
    shown = layout.rgb
    # Rows and columns are named at the centre of their tiles.
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "image",
        "EGT/ours\nnative",
        "egt\ngradcam",
        "resnet\nrandom",
    ]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["label 0", "label 1", "label 2"]
    np.testing.assert_allclose(ax.get_xticks(), [j * pw + 2 for j in range(4)])
    np.testing.assert_allclose(ax.get_yticks(), [i * ph + 2.5 for i in range(3)])
    # Tiles: the image itself, then each map at 55% over the greyscale image; white between tiles.
    np.testing.assert_allclose(tile(shown, layout.pitch, 1, 0) / 255, images[1].transpose(1, 2, 0), atol=1 / 255)
    jet = colormaps["jet"](maps[("egt", "gradcam")][2])[..., :3]
    expected = 0.55 * jet + 0.45 * images[2].mean(axis=0)[..., None]
    np.testing.assert_allclose(tile(shown, layout.pitch, 2, 2) / 255, expected, atol=1 / 255)
    assert (shown[6 : 6 + gap] == 255).all() and (shown[:, 5 : 5 + gap] == 255).all()
    # The mask (rows 1-3, columns 1-2) outlined in every tile, along the pixel edges.
    extents = outline_tiles(ax, layout.pitch)
    assert set(extents) == {(i, j) for i in range(3) for j in range(4)}
    assert all(extent == pytest.approx((0.5, 2.5, 0.5, 3.5)) for extent in extents.values())


def test_saliency_grid_leaves_out_outlines_of_constant_masks(tmp_path: Path) -> None:
    images, labels, masks, maps = saliency_arrays(n=3)
    masks[0] = True  # no boundary to draw
    masks[1] = False
    saliency = read_saliency(write_saliency(tmp_path / "s.npz", images, labels, masks, maps))
    fig = figure_saliency_grid(saliency, "fmnist")
    assert fig is not None
    ax, _ = grid_of(fig)
    layout = saliency_mosaic(saliency, 3, list(maps))
    assert set(outline_tiles(ax, layout.pitch)) == {(2, j) for j in range(4)}


def test_saliency_grid_without_masks_draws_no_outline_and_caps_the_rows(tmp_path: Path) -> None:
    images, labels, _, maps = saliency_arrays(n=3, masks=False)
    saliency = read_saliency(write_saliency(tmp_path / "s.npz", images, labels, None, maps))
    fig = figure_saliency_grid(saliency, "fmnist", max_images=2)
    assert fig is not None
    ax, _ = grid_of(fig)
    layout = saliency_mosaic(saliency, 2, list(maps))
    assert layout.rgb.shape == (2 * layout.pitch[0] - layout.gap, 4 * layout.pitch[1] - layout.gap, 3)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["label 0", "label 1"]
    assert len(ax.get_xticklabels()) == 4
    assert len(ax.collections) == 0
    assert "outlined" not in title(fig)
    no_maps = read_saliency(write_saliency(tmp_path / "n.npz", images, labels, None, {}))
    assert figure_saliency_grid(no_maps, "fmnist") is None


# ----------------------------------------------------------------------------- layout


def test_every_plot_is_laid_out_inside_its_figure(tmp_path: Path) -> None:
    """Labels, titles and tick labels fit in the figure, which is saved whole."""
    images, labels, masks, maps = saliency_arrays(n=3)
    saliency = read_saliency(write_saliency(tmp_path / "s.npz", images, labels, masks, maps))
    shared = [
        rec(m, 0, metric, 0.5, explainer="native", category="faithfulness", display=POINTING)
        for metric in ("a", "b", "c", "d")
        for m in ("egt", "a rather long method name")
    ]
    localization = [
        rec("egt", 0, "pointing", 0.4, explainer="native", category="localization", display=POINTING),
        rec("egt", 0, "iou", 0.3, explainer="gradcam", category="localization", **IOU),
    ]
    figures = [
        figure_accuracy_vs_macs(tradeoff_records(), "fmnist"),  # a title wider than the plot
        figure_accuracy_per_exit([rec("egt", 0, "top1", 0.5, exit=e) for e in range(3)], "fmnist"),
        figure_category(shared, "fmnist", "faithfulness"),
        figure_category(localization, "fmnist", "localization"),
        figure_branch_energy(energy_records(), "fmnist", "coded_resnext"),
        figure_saliency_grid(saliency, "fmnist"),
    ]
    for i, fig in enumerate(figures):
        assert fig is not None
        width, height = fig.get_size_inches()
        png, _ = save_figure(fig, tmp_path, f"plot{i}", dpi=DPI)
        with Image.open(png) as image:
            size = np.array(image.size)
        assert np.abs(size - [width * DPI, height * DPI]).max() <= 1, title(fig)
        # What is drawn, measured at the PNG's resolution, lies inside the figure.
        fig.set_dpi(DPI)
        fig.set_layout_engine(None)  # as laid out for saving
        drawn = fig.get_tightbbox(FigureCanvasAgg(fig).get_renderer())
        slack = 1 / DPI
        assert drawn.x0 >= -slack and drawn.y0 >= -slack, title(fig)
        assert drawn.x1 <= width + slack and drawn.y1 <= height + slack, title(fig)
