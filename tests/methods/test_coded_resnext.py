"""Coded ResNeXt: coding schemes, the coded block, the loss, early decoding, binary classifiers."""

from __future__ import annotations

import copy
import itertools
import math

import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from xbench.explain.base import default_explanation
from xbench.methods.base import MethodContext
from xbench.methods.coded_resnext import (
    CodedResNeXt,
    CodedResNeXtMethod,
    CodedResNeXtParams,
    architecture_stages,
    build_coded_resnext,
)
from xbench.methods.coded_resnext_binary import count_binary_parameters, extract_binary_classifier
from xbench.methods.coded_resnext_network import ResNeXtBlock, _Pass
from xbench.methods.coding_scheme import (
    _scheme,
    coding_loss,
    coding_scheme,
    decoding_logits,
    johnson_bound,
    min_hamming_distance,
)
from xbench.metrics.efficiency import count_parameters
from xbench.models.output import Batch


def context(k: int = 5, channels: int = 1, size: int = 16) -> MethodContext:
    return MethodContext(k, channels, (size, size), (0.5,) * channels, (0.25,) * channels, "resnet_cifar", {})


def make_method(k: int = 5, **params: object) -> CodedResNeXtMethod:
    return CodedResNeXtMethod(CodedResNeXtParams.model_validate(params), context(k))


def images(b: int = 6, seed: int = 0) -> Tensor:
    return torch.rand(b, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


# -- coding scheme --------------------------------------------------------------------------------------
def brute_force_max_min_distance(n: int, active: int, k: int) -> int:
    """The largest minimum distance over every set of k weight-``active`` words."""
    words = torch.zeros(math.comb(n, active), n)
    for i, ones in enumerate(itertools.combinations(range(n), active)):
        words[i, list(ones)] = 1
    dist = (words[:, None] != words[None]).sum(-1)
    subsets = torch.tensor(list(itertools.combinations(range(len(words)), k)))
    pairs = torch.tensor(list(itertools.combinations(range(k), 2)))
    d = dist[subsets[:, pairs[:, 0]], subsets[:, pairs[:, 1]]]  # (S, pairs)
    return int(d.min(dim=1).values.max())


@pytest.mark.parametrize(("n", "active", "k"), [(6, 3, 4), (6, 2, 3), (5, 2, 5), (6, 3, 6), (6, 2, 7)])
def test_scheme_distance_equals_brute_force(n: int, active: int, k: int) -> None:
    code = coding_scheme(k, n, active)
    assert min_hamming_distance(code) == brute_force_max_min_distance(n, active, k)


# (N, N_act, K, optimum): the paper's CIFAR schemes and classical tight codes. The optimum is
# attained by our scheme and D + 2 is ruled out by the Johnson bound, so these are exact.
KNOWN_OPTIMA = [
    (10, 3, 10, 4),  # CIFAR-10 3/10 (official code: distance 4)
    (10, 5, 10, 4),  # CIFAR-10 5/10: A(10, 6, 5) ≤ 8 < 10
    (20, 8, 100, 8),  # CIFAR-100 8/20 (the paper: distance 8)
    (20, 4, 100, 4),  # CIFAR-100 4/20 (the paper: distance 4)
    (7, 3, 7, 4),  # the Fano plane
    (9, 3, 12, 4),  # the Steiner triple system STS(9)
    (10, 5, 6, 6),  # the narrow default for 6 classes
]


@pytest.mark.parametrize(("n", "active", "k", "optimum"), KNOWN_OPTIMA)
def test_scheme_reaches_known_optimum(n: int, active: int, k: int, optimum: int) -> None:
    code = coding_scheme(k, n, active)
    assert min_hamming_distance(code) == optimum
    assert johnson_bound(n, optimum + 2, active) < k


SCHEMES = [
    (4, 6, 3),
    (5, 10, 3),
    (5, 10, 5),
    (6, 10, 3),
    (10, 10, 3),
    (10, 10, 5),
    (13, 10, 3),
    (100, 20, 8),
    (100, 20, 4),
]


@pytest.mark.parametrize(("k", "n", "active"), SCHEMES)
def test_scheme_rows_have_n_active_ones_and_columns_are_balanced(k: int, n: int, active: int) -> None:
    code = coding_scheme(k, n, active)
    assert code.shape == (k, n)
    assert set(code.unique().tolist()) <= {0.0, 1.0}
    assert (code.sum(dim=1) == active).all()
    assert len({tuple(row) for row in code.int().tolist()}) == k  # one codeword per class
    columns = code.sum(dim=0)
    assert columns.max() - columns.min() <= 1
    assert columns.sum() == k * active


def test_scheme_is_deterministic_given_the_seed() -> None:
    first = coding_scheme(10, 10, 3, seed=1)
    _scheme.cache_clear()  # recompute rather than read the cache
    assert torch.equal(coding_scheme(10, 10, 3, seed=1), first)
    assert not torch.equal(coding_scheme(10, 10, 3, seed=2), first)


def test_scheme_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match=r"C\(5, 2\) = 10 codewords < 11 classes"):
        coding_scheme(11, 5, 2)
    with pytest.raises(ValueError, match="n_active"):
        coding_scheme(3, 4, 5)
    assert torch.equal(coding_scheme(3, 4, 4), torch.ones(3, 4))  # N_act = N: every branch serves every class


# -- configuration --------------------------------------------------------------------------------------
def test_params_validation() -> None:
    with pytest.raises(pydantic.ValidationError, match="n_active"):
        CodedResNeXtParams.model_validate({"stages": [{"out_channels": 8, "d": 2, "n_branches": 4, "n_active": 5}]})
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        CodedResNeXtParams.model_validate({"lambda": 1})
    too_few = {"stages": [{"out_channels": 8, "d": 2, "n_branches": 4, "n_active": 1}]}  # C(4, 1) = 4 < 5
    with pytest.raises(ValueError, match=r"stage 0: C\(4, 1\) = 4 codewords < 5 classes"):
        make_method(5, **too_few).build()
    with pytest.raises(ValueError, match="thresholds needs 4 values"):
        make_method(5, thresholds=[0.5]).build()


@pytest.mark.parametrize(
    ("architecture", "k", "pattern"),
    [
        ("narrow", 6, [(10, 10), (10, 5), (10, 3)]),
        ("narrow", 100, [(20, 20), (20, 8), (20, 4)]),
        ("resnext29_10x11d", 10, [(10, 10), (10, 5), (10, 3)]),
        ("resnext29_20x6d", 100, [(20, 20), (20, 8), (20, 4)]),
    ],
)
def test_architectures_follow_the_paper_ratios(architecture: str, k: int, pattern: list[tuple[int, int]]) -> None:
    stem, stages = architecture_stages(architecture, k)  # type: ignore[arg-type]
    assert [(s.n_branches, s.active) for s in stages] == pattern
    if architecture.startswith("resnext29"):
        d = 11 if "10x11d" in architecture else 6
        assert stem == 64
        assert [(s.out_channels, s.d, s.blocks) for s in stages] == [(256, d, 3), (512, 2 * d, 3), (1024, 4 * d, 3)]


def test_blocks_sets_the_named_architectures_blocks_per_stage() -> None:
    default = make_method(10).build()
    one = make_method(10, blocks=1).build()
    assert [len(stage.blocks) for stage in default.backbone.stages] == [2, 2, 2]
    assert [len(stage.blocks) for stage in one.backbone.stages] == [1, 1, 1]
    assert one.num_exits == 3  # one decoding exit per coded block, then the final one
    assert one(images()).logits.shape == (6, 10)
    # everything but the depth stays the architecture's
    assert [(b.n_branches, b.n_active) for b in one.blocks] == [(10, 10), (10, 5), (10, 3)]
    mixed = make_method(10, blocks=[1, 2, 2]).build()
    assert [len(stage.blocks) for stage in mixed.backbone.stages] == [1, 2, 2]
    with pytest.raises(pydantic.ValidationError, match="blocks: 2 values for the architecture's 3 stages"):
        CodedResNeXtParams.model_validate({"blocks": [1, 2]})
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        CodedResNeXtParams.model_validate({"blocks": [1, 0, 2]})
    stages = [{"out_channels": 8, "d": 2, "n_branches": 4}]
    with pytest.raises(pydantic.ValidationError, match="blocks applies to a named architecture; with stages"):
        CodedResNeXtParams.model_validate({"blocks": 1, "stages": stages})


@pytest.mark.parametrize(
    ("params", "stride"),
    [({}, 2), ({"architecture": "resnext29_10x11d"}, 1), ({"stem_stride": 1}, 1)],
)
def test_stem_stride(params: dict, stride: int) -> None:
    model = build_coded_resnext(CodedResNeXtParams.model_validate(params), context(10))
    assert model.backbone.stem[1].stride == (stride, stride)
    strides = [stage.blocks[0].conv_internal.stride[0] for stage in model.backbone.stages]
    assert strides == [1, 2, 2]


# -- the coded block ------------------------------------------------------------------------------------
def reference_block(block: ResNeXtBlock, h: Tensor, keep: Tensor | None = None, drop: Tensor | None = None) -> tuple:
    """The coded block written out literally: grouped expansion, t_n materialised."""
    u = F.relu(block.bn_reduce(block.conv_reduce(h)))
    u = F.relu(block.bn_internal(block.conv_internal(u)))
    t = block.conv_expand(u)
    b, _, hh, ww = t.shape
    t = t.view(b, block.n_branches, block.out_channels, hh, ww)
    if keep is not None:
        t = t * keep[:, :, None, None, None]
    energy = t.pow(2).mean(dim=(2, 3, 4))
    rho2 = energy.mean(dim=1, keepdim=True)
    t = t / rho2.sqrt()[:, :, None, None, None]
    if drop is not None:
        t = t * drop[:, :, None, None, None]
    out = F.relu(block.bn_expand(t.sum(dim=1)) + block.skip(h))
    return out, energy / rho2


def coded_block(n: int = 6, active: int = 2, k: int = 4) -> ResNeXtBlock:
    torch.manual_seed(0)
    block = ResNeXtBlock(5, 7, 3, n, stride=2, codes=coding_scheme(k, n, active), drop_p=0.25)
    torch.nn.init.normal_(block.bn_expand.weight)  # γ = 0 would hide the branches from the output
    return block


def test_block_matches_the_literal_computation() -> None:
    block = coded_block().eval()
    h = torch.randn(3, 5, 8, 8)
    state = _Pass()
    out = block(h, state)
    ref_out, ref_energy = reference_block(block, h)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state.energies[0], ref_energy, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state.energies[0].sum(dim=1), torch.full((3,), 6.0))  # Σ_n E_n = N


def test_block_zeroes_inactive_branches_before_normalising() -> None:
    block = coded_block().eval()
    h = torch.randn(4, 5, 8, 8)
    classes = torch.tensor([0, 1, 2, 3])
    state = _Pass(restrict_to=classes)
    out = block(h, state)
    keep = block.codes[classes]
    ref_out, ref_energy = reference_block(block, h, keep=keep)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state.energies[0], ref_energy, rtol=1e-4, atol=1e-5)
    assert (state.energies[0][keep == 0] == 0).all()
    torch.testing.assert_close(state.energies[0].sum(dim=1), torch.full((4,), 6.0))  # still Σ = N


def test_drop_mask_is_applied_scaled_and_off_in_eval() -> None:
    block = coded_block().train()
    h = torch.randn(8, 5, 8, 8)
    mask = torch.bernoulli(torch.full((8, 6), 0.75), generator=torch.Generator().manual_seed(0)) / 0.75
    state = _Pass(mask_key=block.scheme_key, mask=mask)  # as if an earlier block drew it
    out = block(h, state)
    assert state.drop_masks[0] is mask
    ref_out, _ = reference_block(block, h, drop=mask)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)

    fresh = _Pass()
    torch.manual_seed(1)
    block(h, fresh)
    drawn = fresh.drop_masks[0]
    assert drawn is not None and torch.equal(drawn.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert (drawn == 0).any() and (drawn > 0).any()

    block.eval()
    state = _Pass()
    block(h, state)
    assert state.drop_masks == [None]


def test_drop_mask_is_shared_by_consecutive_blocks_with_the_same_scheme() -> None:
    method = make_method(6, drop_p=0.5)  # narrow: 2 blocks 5/10, then 2 blocks 3/10
    model = method.build().train()
    torch.manual_seed(0)
    masks = model(torch.rand(8, 1, 16, 16)).extras["drop_masks"]
    assert len(masks) == 4
    assert masks[0] is masks[1] and masks[2] is masks[3]
    assert not torch.equal(masks[1], masks[2])  # a new scheme draws a new mask
    for m in masks:
        assert torch.equal(m.unique(), torch.tensor([0.0, 2.0]))

    independent = make_method(6, drop_p=0.5, shared_drop_mask=False).build().train()
    masks = independent(torch.rand(8, 1, 16, 16)).extras["drop_masks"]
    assert not torch.equal(masks[0], masks[1])

    model.eval()
    out = model(torch.rand(8, 1, 16, 16))
    assert out.extras["drop_masks"] == [None] * 4


# -- loss ---------------------------------------------------------------------------------------------
def test_coding_loss_by_hand() -> None:
    energies = torch.tensor([[1.5, 0.5, 1.0], [0.0, 3.0, 0.0]])  # Σ_n E_n = N = 3
    codewords = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # w_y per sample, N_act = 1, r = 1/3
    # |r·E − w|⁴: (1/2)⁴, (1/6)⁴, (1/3)⁴ for the first sample, all 0 for the second; mean over 6.
    expected = (1 / 16 + 1 / 1296 + 1 / 81) / 6
    assert coding_loss(energies, codewords, 1 / 3, 4.0).item() == pytest.approx(expected, rel=1e-6)
    assert coding_loss(energies, codewords, 1 / 3, 2.0).item() == pytest.approx((1 / 4 + 1 / 36 + 1 / 9) / 6, rel=1e-6)


def test_method_loss_is_ce_plus_mu_times_coding_losses() -> None:
    method = make_method(5, mu=6.0)
    model = method.build().train()
    x, y = images(6), torch.arange(6) % 5
    torch.manual_seed(0)
    out = model(x)
    ratios = [b.n_active / b.n_branches for b in model.coded_blocks]
    assert ratios == [0.5, 0.5, 0.3, 0.3]
    hand = F.cross_entropy(out.logits, y) + 6.0 * sum(
        ((r * e - c[y]) ** 4).mean()
        for e, c, r in zip(out.extras["energies"], out.extras["codes"], ratios, strict=True)
    )
    torch.testing.assert_close(method.loss(out, Batch(x, y, torch.arange(6))), hand)


def test_coding_loss_trains_the_branches_that_cross_entropy_cannot_reach_yet() -> None:
    # bn_expand's γ starts at 0, so at initialisation only the coding loss reaches the expansions.
    for mu, reached in ((6.0, True), (0.0, False)):
        method = make_method(5, mu=mu)
        model = method.build().train()
        x, y = images(6), torch.arange(6) % 5
        method.loss(model(x), Batch(x, y, torch.arange(6))).backward()
        grads = [b.conv_expand.weight.grad for b in model.coded_blocks]
        assert all(g is not None for g in grads)
        assert all(bool(g.abs().sum() > 0) == reached for g in grads)
        assert model.fc.weight.grad.abs().sum() > 0
        assert model.fc.bias is None  # the paper's final layer has no bias


# -- early decoding -----------------------------------------------------------------------------------
def test_decoding_by_hand() -> None:
    codes = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])  # N_act = 2
    energies = torch.tensor([[3.0, 1.0, 0.0, 0.0]])  # v = 2·E/ΣE = [1.5, 0.5, 0, 0]
    dist = torch.tensor([[math.sqrt(0.5), math.sqrt(1.5), math.sqrt(4.5)]])
    torch.testing.assert_close(decoding_logits(energies, codes), -dist)
    torch.testing.assert_close(decoding_logits(10 * energies, codes), -dist)  # only the direction of E matters
    torch.testing.assert_close(decoding_logits(energies, codes, temperature=2.0), -dist / 2)
    assert decoding_logits(energies, codes).argmax().item() == 0  # argmin_k ‖v − w_k‖


def test_exit_logits_are_the_decodings_then_the_final_logits() -> None:
    model = make_method(5).build().eval()
    x = images(4)
    with torch.no_grad():
        out = model(x)
        assert model.num_exits == len(out.exit_logits) == 5
        assert out.exit_logits[-1] is out.logits
        for z, e, c in zip(out.exit_logits, out.extras["energies"], out.extras["codes"], strict=False):
            torch.testing.assert_close(z, decoding_logits(e, c))
        for i in range(model.num_exits):
            upto = model.forward_exit(x, i)
            assert len(upto) == i + 1
            for got, want in zip(upto, out.exit_logits, strict=False):
                torch.testing.assert_close(got, want)


def test_forward_exit_stops_at_its_block() -> None:
    model = make_method(5).build().eval()
    calls: list[int] = []
    blocks = model.blocks  # 2 plain blocks, then coded blocks 0..3
    for j, block in enumerate(blocks):
        block.register_forward_hook(lambda _m, _i, _o, j=j: calls.append(j))
    with torch.no_grad():
        model.forward_exit(images(2), 1)
    assert calls == [0, 1, 2, 3]


# -- binary classifiers ---------------------------------------------------------------------------------
def zero_inactive_branches(model: CodedResNeXt, k: int) -> CodedResNeXt:
    """A copy whose inactive branches (for class k) have zero expansion weights: their t_n are 0."""
    copy_ = copy.deepcopy(model)
    for block in copy_.coded_blocks:
        w = block.conv_expand.weight.data.view(block.n_branches, block.out_channels, -1)
        w[block.codes[k] == 0] = 0
    return copy_


def trained_looking(model: CodedResNeXt) -> CodedResNeXt:
    """Non-trivial BN statistics and γ, so that every module matters in the comparison."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    return model.eval()


@pytest.mark.parametrize("k", [0, 3])
def test_binary_classifier_is_the_full_model_with_inactive_branches_zeroed(k: int) -> None:
    torch.manual_seed(0)
    model = trained_looking(make_method(5).build())
    x = images(4)
    with torch.no_grad():
        by_construction = zero_inactive_branches(model, k)(x).logits[:, k]
        restricted = model(x, restrict_to=torch.full((4,), k)).logits[:, k]
        extracted = extract_binary_classifier(model, k)(x)
        scores = model.binary_scores(x, torch.full((4,), k))
        full = model(x).logits[:, k]
    torch.testing.assert_close(restricted, by_construction, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(extracted, by_construction, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores, by_construction, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(full, by_construction, atol=1e-3)  # the restriction changes something


def test_binary_scores_mix_classes_in_one_batch() -> None:
    torch.manual_seed(0)
    model = trained_looking(make_method(5).build())
    x = images(5)
    classes = torch.tensor([4, 0, 2, 2, 1])
    with torch.no_grad():
        mixed = model.binary_scores(x, classes)
        one_by_one = torch.stack(
            [extract_binary_classifier(model, int(c))(x[i : i + 1])[0] for i, c in enumerate(classes)]
        )
    torch.testing.assert_close(mixed, one_by_one, rtol=1e-4, atol=1e-5)


def tiny_model(stages: list[dict]) -> CodedResNeXt:
    params = CodedResNeXtParams.model_validate({"stages": stages, "stem_channels": 4})
    return build_coded_resnext(params, context(3, channels=3))


def test_parameter_count_of_a_binary_classifier_by_hand() -> None:
    # stem 3→4; one coded stage: C_out 6, d 2, N 4, N_act 2; 3 classes.
    model = tiny_model([{"out_channels": 6, "d": 2, "n_branches": 4, "n_active": 2}])
    stem = 3 * 4 * 9 + 2 * 4  # conv3×3 + BN(γ, β)
    skip = 4 * 6 + 2 * 6  # 1×1 projection + BN
    full_branches = (4 * 8 + 2 * 8) + (8 * 2 * 9 + 2 * 8) + 4 * 2 * 6  # reduce+BN, grouped 3×3+BN, grouped expansion
    kept_branches = (4 * 4 + 2 * 4) + (4 * 2 * 9 + 2 * 4) + 2 * 2 * 6  # the same for 2 of the 4 branches
    bn_expand, fc = 2 * 6, 6 * 3  # no bias in the final layer
    assert count_parameters(model) == stem + skip + full_branches + bn_expand + fc
    for k in range(3):
        assert count_binary_parameters(model, k) == stem + skip + kept_branches + bn_expand + 6


def test_parameter_count_keeps_plain_blocks_whole() -> None:
    # A plain stage (C_out 4 = stem width: identity skip) before the coded one (stride 2).
    model = tiny_model(
        [
            {"out_channels": 4, "d": 1, "n_branches": 2},
            {"out_channels": 6, "d": 2, "n_branches": 4, "n_active": 2},
        ]
    )
    stem = 3 * 4 * 9 + 2 * 4
    plain = (4 * 2 + 2 * 2) + (2 * 1 * 9 + 2 * 2) + 2 * 4 + 2 * 4  # reduce, grouped 3×3, dense expansion, BNs
    shared = (4 * 6 + 2 * 6) + 2 * 6  # skip projection and bn_expand of the coded block
    full = (4 * 8 + 2 * 8) + (8 * 2 * 9 + 2 * 8) + 4 * 2 * 6
    kept = (4 * 4 + 2 * 4) + (4 * 2 * 9 + 2 * 4) + 2 * 2 * 6
    assert count_parameters(model) == stem + plain + shared + full + 6 * 3
    assert count_binary_parameters(model, 1) == stem + plain + shared + kept + 6


# -- the whole method -------------------------------------------------------------------------------------
def test_forward_backward_on_a_tiny_config_and_the_grad_cam_layer() -> None:
    method = make_method(5)
    model = method.build().train()
    x, y = images(4), torch.arange(4) % 5
    out = model(x)
    assert out.logits.shape == (4, 5) and out.features is not None and out.features.shape == (4, 128, 2, 2)
    for e in out.extras["energies"]:
        torch.testing.assert_close(e.sum(dim=1), torch.full((4,), 10.0))
    method.loss(out, Batch(x, y, torch.arange(4))).backward()
    assert all(p.grad is not None for p in model.parameters())
    maps = default_explanation(method, model.eval(), x, y)  # Grad-CAM on backbone.stages[-1]
    assert maps.shape == (4, 16, 16) and (maps >= 0).all()


def test_paper_configurations_binary_parameter_fractions() -> None:
    """The honest count for the paper's CIFAR models (the paper reports 38% and 27%).

    Our count keeps what every class shares: the stem, the plain first stage, each block's
    skip projection and bn_expand. Scaling only the branch parameters by r reproduces the
    paper's figures (37.0% and 27.5%), so the paper appears to leave the shared modules out.
    """
    for architecture, k, honest, branches_only in (
        ("resnext29_10x11d", 10, 0.4633, 0.3705),
        ("resnext29_20x6d", 100, 0.3743, 0.2750),
    ):
        model = build_coded_resnext(CodedResNeXtParams(architecture=architecture), context(k, channels=3, size=32))
        total = count_parameters(model)
        assert count_binary_parameters(model, 0) / total == pytest.approx(honest, abs=5e-5)
        branch, kept = 0, 0.0
        for block in model.blocks:
            n = sum(
                p.numel()
                for m in (block.conv_reduce, block.bn_reduce, block.conv_internal, block.bn_internal, block.conv_expand)
                for p in m.parameters()
            )
            branch += n
            kept += n * block.n_active / block.n_branches
        assert kept / branch == pytest.approx(branches_only, abs=5e-5)


def test_exit_stream_yields_every_exit_lazily() -> None:
    method = make_method()
    model = method.build().eval()
    x = images(2)
    with torch.no_grad():
        full = model(x).exit_logits
        streamed = list(model.exit_stream(x))
        assert len(streamed) == model.num_exits == len(full)
        for a, b in zip(streamed, full, strict=True):
            torch.testing.assert_close(a, b)
        # Consuming only the first exit runs only the blocks up to the first coded block.
        calls: list[int] = []
        model.blocks[-1].register_forward_hook(lambda *_: calls.append(1))
        next(iter(model.exit_stream(x)))
        assert calls == []
