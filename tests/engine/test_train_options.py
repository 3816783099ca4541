"""The training loop's options: no host synchronisation per step, precision, channels-last, compile.

Host copies are counted as in ``tests/metrics/test_device_transfers.py``: every ``Tensor.cpu()``,
``.numpy()``, ``.item()``, ``.tolist()``, ``float(t)`` and ``bool(t)`` is a synchronisation on a GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from tests.engine.test_train import (
    CFG,
    CPU,
    DiesAfterEpoch,
    Killed,
    NaNAtSixthStep,
    halves_dataset,
    loss_and_accuracy,
    tiny_method,
)
from tests.metrics.test_device_transfers import HostCopies
from xbench.data.base import ImageSplit
from xbench.engine.cache import Cache
from xbench.engine.checkpoints import CachedEpochs
from xbench.engine.train import TrainingError, train
from xbench.methods.baseline import Baseline
from xbench.models.output import Batch, ModelOutput
from xbench.suite import Suite, TrainingConfig

#: TrainingConfig's dumped keys before log_interval, precision, channels_last and compile existed
KEYS_BEFORE = [
    "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
    "warmup_epochs", "step_epochs", "limit", "holdout", "augment",
]  # fmt: skip
NEW = {"log_interval": 7, "precision": "bf16", "channels_last": True, "compile": True}


def _state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _train(cfg: TrainingConfig, n: int = 64, seed: int = 0, **kwargs: Any) -> tuple[dict[str, Tensor], Any]:
    data = halves_dataset(n=n)
    method = tiny_method(data)
    torch.manual_seed(0)
    model = method.build()
    stats = train(method, model, data, cfg, CPU, seed=seed, progress=False, **kwargs)
    return _state(model), stats


# -- settings -------------------------------------------------------------------------------------------
def test_new_keys_are_left_out_of_dumps_at_their_defaults() -> None:
    # Records and cache keys carry the dumped training settings: the suites written before keep theirs.
    assert list(TrainingConfig().model_dump(mode="json")) == KEYS_BEFORE
    assert list(TrainingConfig().model_dump()) == KEYS_BEFORE
    explicit = TrainingConfig(log_interval=50, precision="fp32", channels_last=False, compile=False)
    assert explicit.model_dump(mode="json") == TrainingConfig().model_dump(mode="json")
    changed = TrainingConfig(**NEW).model_dump(mode="json")  # type: ignore[arg-type]
    assert list(changed) == KEYS_BEFORE + list(NEW) and all(changed[k] == v for k, v in NEW.items())
    assert TrainingConfig.model_validate(changed) == TrainingConfig(**NEW)  # type: ignore[arg-type]


def test_a_method_row_override_keeps_the_suites_new_keys() -> None:
    suite = Suite.model_validate(
        {"name": "s", "datasets": ["d"], "methods": ["baseline", {"name": "egt", "training": {"epochs": 3}}],
         "training": {"precision": "bf16", "compile": True}}
    )  # fmt: skip
    merged = suite.training_for(suite.methods[1])
    assert (merged.epochs, merged.precision, merged.compile) == (3, "bf16", True)


@pytest.mark.parametrize("key, value", [("precision", "fp8"), ("log_interval", 0), ("channels_last", "maybe")])
def test_bad_values_are_refused(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        TrainingConfig.model_validate({key: value})


# -- no host synchronisation per step ---------------------------------------------------------------------
def _host_copies(steps: int, **options: Any) -> int:
    data = halves_dataset(n=16 * steps)
    method = tiny_method(data)
    cfg = TrainingConfig(epochs=2, batch_size=16, lr=0.05, **{"log_interval": 100, **options})
    with HostCopies() as copies:
        train(method, method.build(), data, cfg, CPU, seed=0, progress=True)
    return copies.total


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_host_copies_do_not_grow_with_the_steps(precision: str) -> None:
    copies = _host_copies(5, precision=precision)
    assert copies == _host_copies(20, precision=precision)
    assert copies <= 2 * 2  # the epoch's losses once per epoch (fp16: no inf check per step either)


def test_the_counter_sees_a_copy_per_log_interval() -> None:
    # The check can fail: flushing the losses every 2 of 20 steps is counted.
    assert _host_copies(20) + 2 * 9 == _host_copies(20, log_interval=2)


def test_the_loss_is_logged_every_log_interval_and_each_epoch(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="xbench.engine.train")
    cfg = TrainingConfig(epochs=2, batch_size=8, lr=0.05, log_interval=3)  # 8 steps per epoch
    _, stats = _train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "xbench.engine.train"]
    steps = [line for line in lines if ", step " in line]
    assert [line.split(", step ")[1].split(":")[0] for line in steps] == ["3/8", "6/8"] * 2
    epochs = [line for line in lines if "mean loss" in line]
    assert len(epochs) == 2 and "epoch 2/2" in epochs[1]
    assert stats.final_loss == stats.final_loss  # the last step's loss, not NaN


@pytest.mark.parametrize("log_interval", [1, 3, 50])
def test_a_non_finite_loss_is_named_at_any_log_interval(log_interval: int) -> None:
    data = halves_dataset()
    method = tiny_method(data, NaNAtSixthStep)
    cfg = CFG.model_copy(update={"log_interval": log_interval})
    with pytest.raises(TrainingError) as info:
        train(method, method.build(), data, cfg, CPU, seed=0, desc="toy", progress=False)
    assert "epoch 2, step 2 (global step 6)" in str(info.value)


class BreaksAfterNaN(NaNAtSixthStep):
    """Fails outright at the step after its non-finite loss (as a method may on NaN weights)."""

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        if self.calls == 6:
            raise RuntimeError("the weights are NaN")
        return super().loss(output, batch)


def test_a_failure_after_a_non_finite_loss_is_reported_as_the_divergence() -> None:
    data = halves_dataset()
    method = tiny_method(data, BreaksAfterNaN)
    with pytest.raises(TrainingError, match=r"epoch 2, step 2 \(global step 6\)") as info:
        train(method, method.build(), data, CFG, CPU, seed=0, progress=False)
    assert isinstance(info.value.__cause__, RuntimeError)


# -- precision -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_on_cpu(precision: str) -> None:
    data = halves_dataset()
    method = tiny_method(data)
    torch.manual_seed(0)
    model = method.build()
    train(method, model, data, CFG.model_copy(update={"precision": precision}), CPU, seed=0, progress=False)
    _, accuracy = loss_and_accuracy(model, data)
    assert accuracy > 0.9
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 weights, cast per op
    fp32, _ = _train(CFG, n=128)
    assert not all(torch.equal(v, model.state_dict()[k]) for k, v in fp32.items())


class SeesDtype(Baseline):
    dtypes: list[torch.dtype]

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        self.dtypes.append(output.logits.dtype)
        return super().loss(output, batch)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_steps_run_under_autocast(precision: str, dtype: torch.dtype) -> None:
    data = halves_dataset(n=32)
    method = tiny_method(data, SeesDtype)
    assert isinstance(method, SeesDtype)
    method.dtypes = []
    cfg = TrainingConfig(epochs=1, batch_size=16, precision=precision)  # type: ignore[arg-type]
    train(method, method.build(), data, cfg, CPU, seed=0, progress=False)
    assert method.dtypes == [dtype, dtype]


def test_fp16_resumes_to_the_same_weights_with_its_gradient_scaler(tmp_path: Path) -> None:
    cfg = TrainingConfig(epochs=3, batch_size=16, lr=0.05, precision="fp16", augment=["crop", "flip"])
    whole, stats = _train(cfg, seed=2)
    store = CachedEpochs(Cache(tmp_path), "k" * 64, "cell")
    with pytest.raises(Killed):
        _train(cfg, seed=2, checkpoint=DiesAfterEpoch(store, 1))
    saved = store.restore()
    assert saved is not None and "scaler" in saved and saved["scaler"]["scale"] > 0
    resumed, again = _train(cfg, seed=2, checkpoint=DiesAfterEpoch(store, None))
    assert again.resumed_from == 1 and again.final_loss == stats.final_loss
    assert all(torch.equal(whole[k], v) for k, v in resumed.items())


# -- channels-last -------------------------------------------------------------------------------------------
class SeesLayout(Baseline):
    layouts: list[tuple[bool, bool]]

    def training_step(self, model: torch.nn.Module, batch: Batch) -> Tensor:
        weight = next(p for p in model.parameters() if p.dim() == 4)
        cl = torch.channels_last
        self.layouts.append((batch.x.is_contiguous(memory_format=cl), weight.is_contiguous(memory_format=cl)))
        return super().training_step(model, batch)


@pytest.mark.parametrize("weights_channels_last", [False, True], ids=["contiguous", "channels-last"])
def test_channels_last_training_gives_the_model_back_in_its_layout(weights_channels_last: bool) -> None:
    grey = halves_dataset(n=32)
    data = ImageSplit(grey.images.expand(-1, 3, -1, -1).contiguous(), grey.labels, None, grey.classes)  # NHWC != NCHW
    method = tiny_method(data, SeesLayout)
    assert isinstance(method, SeesLayout)
    method.layouts = []
    model = method.build()
    if weights_channels_last:  # resources.channels_last
        model.to(memory_format=torch.channels_last)
    cfg = TrainingConfig(epochs=1, batch_size=16, channels_last=True)
    train(method, model, data, cfg, CPU, seed=0, progress=False)
    assert method.layouts == [(True, True)] * 2
    weights = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1]
    assert weights  # weights whose two layouts differ
    assert all(p.is_contiguous(memory_format=torch.channels_last) == weights_channels_last for p in weights)
    assert all(p.is_contiguous() != weights_channels_last for p in weights)


def test_channels_last_training_agrees_with_contiguous() -> None:
    plain, _ = _train(CFG)
    nhwc, _ = _train(CFG.model_copy(update={"channels_last": True}))
    for k, v in plain.items():
        torch.testing.assert_close(nhwc[k], v, rtol=1e-3, atol=1e-4)


# -- compile --------------------------------------------------------------------------------------------------
class _NoCompiler(torch.nn.Module):
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n(the rest of the traceback)")


def test_compile_falls_back_to_the_uncompiled_model_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch, "compile", lambda model, **kw: _NoCompiler())
    cfg = TrainingConfig(epochs=2, batch_size=16, lr=0.05, compile=True, augment=["crop"])
    compiled, stats = _train(cfg)
    plain, expected = _train(cfg.model_copy(update={"compile": False}))
    assert stats.final_loss == expected.final_loss
    assert all(torch.equal(plain[k], v) for k, v in compiled.items())  # the failed step changed nothing
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "training.compile: cannot compile" in warnings[0] and "No working C++ compiler" in warnings[0]


@pytest.mark.slow  # inductor compiles for about 30 s on 2 cores
def test_compiled_training_agrees_with_eager() -> None:
    cfg = TrainingConfig(epochs=2, batch_size=16, lr=0.05)
    eager, _ = _train(cfg)
    compiled, _ = _train(cfg.model_copy(update={"compile": True}))
    for k, v in eager.items():
        torch.testing.assert_close(compiled[k], v, rtol=1e-3, atol=1e-4)
