"""Baseline regression check: tolerance kinds with hand-computed numbers, directions, missing/new rows,
baseline files (making, refreshing, validating) and the Markdown summary."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from helpers import PARAMS, make_record
from scipy import stats

from xbench.errors import ConfigError, DataError
from xbench.report.check import (
    DEFAULT_CI_FLOOR,
    DEFAULT_TOLERANCE,
    CheckResult,
    aggregate,
    allowed_deviation,
    check_tolerance,
    compare,
    describe_tolerance,
    dump_baseline,
    load_baseline,
    make_baseline,
    parse_tolerance,
    to_markdown,
    tolerance_for,
    validate_baseline,
    verdict,
)
from xbench.report.records import Record

CREATED = "2025-01-01T00:00:00+00:00"
# 95% Student-t half-width of [0.80, 0.82, 0.84]: t(0.975, 2) * 0.02 / sqrt(3) = 4.302653 * 0.011547 = 0.049683.
CI3 = 0.049683


#: The run these records come from: two library versions, a commit, and settings with a data path.
RUN: dict[str, Any] = {
    "versions": {"xbench": "0.1.0", "torch": "2.5.0"},
    "git": "0123abc",
    "config": {"training": {"epochs": 2}, "data_source": "/home/someone/data"},
    "setup": "setup-a",
}


def rec(method: str, seed: int, metric: str, value: float | None, **overrides: Any) -> Record:
    return make_record(method, seed, metric, value, **(RUN | overrides))


def seeds(method: str, metric: str, values: list[float | None], **overrides: Any) -> list[Record]:
    return [rec(method, seed, metric, value, **overrides) for seed, value in enumerate(values)]


def run_records(top1: list[float | None] | None = None, time: list[float] | None = None) -> list[Record]:
    """egt: top1 (higher is better) and time (no direction) over three seeds, params (lower is better)."""
    return [
        *seeds("egt", "top1", top1 or [0.80, 0.82, 0.84]),
        *seeds("egt", "time", time or [1.0, 1.0, 1.0]),
        *seeds("egt", "params", [77754.0] * 3),
    ]


def statuses(result: CheckResult) -> dict[str, str]:
    return {row.metric + (f"@exit{row.exit}" if row.exit is not None else ""): row.status for row in result.rows}


def test_the_hand_computed_interval_matches_scipy() -> None:
    assert stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3) == pytest.approx(CI3, abs=1e-6)


# -- tolerance kinds --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "mean", "ci", "expected", "kind"),
    [
        ({"kind": "abs", "value": 0.01}, 0.82, 0.05, 0.01, "abs"),
        ({"kind": "rel", "value": 0.05}, 0.80, None, 0.04, "5% rel"),
        ({"kind": "rel", "value": 0.05}, -2.0, None, 0.10, "5% rel"),  # relative to |mean|
        ({"kind": "ci", "factor": 2.0, "floor": 0.005}, 0.82, 0.03, 0.06, "2×CI"),
        ({"kind": "ci", "factor": 2.0, "floor": 0.005}, 0.82, None, 0.005, "floor"),  # one seed: no CI
        ({"kind": "ci", "factor": 2.0, "floor": 0.005}, 0.82, 0.0, 0.005, "floor"),  # seeds agree
        ({"kind": "ci", "factor": 2.0, "floor": 0.005}, 0.82, 0.001, 0.005, "floor"),  # 0.002 < floor
        ({"kind": "ci", "factor": 3.0}, 0.82, float("nan"), DEFAULT_CI_FLOOR, "floor"),
    ],
)
def test_allowed_deviation_of_each_kind(
    spec: dict[str, Any], mean: float, ci: float | None, expected: float, kind: str
) -> None:
    assert allowed_deviation(check_tolerance(spec, "t"), mean, ci) == pytest.approx(expected)
    assert describe_tolerance(check_tolerance(spec, "t"), mean, ci) == kind


def one_row_check(baseline_value: float, current: float, spec: dict[str, Any], **overrides: Any) -> str:
    base = make_baseline([rec("egt", 0, "m", baseline_value, **overrides)], tolerances={"m": spec}, created=CREATED)
    return compare([rec("egt", 0, "m", current, **overrides)], base).rows[0].status


@pytest.mark.parametrize(
    ("current", "expected"),
    [(0.789, "regressed"), (0.791, "ok"), (0.80, "ok"), (0.809, "ok"), (0.811, "improved")],
)
def test_abs_tolerance_higher_is_better(current: float, expected: str) -> None:
    # baseline 0.80 ± 0.01: below 0.79 regresses, above 0.81 improves
    assert one_row_check(0.80, current, {"kind": "abs", "value": 0.01}) == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    [(2.11, "regressed"), (2.09, "ok"), (1.91, "ok"), (1.89, "improved")],
)
def test_rel_tolerance_lower_is_better(current: float, expected: str) -> None:
    # baseline 2.0, 5% relative: tolerance 0.1; for lower-is-better going up is the regression
    assert one_row_check(2.0, current, {"kind": "rel", "value": 0.05}, higher_is_better=False) == expected


@pytest.mark.parametrize(("current", "expected"), [(0.75, "ok"), (-0.5, "changed"), (1.51, "changed")])
def test_no_direction_changes_but_never_regresses(current: float, expected: str) -> None:
    assert one_row_check(1.0, current, {"kind": "abs", "value": 0.5}, higher_is_better=None) == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    # 2 × CI3 = 0.099366 around 0.82: the edges are 0.720634 and 0.919366
    [([0.73], "ok"), ([0.72], "regressed"), ([0.91], "ok"), ([0.92], "improved")],
)
def test_ci_tolerance_over_three_seeds(current: list[float], expected: str) -> None:
    base = make_baseline(seeds("egt", "top1", [0.80, 0.82, 0.84]), created=CREATED)
    entry = base["entries"][0]
    assert entry["mean"] == pytest.approx(0.82)
    assert entry["ci"] == pytest.approx(CI3, abs=1e-6)
    assert entry["n_seeds"] == 3
    result = compare(seeds("egt", "top1", current), base)
    row = result.rows[0]
    assert row.tolerance == pytest.approx(2 * CI3, abs=1e-5)
    assert row.status == expected
    assert "seeds 3 → 1" in row.note  # fewer seeds is said, not failed


def test_ci_tolerance_falls_back_to_the_floor_with_one_seed() -> None:
    base = make_baseline([rec("egt", 0, "top1", 0.80)], created=CREATED)
    assert base["entries"][0]["ci"] is None
    assert compare([rec("egt", 0, "top1", 0.796)], base).rows[0].status == "ok"  # within 0.005
    row = compare([rec("egt", 0, "top1", 0.794)], base).rows[0]
    assert (row.status, row.tolerance, row.tolerance_kind) == ("regressed", DEFAULT_CI_FLOOR, "floor")


def test_identical_run_passes_even_with_zero_tolerance() -> None:
    records = run_records()
    base = make_baseline(records, tolerances={"*": {"kind": "abs", "value": 0.0}}, created=CREATED)
    result = compare(records, base)
    assert set(statuses(result).values()) == {"ok"}
    assert not result.failed and result.exit_code == 0


def test_tolerance_lookup_prefers_exit_then_metric_then_default() -> None:
    base = {
        "default_tolerance": {"kind": "abs", "value": 1.0},
        "tolerances": {"pg": {"kind": "abs", "value": 2.0}, "pg@exit1": {"kind": "abs", "value": 3.0}},
    }
    assert tolerance_for(base, "pg", 1)["value"] == 3.0
    assert tolerance_for(base, "pg", 0)["value"] == 2.0
    assert tolerance_for(base, "pg", None)["value"] == 2.0
    assert tolerance_for(base, "top1", None)["value"] == 1.0
    assert tolerance_for({}, "top1", None) == DEFAULT_TOLERANCE


@pytest.mark.parametrize(
    ("flag", "key", "spec"),
    [
        ("top1=abs:0.01", "top1", {"kind": "abs", "value": 0.01}),
        ("time=rel:0.5", "time", {"kind": "rel", "value": 0.5}),
        ("*=ci:3", "*", {"kind": "ci", "factor": 3.0, "floor": DEFAULT_CI_FLOOR}),
        ("pg@exit2=ci:2:0.02", "pg@exit2", {"kind": "ci", "factor": 2.0, "floor": 0.02}),
    ],
)
def test_parse_tolerance(flag: str, key: str, spec: dict[str, Any]) -> None:
    assert parse_tolerance(flag) == (key, spec)


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("top1", "expected METRIC="),
        ("top1=0.01", "expected METRIC="),
        ("=abs:0.1", "expected METRIC="),
        ("top1=pct:1", "expected METRIC="),
        ("top1=abs:1:2", "expected METRIC="),
        ("top1=abs:x", "value 'x' is not a number"),
        ("top1=abs:-1", "expected a finite number >= 0"),
        ("top1=ci:inf", "expected a finite number >= 0"),
    ],
)
def test_parse_tolerance_errors(flag: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tolerance(flag)
    assert expected in str(info.value)
    assert flag in str(info.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"kind": "abs"}, "t.value: missing"),
        ({"kind": "ci", "floor": 0.1}, "t.factor: missing"),
        ({"kind": "abs", "value": 0.1, "factor": 2}, "unknown key(s) ['factor']"),
        ({"kind": "sigma", "value": 1}, "t.kind: expected one of"),
        ({"kind": "rel", "value": True}, "t.value: expected a finite number"),
        ("abs:0.1", "t: expected an object"),
    ],
)
def test_check_tolerance_errors(spec: Any, expected: str) -> None:
    with pytest.raises(DataError) as info:
        check_tolerance(spec, "t")
    assert expected in str(info.value)


# -- the rules of a check -----------------------------------------------------------------------------------
def test_worse_direction_fails_better_direction_is_improved() -> None:
    base = make_baseline(run_records(), created=CREATED)
    worse = compare(run_records(top1=[0.60, 0.62, 0.64]), base)
    assert statuses(worse) == {"top1": "regressed", "time": "ok", "params": "ok"}
    assert worse.failed
    better = compare(run_records(top1=[0.90, 0.92, 0.94]), base)
    assert statuses(better)["top1"] == "improved"
    assert not better.failed


def test_lower_is_better_regresses_upwards() -> None:
    base = make_baseline(run_records(), created=CREATED)
    more = [r.model_copy(update={"value": 80000.0}) if r.metric == "params" else r for r in run_records()]
    assert statuses(compare(more, base))["params"] == "regressed"
    fewer = [r.model_copy(update={"value": 70000.0}) if r.metric == "params" else r for r in run_records()]
    assert statuses(compare(fewer, base))["params"] == "improved"


def test_missing_rows_fail_and_new_rows_do_not() -> None:
    base = make_baseline(run_records(), created=CREATED)
    without_params = [r for r in run_records() if r.metric != "params"]
    extra = [*seeds("egt", "top5", [0.99, 0.99, 0.99]), rec("base", 0, "top1", 0.5)]
    result = compare(without_params + extra, base)
    assert [(r.method, r.metric, r.status) for r in result.rows] == [
        ("egt", "params", "missing"),
        ("egt", "time", "ok"),
        ("egt", "top1", "ok"),
        ("egt", "top5", "new"),
        ("base", "top1", "new"),
    ]
    assert result.by_status("missing")[0].note == "not in the run"
    assert result.failed
    assert not compare(run_records() + extra, base).failed


def test_failed_records_count_as_missing() -> None:
    base = make_baseline(run_records(), created=CREATED)
    all_failed = compare(run_records(top1=[None, None, None]), base)
    row = all_failed.by_status("missing")[0]
    assert (row.metric, row.note, row.current) == ("top1", "all 3 record(s) failed", None)
    # one seed failed: fewer successful seeds than the baseline had
    partly = compare(run_records(top1=[0.80, None, 0.84]), base)
    row = partly.by_status("missing")[0]
    assert row.metric == "top1" and "1 record(s) failed" in row.note and row.current == pytest.approx(0.82)
    assert partly.failed


def test_a_baseline_of_a_partly_failed_run_passes_against_that_run() -> None:
    records = run_records(top1=[0.80, None, 0.84])
    base = make_baseline(records, created=CREATED)
    assert base["entries"][-1]["metric"] == "top1" and base["entries"][-1]["n_seeds"] == 2
    result = compare(records, base)
    assert not result.failed
    assert result.rows[-1].note == "1 failed record(s)"


def test_rows_of_an_all_failed_metric_are_left_out_of_a_baseline() -> None:
    records = run_records() + seeds("egt", "top5", [None, None, None])
    base = make_baseline(records, created=CREATED)
    assert "top5" not in {e["metric"] for e in base["entries"]}
    with pytest.raises(DataError, match="no successful records"):
        make_baseline(seeds("egt", "top1", [None]), created=CREATED)


def test_explainer_and_exit_rows_keep_their_names() -> None:
    mask = {"config": {"uses_masks": True, "training": {}}}
    records = [
        rec("egt", 0, "pg", 0.6, explainer="gradcam", exit=1, **mask),
        rec("egt", 0, "pg", 0.7, explainer="native", exit=1, **mask),
        rec("egt", 0, "pg", 0.8, explainer="native", **mask),
        rec("egt", 0, "top1", 0.9, **mask),
    ]
    rows = aggregate(records)
    assert list(rows) == [
        ("fmnist", "egt", "gradcam", "pg", 1),
        ("fmnist", "egt", "native", "pg", 1),
        ("fmnist", "egt", "native", "pg", None),
        ("fmnist", "egt", None, "top1", None),
    ]
    assert [r.mean for r in rows.values()] == [0.6, 0.7, 0.8, 0.9]
    base = make_baseline(records, created=CREATED)
    changed = [r.model_copy(update={"value": 0.5}) if r.explainer == "gradcam" else r for r in records]
    result = compare(changed, base)
    assert [(r.explainer, r.exit, r.status) for r in result.by_status("regressed")] == [("gradcam", 1, "regressed")]


def test_the_last_duplicate_of_a_seed_wins_as_in_the_leaderboard() -> None:
    base = make_baseline([rec("egt", 0, "top1", 0.8)], created=CREATED)
    rerun = [rec("egt", 0, "top1", None), rec("egt", 0, "top1", 0.8)]  # a failed cell re-run
    assert statuses(compare(rerun, base)) == {"top1": "ok"}


def test_different_settings_and_versions_are_noted() -> None:
    base = make_baseline(run_records(), created=CREATED)
    other = [
        r.model_copy(update={"setup": "setup-b", "versions": {"xbench": "0.1.0", "torch": "2.6.0"}})
        for r in run_records()
    ]
    result = compare(other, base)
    assert not result.failed
    assert any("setup setup-a → setup-b" in note for note in result.notes)
    assert any("torch 2.5.0 → 2.6.0" in note for note in result.notes)
    assert compare(run_records(), base).notes == ()


def test_command_line_overrides_replace_the_baseline_tolerances() -> None:
    base = make_baseline(run_records(), created=CREATED)
    worse = run_records(top1=[0.75, 0.77, 0.79])  # 5 points down, CI tolerance 9.9 points
    assert statuses(compare(worse, base))["top1"] == "ok"
    assert statuses(compare(worse, base, {"top1": {"kind": "abs", "value": 0.01}}))["top1"] == "regressed"
    assert statuses(compare(worse, base, {"*": {"kind": "abs", "value": 0.01}}))["top1"] == "regressed"


# -- baseline files ---------------------------------------------------------------------------------------
def test_make_baseline_contents() -> None:
    records = [*run_records(), rec("egt", 3, "top1", 0.82, git="4567def", versions={"xbench": "0.1.0"})]
    base = make_baseline(records, config={"name": "quick", "seeds": [0, 1, 2]}, created=CREATED)
    assert base["format"] == "xbench-baseline" and base["version"] == 1
    assert base["created"] == CREATED
    assert base["suite"] == "quick"
    assert base["git"] == ["0123abc", "4567def"]  # records from two commits: both are listed
    assert base["versions"] == {"torch": "2.5.0", "xbench": "0.1.0"}
    assert base["settings"] == {
        "config": {"name": "quick", "seeds": [0, 1, 2]},
        "setups": {"fmnist": {"egt": "setup-a"}},
    }
    assert base["default_tolerance"] == DEFAULT_TOLERANCE
    assert base["tolerances"] == {}
    assert [(e["metric"], e["n_seeds"]) for e in base["entries"]] == [("params", 3), ("time", 3), ("top1", 4)]
    params = base["entries"][0]
    assert params == {
        "dataset": "fmnist",
        "method": "egt",
        "explainer": None,
        "metric": "params",
        "exit": None,
        "mean": 77754.0,
        "ci": 0.0,
        "n_seeds": 3,
        "higher_is_better": False,
        "display": PARAMS,
    }


def test_without_config_yaml_the_record_configs_are_stored_without_the_data_path() -> None:
    base = make_baseline(run_records(), created=CREATED)
    assert base["settings"]["config"] is None
    assert base["settings"]["cells"] == {"fmnist": {"egt": {"training": {"epochs": 2}}}}
    assert "/home/someone" not in dump_baseline(base)


def test_refreshing_keeps_the_tolerances_and_description() -> None:
    first = make_baseline(
        run_records(),
        tolerances={"top1": {"kind": "abs", "value": 0.02}, "*": {"kind": "rel", "value": 0.1}},
        created=CREATED,
    )
    first["description"] = "CPU smoke baseline"
    refreshed = make_baseline(
        run_records(top1=[0.9, 0.9, 0.9]), previous=first, tolerances={"time": {"kind": "rel", "value": 1.0}}
    )
    assert refreshed["tolerances"] == {
        "top1": {"kind": "abs", "value": 0.02},
        "time": {"kind": "rel", "value": 1.0},
    }
    assert refreshed["default_tolerance"] == {"kind": "rel", "value": 0.1}
    assert refreshed["description"] == "CPU smoke baseline"
    assert refreshed["entries"][-1]["mean"] == pytest.approx(0.9)
    assert refreshed["created"] != CREATED


def test_dump_is_sorted_indented_and_round_trips(tmp_path: Any) -> None:
    base = make_baseline(run_records(), created=CREATED)
    text = dump_baseline(base)
    assert text.endswith("}\n")
    assert text.splitlines()[1] == '  "created": "2025-01-01T00:00:00+00:00",'
    keys = [line.split('"')[1] for line in text.splitlines() if line.startswith('  "')]
    assert keys == sorted(keys)
    path = tmp_path / "b.json"
    path.write_text(text)
    assert load_baseline(path) == base
    assert compare(run_records(), json.loads(text)).exit_code == 0


def good_baseline() -> dict[str, Any]:
    return json.loads(dump_baseline(make_baseline(run_records(), created=CREATED)))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda b: b.update(format="something"), "B: format: expected 'xbench-baseline'"),
        (lambda b: b.update(version=2), "B: version: 2 is newer"),
        (lambda b: b.update(version="1"), "B: version: expected a positive integer"),
        (lambda b: b.update(extra=1), "B: unknown key(s) ['extra']"),
        (lambda b: b.pop("default_tolerance"), "B: default_tolerance: expected an object"),
        (lambda b: b["tolerances"].update(top1={"kind": "abs"}), "B: tolerances.top1.value: missing"),
        (lambda b: b.update(tolerances=[]), "B: tolerances: expected an object"),
        (lambda b: b.update(entries={}), "B: entries: expected a list"),
        (lambda b: b["entries"][1].pop("mean"), "B: entries[1].mean: missing"),
        (lambda b: b["entries"][1].update(mean="0.8"), "B: entries[1].mean: expected a finite number"),
        (lambda b: b["entries"][1].update(n_seeds=0), "B: entries[1].n_seeds: expected an integer >= 1"),
        (lambda b: b["entries"][1].update(ci=-1), "B: entries[1].ci: expected a number >= 0"),
        (lambda b: b["entries"][1].update(exit=True), "B: entries[1].exit: expected an integer or null"),
        (lambda b: b["entries"][1].update(higher_is_better=1), "B: entries[1].higher_is_better: expected true"),
        (lambda b: b["entries"][1].update(colour=1), "B: entries[1]: unknown key(s) ['colour']"),
        (lambda b: b["entries"][1]["display"].update(scale="x"), "B: entries[1].display.scale"),
        (lambda b: b["entries"][1]["display"].update(font=1), "B: entries[1].display: unknown key(s)"),
        (lambda b: b["entries"].append(dict(b["entries"][0])), "B: entries[3]: duplicate row fmnist / egt / params"),
        (lambda b: b["settings"].update(setups=[]), "B: settings.setups: expected an object"),
    ],
)
def test_validate_baseline_names_the_key(edit: Any, expected: str) -> None:
    data = good_baseline()
    edit(data)
    with pytest.raises(DataError) as info:
        validate_baseline(data, "B")
    assert str(info.value).startswith(expected)


def test_validate_baseline_rejects_a_non_object() -> None:
    with pytest.raises(DataError, match="B: a baseline must be a JSON object, got list"):
        validate_baseline([], "B")


def test_entries_without_display_get_the_defaults() -> None:
    data = good_baseline()
    del data["entries"][0]["display"]
    assert validate_baseline(data, "B")["entries"][0]["display"] == {
        "label": "params",
        "unit": "",
        "scale": 1.0,
        "decimals": 3,
    }


# -- Markdown -----------------------------------------------------------------------------------------------
def test_markdown_has_a_verdict_and_a_section_per_status_in_display_units() -> None:
    base = make_baseline(run_records(), created=CREATED)
    records = [r for r in run_records(top1=[0.70, 0.72, 0.74], time=[2.0, 2.0, 2.0]) if r.metric != "params"]
    records += [rec("new|method", 0, "top1", 0.5)]
    result = compare(records, base)
    text = to_markdown(result, title="check")
    lines = text.splitlines()
    assert lines[0] == "# check"
    assert lines[2] == verdict(result)
    assert verdict(result) == (
        "**FAIL**: 1 regressed, 1 missing, 0 improved, 1 changed, 1 new; 0 of 3 baseline rows within tolerance."
    )
    sections = [line for line in lines if line.startswith("## ")]
    assert sections == [
        "## Regressed (1)",
        "## Missing (1)",
        "## Changed (no direction) (1)",
        "## New (not in the baseline) (1)",
    ]
    assert "| Dataset | Method | Explainer | Metric | Baseline | Current | Delta | Tolerance | Note |" in lines
    ci = f"{100 * CI3:.2f}"
    tol = f"{200 * CI3:.2f}"
    top1 = f"| fmnist | egt | — | top1 ↑ | 82.00 ± {ci} % (3 seeds) | 72.00 ± {ci} % (3 seeds) | -10.00 % |"
    assert f"{top1} ±{tol} % (2×CI) |  |" in lines
    assert "| fmnist | egt | — | params ↓ | 0.078 M (3 seeds) | — | — | ±5e-09 M (floor) | not in the run |" in lines
    assert "| fmnist | egt | — | time | 1.00 s (3 seeds) | 2.00 s (3 seeds) | +1.00 s | ±0.01 s (floor) |  |" in lines
    assert "| fmnist | new\\|method | — | top1 ↑ | — | 50.00 % (1 seed) | — | — |  |" in lines


def test_markdown_of_a_passing_check_has_no_tables() -> None:
    base = make_baseline(run_records(), created=CREATED)
    text = to_markdown(compare(run_records(), base))
    assert (
        text
        == "**PASS**: 0 regressed, 0 missing, 0 improved, 0 changed, 0 new; 3 of 3 baseline rows within tolerance.\n"
    )


def test_a_difference_below_the_display_precision_is_still_shown() -> None:
    base = make_baseline([rec("egt", 0, "top1", 0.8)], tolerances={"top1": {"kind": "abs", "value": 0.0}})
    text = to_markdown(compare([rec("egt", 0, "top1", 0.79999)], base))
    assert "| -0.001 % | ±0.00 % (abs) |" in text
