"""``report.html`` as a reader sees it: opened in headless Chromium, measured and screenshotted.

A copy of the report gets a script that writes measurements into the DOM (the report itself has
no JavaScript); ``chromium --dump-dom`` returns them: the page's width against the viewport's,
each table's width against its box (a table that needs its scroll bar does not fit), whether
every image decoded, and the order of the sections. The checks are shown to fail on the full
view's efficiency table (a column per exit). Debian's ``chromium`` package, offline flags only; CI
installs it (``.ci/run``), elsewhere the tests skip when it is absent.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from xbench.report.html import write_html
from xbench.report.plots import save_figure
from xbench.report.records import Record

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: A laptop's browser window.
VIEWPORT = (1280, 900)

MEASURE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement;
  const out = {viewport: root.clientWidth, page: root.scrollWidth, images: [], tables: [], sections: []};
  for (const img of document.images) {
    const box = img.getBoundingClientRect();
    out.images.push({alt: img.alt, loaded: img.complete && img.naturalWidth > 0, right: box.right});
  }
  const before = (node, pattern) => {  // the text of the nearest heading above node matching pattern
    for (let e = node.previousElementSibling; e; e = e.previousElementSibling) {
      if (pattern.test(e.tagName)) return e.textContent;
    }
    return "";
  };
  for (const table of document.querySelectorAll("table")) {
    const box = table.parentElement;
    const cell = table.querySelector("th, td");
    const rect = table.getBoundingClientRect();
    out.tables.push({
      first: cell ? cell.textContent : "",
      columns: table.rows.length ? table.rows[0].cells.length : 0,
      width: table.scrollWidth,
      room: box.clientWidth,
      right: rect.right,
      section: table.closest("section") ? table.closest("section").id : "",
      h2: before(box, /^H2$/),
      heading: before(box, /^H[2-4]$/),
      headers: table.rows.length ? Array.from(table.rows[0].cells, c => c.textContent) : [],
      rows: Array.from(table.rows).slice(1).map(r => Array.from(r.cells, c => c.textContent)),
      visible: rect.width > 0 && rect.height > 0 && getComputedStyle(table).visibility === "visible",
    });
  }
  for (const section of document.querySelectorAll("main > section")) out.sections.push(section.id);
  root.setAttribute("data-xbench-measure", JSON.stringify(out));
});
</script>"""


@dataclass
class Seen:
    """What the browser measured on a page."""

    viewport: int
    page: int
    images: list[dict[str, Any]]
    tables: list[dict[str, Any]]
    sections: list[str]

    def problems(self) -> list[str]:
        """What a reader would trip over: overflow past the viewport, tables that need scrolling, broken images."""
        found = []
        if self.page > self.viewport:
            found.append(f"the page is {self.page} px wide in a {self.viewport}-px viewport")
        for t in self.tables:
            if t["width"] > t["room"] + 1 or t["right"] > self.viewport + 1:
                found.append(f"table '{t['first']}' ({t['columns']} columns) is {t['width']} px wide in {t['room']} px")
        found += [f"image '{i['alt']}' did not load" for i in self.images if not i["loaded"]]
        found += [f"image '{i['alt']}' reaches past the viewport" for i in self.images if i["right"] > self.viewport]
        return found


def open_in_chromium(report: Path, folder: Path) -> Seen:
    """Measure ``report`` (a copy with :data:`MEASURE` added) in headless Chromium."""
    page = folder / "measured.html"
    page.write_text(report.read_text().replace("</body>", MEASURE + "\n</body>"))
    window = f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, window, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    found = re.search(r'data-xbench-measure="([^"]*)"', dom)
    assert found, f"no measurements in the DOM: {dom[:500]!r}"
    data = json.loads(html.unescape(found.group(1)))
    return Seen(data["viewport"], data["page"], data["images"], data["tables"], data["sections"])


def screenshot(report: Path, folder: Path) -> np.ndarray:
    """The top of the page as Chromium paints it, in grey levels."""
    png = folder / "screenshot.png"
    window = f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"
    subprocess.run(
        [CHROMIUM, *FLAGS, window, f"--screenshot={png}", report.as_uri()],  # type: ignore[list-item]
        capture_output=True,
        timeout=60,
        check=True,
    )
    return np.asarray(Image.open(png).convert("L"))


def plots(folder: Path) -> list[Path]:
    """Two plots, one far wider than the viewport (the page must scale it down)."""
    paths = []
    for stem, size in (("accuracy_vs_macs_synthetic_shapes", (18.0, 3.0)), ("saliency_synthetic_shapes", (3.0, 2.0))):
        fig = Figure(figsize=size)
        fig.add_subplot().plot([0, 1], [0, 1])
        fig.suptitle(stem)
        paths += save_figure(fig, folder, stem, dpi=100)
    return paths


@pytest.fixture(scope="module")
def paper_report(smoke_like: list[Record], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("paper")
    return write_html(smoke_like, folder, plots(folder / "plots"), "xbench: smoke-like", view="paper")


def test_the_paper_report_fits_a_laptop_window(paper_report: Path, tmp_path: Path) -> None:
    seen = open_in_chromium(paper_report, tmp_path)
    assert VIEWPORT[0] - 20 <= seen.viewport <= VIEWPORT[0]  # less the vertical scroll bar
    assert seen.problems() == []
    assert len(seen.images) == 2
    # The Claims, the run summary, then every leaderboard table: claims + summary + 2 sections' tables.
    markdown_tables = paper_report.read_text().count("<table>")
    assert len(seen.tables) == markdown_tables + 1 >= 10
    assert seen.sections[:3] == ["claims", "summary", "leaderboard"]
    assert seen.tables[0]["first"] == "Claim"
    assert max(t["columns"] for t in seen.tables[2:]) <= 8  # leaderboard tables: at most 8 columns


def test_the_screenshot_shows_a_page(paper_report: Path, tmp_path: Path) -> None:
    pixels = screenshot(paper_report, tmp_path)
    assert pixels.shape == (VIEWPORT[1], VIEWPORT[0])
    assert (pixels < 100).mean() > 0.005  # text on it: not a blank or an error page


def test_the_browser_checks_catch_a_table_that_is_too_wide(smoke_like: list[Record], tmp_path: Path) -> None:
    full = write_html(smoke_like, tmp_path, [], "xbench: smoke-like, full view", view="full")
    seen = open_in_chromium(full, tmp_path)
    widest = max(seen.tables, key=lambda t: t["columns"])
    assert widest["columns"] >= 19  # the efficiency table: every exit a column
    assert f"table 'Method' ({widest['columns']} columns) is {widest['width']} px wide" in " ".join(seen.problems())


def test_the_ranking_sanity_and_explanation_time_are_visible_and_fit(paper_report: Path, tmp_path: Path) -> None:
    """The explainer zoo's tables as a reader sees them: the Ranking per category, the Sanity table and the
    efficiency table's time per map, all drawn and within the page's width (fixture: six explainers on the
    baseline, native maps elsewhere)."""
    seen = open_in_chromium(paper_report, tmp_path)
    ranking = [t for t in seen.tables if t["section"] == "ranking" and t["h2"] == "Ranking"]
    sanity = [t for t in seen.tables if t["section"] == "ranking" and t["h2"] == "Sanity"]
    times = [t for t in seen.tables if any(h.startswith("Time per map") for h in t["headers"])]
    categories = ("localization", "faithfulness", "consistency")
    assert [t["heading"] for t in ranking] == [f"synthetic_shapes · {c}" for c in categories]
    assert len(sanity) == 1 and len(times) == 1
    assert times[0]["section"] == "leaderboard"
    zoo = {f"baseline ({e})" for e in ("integrated_gradients", "guided_gradcam", "kernel_shap", "scorecam")}
    for table in [*ranking, *sanity, *times]:
        assert table["visible"], table["heading"]
        assert zoo <= {cell for row in table["rows"] for cell in row}, table["heading"]
        assert table["width"] <= table["room"] + 1 and table["right"] <= seen.viewport + 1, table["heading"]
    assert ranking[0]["headers"][:3] == ["Rank", "Method (explainer)", "Mean rank ↓"]
    assert seen.problems() == []
