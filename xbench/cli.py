"""The command line: ``python -m xbench {run,list,validate,report,check,baseline}``.

Input errors print one line, ``xbench: error: <file>: <key>: <problem>``, and exit
with code 2; a run in which some cell failed, or a check that finds a regression or
a missing row, exits with code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from xbench.errors import XBenchError

if TYPE_CHECKING:
    from xbench.report.records import Record

EXAMPLES = {
    "run": """examples:
  python -m xbench run suites/quick.yaml
  python -m xbench run suites/smoke.yaml --set training.epochs=1 --set seeds=[0,1]
  python -m xbench run suites/quick.yaml --data-dir ~/data --device cpu
  python -m xbench run suites/quick.yaml --jobs 2                       # two cells at a time, one thread each
  python -m xbench run suites/smoke.yaml --view full                    # tables with every column
  python -m xbench run suites/cifar100.yaml --executor ray --address auto   # on an existing Ray cluster""",
    "list": """examples:
  python -m xbench list methods
  python -m xbench list suites""",
    "validate": """examples:
  python -m xbench validate suites/quick.yaml
  python -m xbench validate suites/quick.yaml --set methods[1].params.lam=0.5""",
    "report": """examples:
  python -m xbench report results/quick
  python -m xbench report results/quick -o /tmp/tables
  python -m xbench report results/quick -o /tmp/full --view full   # every column, one per exit""",
    "check": """examples:
  python -m xbench check results/quick --baseline results/baselines/quick.json
  python -m xbench check results/quick -b results/baselines/quick.json --output summary.md
  python -m xbench check results/quick -b results/baselines/quick.json --tolerance top1=abs:0.01 --tolerance '*=ci:3'

tolerances are in raw units (0.01 top-1 = 1 percentage point):
  METRIC=abs:VALUE          allowed deviation VALUE
  METRIC=rel:FRACTION       FRACTION * |baseline mean|
  METRIC=ci:FACTOR[:FLOOR]  max(FACTOR * baseline 95% CI half-width, FLOOR)
  METRIC is a metric name, metric@exitK for one exit, or '*' for the default.

exit codes: 0 no regression, 1 a regression or a missing row, 2 bad input.""",
    "baseline": """examples:
  python -m xbench baseline results/quick -o results/baselines/quick.json
  python -m xbench baseline results/quick -o results/baselines/quick.json --tolerance top1=abs:0.02
  python -m xbench baseline results/quick -o results/baselines/quick.json --tolerance '*=ci:2:0.005'

Refreshing an existing file keeps its default and per-metric tolerances (--tolerance overrides them).""",
}


def _add_suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", type=Path, help="suite YAML file, e.g. suites/quick.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override any suite field (value parsed as YAML); repeatable",
    )


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error every other bad input gets (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="python -m xbench",
        formatter_class=fmt,
        description="Benchmark interpretable and early-exit image classifiers.",
        epilog="examples:\n  python -m xbench run suites/quick.yaml\n  python -m xbench list methods\n\n"
        "Run 'python -m xbench COMMAND --help' for a command's options.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # -v also after the command; SUPPRESS keeps the top-level count unless given here.
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging (-vv: debug)")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="train and evaluate every cell of a suite",
        epilog=EXAMPLES["run"],
        formatter_class=fmt,
        description="Train (or load from the cache) and evaluate every "
        "(dataset, method, seed) cell of a suite, then write records and leaderboards.",
    )
    _add_suite_args(run)
    run.add_argument("--data-dir", type=Path, help="where datasets live (before $XBENCH_DATA and standard places)")
    run.add_argument(
        "--cache-dir", type=Path, help="checkpoint/result cache (default $XBENCH_CACHE or ~/.cache/xbench)"
    )
    run.add_argument("--output", type=Path, help="results folder (default: the suite's output)")
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the suite's device)")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failing cell")
    run.add_argument(
        "--reference", type=Path, metavar="DIR", help="evaluate the reference models in DIR instead of training"
    )
    run.add_argument(
        "--export-reference", type=Path, metavar="DIR", help="also save every cell's trained model to DIR (+ manifest)"
    )
    run.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="where cells run: this machine (default) or a Ray cluster, one task per cell",
    )
    run.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="local executor: run N cells at a time in worker processes (default: the suite's resources.jobs, "
        "1 unless set: in this process)",
    )
    run.add_argument(
        "--address",
        metavar="auto|HOST:PORT",
        help="--executor ray: the cluster to join (default: start a Ray instance on this machine)",
    )
    _add_view_arg(run, "the suite's report.view, paper unless set")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )

    lst = sub.add_parser(
        "list",
        parents=[common],
        help="list registered plugins or available suites",
        epilog=EXAMPLES["list"],
        formatter_class=fmt,
        description="List what is registered (built-in and plugins).",
    )
    lst.add_argument("kind", choices=["methods", "metrics", "datasets", "backbones", "explainers", "suites"])
    lst.add_argument("--suites-dir", type=Path, default=Path("suites"), help="where 'list suites' looks")

    val = sub.add_parser(
        "validate",
        parents=[common],
        help="check a suite without running it",
        epilog=EXAMPLES["validate"],
        formatter_class=fmt,
        description="Load and validate a suite (keys, types, plugin "
        "names and parameters) and print the resolved configuration.",
    )
    _add_suite_args(val)
    val.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")

    rep = sub.add_parser(
        "report",
        parents=[common],
        help="re-render leaderboards from a run's records",
        epilog=EXAMPLES["report"],
        formatter_class=fmt,
        description="Re-render leaderboard.md/.csv/.tex from the records.jsonl of one or more result folders.",
    )
    rep.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a results folder")
    rep.add_argument("-o", "--output", type=Path, help="where to write the tables (default: the RUN_DIR)")
    _add_view_arg(rep, "the report.view of the first RUN_DIR's config.yaml, paper without one")

    chk = sub.add_parser(
        "check",
        parents=[common],
        help="compare a run with a committed baseline",
        epilog=EXAMPLES["check"],
        formatter_class=fmt,
        description="Compare every (dataset, method, explainer, metric, exit) of a run, aggregated over seeds, "
        "with a baseline file and print a Markdown summary. Only regressions in a metric's own direction "
        "and baseline rows missing from the run (or failed) fail the check.",
    )
    chk.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a results folder (or its records.jsonl)")
    chk.add_argument("-b", "--baseline", type=Path, required=True, metavar="FILE", help="baseline JSON file")
    _add_tolerance_arg(chk, "override a tolerance for this check")
    chk.add_argument("-o", "--output", type=Path, metavar="FILE", help="also write the Markdown summary to FILE")

    base = sub.add_parser(
        "baseline",
        parents=[common],
        help="write or refresh a baseline file from a run",
        epilog=EXAMPLES["baseline"],
        formatter_class=fmt,
        description="Write the seed-aggregated values of a run, its settings, versions and tolerances "
        "to a baseline JSON file for 'python -m xbench check'.",
    )
    base.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a results folder (or its records.jsonl)")
    base.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="baseline JSON file to write")
    _add_tolerance_arg(base, "set a tolerance in the file")
    return parser


VIEW_CHOICES = ("paper", "full")  # xbench.report.views.VIEWS, without importing pandas for --help


def _add_view_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--view",
        choices=VIEW_CHOICES,
        help="what the Markdown, LaTeX and HTML tables show: paper (compact, per-exit values in their own "
        f"tables) or full (every column; the CSVs always have every column); default: {default}",
    )


def _add_tolerance_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "-t",
        "--tolerance",
        dest="tolerances",
        action="append",
        default=[],
        metavar="METRIC=KIND:VALUE",
        help=f"{what}: abs:V, rel:R or ci:FACTOR[:FLOOR]; METRIC '*' is the default; repeatable",
    )


MAX_JOBS = 256  # worker processes; each loads the data and torch (~300 MB), so more cannot run on one machine


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    if value > MAX_JOBS:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_JOBS} worker processes")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from xbench.engine.driver import RunOptions, run_suite, stage_summary
    from xbench.errors import ConfigError
    from xbench.suite import Suite, load_suite

    if args.output is not None and str(args.output).strip() in ("", "."):
        raise ConfigError(f"--output {str(args.output)!r}: give a results folder, not the current directory")
    for flag, folder in (("--data-dir", args.data_dir), ("--reference", args.reference)):
        if folder is not None and folder.exists() and not folder.is_dir():
            raise ConfigError(f"{flag} {folder}: not a folder")
    if args.address is not None and args.executor != "ray":
        raise ConfigError(f"--address {args.address}: only applies to --executor ray")
    if args.jobs is not None and args.jobs > 1 and args.executor != "local":
        raise ConfigError(f"--jobs {args.jobs}: only applies to --executor local (Ray schedules cells itself)")
    suite = load_suite(args.suite, args.overrides)
    # --output and --device are taken literally (not parsed as YAML like --set values).
    if args.output is not None:
        suite = suite.model_copy(update={"output": args.output})
    if args.view is not None:
        suite = suite.model_copy(update={"report": suite.report.model_copy(update={"view": args.view})})
    if args.device is not None:
        try:
            suite = Suite.model_validate({**suite.model_dump(), "device": args.device})
        except ValidationError as err:
            raise ConfigError(
                f"--device {args.device!r}: {err.errors()[0]['msg'].removeprefix('Value error, ')}"
            ) from err
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    opts = RunOptions(
        data_dir=args.data_dir, cache_dir=args.cache_dir, progress=progress, fail_fast=args.fail_fast,
        reference=args.reference, export_reference=args.export_reference,
        executor=args.executor, jobs=args.jobs, address=args.address,
    )  # fmt: skip
    result = run_suite(suite, opts, source=str(args.suite))
    out = result.out_dir
    print(stage_summary(result.timings))
    print(f"wrote {out}/: leaderboard.md/.csv/.tex, report.html, plots/, records.jsonl ({result.time_s:.1f}s)")
    if result.failed_cells:
        print(f"{len(result.failed_cells)} cell(s) failed: {', '.join(result.failed_cells)}", file=sys.stderr)
        return 1
    md = (out / "leaderboard.md").read_text()
    print(md)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from xbench.registry import BACKBONES, DATASETS, EXPLAINERS, METHODS, METRICS

    if args.kind == "suites":
        from xbench.suite import read_yaml

        if args.suites_dir.exists() and not args.suites_dir.is_dir():
            from xbench.errors import ConfigError

            raise ConfigError(f"--suites-dir {args.suites_dir}: not a folder")
        files = sorted(args.suites_dir.glob("*.yaml"))
        if not files:
            print(f"no suites in {args.suites_dir}/ (run from the repository root, or pass --suites-dir)")
        for f in files:
            try:
                desc = str(read_yaml(f).get("description", "")).strip().splitlines()
            except XBenchError as err:
                desc = [f"(invalid: {err})"]
            print(f"{f!s:32s} {desc[0] if desc else ''}")
        return 0
    registry = {
        "methods": METHODS, "metrics": METRICS, "datasets": DATASETS, "backbones": BACKBONES, "explainers": EXPLAINERS,
    }[args.kind]  # fmt: skip
    width = max([24, *(len(name) + 1 for name, _ in registry.items())])
    for name, obj in registry.items():
        line = f"{name:{width}s} {getattr(obj, 'description', '') or (obj.__doc__ or '').strip().splitlines()[0]}"
        if args.kind == "methods":
            line += f"\n{'':{width}s} paper: {getattr(obj, 'paper', '') or '—'}"
        if args.kind == "metrics":
            hib = getattr(obj, "higher_is_better", None)
            arrow = "↑" if hib is True else "↓" if hib is False else ""
            line += f" [{getattr(obj, 'category', '?')} {arrow}]"
        print(line)
    for family, text in registry.family_descriptions().items():
        print(f"{family:{width}s} {text}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from xbench.suite import dump_suite, load_suite

    suite = load_suite(args.suite, args.overrides)
    if not args.quiet:
        print(f"# {args.suite}: valid; resolved configuration:")
        print(dump_suite(suite), end="")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from xbench.errors import DataError
    from xbench.report.outputs import write_report
    from xbench.report.plots.saliency_files import _saliency_files, read_saliency
    from xbench.report.records import read_records
    from xbench.report.stats import statistics

    records: list[Record] = []
    paths: list[str] = []
    for run_dir in args.run_dirs:
        path = run_dir / "records.jsonl" if run_dir.is_dir() else run_dir
        if not path.is_file():
            raise DataError(f"{path}: no such records file (is {run_dir} an xbench results folder?)")
        records.extend(read_records(path))
        paths.append(str(path))
    if not records:
        raise DataError(f"{', '.join(paths)}: no records (an empty file makes an empty report)")
    try:  # refused before anything is written: rows that mix settings, a broken saliency file
        statistics(records)
    except DataError as err:
        raise DataError(f"{', '.join(paths)}: {err}") from err
    first = args.run_dirs[0] if args.run_dirs[0].is_dir() else args.run_dirs[0].parent
    for sample in _saliency_files(first / "saliency"):
        read_saliency(sample)
    out = args.output or first
    title = "xbench: " + ", ".join(sorted({r.suite for r in records}))
    view = args.view or _suite_view(first / "config.yaml")
    for path in write_report(records, out, title, saliency=first / "saliency", view=view):
        print(f"wrote {path}")
    return 0


def _suite_view(config: Path) -> str:
    """The ``report.view`` of a results folder's ``config.yaml`` (the suite that made it), else the default."""
    from xbench.report.views import DEFAULT_VIEW
    from xbench.suite import read_yaml

    if not config.is_file():
        return DEFAULT_VIEW
    report = read_yaml(config).get("report")
    view = report.get("view") if isinstance(report, dict) else None
    if view is None:
        return DEFAULT_VIEW
    if view not in VIEW_CHOICES:
        from xbench.errors import ConfigError

        raise ConfigError(f"{config}: report.view: unknown view {view!r} (known: {', '.join(VIEW_CHOICES)})")
    return str(view)


def _run_records(run_dir: Path) -> tuple[Path, list[Record]]:
    """``(records file, records)`` of a results folder or a records file."""
    from xbench.errors import DataError
    from xbench.report.records import read_records

    if not run_dir.exists():
        raise DataError(f"{run_dir}: no such results folder")
    path = run_dir / "records.jsonl" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise DataError(f"{path}: no such records file (is {run_dir} an xbench results folder?)")
    return path, read_records(path)


def _tolerances(flags: list[str]) -> dict[str, dict[str, Any]]:
    from xbench.report.check import parse_tolerance

    return dict(parse_tolerance(flag) for flag in flags)


def cmd_check(args: argparse.Namespace) -> int:
    from xbench.errors import DataError
    from xbench.fileio import atomic_write_text
    from xbench.report.check import compare, load_baseline, to_markdown

    overrides = _tolerances(args.tolerances)
    path, records = _run_records(args.run_dir)
    baseline = load_baseline(args.baseline)
    try:
        result = compare(records, baseline, overrides)
    except DataError as err:  # records of one row with different settings
        raise DataError(f"{path}: {err}") from err
    summary = to_markdown(result, title=f"xbench check: {args.run_dir} vs {args.baseline}")
    print(summary, end="")
    if args.output is not None:
        atomic_write_text(args.output, summary)
        print(f"wrote {args.output}", file=sys.stderr)
    return result.exit_code


def cmd_baseline(args: argparse.Namespace) -> int:
    from xbench.errors import DataError
    from xbench.report.check import load_baseline, make_baseline, write_baseline
    from xbench.suite import read_yaml

    overrides = _tolerances(args.tolerances)
    path, records = _run_records(args.run_dir)
    previous = load_baseline(args.output) if args.output.exists() else None
    config_file = path.parent / "config.yaml"
    config = read_yaml(config_file) if config_file.is_file() else None
    try:
        baseline = make_baseline(records, config=config, previous=previous, tolerances=overrides)
    except DataError as err:  # no successful record, or records of one row with different settings
        raise DataError(f"{path}: {err}") from err
    write_baseline(args.output, baseline)
    failed = sorted({f"{r.dataset}/{r.method}" for r in records if r.status == "failed"})
    if failed:
        print(
            f"warning: failed records in {path} ({', '.join(failed)}); rows without a value are left out",
            file=sys.stderr,
        )
    kept = "; kept the tolerances of the previous file" if previous is not None else ""
    print(f"wrote {args.output} ({len(baseline['entries'])} entries{kept})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    commands = {
        "run": cmd_run,
        "list": cmd_list,
        "validate": cmd_validate,
        "report": cmd_report,
        "check": cmd_check,
        "baseline": cmd_baseline,
    }
    try:
        return commands[args.command](args)
    except XBenchError as err:
        print(f"xbench: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("xbench: interrupted; completed cells are cached and will be reused", file=sys.stderr)
        return 130
    except OSError as err:  # a path the user gave that the system refuses (too long, no such device, ...)
        where = f"{err.filename}: " if err.filename is not None else ""
        print(f"xbench: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
