"""Keras `image_dataset_from_directory` / `flow_from_directory` semantics, streaming, the
decoded-image cache and bad files. Images are tiny PNGs whose constant pixel value names the
file, so a batch can be traced back to the files it came from."""

import gc
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convjax.data import (
    BadImageError,
    CacheWriteWarning,
    DecodeSpec,
    SkippedImagesWarning,
    decode_image,
    epoch_order,
    flow_from_directory,
    folder_cache,
    folder_source,
    image_dataset_from_directory,
)
from convjax.data.decode import INTERPOLATIONS
from helpers import require_module


def put(path: Path, value: int, size=(6, 8), mode="RGB", fmt=None) -> Path:
    """A constant image whose pixel value identifies it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.full((*size, channels), value, np.uint8).squeeze()
    Image.fromarray(pixels, mode).save(path, format=fmt)
    return path


def tree(root: Path, per_class=(3, 2)) -> Path:
    """root/{cat,dog}/NN.png with values 10, 11, ... in listing order."""
    value = 10
    for name, count in zip(("cat", "dog"), per_class, strict=True):
        for i in range(count):
            put(root / name / f"{i:02d}.png", value)
            value += 1
    return root


def ids(images: np.ndarray) -> list[int]:
    return [int(im[0, 0, 0]) for im in images]


def idfd(root, **kwargs):
    kwargs = {"image_size": (6, 8), "verbose": False, "interpolation": "nearest"} | kwargs
    return image_dataset_from_directory(root, **kwargs)


def all_batches(ds, epoch=0):
    return list(ds.epoch(epoch))


# -- listing and ordering -----------------------------------------------------------------

def test_listing_follows_keras_order(tmp_path):
    root = tmp_path / "d"
    for rel in ("b/1.png", "a/z.PNG", "a/b.jpeg", "a/x-y/1.bmp", "a/x/z/2.gif", "a/x/0.jpg",
                ".hidden/1.png", "top.png"):
        put(root / rel, 1, fmt={"jpg": "JPEG", "jpeg": "JPEG"}.get(rel.rsplit(".", 1)[1].lower()))
    (root / "a" / "notes.txt").write_text("not an image")
    ds = idfd(root, shuffle=False)
    rel = [os.path.relpath(p, root) for p in ds.file_paths]
    # classes sorted, hidden skipped, top-level files ignored; the walk is sorted by directory
    # path, so a/x-y comes between a/x and a/x/z ('-' < '/'), unlike a depth-first walk.
    assert ds.class_names == ("a", "b")
    assert rel == ["a/b.jpeg", "a/z.PNG", "a/x/0.jpg", "a/x-y/1.bmp", "a/x/z/2.gif", "b/1.png"]
    assert list(ds.labels) == [0, 0, 0, 0, 0, 1]


def test_listing_and_split_match_keras_itself(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3 would otherwise want TensorFlow
    dataset_utils = require_module("keras.src.utils.dataset_utils")  # fails under CI=true
    root = tree(tmp_path / "d", per_class=(7, 6))
    put(root / "dog" / "sub" / "deep.png", 99)
    keras_paths, keras_labels, _ = dataset_utils.index_directory(
        str(root), "inferred", formats=(".png",), shuffle=True, seed=7, verbose=False)
    for subset in ("training", "validation"):
        want_paths, want_labels = dataset_utils.get_training_or_validation_split(
            keras_paths, keras_labels, 0.3, subset)
        ds = idfd(root, seed=7, validation_split=0.3, subset=subset)
        assert [os.path.normpath(p) for p in ds.file_paths] == \
            [os.path.normpath(p) for p in want_paths]
        np.testing.assert_array_equal(ds.labels, want_labels)


def test_class_names_subset_keeps_given_order(tmp_path):
    root = tree(tmp_path / "d")
    put(root / "emu" / "0.png", 50)
    ds = idfd(root, class_names=["dog", "cat"], shuffle=False)
    assert ds.class_names == ("dog", "cat")
    images, labels = all_batches(ds)[0]
    assert ids(images) == [13, 14, 10, 11, 12] and list(labels) == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="subset"):
        idfd(root, class_names=["cat", "cow"])
    with pytest.raises(ValueError, match="duplicates"):
        idfd(root, class_names=["cat", "cat"])


def test_explicit_labels_and_no_labels(tmp_path):
    root = tree(tmp_path / "d")
    put(root / "top.png", 60)  # with labels given or None, the whole tree is walked
    ds = idfd(root, labels=np.array([2, 0, 2, 0, 0, 2]), shuffle=False)
    assert ds.class_names == ("0", "2")
    assert ids(all_batches(ds)[0][0]) == [60, 10, 11, 12, 13, 14]  # the root directory first
    with pytest.raises(ValueError, match="needs labels 0..1"):
        idfd(root, labels=[2, 0, 2, 0, 0, 2], label_mode="categorical")
    with pytest.raises(ValueError, match="got 2 labels but found 6"):
        idfd(root, labels=[0, 1])
    with pytest.raises(ValueError, match="class_names can only"):
        idfd(root, labels=[0] * 6, class_names=["a"])
    with pytest.raises(ValueError, match="labels must be"):
        idfd(root, labels="folders")
    for unlabelled in (idfd(root, labels=None, shuffle=False),
                       idfd(root, label_mode=None, batch_size=4, shuffle=False)):
        batch = all_batches(unlabelled)[0]
        assert isinstance(batch, np.ndarray) and batch.dtype == np.uint8  # images only
    with pytest.raises(ValueError, match="class_names can only"):
        idfd(root, labels=None, class_names=["cat"])


def test_label_modes(tmp_path):
    root = tree(tmp_path / "d")
    _, labels = all_batches(idfd(root, shuffle=False, label_mode="int"))[0]
    assert labels.dtype == np.int32 and list(labels) == [0, 0, 0, 1, 1]
    _, labels = all_batches(idfd(root, shuffle=False, label_mode="categorical"))[0]
    assert labels.dtype == np.float32 and labels.tolist()[2:4] == [[1, 0], [0, 1]]
    _, labels = all_batches(idfd(root, shuffle=False, label_mode="binary"))[0]
    assert labels.shape == (5, 1) and labels.dtype == np.float32 and labels[3, 0] == 1.0
    put(root / "emu" / "0.png", 1)
    with pytest.raises(ValueError, match="exactly 2 classes"):
        idfd(root, label_mode="binary")
    with pytest.raises(ValueError, match="label_mode must be"):
        idfd(root, label_mode="sparse")


def test_color_modes_image_size_and_batching(tmp_path):
    root = tree(tmp_path / "d", per_class=(4, 3))
    for mode, channels in (("rgb", 3), ("grayscale", 1), ("rgba", 4)):
        images, _ = all_batches(idfd(root, color_mode=mode, image_size=5))[0]
        assert images.shape == (7, 5, 5, channels) and images.dtype == np.uint8
    with pytest.raises(ValueError, match="color_mode"):
        idfd(root, color_mode="cmyk")
    ds = idfd(root, batch_size=3, seed=0)
    assert [len(b[0]) for b in all_batches(ds)] == [3, 3, 1] and len(ds) == 3
    ds = idfd(root, batch_size=3, seed=0, drop_remainder=True)
    assert [len(b[0]) for b in all_batches(ds)] == [3, 3] and len(ds) == 2
    image, label = next(iter(idfd(root, batch_size=None, shuffle=False)))
    assert image.shape == (6, 8, 3) and label == 0  # unbatched, as Keras's batch_size=None


# -- splits and epoch order ---------------------------------------------------------------

def test_validation_split_argument_rules(tmp_path):
    root = tree(tmp_path / "d")
    with pytest.raises(ValueError, match="pass a seed"):
        idfd(root, validation_split=0.2, subset="training")
    with pytest.raises(ValueError, match="and inversely"):
        idfd(root, validation_split=0.2, seed=1)
    with pytest.raises(ValueError, match="and inversely"):
        idfd(root, subset="training", seed=1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        idfd(root, validation_split=1.5, subset="training", seed=1)
    with pytest.raises(ValueError, match="subset must be"):
        idfd(root, validation_split=0.2, subset="test", seed=1)
    with pytest.raises(ValueError, match="leaves no file"):
        idfd(root, validation_split=0.1, subset="validation", seed=1)
    unshuffled = idfd(root, validation_split=0.4, subset="validation", shuffle=False)
    assert ids(all_batches(unshuffled)[0][0]) == [13, 14]  # the last 40%, no seed needed


def test_subset_both_is_a_disjoint_seeded_split(tmp_path):
    root = tree(tmp_path / "d", per_class=(10, 10))
    train, val = idfd(root, validation_split=0.25, subset="both", seed=3)
    assert (len(train.file_paths), len(val.file_paths)) == (15, 5)
    assert not set(train.file_paths) & set(val.file_paths)
    assert train.file_paths == idfd(root, validation_split=0.25, subset="training",
                                     seed=3).file_paths
    assert val.file_paths == idfd(root, validation_split=0.25, subset="validation",
                                  seed=3).file_paths
    other = idfd(root, validation_split=0.25, subset="validation", seed=4)
    assert set(other.file_paths) != set(val.file_paths)  # the seed picks the split
    assert not val.shuffle  # Keras never shuffles the validation half
    assert ids(all_batches(val, 0)[0][0]) == ids(all_batches(val, 5)[0][0])


def test_epoch_order_is_a_pure_function_of_seed_and_epoch(tmp_path):
    root = tree(tmp_path / "d", per_class=(8, 8))
    first, twin = idfd(root, seed=5, batch_size=4), idfd(root, seed=5, batch_size=4)
    order = [ids(b[0]) for b in all_batches(first, 2)]
    assert order == [ids(b[0]) for b in all_batches(twin, 2)]
    assert order != [ids(b[0]) for b in all_batches(first, 3)]
    assert sorted(sum(order, [])) == list(range(10, 26))  # each file once
    assert [ids(b[0]) for b in first.epoch(2, start_step=2)] == order[2:]  # exact resume
    iterated = [[ids(b[0]) for b in first] for _ in range(2)]  # epochs 0, then 1
    assert iterated == [[ids(b[0]) for b in twin.epoch(e)] for e in (0, 1)]
    assert ids(all_batches(idfd(root, shuffle=False))[0][0]) == list(range(10, 26))


def test_streams_instead_of_loading_everything_first(tmp_path, monkeypatch):
    root = tree(tmp_path / "d", per_class=(20, 20))
    calls = []
    real = folder_source.decode_image
    monkeypatch.setattr(folder_source, "decode_image", lambda p, s: calls.append(p) or real(p, s))
    ds = idfd(root, batch_size=2, seed=0, prefetch_batches=1, num_workers=2)
    batches = iter(ds)
    next(batches)
    assert len(calls) < 10  # a window of (prefetch + 1) batches, not all 40 files
    assert sum(len(b[0]) for b in batches) == 38 and len(calls) == 40


# -- decoding: resize, interpolation, aspect ratio, follow_links --------------------------

def test_interpolations_map_to_pil(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    for name in ("nearest", "bilinear", "bicubic", "area", "lanczos"):
        got = decode_image(tmp_path / "x.png", DecodeSpec((5, 7), "rgb", name))
        want = np.asarray(Image.fromarray(pixels).resize((7, 5), INTERPOLATIONS[name]))
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert INTERPOLATIONS["area"] == Image.Resampling.BOX
    for unsupported in ("lanczos5", "cubic"):
        with pytest.raises(ValueError, match="interpolation must be one of"):
            DecodeSpec((5, 7), "rgb", unsupported)
    root = tree(tmp_path / "d")
    assert idfd(root, interpolation="BICUBIC").spec.interpolation == "bicubic"  # as Keras


def wide_image(path: Path) -> np.ndarray:
    """4 rows x 8 columns, every column a different value."""
    pixels = np.repeat(np.arange(10, 90, 10, dtype=np.uint8)[None, :, None], 4, 0)
    pixels = np.repeat(pixels, 3, 2)
    Image.fromarray(pixels).save(path)
    return pixels


def test_crop_and_pad_to_aspect_ratio(tmp_path):
    pixels = wide_image(tmp_path / "w.png")
    crop = decode_image(tmp_path / "w.png", DecodeSpec((4, 4), "rgb", "nearest", True))
    np.testing.assert_array_equal(crop, pixels[:, 2:6])  # the centred square window
    pad = decode_image(tmp_path / "w.png", DecodeSpec((8, 8), "rgb", "nearest", False, True))
    np.testing.assert_array_equal(pad[2:6], pixels)  # centred, zero rows above and below
    assert not pad[:2].any() and not pad[6:].any()
    rgba = decode_image(tmp_path / "w.png", DecodeSpec((8, 8), "rgba", "nearest", False, True))
    assert (rgba[2:6, :, 3] == 255).all() and (rgba[:2, :, 3] == 0).all()
    stretched = decode_image(tmp_path / "w.png", DecodeSpec((4, 4), "rgb", "nearest"))
    np.testing.assert_array_equal(stretched, pixels[:, 1::2])  # plain resize distorts
    with pytest.raises(ValueError, match="only one of"):
        DecodeSpec((4, 4), "rgb", "nearest", True, True)


def test_follow_links(tmp_path):
    root = tree(tmp_path / "d")
    put(tmp_path / "elsewhere" / "0.png", 77)
    os.symlink(tmp_path / "elsewhere", root / "cat" / "linked")
    assert len(idfd(root).file_paths) == 5  # symlinked sub-directory not visited
    assert len(idfd(root, follow_links=True).file_paths) == 6
    os.symlink(tmp_path / "elsewhere", root / "emu")  # a symlinked class directory counts
    assert idfd(root).class_names == ("cat", "dog", "emu")


# -- colour conversions of real-world files -----------------------------------------------

def write_png16_rgb(path: Path, pixels: np.ndarray) -> None:
    """A 48-bit RGB PNG written by hand (PIL cannot write one)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def first_pixel(path: Path, mode: str) -> list[int]:
    return decode_image(path, DecodeSpec((4, 4), mode, "nearest"))[0, 0].tolist()


def test_cmyk_palette_16bit_alpha_decode_to_the_requested_mode(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert first_pixel(tmp_path / "cmyk.jpg", "rgb") == [255, 0, 0]
    assert first_pixel(tmp_path / "cmyk.jpg", "rgba") == [255, 0, 0, 255]
    palette = Image.fromarray(np.zeros((8, 8), np.uint8), "P")
    palette.putpalette([0, 0, 255] + [0] * 765)
    palette.save(tmp_path / "pal.png", transparency=0)
    assert first_pixel(tmp_path / "pal.png", "rgb") == [0, 0, 255]
    assert first_pixel(tmp_path / "pal.png", "rgba") == [0, 0, 255, 0]  # transparency kept
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "g16.png")
    assert first_pixel(tmp_path / "g16.png", "grayscale") == [156]  # 40000/257, not clipped
    assert first_pixel(tmp_path / "g16.png", "rgb") == [156, 156, 156]
    write_png16_rgb(tmp_path / "rgb16.png", np.full((8, 8, 3), (65535, 30000, 2560), np.uint16))
    assert first_pixel(tmp_path / "rgb16.png", "rgb") == [255, 117, 10]
    rgba = np.dstack([np.full((8, 8, 3), 200, np.uint8), np.full((8, 8), 50, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert first_pixel(tmp_path / "rgba.png", "rgb") == [200, 200, 200]  # alpha dropped
    assert first_pixel(tmp_path / "rgba.png", "rgba") == [200, 200, 200, 50]
    assert first_pixel(tmp_path / "rgba.png", "grayscale") == [200]
    frames = [Image.new("RGB", (8, 8), c) for c in ((250, 0, 0), (0, 250, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert first_pixel(tmp_path / "anim.gif", "rgb") == [250, 0, 0]  # first frame


# -- bad files ----------------------------------------------------------------------------

def add_bad_files(root: Path) -> list[str]:
    """One of each kind of unreadable file, under names with image extensions."""
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    encoded = {}
    for fmt in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, fmt)
        encoded[fmt] = buffer.getvalue()
    bad = {"cat/trunc.jpg": encoded["JPEG"][: len(encoded["JPEG"]) // 2],
           "cat/trunc.png": encoded["PNG"][: len(encoded["PNG"]) // 2],
           "dog/corrupt.jpg": b"\xff\xd8\xff" + bytes(range(256)) * 4,
           "dog/notes.png": b"this is a text file with an image extension\n"}
    for rel, data in bad.items():
        (root / rel).write_bytes(data)
    return sorted(bad)


def served_ids(paths: list[str], bad: list[str]) -> list[int]:
    """What the policy serves for each file, in file order: the file's own id, or for an
    unreadable one the id of the next readable file after it (wrapping around)."""
    def readable(p):
        return not any(p.endswith(rel.replace("/", os.sep)) for rel in bad)

    def value(p):
        return int(decode_image(p, DecodeSpec((1, 1), "rgb", "nearest"))[0, 0, 0])

    n = len(paths)
    return [value(next(paths[(i + k) % n] for k in range(n) if readable(paths[(i + k) % n])))
            for i in range(n)]


def test_bad_files_are_skipped_with_one_warning_naming_each(tmp_path):
    root = tree(tmp_path / "d", per_class=(4, 4))
    bad = add_bad_files(root)
    ds = idfd(root, batch_size=4, seed=0)
    assert len(ds) == 3  # 12 files: the length never changes, whatever is found
    with pytest.warns(SkippedImagesWarning) as caught:
        batches = all_batches(ds)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 4 unreadable image file(s) of 12" in message
    for rel in bad:
        assert rel.replace("/", os.sep) in message
    assert [len(b[0]) for b in batches] == [4, 4, 4] and len(ds) == 3
    # Each bad file is replaced by the next readable one in file order, label included.
    order = epoch_order(12, seed=0, epoch=0)
    want = served_ids(ds.file_paths, bad)
    assert sum((ids(b[0]) for b in batches), []) == [want[i] for i in order]
    labels = np.concatenate([b[1] for b in batches])
    assert [("cat", "dog")[k] for k in labels] == [
        "cat" if v < 14 else "dog" for v in sum((ids(b[0]) for b in batches), [])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedImagesWarning)  # would fail if reported again
        again = all_batches(ds, 1)  # known-bad files are neither decoded nor reported again
    assert [len(b[0]) for b in again] == [4, 4, 4]


def test_bad_file_raises_with_its_path_when_asked(tmp_path):
    root = tree(tmp_path / "d")
    (root / "dog" / "00.png").write_bytes(b"garbage")
    with pytest.raises(BadImageError, match=r"dog.00\.png: cannot decode image"):
        all_batches(idfd(root, on_error="raise", shuffle=False))
    with pytest.raises(ValueError, match="on_error"):
        idfd(root, on_error="ignore")


def test_cache_with_bad_files_still_warns_in_a_new_run(tmp_path):
    root = tree(tmp_path / "d")
    (root / "cat" / "bad.jpg").write_bytes(b"nope")
    with pytest.warns(SkippedImagesWarning):
        all_batches(idfd(root, cache_dir=tmp_path / "c"))
    with pytest.warns(SkippedImagesWarning, match="(?s)bad.jpg.*recorded in the cache"):
        warm = idfd(root, cache_dir=tmp_path / "c", shuffle=False)
        images, _ = all_batches(warm)[0]
    assert ids(images) == [10, 11, 12, 13, 13, 14]  # cat/bad.jpg served as dog/00.png
    assert ids(warm.to_array_source().images) == list(range(10, 15))  # no zero image for it


# -- the cache ----------------------------------------------------------------------------

def cached_files(folder: Path) -> list[Path]:
    return sorted((folder / "folders").glob("*.npy"))


def test_cache_is_written_once_and_read_without_decoding(tmp_path, monkeypatch):
    root = tree(tmp_path / "d", per_class=(5, 5))
    cache = tmp_path / "cache"
    cold = [ids(b[0]) for b in all_batches(idfd(root, seed=1, batch_size=3, cache_dir=cache))]
    assert len(cached_files(cache)) == 1 and not list((cache / "folders").glob("*.tmp*"))

    def no_decoding(*args):
        raise AssertionError("decoded although the cache is complete")

    monkeypatch.setattr(folder_source, "decode_image", no_decoding)
    warm = idfd(root, seed=1, batch_size=3, cache_dir=cache)
    assert [ids(b[0]) for b in all_batches(warm)] == cold  # same batches, from the cache
    other_seed = idfd(root, seed=2, batch_size=10, cache_dir=cache)
    assert sorted(ids(all_batches(other_seed)[0][0])) == list(range(10, 20))
    assert len(cached_files(cache)) == 1  # every shuffle of the same files shares one cache


def test_cache_is_invalidated_by_files_and_settings(tmp_path):
    root = tree(tmp_path / "d")
    cache = tmp_path / "cache"
    all_batches(idfd(root, cache_dir=cache))
    all_batches(idfd(root, cache_dir=cache, image_size=(3, 3)))
    all_batches(idfd(root, cache_dir=cache, color_mode="grayscale"))
    assert len(cached_files(cache)) == 3
    put(root / "cat" / "00.png", 200)  # same name, new content
    os.utime(root / "cat" / "00.png", ns=(1, 1))  # even with an older timestamp
    images, _ = all_batches(idfd(root, cache_dir=cache, shuffle=False))[0]
    assert ids(images)[0] == 200 and len(cached_files(cache)) == 4


def test_partial_first_pass_publishes_nothing_then_completes(tmp_path):
    root = tree(tmp_path / "d", per_class=(6, 6))
    cache = tmp_path / "cache"
    ds = idfd(root, batch_size=2, seed=0, cache_dir=cache)
    next(iter(ds))  # stop after one batch
    assert cached_files(cache) == []
    resumed = all_batches(ds, 1)  # the next full epoch finishes the cache
    assert len(cached_files(cache)) == 1
    uncached = all_batches(idfd(root, batch_size=2, seed=0), 1)
    for (got, _), (want, _) in zip(resumed, uncached, strict=True):
        np.testing.assert_array_equal(got, want)  # rows re-read from the unfinished file
    warm = idfd(root, batch_size=2, seed=0, cache_dir=cache)
    for (got, _), (want, _) in zip(all_batches(warm, 1), uncached, strict=True):
        np.testing.assert_array_equal(got, want)  # and the published file holds them all
    abandoned = idfd(root, batch_size=2, seed=0, cache_dir=cache, image_size=(2, 2))
    next(iter(abandoned))
    del abandoned
    gc.collect()
    assert not list((cache / "folders").glob("*.tmp*"))  # temporary file removed


def test_to_array_source_matches_the_stream(tmp_path):
    root = tree(tmp_path / "d")
    ds = idfd(root, shuffle=False, cache_dir=tmp_path / "c")
    src = ds.to_array_source()
    images, labels = all_batches(ds)[0]
    np.testing.assert_array_equal(src.images, images)
    np.testing.assert_array_equal(src.labels, labels)
    assert src.class_names == ("cat", "dog")
    np.testing.assert_array_equal(ds.to_array_source().images, src.images)  # from the cache
    with pytest.raises(ValueError, match="needs labels"):
        idfd(root, labels=None).to_array_source()


# -- flow_from_directory ------------------------------------------------------------------

def test_flow_from_directory_class_modes_and_split(tmp_path):
    root = tree(tmp_path / "d", per_class=(4, 4))

    def flow(**kwargs):
        kwargs = {"target_size": (6, 8), "shuffle": False} | kwargs
        return all_batches(flow_from_directory(root, **kwargs))[0]

    images, labels = flow()
    assert labels.dtype == np.float32 and labels.shape == (8, 2)  # categorical by default
    _, labels = flow(class_mode="binary")
    assert labels.shape == (8,) and labels.tolist() == [0] * 4 + [1] * 4
    _, labels = flow(class_mode="sparse")
    assert labels.dtype == np.float32 and labels.shape == (8,)
    images, targets = flow(class_mode="input")
    np.testing.assert_array_equal(images, targets)
    assert isinstance(flow(class_mode=None), np.ndarray)
    with pytest.raises(ValueError, match="class_mode must be"):
        flow(class_mode="int")
    val_images, _ = flow(subset="validation", validation_split=0.5)
    train_images, _ = flow(subset="training", validation_split=0.5)
    assert ids(val_images) == [10, 11, 14, 15]  # the first half of each class
    assert ids(train_images) == [12, 13, 16, 17]
    assert flow_from_directory(root, classes=["dog"]).class_names == ("dog",)
    assert flow_from_directory(root).spec.interpolation == "nearest"  # Keras's default


# -- the real photos ----------------------------------------------------------------------

def test_cats_vs_dogs_photos_load_at_150(shared_archive, tmp_path):
    root = shared_archive("cats_vs_dogs-small.tar.gz") / "cats_vs_dogs"
    train, val = image_dataset_from_directory(
        root / "train", image_size=(150, 150), batch_size=32, label_mode="binary",
        validation_split=0.2, subset="both", seed=1337, cache_dir=tmp_path, verbose=False)
    assert (len(train.file_paths), len(val.file_paths)) == (1600, 400)
    assert train.class_names == ("cats", "dogs")
    images, labels = next(iter(train))
    assert images.shape == (32, 150, 150, 3) and labels.shape == (32, 1)
    assert 0 < labels.mean() < 1 and images.std() > 20  # both classes, real pixels
    test = image_dataset_from_directory(root / "validation", image_size=(150, 150),
                                        shuffle=False, verbose=False).to_array_source()
    assert test.images.shape == (1000, 150, 150, 3)
    assert np.bincount(test.labels).tolist() == [500, 500]


@pytest.mark.parametrize("failing", ["pwrite", "fsync"])
def test_a_full_disk_drops_the_cache_with_a_warning_and_loses_no_image(
        tmp_path, monkeypatch, failing):
    root = tree(tmp_path / "d", per_class=(4, 4))
    cache = tmp_path / "cache"
    uncached = all_batches(idfd(root, batch_size=3, seed=0))

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder_cache.os, failing, disk_full)
    ds = idfd(root, batch_size=3, seed=0, cache_dir=cache)
    with pytest.warns(CacheWriteWarning, match="No space left"):
        batches = all_batches(ds)
    for (got, got_labels), (want, want_labels) in zip(batches, uncached, strict=True):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_labels, want_labels)
    monkeypatch.undo()
    gc.collect()
    assert cached_files(cache) == [] and not list((cache / "folders").glob("*.tmp*"))
    assert [ids(b[0]) for b in all_batches(ds, 1)] == [
        ids(b[0]) for b in all_batches(idfd(root, batch_size=3, seed=0), 1)]
    assert cached_files(cache) == []  # this dataset stopped caching: one warning, no retries


def test_cache_row_of_the_wrong_shape_is_refused_naming_the_row(tmp_path):
    writer = folder_cache.CacheWriter(tmp_path, "k", 3, (2, 2, 3), DecodeSpec((2, 2)))
    writer.put(1, np.full((2, 2, 3), 7, np.uint8))
    np.testing.assert_array_equal(writer.get(1), np.full((2, 2, 3), 7, np.uint8))
    with pytest.raises(ValueError, match=r"cache row 2: expected \(2, 2, 3\)"):
        writer.put(2, np.zeros((2, 3, 3), np.uint8))
