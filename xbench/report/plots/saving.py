"""Saving figures as PNG and PDF: laid out and measured once, the title in the metadata, reproducible bytes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from xbench.fileio import atomic_write

DEFAULT_DPI = 150
_FORMATS = ("png", "pdf")


def _title(fig: Figure) -> str:
    suptitle = getattr(fig, "_suptitle", None)
    return suptitle.get_text() if suptitle is not None else ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "plot"


class _Canvas(FigureCanvasAgg):
    """The Agg canvas, writing a PNG without its alpha channel when the image is opaque.

    The report's figures have an opaque background, so the alpha channel is 255 throughout; leaving
    it out and compressing at level 3 (of 9) makes the PNG about as small, and quicker to write.
    """

    def print_png(
        self,
        filename_or_obj: Any,
        *,
        metadata: dict[str, str] | None = None,
        pil_kwargs: dict[str, Any] | None = None,
        **_: Any,  # facecolor, orientation, ...: taken care of by savefig, as for the Agg canvas
    ) -> None:
        FigureCanvasAgg.draw(self)
        rgba = np.asarray(self.buffer_rgba())
        image = Image.frombuffer("RGBA", (rgba.shape[1], rgba.shape[0]), rgba, "raw", "RGBA", 0, 1)
        if rgba[..., 3].min() == 255:
            image = image.convert("RGB")
        info = PngInfo()
        for key, value in {
            "Software": f"Matplotlib version{mpl.__version__}, https://matplotlib.org/",
            **(metadata or {}),
        }.items():
            info.add_text(key, value)
        dpi = round(self.figure.dpi)
        options = {"pnginfo": info, "dpi": (dpi, dpi), "compress_level": 3, **(pil_kwargs or {})}
        image.save(filename_or_obj, format="png", **options)


class _FittedFigure(Figure):
    """A figure whose builder sized it, from measured text, to hold all it draws: saved whole, unmeasured."""


def _saved_area(fig: Figure, renderer: RendererAgg) -> Bbox | None:
    """Lay the figure out (once, with its layout engine if any) and return the area to save.

    None (the whole figure) when everything drawn lies inside the figure, as the plots'
    layouts see to; else the tight bounding box of what is drawn, padded, in inches, as
    ``bbox_inches="tight"`` would give, so nothing drawn outside the figure is lost.
    """
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
    tight = fig.get_tightbbox(renderer)
    slack = 1 / fig.dpi  # a pixel
    width, height = fig.get_size_inches()
    if tight.x0 >= -slack and tight.y0 >= -slack and tight.x1 <= width + slack and tight.y1 <= height + slack:
        return None
    pad = float(mpl.rcParams["savefig.pad_inches"])
    return tight.padded(pad, pad)


def save_figure(fig: Figure, out_dir: str | Path, stem: str, dpi: int = DEFAULT_DPI) -> list[Path]:
    """Write ``fig`` to ``out_dir/<stem>.png`` and ``.pdf`` atomically, its title in the metadata.

    The figure is laid out and measured once, at the PNG's resolution, for both formats:
    the PNG is drawn by the renderer that measured it, so its text is not measured again.
    The saved area is the whole figure, or the tight bounding box of what is drawn when
    something lies outside the figure. The plots laid out from measured text (the
    bar charts and the saliency grid) are known to fit and are not measured at all.

    Returns:
        The PNG path, then the PDF path.
    """
    canvas = _Canvas(fig)  # an Agg canvas whatever the interactive backend is
    title = _title(fig)
    metadata = {"Title": title} if title else None
    engine = fig.get_layout_engine()
    figure_dpi = fig.dpi
    fig.set_dpi(dpi)
    try:
        area = None if isinstance(fig, _FittedFigure) else _saved_area(fig, canvas.get_renderer())
        with mpl.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
            fig.set_layout_engine(None)  # laid out above: keep the positions for both formats
        paths = []
        for fmt in _FORMATS:

            def write(handle: Any, fmt: str = fmt) -> None:
                # No creation date in PDFs: the same records give the same bytes (reproducible reports)
                meta = {**(metadata or {}), "CreationDate": None} if fmt == "pdf" else metadata
                with mpl.rc_context({"savefig.bbox": "standard"}):  # None means the whole figure, whatever the rc
                    fig.savefig(handle, format=fmt, dpi=dpi, metadata=meta, bbox_inches=area)

            paths.append(atomic_write(Path(out_dir) / f"{_slug(stem)}.{fmt}", write))
    finally:
        fig.set_dpi(figure_dpi)
        if engine is not None:
            fig.set_layout_engine(engine)
    return paths
