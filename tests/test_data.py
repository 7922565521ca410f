"""edgerobust.data: layouts, class alignment, layout errors, the seeded split, decoding and its cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgerobust.data as data_mod
from edgerobust.data import (
    Domain,
    check_domain,
    decode_domain,
    make_split,
    open_dataset,
)
from edgerobust.errors import DataError


def _flat_dataset(root: Path, make_image_file, n: int = 3) -> Path:
    # Two domains, three classes, jpg and png mixed.
    for domain in ("a", "b"):
        for cls in ("cat", "dog", "owl"):
            for i in range(n):
                make_image_file(root / domain / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_flat_layout(tmp_path, make_image_file):
    root = _flat_dataset(tmp_path / "flat", make_image_file)
    ds = open_dataset(root)
    assert ds.layout == "flat"
    assert ds.classes == ("cat", "dog", "owl")
    assert set(ds.domains) == {"a", "b"}
    for dom in ds.domains.values():
        assert len(dom) == 9
        assert {Path(f).suffix for f in dom.files} == {".jpg", ".png"}
        # Labels follow the class folder of each file.
        for f, y in zip(dom.files, dom.labels, strict=True):
            assert ds.classes[y] == f.split("/")[0]
        assert all(p.is_file() for p in dom.paths())


def test_office31_layout(tmp_path, make_image_file):
    root = tmp_path / "office"
    for domain in ("amazon", "webcam"):
        for cls in ("back_pack", "bike"):
            for i in range(2):
                make_image_file(
                    root / domain / "images" / cls / f"frame_{i}.{'jpg' if i else 'png'}"
                )
    ds = open_dataset(root)
    assert ds.layout == "office31"
    assert ds.classes == ("back_pack", "bike")
    for dom in ds.domains.values():
        assert dom.root.name == "images"
        assert len(dom) == 4
        assert all(p.is_file() for p in dom.paths())


def test_missing_class_is_named(tmp_path, make_image_file):
    root = _flat_dataset(tmp_path / "d", make_image_file)
    shutil.rmtree(root / "b" / "dog")
    with pytest.raises(DataError) as err:
        open_dataset(root)
    msg = str(err.value)
    assert "'dog'" in msg and "'b'" in msg
    assert "\n" not in msg


def test_class_without_images_is_named(tmp_path, make_image_file):
    root = _flat_dataset(tmp_path / "d", make_image_file)
    for f in (root / "a" / "owl").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="'owl'"):
        open_dataset(root)


@pytest.mark.parametrize("case", ["missing", "file", "no_domains", "empty_domain", "loose_images"])
def test_bad_layouts_raise_one_clear_error(tmp_path, make_image_file, case):
    root = tmp_path / "root"
    if case == "file":
        root.write_text("not a folder")
    elif case == "no_domains":
        root.mkdir()
    elif case == "empty_domain":
        _flat_dataset(root, make_image_file)
        for cls in ("cat", "dog", "owl"):
            for f in (root / "b" / cls).iterdir():
                f.unlink()
    elif case == "loose_images":
        _flat_dataset(root, make_image_file)
        shutil.rmtree(root / "b")
        make_image_file(root / "b" / "x.jpg")
    with pytest.raises(DataError) as err:
        open_dataset(root)
    msg = str(err.value)
    assert msg and "\n" not in msg
    expected = {
        "missing": "not found",
        "file": "is a file",
        "no_domains": "no domain folders",
        "empty_domain": "'b' is empty",
        "loose_images": "holds images directly",
    }[case]
    assert expected in msg


# --------------------------------------------------------------------------- split


def _domain(n: int, prefix: str = "") -> Domain:
    files = tuple(f"c{i % 5}/{prefix}img{i:04d}.jpg" for i in range(n))
    return Domain("d", Path("/nowhere"), files, tuple(i % 5 for i in range(n)))


def test_split_is_90_10_disjoint_and_covers():
    dom = _domain(200)
    s = make_split(dom)
    assert len(s.val) == 20 and len(s.train) == 180
    assert not set(s.train) & set(s.val)
    assert set(s.train) | set(s.val) == set(range(200))
    assert s.indices("all") == tuple(range(200))


def test_split_is_reproducible_and_seeded():
    dom = _domain(200)
    assert make_split(dom) == make_split(dom)
    assert make_split(dom, seed=2).val != make_split(dom).val


def test_split_independent_of_dataset_location(synthetic_root, tmp_path):
    moved = Path(shutil.copytree(synthetic_root, tmp_path / "elsewhere" / "copy"))
    a, b = open_dataset(synthetic_root), open_dataset(moved)
    for name in a.domains:
        va = a.split(name).to_dict(a.domain(name))["val_files"]
        vb = b.split(name).to_dict(b.domain(name))["val_files"]
        assert va == vb and va


def test_adding_a_file_keeps_the_others_in_place():
    """Hash ordering: the existing files keep their relative order, so a new file moves at most
    the one file at the train/val boundary, and none at all when it lands in train."""
    base = _domain(95)
    before = make_split(base)
    val_before = {base.files[i] for i in before.val}
    landed_in_train = 0
    for k in range(30):
        new = f"c0/new{k}.jpg"
        grown = Domain("d", base.root, (*base.files, new), (*base.labels, 0))
        after = make_split(grown)
        val_after = {grown.files[i] for i in after.val} - {new}
        moved = val_before ^ val_after
        assert len(moved) <= 1
        if new not in {grown.files[i] for i in after.val} and len(after.val) == len(before.val):
            landed_in_train += 1
            assert not moved
    assert landed_in_train > 0  # the strict case was exercised


# --------------------------------------------------------------------------- decoding + cache


@pytest.fixture
def damaged(synthetic_copy: Path) -> tuple[Path, str, str]:
    """The tiny dataset with a garbage .jpg and a truncated .png in the webcam domain."""
    garbage = synthetic_copy / "webcam" / "circle" / "garbage.jpg"
    garbage.write_bytes(os.urandom(64))
    good = synthetic_copy / "webcam" / "square" / "0000.png"
    data = good.read_bytes()
    truncated = synthetic_copy / "webcam" / "square" / "zz_truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    return synthetic_copy, "circle/garbage.jpg", "square/zz_truncated.png"


def test_corrupt_images_are_masked_not_fatal(damaged, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEROBUST_CACHE", str(tmp_path / "cache"))
    root, garbage, truncated = damaged
    dom = open_dataset(root).domain("webcam")
    images = decode_domain(dom, 32)
    bad = {dom.files.index(garbage), dom.files.index(truncated)}
    assert set(images.failures) == bad
    assert not images.ok[list(bad)].any()
    assert images.ok.sum() == len(dom) - 2
    assert images.pixels.shape == (len(dom), 32, 32, 3)
    # select() skips them by default.
    _, labels, idx = images.select(range(len(dom)))
    assert not bad & set(idx) and len(labels) == len(dom) - 2
    # The cached copy remembers the failures too.
    again = decode_domain(dom, 32)
    assert set(again.failures) == bad and not again.ok[list(bad)].any()
    # check_domain lists them, and only them.
    assert set(check_domain(dom)) == {garbage, truncated}


def test_decode_cache_reused_and_invalidated(synthetic_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEROBUST_CACHE", str(tmp_path / "cache"))
    calls = []
    real = data_mod.decode_image

    def counting(path, size):
        calls.append(Path(path))
        return real(path, size)

    monkeypatch.setattr(data_mod, "decode_image", counting)
    dom = open_dataset(synthetic_copy).domain("studio")
    first = decode_domain(dom, 32)
    assert len(calls) == len(dom)
    assert any((tmp_path / "cache").rglob("*.npy"))

    calls.clear()
    second = decode_domain(dom, 32)
    assert calls == []
    np.testing.assert_array_equal(np.asarray(second.pixels), first.pixels)

    # Another size is another cache entry.
    decode_domain(dom, 24)
    assert len(calls) == len(dom)

    # Changing a file (new content, later mtime) invalidates the entry.
    calls.clear()
    target = dom.root / dom.files[0]
    donor = dom.root / dom.files[-1]  # another class: different pixels
    st = target.stat()
    target.write_bytes(donor.read_bytes())
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = decode_domain(dom, 32)
    assert len(calls) == len(dom)
    np.testing.assert_array_equal(third.pixels[0], first.pixels[-1])
    assert not np.array_equal(third.pixels[0], first.pixels[0])


def test_decode_without_cache_writes_nothing(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEROBUST_CACHE", str(tmp_path / "cache"))
    dom = open_dataset(synthetic_root).domain("natural")
    images = decode_domain(dom, 16, cache=False)
    assert images.pixels.dtype == np.uint8 and images.pixels.shape[1:] == (16, 16, 3)
    assert images.ok.all()
    assert not (tmp_path / "cache").exists()


def test_origin_images_finds_the_source_split(synthetic_root):
    from edgerobust.data import origin_images

    origin = {"dataset": str(synthetic_root), "source_domain": "studio", "split_seed": 1}
    ds, images, val = origin_images(origin, "val", 32)
    assert val == ds.split("studio").val
    with pytest.raises(DataError, match="--data"):
        origin_images({"source_domain": "studio"}, "val", 32)
