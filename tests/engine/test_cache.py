"""The content-addressed cache: stable keys, atomic writes, verified and weights-only loads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xbench.engine.cache import Cache, atomic_write, atomic_write_text, cache_key, load_checkpoint
from xbench.errors import CheckpointError

KEY = "ab" + "0" * 62


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def small_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "fc.bias": torch.randn(5, generator=g),
        "bn.num_batches_tracked": torch.tensor(7),
    }


# -- keys -------------------------------------------------------------------------------
def test_cache_key_ignores_dict_order() -> None:
    a = {"method": {"name": "baseline", "params": {"lam": 0.1, "k": 3}}, "seed": 0, "training": {"epochs": 2}}
    b = {"training": {"epochs": 2}, "seed": 0, "method": {"params": {"k": 3, "lam": 0.1}, "name": "baseline"}}
    assert cache_key(a) == cache_key(b)
    assert len(cache_key(a)) == 64 and int(cache_key(a), 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["method"]["params"].update(lam=0.2),
        lambda d: d["method"]["params"].update(k=4),
        lambda d: d["method"].update(name="baselinе"),  # a Cyrillic "е"
        lambda d: d.update(seed=1),
        lambda d: d["training"].update(epochs=2.5),
        lambda d: d["training"].update(augment=["crop", "flip"]),
        lambda d: d["training"].update(extra=None),
        lambda d: d.pop("seed"),
    ],
)
def test_cache_key_changes_with_any_value(change) -> None:
    base = {
        "method": {"name": "baseline", "params": {"lam": 0.1, "k": 3}},
        "seed": 0,
        "training": {"epochs": 2, "augment": ["flip", "crop"]},
    }
    changed = json.loads(json.dumps(base))
    change(changed)
    assert cache_key(changed) != cache_key(base)


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8) | st.booleans(), max_size=8),
    st.randoms(use_true_random=False),
)
def test_cache_key_property(d: dict, rnd) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    assert cache_key(dict(items)) == cache_key(d)
    if d:
        k = next(iter(d))
        assert cache_key({**d, k: [d[k]]}) != cache_key(d)


def test_cache_key_paths_and_tuples() -> None:
    assert cache_key({"p": Path("/a/b"), "t": (1, 2)}) == cache_key({"p": "/a/b", "t": [1, 2]})


# -- atomic writes ------------------------------------------------------------------------
def test_atomic_write_leaves_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "hello")
    atomic_write_text(target, "again")  # overwrite in place
    assert target.read_text() == "again"
    assert files_under(tmp_path) == ["sub/file.txt"]


def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def explode(f) -> None:
        f.write(b"half-writ")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, explode)
    assert target.read_bytes() == b"old"
    assert files_under(tmp_path) == ["file.bin"]


def test_save_model_writes_payload_and_sidecar_only(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    path = cache.save_model(KEY, small_state(), {"cell": "d/m/seed0"})
    assert path == tmp_path / "models" / "ab" / f"{KEY}.pt"
    assert files_under(tmp_path) == [f"models/ab/{KEY}.pt", f"models/ab/{KEY}.pt.json"]
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["cell"] == "d/m/seed0" and len(meta["sha256"]) == 64


# -- checkpoints ----------------------------------------------------------------------------
def test_model_round_trip(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    state = small_state()
    assert cache.load_model(KEY) is None  # absent
    cache.save_model(KEY, state, {})
    loaded = cache.load_model(KEY)
    assert loaded is not None and loaded.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor) and loaded[name].dtype == tensor.dtype


def test_model_round_trip_through_a_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model(torch.randn(2, 3, 8, 8))  # move the BN running stats away from their init
    cache = Cache(tmp_path)
    cache.save_model(KEY, model.state_dict(), {})
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    fresh.load_state_dict(cache.load_model(KEY))
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_byte], ids=["truncated", "changed"])
def test_damaged_checkpoint_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage) -> None:
    cache = Cache(tmp_path)
    path = cache.save_model(KEY, small_state(), {})
    damage(path)
    with caplog.at_level(logging.WARNING, logger="xbench.engine.cache"):
        assert cache.load_model(KEY) is None
    assert any(r.levelno == logging.WARNING and str(path) in r.getMessage() for r in caplog.records)
    assert "sha256" in caplog.text


def test_truncated_checkpoint_with_matching_hash_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Even when the sidecar agrees, a checkpoint torch cannot read is reported and skipped."""
    cache = Cache(tmp_path)
    path = cache.save_model(KEY, small_state(), {})
    _truncate(path)
    cache._commit(path, {})  # re-record the hash of the broken file
    with caplog.at_level(logging.WARNING, logger="xbench.engine.cache"):
        assert cache.load_model(KEY) is None
    assert "not a loadable weights-only checkpoint" in caplog.text
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_sidecar_is_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(tmp_path)
    path = cache.save_model(KEY, small_state(), {})
    path.with_name(path.name + ".json").unlink()
    with caplog.at_level(logging.WARNING, logger="xbench.engine.cache"):
        assert cache.load_model(KEY) is None
    assert "no valid hash sidecar" in caplog.text


class CreatesMarker:
    """Unpickling this runs ``open(marker, "w")``, i.e. arbitrary code on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The payload really is dangerous: an unsafe load creates its marker.
    probe = tmp_path / "probe-marker"
    torch.save({"w": CreatesMarker(probe)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False).get("w").close()
    assert probe.exists()

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "w": CreatesMarker(marker)}, evil)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil)
    assert str(evil) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()

    # Through the cache: the hash matches (it was written by save_model) but the load still refuses.
    cache = Cache(tmp_path / "cache")
    cache.save_model(KEY, {"w": CreatesMarker(marker)}, {})
    with caplog.at_level(logging.WARNING, logger="xbench.engine.cache"):
        assert cache.load_model(KEY) is None
    assert not marker.exists()
    assert "weights-only" in caplog.text


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a state dict, got list"):
        load_checkpoint(tmp_path / "list.pt")
    (tmp_path / "html.pt").write_text("<html>404 Not Found</html>")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_checkpoint(tmp_path / "html.pt")


# -- JSON entries ------------------------------------------------------------------------------
def test_json_round_trip(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    obj = {"results": [{"value": 0.5, "n": 10, "exit": None, "params": {"k": 1}}], "time_s": 1.25}
    assert cache.load_json("metrics", KEY) is None
    cache.save_json("metrics", KEY, obj, {"cell": "c"})
    assert cache.load_json("metrics", KEY) == obj
    assert files_under(tmp_path) == [f"metrics/ab/{KEY}.json", f"metrics/ab/{KEY}.json.json"]
    assert cache.load_json("other", KEY) is None  # kinds are separate namespaces


def test_json_tampering_is_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(tmp_path)
    path = cache.save_json("metrics", KEY, {"value": 0.5})
    path.write_text(json.dumps({"value": 0.99}))
    with caplog.at_level(logging.WARNING, logger="xbench.engine.cache"):
        assert cache.load_json("metrics", KEY) is None
    assert str(path) in caplog.text
    # Saving again heals the entry.
    cache.save_json("metrics", KEY, {"value": 0.5})
    assert cache.load_json("metrics", KEY) == {"value": 0.5}
