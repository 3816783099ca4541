"""Quantus 0.6.0's perturbation metrics in torch: the same perturbed images, draws and values, batched.

Quantus's faithfulness metrics spend about half their time outside the model: ``assert_attributions``
builds a Python set of every map value, every perturbation step checks every sample for "no change"
in a Python loop (``np.isclose`` per sample), images are perturbed as numpy copies and converted to
torch tensors for every forward pass. Here the perturbed images are built on the model's device
from the image batch and one precomputed rank (or patch-rank) tensor per batch, with
``torch.where``/``scatter_``, and go straight into the model. What stays on the CPU in numpy is what
fixes the values: the maps' normalisation and ordering (``numpy.argsort``, whose order among tied
values is Quantus's), the random draws (numpy's global generator, in Quantus's order), the sums of
the maps over the perturbed features, and the per-image summary of the (N, K) score matrix (the
same SciPy/NumPy calls Quantus makes, per Quantus batch). The model sees bitwise the inputs Quantus
gives it, in batches of the same composition (``batch_size`` images, one forward pass per step), so
the values equal Quantus's exactly (the tests compare them with Quantus called directly) as long as
the model's forward pass does not depend on the batch it is in (true for xbench's models on CPU at
batch sizes above 1; a batch of one image can differ in the last bit).

Every function takes ``x`` (N, C, H, W) images, ``y`` (N,) classes, ``a`` (N, H, W) maps (any device:
maps are read on the CPU, where they live in xbench) and returns exactly what
:func:`xbench.metrics.faithfulness.reference.run_quantus` returns for the corresponding Quantus metric:
float64, one row per image. ``seed`` seeds numpy's global generator for the call and restores it
afterwards, as ``run_quantus`` does.

The model's forward passes are the floor of the cost: every metric here calls the model on exactly
the images Quantus does (16–33 per image), so the speed-up over Quantus is bounded by Quantus's
share of time outside the model (BENCHMARKS.md, "Faithfulness backends").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from xbench.metrics.quantus_compat import numpy_seed


def quantus_batches(n: int, batch_size: int) -> Iterator[slice]:
    """The slices Quantus's ``generate_batches`` cuts ``n`` samples into."""
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def quantus_maps(a: Tensor, *, normalise: bool, absolute: bool) -> np.ndarray:
    """(N, 1, H, W) float32 maps as Quantus's ``general_preprocess`` leaves them.

    ``normalise_by_max`` with its default axes divides by the largest |a| of the *whole set* (not
    per image), and leaves an all-zero set alone; ``abs`` follows it.
    """
    maps = np.ascontiguousarray(a.detach().cpu().float().numpy())
    if maps.ndim == 3:
        maps = maps[:, None]
    if normalise and not np.all(maps == 0.0):
        maps = np.divide(maps, np.max(np.abs(maps), axis=tuple(range(maps.ndim)), keepdims=True))
    if absolute:
        maps = np.abs(maps)
    return maps


def flat_features(maps: np.ndarray, shape: torch.Size) -> np.ndarray:
    """(N, C·H·W) maps broadcast over the image's channels, as Quantus ranks and sums them."""
    n = maps.shape[0]
    return np.ascontiguousarray(np.broadcast_to(maps, tuple(shape)).reshape(n, -1))


def inverse_permutation(order: np.ndarray) -> np.ndarray:
    """``ranks[i, order[i, j]] = j`` for every row."""
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(order.shape[1])[None].repeat(order.shape[0], 0), axis=1)
    return ranks


@torch.no_grad()
def class_scores(model: nn.Module, x: Tensor, target: Tensor, softmax: bool) -> Tensor:
    """(B,) float32 score of class ``target`` for one batch, as Quantus's ``PyTorchModel.predict`` computes it.

    Quantus appends ``nn.Softmax(dim=-1)`` to the model when ``softmax`` is set; so does this.
    """
    out = model(x)
    if softmax:
        out = torch.softmax(out, dim=-1)
    return out.gather(1, target[:, None])[:, 0].float()


def _no_warnings(call: Callable[[], np.ndarray]) -> np.ndarray:
    # SciPy warns (ConstantInputWarning) and returns NaN for a constant series: an undefined score,
    # counted by the metric, exactly as through Quantus.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quantus's ``correlation_pearson(batched=True)``: Pearson's r of each row pair."""
    import scipy.stats

    return _no_warnings(lambda: np.asarray(scipy.stats.pearsonr(a, b, axis=1)[0]))


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quantus's ``correlation_spearman(batched=True)``: SciPy's full matrix, then its diagonal."""
    import scipy.stats

    def call() -> np.ndarray:
        correlation = scipy.stats.spearmanr(a, b, axis=1)[0]
        if np.shape(correlation):
            return np.diag(correlation[: len(a), len(a) :])
        return np.array([correlation])

    return _no_warnings(call)


def _similarity(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if name not in ("pearson", "spearman"):
        raise ValueError(f"similarity_func must be 'pearson' or 'spearman', got {name!r}")
    return pearson_rows if name == "pearson" else spearman_rows


# -- faithfulness correlation --------------------------------------------------------------------------------
@torch.no_grad()
def faithfulness_correlation(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    nr_runs: int,
    subset_size: int,
    perturb_baseline: float,
    softmax: bool,
    batch_size: int,
    device: torch.device | str,
    seed: int | None,
    similarity_func: str = "pearson",
    normalise: bool = True,
    abs: bool = False,
) -> np.ndarray:
    """(N,) ``quantus.FaithfulnessCorrelation``: Pearson r of Σ_S a and f(x) − f(x_S) over random subsets S.

    Per Quantus batch, per run, per image: ``np.random.choice(C·H·W, subset_size, replace=False)``
    (drawn as ``np.random.permutation(C·H·W)[:subset_size]``, which is what ``choice`` does and
    consumes the same numbers), the entries of S set to ``perturb_baseline``.
    """
    similarity = _similarity(similarity_func)
    n, c, h, w = x.shape
    features = c * h * w
    if subset_size >= features:
        raise ValueError(f"subset_size {subset_size} must be smaller than the {features} features")
    maps = flat_features(quantus_maps(a, normalise=normalise, absolute=abs), x.shape)
    out: list[np.ndarray] = []
    with numpy_seed(seed):
        for sl in quantus_batches(n, batch_size):
            b = sl.stop - sl.start
            xb = x[sl].to(device).float().reshape(b, features)
            tb = y[sl].to(device)
            # Quantus's draw order: run by run, image by image.
            draws = np.stack(
                [np.stack([np.random.permutation(features)[:subset_size] for _ in range(b)]) for _ in range(nr_runs)]
            )  # (runs, b, subset)
            index = torch.from_numpy(draws).to(device)
            original = class_scores(model, xb.view(b, c, h, w), tb, softmax)
            perturbed = [xb.scatter(1, index[r], perturb_baseline).view(b, c, h, w) for r in range(nr_runs)]
            deltas = torch.stack([original - class_scores(model, xp, tb, softmax) for xp in perturbed], 1)  # (b, runs)
            att_sums = np.stack([maps[sl][np.arange(b)[:, None], draws[r]].sum(axis=-1) for r in range(nr_runs)], 1)
            out.append(similarity(att_sums, deltas.cpu().numpy()))
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


# -- pixel flipping, monotonicity correlation: features in map order ------------------------------------------------
@torch.no_grad()
def pixel_flipping(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    features_in_step: int,
    perturb_baseline: float,
    softmax: bool,
    batch_size: int,
    device: torch.device | str,
    return_auc_per_sample: bool = True,
    normalise: bool = True,
    abs: bool = False,
) -> np.ndarray:
    """``quantus.PixelFlipping``: (N,) AUC (``trapezoid``, dx = 1) or (N, K) curve of f as entries are deleted.

    Step k = 1…K = ⌈C·H·W / features_in_step⌉ sets the k·features_in_step entries of highest map value
    (``np.argsort(-a)``, Quantus's tie order) to ``perturb_baseline``.
    """
    n, c, h, w = x.shape
    features = c * h * w
    if features % features_in_step:
        raise ValueError(f"features_in_step {features_in_step} must divide the {features} features")
    maps = flat_features(quantus_maps(a, normalise=normalise, absolute=abs), x.shape)
    ranks = torch.from_numpy(inverse_permutation(np.argsort(-maps, axis=1)))
    steps = math.ceil(features / features_in_step)
    out: list[np.ndarray] = []
    for sl in quantus_batches(n, batch_size):
        b = sl.stop - sl.start
        xb = x[sl].to(device).float().reshape(b, features)
        tb, rb = y[sl].to(device), ranks[sl].to(device)
        fill = torch.full_like(xb, perturb_baseline)
        deleted = (torch.where(rb < (k + 1) * features_in_step, fill, xb).view(b, c, h, w) for k in range(steps))
        curve = torch.stack([class_scores(model, xp, tb, softmax) for xp in deleted], dim=1).cpu().numpy()
        out.append(np.trapezoid(curve, dx=1, axis=1) if return_auc_per_sample else curve)
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


@torch.no_grad()
def monotonicity_correlation(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    features_in_step: int,
    nr_samples: int,
    eps: float,
    softmax: bool,
    batch_size: int,
    device: torch.device | str,
    seed: int | None,
    similarity_func: str = "spearman",
    perturb_baseline: str = "uniform",
    normalise: bool = True,
    abs: bool = True,
) -> np.ndarray:
    """(N,) ``quantus.MonotonicityCorrelation`` with ``perturb_baseline="uniform"``.

    Groups of ``features_in_step`` entries in ascending map order (``np.argsort(a)``); each group is
    set, ``nr_samples`` times, to one value u ~ U(0, 1) per image (Quantus's draws: per batch, group,
    sample, one ``np.random.uniform(size=batch)``); the group's variance is mean((f(x_u) − f(x))²)/f(x)²
    and ρ is Spearman's between the groups' map sums and variances. Quantus's guard for
    |f(x)| < ``eps`` raises in 0.6.0 (a boolean-mask assignment of the wrong size); here such
    images get 1/f(x)² := 1, its intent.
    """
    if perturb_baseline != "uniform":
        raise ValueError(f"only perturb_baseline='uniform' is implemented, got {perturb_baseline!r}")
    similarity = _similarity(similarity_func)
    n, c, h, w = x.shape
    features = c * h * w
    if features % features_in_step:
        raise ValueError(f"features_in_step {features_in_step} must divide the {features} features")
    maps = flat_features(quantus_maps(a, normalise=normalise, absolute=abs), x.shape)
    order = np.argsort(maps, axis=1)
    ranks = torch.from_numpy(inverse_permutation(order))
    groups = math.ceil(features / features_in_step)
    out: list[np.ndarray] = []
    with numpy_seed(seed):
        for sl in quantus_batches(n, batch_size):
            b = sl.stop - sl.start
            xb = x[sl].to(device).float().reshape(b, features)
            tb, rb = y[sl].to(device), ranks[sl].to(device)
            values = np.random.uniform(low=0.0, high=1.0, size=(groups, nr_samples, b))
            fill = torch.from_numpy(values).to(device=device, dtype=xb.dtype)  # float64 -> float32, as numpy casts
            original = class_scores(model, xb.view(b, c, h, w), tb, softmax)
            perturbed = []
            for k in range(groups):
                group = (rb >= k * features_in_step) & (rb < (k + 1) * features_in_step)
                for j in range(nr_samples):
                    xp = torch.where(group, fill[k, j][:, None], xb).view(b, c, h, w)
                    perturbed.append(class_scores(model, xp, tb, softmax))
            scores = torch.stack(perturbed, dim=1).view(b, groups, nr_samples).cpu().numpy()
            y_pred = original.cpu().numpy()
            inv_pred = np.ones(b)
            large = np.abs(y_pred) >= eps
            inv_pred[large] = 1.0 / np.abs(y_pred[large])
            inv_pred = inv_pred**2
            variances = np.stack(
                [np.mean((np.ascontiguousarray(scores[:, k]) - y_pred[:, None]) ** 2, axis=1) * inv_pred
                 for k in range(groups)], axis=1,
            )  # fmt: skip
            mb = maps[sl]
            atts = np.stack(
                [mb[np.arange(b)[:, None], order[sl, k * features_in_step : (k + 1) * features_in_step]].sum(axis=1)
                 for k in range(groups)], axis=1,
            )  # fmt: skip
            out.append(similarity(atts, variances))
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


# -- region perturbation, selectivity: patches -----------------------------------------------------------------
def padding_size(dim: int, patch_size: int) -> tuple[int, int]:
    """Quantus's ``get_padding_size``: pad ``dim`` to a multiple of ``patch_size``, the extra pixel at the end."""
    total = (patch_size - dim % patch_size) % patch_size
    return math.floor(total / 2), math.ceil(total / 2)


def patch_ranks(maps: np.ndarray, channels: int, patch_size: int) -> tuple[np.ndarray, int]:
    """(N, H, W) rank of each pixel's patch (0 = the patch of largest map sum) and the number of patches.

    Quantus's construction: the map broadcast over the channels, zero-padded to a multiple of the
    patch (:func:`padding_size`), cut into patches row by row; each patch's sum over its C·p·p
    entries (numpy, in the patch's (c, i, j) order); ``np.argsort(-sums)``.
    """
    n, _, h, w = maps.shape
    (top, bottom), (left, right) = padding_size(h, patch_size), padding_size(w, patch_size)
    padded = np.pad(np.broadcast_to(maps, (n, channels, h, w)), ((0, 0), (0, 0), (top, bottom), (left, right)))
    hp, wp = padded.shape[2:]
    rows, cols = hp // patch_size, wp // patch_size
    flat = padded.reshape(n, -1)
    index = np.arange(channels * hp * wp).reshape(channels, hp, wp)
    images = np.arange(n)[:, None]
    sums = []
    for r in range(rows):
        for col in range(cols):
            block = index[:, r * patch_size : (r + 1) * patch_size, col * patch_size : (col + 1) * patch_size]
            # Quantus's gather, (N, C·p·p) in C order: a different layout would sum in another order.
            sums.append(flat[images, np.broadcast_to(block.reshape(1, -1), (n, block.size))].sum(axis=-1))
    order = np.argsort(-np.stack(sums, -1), -1)  # (N, patches), most relevant first
    rank_of_patch = inverse_permutation(order)
    pr = (np.arange(h) + top) // patch_size
    pc = (np.arange(w) + left) // patch_size
    patch_of_pixel = pr[:, None] * cols + pc[None, :]  # (H, W)
    return rank_of_patch[:, patch_of_pixel], rows * cols


@torch.no_grad()
def _patch_curves(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    patch_size: int,
    regions: int | None,
    perturb_baseline: float,
    softmax: bool,
    batch_size: int,
    device: torch.device | str,
    drop: bool,
    normalise: bool,
    abs: bool,
) -> np.ndarray:
    n, c = x.shape[:2]
    ranks_np, patches = patch_ranks(quantus_maps(a, normalise=normalise, absolute=abs), c, patch_size)
    ranks = torch.from_numpy(ranks_np)[:, None]  # (N, 1, H, W): every channel of a patch goes together
    steps = patches if regions is None else min(regions, patches)
    out: list[np.ndarray] = []
    for sl in quantus_batches(n, batch_size):
        xb = x[sl].to(device).float()
        tb, rb = y[sl].to(device), ranks[sl].to(device)
        fill = torch.full_like(xb, perturb_baseline)
        curve = torch.stack(
            [class_scores(model, torch.where(rb < k, fill, xb), tb, softmax) for k in range(1, steps + 1)], dim=1
        )
        if drop:
            curve = class_scores(model, xb, tb, softmax)[:, None] - curve
        out.append(curve.cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, steps))


def region_perturbation(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    patch_size: int,
    regions_evaluation: int,
    perturb_baseline: float,
    softmax: bool,
    batch_size: int,
    device: torch.device | str,
    order: str = "morf",
    normalise: bool = True,
    abs: bool = False,
) -> np.ndarray:
    """(N, L) ``quantus.RegionPerturbation`` (MoRF): f(x) − f(x_k) after deleting the k most relevant patches."""
    if order != "morf":
        raise ValueError(f"only order='morf' is implemented, got {order!r}")
    return _patch_curves(
        model, x, y, a, patch_size=patch_size, regions=regions_evaluation, perturb_baseline=perturb_baseline,
        softmax=softmax, batch_size=batch_size, device=device, drop=True, normalise=normalise, abs=abs,
    )  # fmt: skip


def selectivity(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    patch_size: int,
    perturb_baseline: float,
    softmax: bool,
    batch_size: int,
    device: torch.device | str,
    normalise: bool = True,
    abs: bool = False,
) -> np.ndarray:
    """(N, P) ``quantus.Selectivity``: f(x_k) after deleting the k most relevant of all P patches."""
    return _patch_curves(
        model, x, y, a, patch_size=patch_size, regions=None, perturb_baseline=perturb_baseline, softmax=softmax,
        batch_size=batch_size, device=device, drop=False, normalise=normalise, abs=abs,
    )  # fmt: skip
