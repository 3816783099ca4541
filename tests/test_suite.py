"""Suite files: defaults, extends, --set overrides, and one-line errors naming the file and key."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xbench.errors import ConfigError
from xbench.suite import PluginSpec, Suite, TrainingConfig, dump_suite, load_suite

MINIMAL = {"datasets": ["synthetic_shapes"], "methods": ["baseline"]}


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def config_error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    """The message of the ConfigError that loading ``path`` raises; it must be one line naming the file."""
    with pytest.raises(ConfigError) as info:
        load_suite(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


# -- valid suites ------------------------------------------------------------------------
def test_minimal_suite_gets_defaults(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path / "tiny.yaml", MINIMAL))
    assert suite.name == "tiny"  # the file's stem
    assert suite.datasets == [PluginSpec(name="synthetic_shapes")]
    assert suite.methods == [PluginSpec(name="baseline")]
    assert [m.name for m in suite.metrics] == ["top1", "top5", "params", "flops"]
    assert suite.backbone == PluginSpec(name="resnet_cifar")
    assert suite.seeds == [0]
    assert suite.training == TrainingConfig()
    assert suite.training.epochs == 2 and suite.training.schedule == "cosine"
    assert suite.evaluation.batch_size == 500 and suite.evaluation.limit is None
    assert suite.device == "auto"
    assert suite.data.download is True and suite.data.dir is None
    assert suite.output == suite.output_dir == Path("results") / "tiny"  # the default is filled in


def test_full_suite(tmp_path: Path) -> None:
    data = {
        "name": "full",
        "description": "every key",
        "datasets": [{"name": "synthetic_shapes", "params": {"n_train": 64, "image_size": 16}, "label": "shapes"}],
        "backbone": {"name": "resnet_cifar", "params": {"depth": 14, "width": 8}},
        "methods": ["baseline", {"name": "baseline", "label": "baseline-2"}],
        "metrics": ["top1", {"name": "flops"}],
        "seeds": [0, 3],
        "training": {
            "epochs": 4,
            "optimizer": "adamw",
            "lr": 0.01,
            "schedule": "step",
            "step_epochs": [2, 3],
            "augment": ["flip", "crop"],
            "limit": 100,
        },
        "evaluation": {"limit": 50, "batch_size": 25},
        "device": "cuda:1",
        "output": "out/full",
        "data": {"dir": "/data", "download": False},
    }
    suite = load_suite(write(tmp_path / "whatever.yaml", data))
    assert suite.name == "full"
    assert suite.datasets[0].params == {"n_train": 64, "image_size": 16}
    assert suite.datasets[0].display == "shapes"
    assert suite.backbone.params == {"depth": 14, "width": 8}
    assert [m.display for m in suite.methods] == ["baseline", "baseline-2"]
    assert suite.training.step_epochs == [2, 3] and suite.training.optimizer == "adamw"
    assert suite.output_dir == Path("out/full")
    assert suite.data.dir == Path("/data") and suite.data.download is False


def test_string_shorthand_equals_mapping(tmp_path: Path) -> None:
    short = load_suite(write(tmp_path / "a.yaml", {**MINIMAL, "backbone": "resnet_cifar", "metrics": ["top1"]}))
    long = load_suite(
        write(
            tmp_path / "a2.yaml",
            {
                "datasets": [{"name": "synthetic_shapes"}],
                "methods": [{"name": "baseline"}],
                "backbone": {"name": "resnet_cifar"},
                "metrics": [{"name": "top1", "params": {}}],
            },
        )
    )
    assert short.model_dump(exclude={"name", "output"}) == long.model_dump(exclude={"name", "output"})


def test_empty_file_names_missing_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.yaml", "")
    assert "datasets: Field required" in config_error(path)


def test_dump_suite_round_trips(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path / "rt.yaml", {**MINIMAL, "seeds": [1, 2]}))
    again = load_suite(write(tmp_path / "rt2.yaml", dump_suite(suite)))
    assert again == suite


# -- extends ----------------------------------------------------------------------------------
def test_extends_merges_deeply_and_replaces_lists(tmp_path: Path) -> None:
    write(
        tmp_path / "base" / "parent.yaml",
        {
            "name": "parent",
            "output": "results/parent",
            "datasets": ["synthetic_shapes"],
            "methods": ["baseline"],
            "seeds": [0, 1, 2],
            "backbone": {"name": "resnet_cifar", "params": {"depth": 14, "width": 8}},
            "training": {"epochs": 5, "lr": 0.2, "augment": ["flip", "crop"]},
        },
    )
    child = write(
        tmp_path / "suites" / "child.yaml",
        {
            "extends": "../base/parent.yaml",  # relative to the child's folder, not the working directory
            "seeds": [7],
            "backbone": {"params": {"width": 4}},
            "training": {"epochs": 1, "augment": ["flip"]},
        },
    )
    suite = load_suite(child)
    assert suite.name == "child"  # the parent's name is not inherited
    assert suite.output == Path("results") / "child"  # nor its output folder
    assert suite.seeds == [7]  # lists are replaced, not concatenated
    assert suite.training.augment == ["flip"]
    assert suite.training.epochs == 1  # the child overrides ...
    assert suite.training.lr == 0.2  # ... and the parent's sibling keys survive
    assert suite.backbone.params == {"depth": 14, "width": 4}
    assert [d.name for d in suite.datasets] == ["synthetic_shapes"]


def test_extends_chain_and_child_name(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {**MINIMAL, "training": {"epochs": 3, "lr": 0.3}})
    write(tmp_path / "b.yaml", {"extends": "a.yaml", "training": {"lr": 0.05}})
    c = write(tmp_path / "c.yaml", {"extends": "b.yaml", "name": "named", "training": {"batch_size": 16}})
    suite = load_suite(c)
    assert suite.name == "named"
    assert (suite.training.epochs, suite.training.lr, suite.training.batch_size) == (3, 0.05, 16)


@pytest.mark.parametrize("cycle", [["a.yaml"], ["a.yaml", "b.yaml"], ["a.yaml", "b.yaml", "c.yaml"]])
def test_circular_extends(tmp_path: Path, cycle: list[str]) -> None:
    for i, name in enumerate(cycle):
        write(tmp_path / name, {**MINIMAL, "extends": cycle[(i + 1) % len(cycle)]})
    with pytest.raises(ConfigError) as info:
        load_suite(tmp_path / cycle[0])
    assert "circular" in str(info.value)
    assert "a.yaml" in str(info.value)
    assert "\n" not in str(info.value)


def test_extends_missing_parent(tmp_path: Path) -> None:
    path = write(tmp_path / "child.yaml", {**MINIMAL, "extends": "nope.yaml"})
    message = config_error(path)
    assert "extends" in message and "nope.yaml" in message


def test_extends_not_a_path(tmp_path: Path) -> None:
    path = write(tmp_path / "child.yaml", {**MINIMAL, "extends": ["a.yaml"]})
    assert "extends: must be a file path" in config_error(path)


# -- --set overrides -----------------------------------------------------------------------------
def test_set_nested_key_and_yaml_types(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", MINIMAL)
    suite = load_suite(
        path,
        [
            "training.epochs=3",
            "seeds=[0,1]",
            "training.lr=0.5",
            "training.nesterov=false",
            "data.download=false",
            "evaluation.limit=null",
        ],
    )
    assert suite.training.epochs == 3 and isinstance(suite.training.epochs, int)
    assert suite.seeds == [0, 1] and all(isinstance(s, int) for s in suite.seeds)
    assert suite.training.lr == 0.5
    assert suite.training.nesterov is False
    assert suite.data.download is False
    assert suite.evaluation.limit is None


def test_set_beats_yaml_and_yaml_beats_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", {**MINIMAL, "training": {"epochs": 7, "lr": 0.3}})
    suite = load_suite(path, ["training.epochs=1"])
    assert (suite.training.epochs, suite.training.lr, suite.training.batch_size) == (1, 0.3, 128)


def test_set_list_index_both_syntaxes(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", {**MINIMAL, "methods": ["baseline", {"name": "baseline", "label": "b2"}]})
    suite = load_suite(
        path, ["methods[0].params.x=1", "methods.0.label=foo", "methods.1.params.y=[1, 2]"], check_plugins=False
    )
    assert suite.methods[0] == PluginSpec(name="baseline", params={"x": 1}, label="foo")
    assert suite.methods[1] == PluginSpec(name="baseline", params={"y": [1, 2]}, label="b2")


def test_set_backbone_param_on_shorthand(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", {**MINIMAL, "backbone": "resnet_cifar"})
    suite = load_suite(path, ["backbone.params.depth=14"])
    assert suite.backbone == PluginSpec(name="resnet_cifar", params={"depth": 14})


def test_set_value_with_equals_sign(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path / "s.yaml", MINIMAL), ["description=a=b"])
    assert suite.description == "a=b"


def test_set_unknown_key_blames_the_flag(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", MINIMAL)
    message = config_error(path, ("training.epochz=3",))
    assert "--set training.epochz: unknown key" in message
    for key in TrainingConfig.model_fields:
        assert key in message
    assert "valid keys: augment, batch_size, channels_last, compile, epochs," in message  # sorted


def test_set_bad_value_blames_the_flag(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", MINIMAL)
    message = config_error(path, ("training.epochs=-1",))
    assert "--set training.epochs:" in message and "(got -1)" in message


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("training.epochs", "expected key.path=value"),
        ("=3", "expected key.path=value"),
        ("methods[5].label=x", "index 5 out of range"),
        ("methods.3.params.x=1", "index 3 out of range"),
        ("training.epochs.x=1", "cannot set a key inside int"),
        ("training.lr=[1, 2", "is not valid YAML"),
    ],
)
def test_set_malformed(tmp_path: Path, assignment: str, expected: str) -> None:
    path = write(tmp_path / "s.yaml", {**MINIMAL, "training": {"epochs": 2}})
    message = config_error(path, (assignment,))
    assert expected in message
    assert "--set" in message


def test_set_below_a_missing_scalar_blames_the_flag(tmp_path: Path) -> None:
    """The file does not mention training.epochs, so the message must point at the --set flag."""
    path = write(tmp_path / "s.yaml", MINIMAL)
    message = config_error(path, ("training.epochs.x=1",))
    assert "--set training.epochs" in message


@pytest.mark.parametrize("assignment", [".=1", "[]=1", "..=x", "[x]=1"])
def test_set_key_without_any_segment_is_a_config_error(tmp_path: Path, assignment: str) -> None:
    path = write(tmp_path / "s.yaml", MINIMAL)
    with pytest.raises(ConfigError):
        load_suite(path, [assignment])


# -- bad input: one line naming the file and the key ---------------------------------------------------
BAD_SUITES: list[tuple[str, Any, list[str]]] = [
    (
        "wrong_type",
        {**MINIMAL, "training": {"epochs": "ten"}},
        ["training.epochs: Input should be a valid integer", "'ten'"],
    ),
    ("wrong_type_section", {**MINIMAL, "training": [1, 2]}, ["training:"]),
    (
        "unknown_top_key",
        {**MINIMAL, "trainig": {"epochs": 1}},
        ["trainig: unknown key", "valid keys:", "training", "methods", "datasets"],
    ),
    (
        "unknown_nested_key",
        {**MINIMAL, "training": {"epochz": 1}},
        ["training.epochz: unknown key", "valid keys:", "epochs", "warmup_epochs"],
    ),
    (
        "unknown_plugin_key",
        {**MINIMAL, "methods": [{"name": "baseline", "lable": "x"}]},
        ["methods[0].lable: unknown key", "valid keys: backbone, checkpoint, datasets, label, methods, name, params"],
    ),
    (
        "unknown_method",
        {**MINIMAL, "methods": ["baselin"]},
        ["methods[0].name:", "unknown method 'baselin'", "did you mean 'baseline'"],
    ),
    ("unknown_metric", {**MINIMAL, "metrics": ["top1", "top_5"]}, ["metrics[1].name:", "did you mean 'top5'"]),
    (
        "unknown_dataset",
        {**MINIMAL, "datasets": ["fashion-mnist"]},
        ["datasets[0].name:", "did you mean 'fashion_mnist'"],
    ),
    ("unknown_backbone", {**MINIMAL, "backbone": "resnet"}, ["backbone.name:", "unknown backbone 'resnet'"]),
    (
        "unknown_method_param",
        {**MINIMAL, "methods": [{"name": "baseline", "params": {"foo": 1}}]},
        ["methods[0].params.foo: unknown key"],
    ),
    (
        "unknown_dataset_param",
        {**MINIMAL, "datasets": [{"name": "synthetic_shapes", "params": {"n_trian": 5}}]},
        ["datasets[0].params.n_trian: unknown key", "n_train"],
    ),
    (
        "bad_backbone_depth",
        {**MINIMAL, "backbone": {"name": "resnet_cifar", "params": {"depth": 9}}},
        ["backbone.params.depth:", "6n+2", "(got 9)"],
    ),
    (
        "negative_epochs",
        {**MINIMAL, "training": {"epochs": -1}},
        ["training.epochs:", "greater than or equal to 0", "(got -1)"],
    ),
    ("zero_lr", {**MINIMAL, "training": {"lr": 0}}, ["training.lr:", "greater than 0"]),
    ("bad_literal", {**MINIMAL, "training": {"optimizer": "lbfgs"}}, ["training.optimizer:", "'lbfgs'"]),
    ("empty_methods", {**MINIMAL, "methods": []}, ["methods:", "at least 1 item"]),
    ("empty_seeds", {**MINIMAL, "seeds": []}, ["seeds:", "at least 1 item"]),
    ("duplicate_seeds", {**MINIMAL, "seeds": [1, 1]}, ["seeds: duplicate"]),
    (
        "duplicate_methods",
        {**MINIMAL, "methods": ["baseline", "baseline"]},
        ["methods: duplicate row 'baseline'", "label"],
    ),
    ("bad_device", {**MINIMAL, "device": "gpu"}, ["device:", "auto, cpu, cuda", "'gpu'"]),
    ("bad_device_index", {**MINIMAL, "device": "cuda:x"}, ["device:", "'cuda:x'"]),
    (
        "negative_threshold",
        {**MINIMAL, "methods": [{"name": "egt", "params": {"thresholds": [0.9, -1]}}]},
        ["methods[0].params.thresholds[1]:", "greater than or equal to 0", "-1"],
    ),
    (
        "negative_coded_threshold",
        {**MINIMAL, "methods": [{"name": "coded_resnext", "params": {"thresholds": [-0.1, 0.5, 0.5, 0.5]}}]},
        ["methods[0].params.thresholds[0]:", "greater than or equal to 0"],
    ),
    (
        "no_explainers_for_explanation_metrics",
        {**MINIMAL, "metrics": ["top1", "pointing_game"], "explainers": []},
        ["explainers: empty", "metrics[1] (pointing_game)"],
    ),
    ("top_level_list", "- baseline\n- top1\n", ["a suite must be a mapping", "list"]),
    ("top_level_scalar", "just text\n", ["a suite must be a mapping", "str"]),
    ("yaml_syntax", "datasets: [synthetic_shapes\nmethods: [baseline]\n", ["line ", "YAML syntax error"]),
    ("yaml_tab", "datasets:\n\t- synthetic_shapes\n", ["line 2", "YAML syntax error"]),
]


@pytest.mark.parametrize(("stem", "content", "expected"), BAD_SUITES, ids=[c[0] for c in BAD_SUITES])
def test_bad_suite_is_one_line_naming_file_and_key(
    tmp_path: Path, stem: str, content: Any, expected: list[str]
) -> None:
    message = config_error(write(tmp_path / f"{stem}.yaml", content))
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(path)
    assert "no such suite file" in message


def test_directory_is_not_a_suite(tmp_path: Path) -> None:
    assert "no such suite file" in config_error(tmp_path)


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\ndatasets: [synthetic_shapes]\nmethods: [baseline]\n")
    message = config_error(path)
    assert "not UTF-8" in message and "byte 9" in message


def test_yaml_error_reports_the_right_line(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "datasets: [synthetic_shapes]\nmethods: [baseline]\ntraining: {epochs: 1\n")
    message = config_error(path)
    assert "line 4" in message or "line 3" in message


# -- properties --------------------------------------------------------------------------------------------
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
_training_keys = st.sampled_from(sorted(TrainingConfig.model_fields)) | st.text(max_size=10)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(training=st.one_of(_values, st.dictionaries(_training_keys, _values, max_size=4)))
def test_garbage_training_raises_only_config_error(training: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "fuzz.yaml", {**MINIMAL, "training": training})
        try:
            suite = load_suite(path)
        except ConfigError as err:
            assert "\n" not in str(err)
            assert str(err).startswith(f"{path}: ")
            assert "training" in str(err)
        else:
            assert isinstance(suite.training, TrainingConfig)


@settings(max_examples=150, deadline=None, database=None)
@given(key=st.sampled_from(sorted(TrainingConfig.model_fields)), raw=st.text(max_size=20))
def test_garbage_set_values_raise_only_config_error(key: str, raw: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "fuzz.yaml", MINIMAL)
        try:
            suite = load_suite(path, [f"training.{key}={raw}"])
        except ConfigError as err:
            assert "\n" not in str(err)
        else:
            assert isinstance(suite, Suite)


@settings(max_examples=150, deadline=None, database=None)
@given(key=st.text(alphabet=".[]0123456789abxyz_", min_size=1, max_size=12), raw=st.sampled_from(["1", "x", "[]"]))
def test_garbage_set_keys_raise_only_config_error(key: str, raw: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "fuzz.yaml", MINIMAL)
        try:
            load_suite(path, [f"{key}={raw}"])
        except ConfigError as err:
            assert "\n" not in str(err)


# -- method rows restricted to datasets ---------------------------------------------------------------
TWO_DATASETS = {
    "datasets": ["synthetic_shapes", {"name": "synthetic_shapes", "label": "shapes2", "params": {"seed": 1}}],
    "methods": ["baseline", {"name": "egt", "datasets": ["shapes2"]}],
}


def test_method_rows_restricted_to_datasets_make_fewer_cells(tmp_path: Path) -> None:
    from xbench.engine.driver import Driver, RunOptions

    suite = load_suite(write(tmp_path / "s.yaml", {**TWO_DATASETS, "seeds": [0, 1]}))
    assert suite.methods[1].datasets == ["shapes2"]
    cells = [c.id for c in Driver(suite, RunOptions(progress=False)).cells()]
    assert cells == [
        "synthetic_shapes/baseline/seed0", "synthetic_shapes/baseline/seed1",
        "shapes2/baseline/seed0", "shapes2/baseline/seed1", "shapes2/egt/seed0", "shapes2/egt/seed1",
    ]  # fmt: skip
    dumped = yaml.safe_load(dump_suite(suite))
    assert dumped["methods"][1]["datasets"] == ["shapes2"] and "datasets" not in dumped["methods"][0]
    assert all("methods" not in row for row in dumped["explainers"])
    assert load_suite(write(tmp_path / "again.yaml", dumped)) == suite


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"methods": ["baseline", {"name": "egt", "datasets": ["nope"]}]}, "methods[1].datasets[0]: 'nope' is not"),
        ({"methods": [{"name": "egt", "datasets": []}]}, "methods[0].datasets: empty"),
        ({"metrics": [{"name": "top1", "datasets": ["shapes2"]}]}, "metrics[0].datasets: only method rows"),
        ({"backbone": {"name": "resnet_cifar", "datasets": ["shapes2"]}}, "backbone.datasets: only method rows"),
        ({"explainers": [{"name": "random", "methods": ["baselin"]}]}, "explainers[0].methods[0]: 'baselin' is not"),
        ({"explainers": ["gradcam", {"name": "random", "methods": []}]}, "explainers[1].methods: empty"),
        ({"methods": [{"name": "egt", "methods": ["baseline"]}]}, "methods[0].methods: only explainer rows"),
        ({"backbone": {"name": "resnet_cifar", "methods": ["egt"]}}, "backbone.methods: only explainer rows"),
    ],
)
def test_bad_dataset_restrictions(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    assert expected in config_error(write(tmp_path / "s.yaml", {**TWO_DATASETS, **change}))


# -- resources.jobs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("resources", "flag", "expected"),
    [
        ({}, None, 1),  # serial unless asked
        ({"jobs": 3}, None, 3),
        ({"jobs": 3}, 2, 2),  # --jobs beats the suite
        ({"jobs": "auto", "cpus": 1}, None, "cores"),
        ({"jobs": "auto"}, None, "cores"),  # cpus unset counts as 1
        ({"jobs": "auto", "cpus": 10_000}, None, 1),  # never 0
    ],
)
def test_jobs_from_the_suite_or_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resources: dict[str, Any], flag: int | None, expected: Any
) -> None:
    from xbench.engine import driver as driver_module

    monkeypatch.setattr(driver_module, "cpu_count", lambda: 4)
    suite = load_suite(write(tmp_path / "s.yaml", {**MINIMAL, "resources": resources}))
    runner = driver_module.Driver(suite, driver_module.RunOptions(progress=False, jobs=flag))
    assert runner.jobs == (4 // resources.get("cpus", 1) if expected == "cores" else expected)


@pytest.mark.parametrize("jobs", [0, -1, "many", True, 1.5])
def test_bad_jobs(tmp_path: Path, jobs: Any) -> None:
    message = config_error(write(tmp_path / "s.yaml", {**MINIMAL, "resources": {"jobs": jobs}}))
    assert message.split(": ", 1)[1].startswith("resources.jobs")


# -- per-method training overrides ---------------------------------------------------------------------
OVERRIDE = {
    "datasets": ["synthetic_shapes"],
    "methods": ["baseline", {"name": "tame", "training": {"lr": 0.001, "epochs": 3, "schedule": "onecycle"}}],
    "training": {"epochs": 1, "lr": 0.1},
}


def test_a_method_row_overrides_training_for_its_cells_only(tmp_path: Path) -> None:
    from xbench.engine.plan import Plan

    suite = load_suite(write(tmp_path / "s.yaml", OVERRIDE))
    baseline, tame = suite.methods
    assert suite.training_for(baseline) is suite.training
    merged = suite.training_for(tame)
    assert (merged.lr, merged.epochs, merged.schedule, merged.batch_size) == (0.001, 3, "onecycle", 128)
    plan = Plan(suite)
    cells = {c.method.name: c for c in plan.cells()}
    assert plan.cell_config(cells["tame"])["training"] == merged.model_dump(mode="json")
    assert plan.cell_config(cells["baseline"])["training"] == suite.training.model_dump(mode="json")
    # Part of the cell's cache key: another override trains another model.
    other = load_suite(write(tmp_path / "o.yaml", {**OVERRIDE, "methods": ["baseline", {"name": "tame"}]}))
    other_tame = next(c for c in Plan(other).cells() if c.method.name == "tame")
    assert plan.resolve(cells["tame"]).model_key != Plan(other).resolve(other_tame).model_key
    assert plan.resolve(cells["baseline"]).model_key == Plan(other).resolved[0].model_key
    assert "training" not in yaml.safe_load(dump_suite(other))["methods"][1]  # unset: not written


@pytest.mark.parametrize(
    ("training", "expected"),
    [
        ({"lr": -1}, "methods[1].training.lr: Input should be greater than 0 (got -1)"),
        (
            {"epochz": 3},
            "methods[1].training.epochz: unknown key (valid keys: augment, batch_size, channels_last, compile, epochs,",
        ),
        ({"epochs": True}, "methods[1].training.epochs:"),
        ({"limit": 10}, "methods[1].training.limit: set it for the whole suite (training.limit)"),
        ({"holdout": 10}, "methods[1].training.holdout: set it for the whole suite"),
        ({"augment": [{"name": "randaugment", "magnitude": 40}]}, "methods[1].training.augment[0]"),
    ],
)
def test_bad_training_overrides(tmp_path: Path, training: dict[str, Any], expected: str) -> None:
    data = {**OVERRIDE, "methods": ["baseline", {"name": "tame", "training": training}]}
    assert expected in config_error(write(tmp_path / "s.yaml", data))


def test_only_method_rows_override_training(tmp_path: Path) -> None:
    data = {**OVERRIDE, "metrics": [{"name": "top1", "training": {"lr": 0.1}}]}
    assert "metrics[0].training: only method rows can override training settings" in config_error(
        write(tmp_path / "s.yaml", data)
    )


def test_override_from_the_command_line(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path / "s.yaml", OVERRIDE), ["methods[1].training.batch_size=32"])
    assert suite.training_for(suite.methods[1]).batch_size == 32
    assert suite.training_for(suite.methods[1]).lr == 0.001


def test_randaugment_by_name_or_with_settings(tmp_path: Path) -> None:
    plain = load_suite(write(tmp_path / "a.yaml", {**MINIMAL, "training": {"augment": ["crop", "randaugment"]}}))
    ra = plain.training.randaugment
    assert ra is not None and (ra.num_ops, ra.magnitude, ra.num_magnitude_bins) == (2, 9, 31)  # torchvision's
    given = {"augment": [{"name": "randaugment", "num_ops": 3, "magnitude": 4, "num_magnitude_bins": 11}]}
    ra = load_suite(write(tmp_path / "b.yaml", {**MINIMAL, "training": given})).training.randaugment
    assert ra is not None and (ra.num_ops, ra.magnitude) == (3, 4)
    assert load_suite(write(tmp_path / "c.yaml", MINIMAL)).training.randaugment is None
    message = config_error(write(tmp_path / "d.yaml", {**MINIMAL, "training": {"augment": ["randaugmnt"]}}))
    # One line about the value the user wrote, not about pydantic's union members.
    assert message.endswith("training.augment[0]: Input should be 'flip', 'crop' or 'randaugment' (got 'randaugmnt')")
    bad = {"augment": ["flip", {"name": "randaugment", "num_ops": 0}]}
    message = config_error(write(tmp_path / "e.yaml", {**MINIMAL, "training": bad}))
    assert message.endswith("training.augment[1].num_ops: Input should be greater than or equal to 1 (got 0)")


# -- report views ---------------------------------------------------------------------------
def test_report_view_defaults_to_paper_and_takes_full(tmp_path: Path) -> None:
    from typing import get_args

    from xbench.report.views import DEFAULT_VIEW, VIEWS
    from xbench.suite import ReportConfig

    assert set(get_args(ReportConfig.model_fields["view"].annotation)) == set(VIEWS)  # the suite knows every view
    assert load_suite(write(tmp_path / "a.yaml", MINIMAL)).report.view == DEFAULT_VIEW == "paper"
    full = load_suite(write(tmp_path / "b.yaml", {**MINIMAL, "report": {"view": "full"}}))
    assert full.report.view == "full"
    assert load_suite(tmp_path / "a.yaml", ["report.view=full"]).report.view == "full"
    assert "view: full" in dump_suite(full)


@pytest.mark.parametrize(
    ("content", "overrides", "expected"),
    [
        ({**MINIMAL, "report": {"view": "wide"}}, (), ["report.view:", "'paper' or 'full'", "'wide'"]),
        ({**MINIMAL, "report": {"veiw": "full"}}, (), ["report.veiw: unknown key", "view"]),
        ({**MINIMAL, "report": "paper"}, (), ["report:"]),
        (MINIMAL, ("report.view=compact",), ["--set report.view", "'compact'"]),
    ],
    ids=["unknown_view", "unknown_key", "not_a_mapping", "set_unknown_view"],
)
def test_bad_report_view_is_one_line_naming_file_and_key(
    tmp_path: Path, content: Any, overrides: tuple[str, ...], expected: list[str]
) -> None:
    message = config_error(write(tmp_path / "v.yaml", content), overrides)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
