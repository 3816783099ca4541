"""The saliency grid: N test images (rows) × the image and every map set (columns), drawn as one mosaic."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xbench.report.plots.common import _text_inches
from xbench.report.plots.saliency_files import Saliency
from xbench.report.plots.saving import _FittedFigure

MAX_SALIENCY_IMAGES = 8


#: Opacity of a saliency map over its greyscale image in the grid, and the map's colormap.
MAP_ALPHA = 0.55
MAP_CMAP = "jet"


@dataclass(frozen=True)
class SaliencyMosaic:
    """The saliency grid as one RGB image: tile (row i, column j) starts at ``(i * pitch[0], j * pitch[1])``.

    Column 0 holds the images, column ``j >= 1`` the ``j``-th map set drawn at
    :data:`MAP_ALPHA` over the greyscale image; tiles are ``gap`` white pixels apart.
    ``outline`` (same height and width, or None without masks) is 1 inside every tile's
    ground-truth mask and 0 elsewhere; masks with no boundary (all or nothing) are left out.
    """

    rgb: np.ndarray  # (rows * pitch[0] - gap, cols * pitch[1] - gap, 3) uint8
    outline: np.ndarray | None
    pitch: tuple[int, int]
    gap: int
    rows: int
    cols: int


def _tile_gap(h: int, w: int) -> int:
    return max(2, round(0.08 * max(h, w)))


def saliency_mosaic(saliency: Saliency, n: int, keys: Sequence[tuple[str, str]]) -> SaliencyMosaic:
    """Compose the first ``n`` images and their ``keys`` map sets into one mosaic (see :class:`SaliencyMosaic`)."""
    images = saliency.images[:n]
    n, c, h, w = images.shape
    gap = _tile_gap(h, w)
    ph, pw = h + gap, w + gap
    cols = 1 + len(keys)
    gray = images[:, 0] if c == 1 else images.mean(axis=1)
    tiles = np.ones((n, cols, ph, pw, 3), dtype=np.float32)  # white gutters
    tiles[:, 0, :h, :w] = gray[..., None] if c == 1 else np.transpose(images, (0, 2, 3, 1))
    cmap = mpl.colormaps[MAP_CMAP]
    under = (1 - MAP_ALPHA) * gray[..., None]
    for j, key in enumerate(keys, start=1):
        colored = cmap(saliency.maps[key][:n])[..., :3]  # the 256-colour table imshow uses
        tiles[:, j, :h, :w] = MAP_ALPHA * colored + under  # alpha compositing, as imshow(alpha=...) does
    rgb = tiles.transpose(0, 2, 1, 3, 4).reshape(n * ph, cols * pw, 3)[:-gap, :-gap]
    rgb = (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)  # 8-bit: what the PNG holds, and cheaper to draw
    outline = None
    if saliency.masks is not None:
        masks = saliency.masks[:n, 0]
        drawn = np.asarray(masks.any(axis=(1, 2)) & ~masks.all(axis=(1, 2)))  # a constant mask has no boundary
        inside = np.zeros((n, cols, ph, pw), dtype=np.float32)
        inside[:, :, :h, :w] = (masks & drawn[:, None, None])[:, None]
        outline = inside.transpose(0, 2, 1, 3).reshape(n * ph, cols * pw)[:-gap, :-gap]
    return SaliencyMosaic(rgb, outline, (ph, pw), gap, n, cols)


def figure_saliency_grid(saliency: Saliency, dataset: str, max_images: int = MAX_SALIENCY_IMAGES) -> Figure | None:
    """N images (rows) × [image, every map set] (columns), masks outlined; None without maps.

    Drawn as one mosaic image (:func:`saliency_mosaic`) on one axes, the columns and rows
    named by tick labels and the masks outlined by one contour over the whole mosaic, so
    the cost does not grow with the number of tiles as one axes per tile would.
    """
    if not saliency.maps or len(saliency.images) == 0:
        return None
    n = min(len(saliency.images), max_images)
    keys = list(saliency.maps)
    mosaic = saliency_mosaic(saliency, n, keys)
    col_labels = ["image", *(f"{method}\n{explainer}" for method, explainer in keys)]
    row_labels = [f"label {int(label)}" for label in saliency.labels[:n]]
    ph, pw = mosaic.pitch
    pad = 0.1
    col_w, col_h = map(max, zip(*(_text_inches(label, "small") for label in col_labels), strict=True))
    row_w = max(_text_inches(label, "small")[0] for label in row_labels)
    title = f"{dataset}: saliency maps of {n} test images"
    title += ", ground-truth mask outlined" if saliency.masks is not None else ""
    title_w, title_h = _text_inches(title, mpl.rcParams["figure.titlesize"])
    # An inch per tile, more if a column's label needs it (at most 2).
    tile_in = min(max(1.0, col_w + 0.12), 2.0)
    inch = tile_in / pw  # per pixel of the mosaic
    height_px, width_px = mosaic.rgb.shape[:2]
    tick_pad = mpl.rcParams["xtick.major.pad"] / 72
    left = pad + row_w + tick_pad + 0.05
    top = pad + title_h + 0.15 + col_h + tick_pad + 0.05
    bottom = pad
    fig_w = max(left + width_px * inch + pad, title_w + 2 * pad)
    fig_h = top + height_px * inch + bottom
    fig = _FittedFigure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width_px * inch / fig_w, height_px * inch / fig_h))
    # Each mosaic pixel repeated so that a tile is about 100 pixels wide in the PDF too, where
    # viewers may smooth a small image they enlarge; the axes stay in mosaic pixels.
    k = math.ceil(100 / max(ph, pw))
    pixels = np.repeat(np.repeat(mosaic.rgb, k, axis=0), k, axis=1) if k > 1 else mosaic.rgb
    ax.imshow(pixels, interpolation="none", extent=(-0.5, width_px - 0.5, height_px - 0.5, -0.5))
    if mosaic.outline is not None and mosaic.outline.any():
        # A black halo under a white line stays visible on any image and any colormap.
        ax.contour(mosaic.outline, levels=[0.5], colors=["black"], linewidths=2.0)
        ax.contour(mosaic.outline, levels=[0.5], colors=["white"], linewidths=0.9)
    ax.set_xlim(-0.5, width_px - 0.5)
    ax.set_ylim(height_px - 0.5, -0.5)
    h, w = ph - mosaic.gap, pw - mosaic.gap
    ax.set_xticks([j * pw + (w - 1) / 2 for j in range(mosaic.cols)], col_labels, fontsize="small")
    ax.set_yticks([i * ph + (h - 1) / 2 for i in range(mosaic.rows)], row_labels, fontsize="small")
    ax.tick_params(length=0, top=True, labeltop=True, bottom=False, labelbottom=False)
    ax.set_frame_on(False)
    fig.suptitle(title, y=1 - pad / fig_h, va="top")
    return fig
