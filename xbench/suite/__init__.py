"""Suites: YAML files mapped one-to-one onto typed config objects.

Precedence is defaults < YAML (after ``extends:``) < ``--set key.path=value``.
Every problem is reported as one :class:`~xbench.errors.ConfigError` line that
names the file and the key at fault, e.g.::

    suites/x.yaml: training.epochs: Input should be a valid integer (got 'ten')
    suites/x.yaml: methods[0].name: unknown method 'baselin'; did you mean 'baseline'?

Stricter than plain YAML + pydantic: a key given twice in one mapping is an error (PyYAML
would keep the last), a YAML boolean is never read as a number (``epochs: yes`` is not 1),
and numbers, plugin parameters included, must be finite. Every count and width has an upper
bound, and a file is refused before it can cost memory or time (:mod:`xbench.suite.strict_yaml`:
over 1 MiB, nested over 32 levels, aliases that expand past a MiB's worth, tags, huge integers).

A suite file::

    name: quick                    # defaults to the file's stem
    extends: base.yaml             # optional; relative to this file
    datasets: [fashion_mnist]      # a name, or {name, params, label}
    backbone: {name: resnet_cifar, params: {depth: 8, width: 16}}
    methods: [baseline]
    metrics: [top1, top5, params, flops]
    seeds: [0]
    training: {epochs: 2, batch_size: 128, optimizer: sgd, lr: 0.1, schedule: cosine}
    evaluation: {limit: null, batch_size: 500}
    device: auto                   # auto | cpu | cuda | cuda:N
    output: results/quick
    report: {view: paper}          # paper | full: what the tables show
"""

from xbench.suite.loader import apply_override, dump_suite, load_suite, read_yaml, validate_plugins
from xbench.suite.messages import format_validation_error, number_problem
from xbench.suite.schema import (
    SEED_LIMIT,
    SHARED_TRAINING_KEYS,
    DataConfig,
    EvaluationConfig,
    PluginSpec,
    RandAugmentConfig,
    ReportConfig,
    ResourcesConfig,
    Seed,
    Suite,
    TrainingConfig,
)

__all__ = [
    "SEED_LIMIT", "SHARED_TRAINING_KEYS", "DataConfig", "EvaluationConfig", "PluginSpec", "RandAugmentConfig",
    "ReportConfig", "ResourcesConfig", "Seed", "Suite", "TrainingConfig", "apply_override", "dump_suite",
    "format_validation_error", "load_suite", "number_problem", "read_yaml", "validate_plugins",
]  # fmt: skip
