"""The HTML report: well-formed, self-contained, every plot embedded, record text escaped."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import make_energy_record, make_record
from matplotlib.figure import Figure

from xbench.errors import DataError
from xbench.report.html import markdown_to_html, render_html, write_html
from xbench.report.outputs import write_report
from xbench.report.plots import save_figure
from xbench.report.records import Record

EVIL = "<script>alert(1)</script>"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base", "embed", "track"}


RUN: dict[str, Any] = {"versions": {"xbench": "0.1.0", "torch": "2.5.1"}, "git": "abc1234"}


def rec(method: str, seed: int, metric: str, value: float | None, **overrides: Any) -> Record:
    return make_record(method, seed, metric, value, **(RUN | overrides))


def records() -> list[Record]:
    return [
        rec("egt", 0, "top1", 0.81),
        rec("egt", 1, "top1", 0.83),
        rec(EVIL, 0, "top1", 0.70),
        rec("broken", 0, "top1", None),
        rec("egt", 0, "pointing_game", 0.5, explainer="native"),
    ]


class Checker(HTMLParser):
    """Collects tags, image sources and text, and fails on any unbalanced or misnested tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> Checker:
    checker = Checker()
    checker.feed(text)
    checker.close()
    assert checker.doctype
    assert checker.stack == [], f"unclosed tags {checker.stack}"
    return checker


def tiny_plot(out_dir: Path, stem: str, title: str) -> list[Path]:
    fig = Figure(figsize=(1.5, 1.0))
    fig.add_subplot().plot([0, 1], [0, 1])
    fig.suptitle(title)
    return save_figure(fig, out_dir, stem, dpi=30)


@pytest.fixture
def plots(tmp_path: Path) -> list[Path]:
    return tiny_plot(tmp_path / "plots", "accuracy_fmnist", "fmnist: accuracy metrics") + tiny_plot(
        tmp_path / "plots", "saliency_fmnist", "fmnist: saliency maps"
    )


def test_report_is_well_formed_and_self_contained(tmp_path: Path, plots: list[Path]) -> None:
    path = write_html(records(), tmp_path, plots, title="Quick <run>")
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for needle in ('src="http', "src='http", 'href="', "url(", "@import", "//cdn", "<script"):
        assert needle not in text
    assert all(str(img["src"]).startswith("data:image/png;base64,") for img in page.images)
    assert "<title>Quick &lt;run&gt;</title>" in text and "<h1>Quick &lt;run&gt;</h1>" in text


def test_every_plot_is_embedded_once_with_its_title(tmp_path: Path, plots: list[Path]) -> None:
    page = parse(render_html(records(), plots, "r"))
    pngs = [p for p in plots if p.suffix == ".png"]
    sources = [str(img["src"]) for img in page.images]
    expected = ["data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for p in pngs]
    assert sources == expected  # a PDF stands for its PNG: each plot once, in order
    assert [img["alt"] for img in page.images] == ["fmnist: accuracy metrics", "fmnist: saliency maps"]
    text = render_html(records(), plots, "r")
    assert text.index('id="plots"') < text.index("accuracy_fmnist") < text.index('id="saliency"')
    assert text.index('id="saliency"') < text.index('id="saliency_fmnist"')


def test_branch_energy_heatmaps_get_their_own_section(tmp_path: Path, plots: list[Path]) -> None:
    energy = tiny_plot(tmp_path / "plots", "branch_energy_fmnist_coded", "fmnist: coded: branch energy share")
    text = render_html(records(), [*plots[:2], *energy, *plots[2:]], "r")
    page = parse(text)
    assert [img["alt"] for img in page.images] == [
        "fmnist: accuracy metrics",
        "fmnist: coded: branch energy share",
        "fmnist: saliency maps",
    ]
    section = text[text.index('id="branch-energy"') : text.index('id="saliency"')]
    assert "<h2>Branch energy (Coded ResNeXt)</h2>" in section and 'id="branch_energy_fmnist_coded"' in section
    assert "codeword are outlined" in section
    assert text.index('id="plots"') < text.index('id="branch-energy"')
    assert 'id="branch-energy"' not in render_html(records(), plots, "r")  # no heatmaps, no section


def test_write_report_draws_and_embeds_the_heatmap_of_each_coded_row(tmp_path: Path) -> None:
    energy = [[[0.5, 0.5, 0.0, 0.0], [0.5, 0.0, 0.0, 0.5]], [[0.25, 0.25, 0.25, 0.25], [0.0, 0.5, 0.5, 0.0]]]
    paths = write_report([*records(), make_energy_record("coded_resnext", 0, energy)], tmp_path, "run")
    heatmap = tmp_path / "plots" / "branch_energy_fmnist_coded_resnext.png"
    assert heatmap in paths and heatmap.with_suffix(".pdf") in paths and heatmap.stat().st_size > 0
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    section = text[text.index('id="branch-energy"') :]
    assert 'id="branch_energy_fmnist_coded_resnext"' in section
    data = base64.b64encode(heatmap.read_bytes()).decode()
    assert f"data:image/png;base64,{data}" in [img["src"] for img in page.images]
    assert "fmnist: coded_resnext: branch energy share per class and coded block" in " ".join(page.text)


def test_method_labels_are_escaped(tmp_path: Path) -> None:
    text = render_html(records(), [], "r")
    assert EVIL not in text and "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = parse(text)
    assert EVIL in "".join(page.text)  # shown as text, in the summary and the leaderboard row
    assert "".join(page.text).count(EVIL) == 2


def test_summary_and_leaderboard_come_from_the_records() -> None:
    page = parse(render_html(records(), [], "r"))
    text = " ".join(page.text)
    for fact in ("quick", "fmnist", "0, 1", "abc1234", "2.5.1", "fmnist/broken/0", "4 ok, 1 failed"):
        assert fact in text
    assert page.tags.count("table") == 3  # summary, fmnist, fmnist · explanations
    assert "egt (native)" in text
    html_text = render_html(records(), [], "r")
    assert "<strong>82.00</strong> ± " in html_text  # the best top-1 is bold
    assert ">failed<" in html_text


def test_no_plots_and_no_records_still_make_a_valid_page(tmp_path: Path) -> None:
    page = parse(write_html([], tmp_path, [], "empty").read_text(encoding="utf-8"))
    assert page.images == []
    assert "No records." in " ".join(page.text)


def test_missing_plot_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="plot not found"):
        render_html(records(), [tmp_path / "gone.png"], "r")


def test_markdown_tables_convert_with_escaped_pipes_bold_and_alignment() -> None:
    markdown = (
        "## a & b\n\nCaption <sup>*</sup> tied.\n\n### Accuracy\n\n| Method | v ↑ |\n|:---|---:|\n"
        "| a \\| b | **1.0** ± 0.1 |\n| c | <u>0.5</u><sup>*</sup> |\n| <u onclick=x>d | <b>0.1</b> |\n"
    )
    out = markdown_to_html(markdown)
    assert "<h3>a &amp; b</h3>" in out and "<h4>Accuracy</h4>" in out
    assert '<p class="caption">Caption <sup>*</sup> tied.</p>' in out
    assert '<th>Method</th><th class="num">v ↑</th>' in out
    assert '<td>a | b</td><td class="num"><strong>1.0</strong> ± 0.1</td>' in out
    assert '<td>c</td><td class="num"><u>0.5</u><sup>*</sup></td>' in out
    # Anything but a balanced <u>/<sup>/<sub> pair without attributes stays text.
    assert '<td>&lt;u onclick=x&gt;d</td><td class="num">&lt;b&gt;0.1&lt;/b&gt;</td>' in out
    parse("<!DOCTYPE html><div>" + out + "</div>")
