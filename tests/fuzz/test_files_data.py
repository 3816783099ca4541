"""Fuzzed data files: image folders (the ``folder`` dataset) and ImageNet's box annotations (issue 26).

* **Image folders**: one image or mask file of a small ImageFolder tree is replaced by hypothesis:
  zero bytes, truncated, bytes flipped, random bytes or text, another image format under the same
  name, another size or mode, a header that claims a huge image (a decompression bomb), a folder
  or a dangling or looping symbolic link in its place; hidden and non-image files are added.
  Loading both splits (in various ``image_size``/``channels``/``masks`` settings) either refuses
  with one :class:`~xbench.errors.XBenchError` line naming the file, or yields valid tensors
  (images in [0, 1], one boolean mask per image of its size).
* **ImageNet XML**: entity-expansion attacks (billion laughs, quadratic blowup, external and
  parameter entities, in UTF-8 and UTF-16), malformed XML (truncated, flipped), coordinates and
  sizes that are NaN, infinite, negative, huge, tiny or not numbers, missing elements, deep
  nesting, wrong roots, odd encodings. ``box_mask_for`` either refuses in one line naming the file
  (entities always) or returns a boolean mask of the image's size.
* A few of each go through ``xbench run`` in-process: exit 2, one line naming the file and the
  dataset row, nothing written; or accepted (the run is stopped once the data and weights
  checks have passed, before anything is written).
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from kinds import FUZZ, SLOW_FACTOR, fuzz_kinds
from PIL import Image

from xbench.data.folder import FolderParams, ImageFolderDataset
from xbench.data.imagenet import box_mask_for
from xbench.engine.plan import Plan
from xbench.errors import XBenchError

SIZE = (12, 10)  # (W, H) of every image of the tree


# -- image folders -----------------------------------------------------------------------------------------
def folder_tree(root: Path) -> list[Path]:
    """ROOT/{train,test}/{cat,dog}/{a.png,b.jpg} with 0/255 masks under ROOT/masks/; returns every file."""
    rng = np.random.default_rng(0)
    files = []
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            for name in ("a.png", "b.jpg"):
                image = root / split / cls / name
                mask = root / "masks" / split / cls / f"{Path(name).stem}.png"
                image.parent.mkdir(parents=True, exist_ok=True)
                mask.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)).save(image)
                Image.fromarray((rng.random((SIZE[1], SIZE[0])) > 0.5).astype(np.uint8) * 255).save(mask)
                files += [image, mask]
    return files


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG that claims ``width`` x ``height`` pixels (and holds none)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def encoded(image: Image.Image, fmt: str) -> bytes:
    with tempfile.TemporaryFile() as handle:
        image.save(handle, format=fmt)
        handle.seek(0)
        return handle.read()


MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO"]


@dataclass
class FolderCase:
    """One file of the tree replaced: ``kind``, the file (index into the tree's files), its new contents."""

    kind: str
    index: int
    write: Callable[[Path], None]
    must: str  # "refuse", "accept" or "either"
    image_size: int | None
    channels: int
    masks: bool

    def __repr__(self) -> str:
        return (
            f"FolderCase({self.kind!r}, file {self.index}, {self.must}, image_size={self.image_size}, "
            f"channels={self.channels}, masks={self.masks})"
        )


FOLDER_KINDS = [
    "zero_byte", "truncate", "flip", "random_bytes", "text", "other_format", "other_size", "other_mode", "bomb",
    "folder", "dangling_link", "link_loop", "extra_files",
]  # fmt: skip


@st.composite
def folder_case(draw: st.DrawFn, kind: str) -> FolderCase:
    index = draw(st.integers(0, 15))  # even: an image, odd: its mask
    is_mask = index % 2 == 1
    image_size = draw(st.sampled_from([None, 8]))
    channels, masks = draw(st.sampled_from([1, 3])), draw(st.booleans())
    read = masks or not is_mask
    must = "refuse" if read else "accept"
    cut, seed = draw(st.floats(0, 1, exclude_max=True)), draw(st.integers(0, 2**32 - 1))
    flips = draw(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8))
    fmt, mode = draw(st.sampled_from(FORMATS)), draw(st.sampled_from(MODES))
    other = draw(st.tuples(st.integers(1, 40), st.integers(1, 40)).filter(lambda s: s != SIZE))
    huge = draw(st.sampled_from([(100_000, 100_000), (2**31 - 1, 1), (20_000, 10_000), (0, 5)]))

    def write(path: Path) -> None:
        data = path.read_bytes()
        rng = np.random.default_rng(seed)
        if kind == "zero_byte":
            path.write_bytes(b"")
        elif kind == "truncate":
            path.write_bytes(data[: int(len(data) * cut)])
        elif kind == "flip":
            out = bytearray(data)
            for where, xor in flips:
                out[int(where * len(out))] ^= xor
            path.write_bytes(bytes(out))
        elif kind == "random_bytes":
            path.write_bytes(rng.integers(0, 256, int(cut * 500) + 1, dtype=np.uint8).tobytes())
        elif kind == "text":
            path.write_text("this is not an image\n" * (int(cut * 50) + 1))
        elif kind == "bomb":
            path.write_bytes(png_header(*huge))
        elif kind in ("other_format", "other_size", "other_mode"):
            size = other if kind == "other_size" else SIZE
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            if kind == "other_mode":
                image = image.convert(mode)
            target = fmt if kind == "other_format" else ("TIFF" if mode in ("F", "I", "CMYK") else "PNG")
            try:
                path.write_bytes(encoded(image if target != "JPEG" else image.convert("RGB"), target))
            except (OSError, ValueError, KeyError):  # a mode that format cannot hold
                path.write_bytes(encoded(image.convert("RGB"), "PNG"))
        elif kind == "folder":
            path.unlink()
            path.mkdir()
        elif kind == "dangling_link":
            path.unlink()
            path.symlink_to(path.with_name("gone.png"))
        elif kind == "link_loop":
            path.unlink()
            path.symlink_to(path)
        else:  # hidden and non-image files, which are skipped
            (path.parent / f".{path.name}").write_bytes(b"junk")
            (path.parent / "notes.txt").write_text("notes")

    if kind in ("truncate", "flip"):
        must = "either"
    elif kind == "other_format" or kind == "other_mode":
        must = "either" if read else "accept"
    elif kind == "other_size":
        # a mask must have its image's size; without image_size, every image the first one's
        must = "refuse" if masks or (not is_mask and image_size is None) else "accept"
    elif kind == "folder":
        must = "refuse" if is_mask and masks else "accept"  # a folder named like an image is no image: skipped
    elif kind == "extra_files":
        must = "accept"
    return FolderCase(kind, index, write, must, image_size, channels, masks)


def load_both(root: Path, case: FolderCase) -> None:
    params = FolderParams(root=root, image_size=case.image_size, channels=case.channels, masks=case.masks)
    for split in ("train", "test"):
        data = ImageFolderDataset(params).load(split)
        n, c, h, w = data.images.shape
        assert c == case.channels and data.images.dtype.is_floating_point
        assert float(data.images.min()) >= 0 and float(data.images.max()) <= 1
        if case.masks:
            assert data.masks is not None and tuple(data.masks.shape) == (n, 1, h, w), data.masks
            assert data.masks.dtype == torch.bool, data.masks.dtype


def check_folder(tmp: Path, case: FolderCase, tally: Counter[str]) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp))
    try:
        target = folder_tree(root)[case.index]
        case.write(target)
        try:
            load_both(root, case)
        except XBenchError as err:
            message = str(err)
            assert "\n" not in message and str(target) in message, f"{case}: {message}"
            assert case.must != "accept", f"{case} must load: {message}"
            tally[f"{case.kind} refused"] += 1
        else:
            assert case.must != "refuse", f"{case} must be refused"
            tally[f"{case.kind} accepted"] += 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fuzz_folders(tmp: Path, per_kind: int, derandomize: bool) -> Counter[str]:
    check = functools.partial(check_folder, tmp)
    return fuzz_kinds("image folders", FOLDER_KINDS, folder_case, check, per_kind, derandomize)


def test_fuzzed_image_folders_load_or_are_refused_in_one_line(tmp_path: Path) -> None:
    tally = fuzz_folders(tmp_path, 8, derandomize=True)
    assert tally["zero_byte refused"] and tally["extra_files accepted"], tally


@pytest.mark.slow
def test_fuzzed_image_folders_many_examples(tmp_path: Path) -> None:
    fuzz_folders(tmp_path, 8 * SLOW_FACTOR, derandomize=False)


# -- ImageNet XML --------------------------------------------------------------------------------------------
def annotation(size: tuple[Any, Any] | None, objects: list[tuple[Any, list[Any] | None]]) -> str:
    """An ILSVRC annotation; ``None`` leaves an element out."""
    parts = ["<annotation><folder>val</folder>"]
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, box in objects:
        parts.append("<object>" + (f"<name>{name}</name>" if name is not None else ""))
        if box is not None:
            tags = ("xmin", "ymin", "xmax", "ymax")
            parts.append("<bndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in zip(tags, box, strict=False)) + "</bndbox>")
        parts.append("</object>")
    return "".join(parts) + "</annotation>"


GOOD_XML = annotation((80, 64), [("n01440764", [20, 16, 59, 47]), ("n01443537", [0, 0, 9, 7])])
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["", " ", "abc", "1e308", "-1e308", "1e-300", "4.9e-324", "0x10", "1_000", "nan", "inf", "1" * 500]
    ),
)


def billion_laughs(levels: int, width: int) -> str:
    entities = ['<!ENTITY l0 "lol">'] + [
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * width}">' for i in range(1, levels + 1)
    ]
    return f'<?xml version="1.0"?><!DOCTYPE a [{"".join(entities)}]><annotation><name>&l{levels};</name></annotation>'


ATTACKS: dict[str, Callable[[int], str]] = {
    "billion_laughs": lambda n: billion_laughs(3 + n % 8, 10),
    "quadratic_blowup": lambda n: (
        f'<!DOCTYPE a [<!ENTITY a "{"x" * (1000 + n)}">]><annotation>{"&a;" * (100 + n)}</annotation>'
    ),
    "external_file": lambda n: (
        '<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><annotation><name>&e;</name></annotation>'
    ),
    "external_dtd": lambda n: '<!DOCTYPE annotation SYSTEM "http://example.invalid/x.dtd"><annotation/>',
    "parameter_entity": lambda n: '<!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><annotation/>',
    "doctype_only": lambda n: "<!DOCTYPE annotation><annotation/>",
}


@dataclass
class XmlCase:
    kind: str
    data: bytes
    must: str

    def __repr__(self) -> str:
        return f"XmlCase({self.kind!r}, {len(self.data)} bytes: {self.data[:300]!r}, {self.must})"


XML_KINDS = ["attack", "truncate", "flip", "numbers", "missing", "deep", "many", "root", "encoding"]


@st.composite
def xml_case(draw: st.DrawFn, kind: str) -> XmlCase:
    if kind == "attack":
        name = draw(st.sampled_from(sorted(ATTACKS)))
        text = ATTACKS[name](draw(st.integers(0, 50)))
        encoding = draw(st.sampled_from(["utf-8", "utf-16"]))
        if encoding == "utf-16":
            text = text.replace('<?xml version="1.0"?>', "")
            text = '<?xml version="1.0" encoding="UTF-16"?>' + text
        return XmlCase(f"attack_{name}", text.encode(encoding), "refuse")
    data = GOOD_XML.encode()
    if kind == "truncate":
        return XmlCase(kind, data[: draw(st.integers(0, len(data) - 1))], "refuse")
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
        return XmlCase(kind, bytes(out), "either")
    if kind == "numbers":
        size = draw(st.one_of(st.none(), st.tuples(NUMBERS, NUMBERS)))
        boxes = draw(st.lists(st.lists(NUMBERS, min_size=4, max_size=4), max_size=3))
        return XmlCase(kind, annotation(size, [("n01440764", box) for box in boxes]).encode(), "either")
    if kind == "missing":
        box: list[Any] | None = draw(st.sampled_from([None, [1, 2, 3], [], [1, 2, 30, 40]]))
        label = draw(st.sampled_from([None, "", " ", "n01440764"]))
        return XmlCase(kind, annotation((80, 64), [(label, box)]).encode(), "either")
    if kind == "deep":
        depth = draw(st.integers(1_000, 100_000))
        return XmlCase(kind, (f"<annotation>{'<a>' * depth}{'</a>' * depth}</annotation>").encode(), "either")
    if kind == "many":
        n = draw(st.integers(100, 5_000))
        return XmlCase(kind, annotation((80, 64), [("n01440764", [1, 1, 5, 5])] * n).encode(), "either")
    if kind == "root":
        tag = draw(st.sampled_from(["voc", "Annotation", "x:annotation", "annotation2"]))
        return XmlCase(kind, GOOD_XML.replace("annotation>", f"{tag}>").encode(), "refuse")
    encoding = draw(st.sampled_from(["latin-1", "utf-16", "ebcdic-nope", "utf-8", "ascii"]))
    text = f'<?xml version="1.0" encoding="{encoding}"?>' + GOOD_XML
    try:
        return XmlCase(f"encoding_{encoding}", text.encode(encoding), "either")
    except LookupError:
        return XmlCase(f"encoding_{encoding}", text.encode(), "refuse")


def check_xml(tmp: Path, case: XmlCase, tally: Counter[str]) -> None:
    path = Path(tempfile.mkdtemp(dir=tmp)) / "ILSVRC2012_val_00000001.xml"
    path.write_bytes(case.data)
    wnid = "n01440764"
    try:
        mask = box_mask_for(path, (40, 32), wnid)
    except XBenchError as err:
        message = str(err)
        assert "\n" not in message and str(path) in message, message
        assert case.must != "accept", f"{case} must be read: {message}"
        tally[f"{case.kind} refused"] += 1
    else:
        assert case.must != "refuse", f"{case} must be refused"
        assert mask.dtype == np.bool_ and mask.shape == (32, 40), (mask.dtype, mask.shape)
        tally[f"{case.kind} accepted"] += 1
    shutil.rmtree(path.parent)


def fuzz_xml(tmp: Path, per_kind: int, derandomize: bool) -> Counter[str]:
    check = functools.partial(check_xml, tmp)
    return fuzz_kinds("ImageNet XML", XML_KINDS, xml_case, check, per_kind, derandomize)


def test_fuzzed_imagenet_xml_gives_a_mask_or_one_line(tmp_path: Path) -> None:
    tally = fuzz_xml(tmp_path, 12, derandomize=True)
    assert not any(k.startswith("attack") and k.endswith("accepted") for k in tally), tally


@pytest.mark.slow
def test_fuzzed_imagenet_xml_many_examples(tmp_path: Path) -> None:
    fuzz_xml(tmp_path, 12 * SLOW_FACTOR, derandomize=False)


# -- through xbench run ----------------------------------------------------------------------------------------
TINY: dict[str, Any] = {
    "name": "fuzz",
    "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
    "methods": ["baseline"],
    "metrics": ["top1"],
    "explainers": [],
    "training": {"epochs": 1, "batch_size": 8},
    "evaluation": {"batch_size": 8},
    "device": "cpu",
    "data": {"download": False},
}


class Accepted(Exception):
    """The data (and weights) checks passed: the test stops the run there."""


@pytest.fixture
def stop_after_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(self: Plan, *args: Any, **kwargs: Any) -> None:
        raise Accepted

    monkeypatch.setattr(Plan, "check_weights", stop)  # called after every dataset has loaded


def run_through_cli(cli: Any, root: Path, dataset: dict[str, Any], culprit: Path) -> str:
    """``xbench run`` on ``dataset``: "refused" (checked: one line naming ``culprit``, nothing written)
    or "accepted"."""
    suite = root / "suite.yaml"
    suite.write_text(yaml.safe_dump({**TINY, "datasets": [dataset]}), encoding="utf-8")
    out, cache = root / "results" / "run", root / "cache"
    before = cli.snapshot(root)
    args = ["run", str(suite), "--output", str(out), "--cache-dir", str(cache), "--no-progress"]
    try:
        code, stdout, stderr = cli.run(args)
    except Accepted:
        return "accepted"
    line = cli.error_line(code, stdout, stderr, str(culprit))
    assert f"{suite}: datasets[0] ({dataset['name']})" in line, line
    assert cli.snapshot(root) == before, "files were written"
    return "refused"


def test_fuzzed_image_folders_through_run(cli: Any, tmp_path: Path, stop_after_checks: None) -> None:
    tally: Counter[str] = Counter()
    for kind in FOLDER_KINDS:

        @settings(FUZZ, max_examples=1)
        @given(case=folder_case(kind))
        def one(case: FolderCase) -> None:
            root = Path(tempfile.mkdtemp(dir=tmp_path))
            target = folder_tree(root / "data")[case.index]
            case.write(target)
            params = {"root": str(root / "data"), "image_size": case.image_size, "masks": case.masks}
            outcome = run_through_cli(
                cli, root, {"name": "folder", "params": {**params, "channels": case.channels}}, target
            )
            assert case.must != {"refused": "accept", "accepted": "refuse"}[outcome], (case, outcome)
            tally[f"{case.kind} {outcome}"] += 1

        one()
    print(f"\nimage folders through run: {dict(sorted(tally.items()))}")


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_xml_attacks_through_run(cli: Any, tmp_path: Path, stop_after_checks: None, attack: str) -> None:
    from tests.data.imagenet_fixture import make_imagenet, val_stem

    root = make_imagenet(tmp_path / "imagenet", per_class_train=1, per_class_val=1, size=(24, 20))
    xml = root / "bbox_val" / f"{val_stem(2)}.xml"
    xml.write_text(ATTACKS[attack](5), encoding="utf-8")
    params = {"root": str(root), "resize": 16, "image_size": 16, "train_per_class": 1}
    assert run_through_cli(cli, tmp_path, {"name": "imagenet", "params": params}, xml) == "refused"


def test_a_dangling_link_in_a_real_process(tmp_path: Path) -> None:
    """stderr as a user sees it: one line, no traceback (the symbolic link names a missing file)."""
    import subprocess
    import sys

    target = folder_tree(tmp_path / "data")[2]
    os.unlink(target)
    target.symlink_to(tmp_path / "gone.png")
    suite = tmp_path / "suite.yaml"
    dataset = {"name": "folder", "params": {"root": str(tmp_path / "data")}}
    suite.write_text(yaml.safe_dump({**TINY, "datasets": [dataset]}), encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "xbench", "run", str(suite), "--output", str(out), "--cache-dir", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(target) in proc.stderr, proc.stderr
    assert not out.exists()
