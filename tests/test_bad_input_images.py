"""Bad-input catalogue: image files, the preprocessed cache and the domain statistics (issue 8, images + cache).

Each case is one bad input and the behaviour it gets (see `tests/badinput.py`): refused with an error naming the
file / value / folder and the remedy, warned, or skipped and listed. The classes of fault:

1. files that claim too many pixels (decompression bombs): refused from the header, before any decoding;
2. the pixel limit itself set wrong (argument, environment variable);
3. placeholders and thumbnails (a side under MIN_SIDE);
4. files the decoder cannot read (truncated, empty, not an image, unsupported pixel type): a ValueError naming them;
5. 10/12/14-bit data in a 16-bit container: a BitDepthWarning, once per folder;
6. routing: the datasets' on_missing="skip" and the cache's on_error="skip" leave classes 1, 3 and 4 out and list them;
7. damaged caches: refused by ImageCache / CacheDataset, rebuilt by build_cache with a warning;
8. domain statistics: constant datasets, empty and one-image datasets, files that fail to decode.

Test images are tiny: a bomb is a 16 x 16 PNG whose IHDR claims another size (its CRC fixed), so no case
allocates the memory it describes."""
from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from badinput import refused, skipped, warned
from cxr_nb.datasets import CXRDataset
from cxr_nb.domain import domain_gap, pixel_stats
from cxr_nb.preprocess import (MAX_PIXELS, MAX_PIXELS_ENV, MIN_SIDE, BitDepthWarning, CacheCorruptError, CacheCorruptWarning, PreprocessError,
                               CacheDataset, ImageCache, MaskSource, Preprocess, build_cache, cxr_phantom, decode_gray,
                               read_gray_float, read_gray_uint8)

PREP = Preprocess(size=32)


# ---------------------------------------------------------------------------------------------------- file makers
def forged_png(path: Path, w: int, h: int, like=None, crc: bool = True) -> Path:
    "A valid 16 x 16 PNG (grey 8 bit, or `like`'s type) whose IHDR claims w x h pixels, its CRC fixed unless `crc` is False."
    b = bytearray(cv2.imencode(".png", np.zeros((16, 16), np.uint8) if like is None else like)[1].tobytes())
    assert b[12:16] == b"IHDR"
    b[16:24] = struct.pack(">II", w, h)
    if crc: b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    path.write_bytes(bytes(b))
    return path


def forged_jpeg(path: Path, w: int, h: int, progressive: bool = False, app_bytes: int = 0) -> Path:
    "A valid 16 x 16 JPEG whose frame header (SOF0, or SOF2 if progressive) claims w x h, after an optional APP15 segment."
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    b = bytearray(cv2.imencode(".jpg", np.zeros((16, 16), np.uint8), params)[1].tobytes())
    i = next(i for i in range(2, len(b) - 1) if b[i] == 0xFF and b[i + 1] in (0xC0, 0xC2))
    b[i + 5:i + 9] = struct.pack(">HH", h, w)
    if app_bytes: b[2:2] = b"\xff\xef" + struct.pack(">H", app_bytes + 2) + bytes(app_bytes)   # a big segment before the frame
    path.write_bytes(bytes(b))
    return path


def image(path: Path, img: np.ndarray, *params) -> Path:
    assert cv2.imwrite(str(path), img, list(params)), path
    return path


def film(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return cxr_phantom(h, w, seed=seed)


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def truncated(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def ramp16(top: int) -> np.ndarray:
    "A 32 x 64 16-bit ramp from 0 to `top` (a film whose data use top.bit_length() bits)."
    return np.tile(np.linspace(0, top, 64).round().astype(np.uint16), (32, 1))


# ---------------------------------------------------------------------------------------------------- 1, 3, 4: files
# (make the file under tmp, the call, the exception, the strings the message must hold; "{name}" is the file's name)
FILE_CASES = [
    # 1. decompression bombs: refused from the header
    pytest.param(lambda d: forged_png(d/"bomb.png", 100_000, 100_000), decode_gray, ValueError,
                 ["{name}", "100000 x 100000", f"{MAX_PIXELS:,}", "max_pixels=N", MAX_PIXELS_ENV], id="png-header-claims-100000x100000"),
    pytest.param(lambda d: forged_png(d/"big.png", 25_000, 25_000), read_gray_uint8, ValueError,
                 ["{name}", "25000 x 25000", "625,000,000", "decompression bomb"], id="png-header-claims-25000x25000"),
    pytest.param(lambda d: forged_png(d/"wide16.png", 20_000, 10_000, like=np.zeros((16, 16), np.uint16)), read_gray_float,
                 ValueError, ["{name}", "20000 x 10000"], id="png16-header-claims-20000x10000"),
    pytest.param(lambda d: forged_png(d/"rgb.png", 12_000, 9_000, like=np.zeros((16, 16, 3), np.uint8)), decode_gray,
                 ValueError, ["{name}", "12000 x 9000", "108,000,000"], id="rgb-png-header-just-over-the-limit"),
    pytest.param(lambda d: forged_jpeg(d/"bomb.jpg", 60_000, 40_000), decode_gray, ValueError,
                 ["{name}", "60000 x 40000"], id="jpeg-frame-header-claims-60000x40000"),
    pytest.param(lambda d: forged_jpeg(d/"prog.jpg", 50_000, 50_000, progressive=True), read_gray_uint8, ValueError,
                 ["{name}", "50000 x 50000"], id="progressive-jpeg-sof2-claims-50000x50000"),
    pytest.param(lambda d: forged_jpeg(d/"exif.jpg", 30_000, 30_000, app_bytes=60_000), decode_gray, ValueError,
                 ["{name}", "30000 x 30000"], id="jpeg-60kB-segment-before-frame-header"),
    pytest.param(lambda d: image(d/"film.png", film()), lambda p: decode_gray(p, max_pixels=64 * 64 - 1), ValueError,
                 ["{name}", "64 x 64", "4,095"], id="real-64x64-png-over-max_pixels-4095"),
    pytest.param(lambda d: image(d/"film.bmp", film(40, 30)), lambda p: read_gray_uint8(p, max_pixels=1000), ValueError,
                 ["{name}", "30 x 40", "1,000"], id="bmp-over-limit-checked-after-decoding"),
    pytest.param(lambda d: forged_png(d/"huge.png", 100_000, 100_000), lambda p: decode_gray(p, max_pixels=10**12), ValueError,
                 ["{name}", "OpenCV refused it"], id="limit-raised-past-opencvs-own-limit"),
    # 3. placeholders and thumbnails
    pytest.param(lambda d: image(d/"dot.png", np.zeros((1, 1), np.uint8)), read_gray_uint8, ValueError,
                 ["{name}", "1 x 1", "placeholder or thumbnail"], id="png-1x1-placeholder"),
    pytest.param(lambda d: image(d/"dot.jpg", np.full((1, 1), 200, np.uint8)), read_gray_float, ValueError,
                 ["{name}", "1 x 1", "placeholder"], id="jpeg-1x1-placeholder"),
    pytest.param(lambda d: image(d/"strip.png", film(MIN_SIDE - 1, 400)), decode_gray, ValueError,
                 ["{name}", f"400 x {MIN_SIDE - 1}", f"under {MIN_SIDE} px"], id="png-15-px-high-strip"),
    pytest.param(lambda d: image(d/"thumb16.png", np.zeros((8, 8), np.uint16)), read_gray_uint8, ValueError,
                 ["{name}", "8 x 8"], id="png16-8x8-thumbnail"),
    pytest.param(lambda d: image(d/"icon.png", np.zeros((4, 4, 3), np.uint8)), read_gray_uint8, ValueError,
                 ["{name}", "4 x 4"], id="rgb-png-4x4-icon"),
    pytest.param(lambda d: forged_png(d/"line.png", 200_000, 1), decode_gray, ValueError,
                 ["{name}", "200000 x 1", "thumbnail"], id="png-header-claims-200000x1"),
    pytest.param(lambda d: image(d/"tiny.bmp", np.zeros((5, 300), np.uint8)), decode_gray, ValueError,
                 ["{name}", "300 x 5"], id="bmp-5-px-high-checked-after-decoding"),
    # 4. files the decoder cannot read
    pytest.param(lambda d: truncated(image(d/"cut.png", film()), 100), read_gray_uint8, ValueError,
                 ["cannot decode image", "{name}"], id="png-truncated-in-its-pixel-data"),
    pytest.param(lambda d: truncated(image(d/"header_only.png", film()), 33), decode_gray, ValueError,
                 ["cannot decode image", "{name}"], id="png-header-only"),
    pytest.param(lambda d: forged_png(d/"badcrc.png", 64, 64, crc=False), decode_gray, ValueError,
                 ["cannot decode image", "{name}"], id="png-ihdr-crc-wrong"),
    pytest.param(lambda d: truncated(image(d/"cut.jpg", film(), cv2.IMWRITE_JPEG_QUALITY, 90), 700), read_gray_float,
                 ValueError, ["{name}", "end-of-image marker", "Fetch it again"], id="jpeg-truncated-opencv-would-fill-grey"),
    pytest.param(lambda d: written(d/"empty.png", b""), decode_gray, ValueError,
                 ["cannot decode image", "{name}"], id="empty-file"),
    pytest.param(lambda d: written(d/"notes.jpg", b"no image here"), read_gray_uint8, ValueError,
                 ["cannot decode image", "{name}"], id="text-file-named-jpg"),
    pytest.param(lambda d: written(d/"noise.png", os.urandom(2000)), read_gray_float, ValueError,
                 ["cannot decode image", "{name}"], id="random-bytes-named-png"),
    pytest.param(lambda d: written(d/"sig.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40), decode_gray, ValueError,
                 ["cannot decode image", "{name}"], id="png-signature-then-zeros"),
    pytest.param(lambda d: image(d/"float.tiff", np.full((32, 32), 0.5, np.float32)), read_gray_uint8, ValueError,
                 ["{name}", "unsupported pixel type float32"], id="float32-tiff"),
    pytest.param(lambda d: image(d/"signed.tiff", np.full((32, 32), -5, np.int16)), read_gray_float, ValueError,
                 ["{name}", "unsupported pixel type int16"], id="int16-tiff"),
    pytest.param(lambda d: d/"gone.png", decode_gray, FileNotFoundError, ["no such image file", "{name}"], id="missing-file"),
    pytest.param(lambda d: (d/"folder.png").mkdir() or d/"folder.png", read_gray_uint8, FileNotFoundError,
                 ["{name}"], id="a-folder-named-png"),
]


@pytest.mark.parametrize("make, call, exc, named", FILE_CASES)
def test_bad_image_file_is_refused_naming_it(tmp_path, make, call, exc, named):
    path = make(tmp_path)
    refused(lambda: call(path), exc, *[n.format(name=path.name) for n in named])


# ---------------------------------------------------------------------------------------------------- 2: the limit
LIMIT_CASES = [
    pytest.param({MAX_PIXELS_ENV: "lots"}, {}, [MAX_PIXELS_ENV, "'lots'", "positive whole number"], id="env-not-a-number"),
    pytest.param({MAX_PIXELS_ENV: "-5"}, {}, [MAX_PIXELS_ENV, "'-5'"], id="env-negative"),
    pytest.param({MAX_PIXELS_ENV: "0"}, {}, [MAX_PIXELS_ENV, "got 0"], id="env-zero"),
    pytest.param({MAX_PIXELS_ENV: "1e8"}, {}, [MAX_PIXELS_ENV, "'1e8'"], id="env-float-notation"),
    pytest.param({MAX_PIXELS_ENV: "1000"}, {}, ["film.png", "64 x 64", "1,000", MAX_PIXELS_ENV], id="env-limit-below-the-image"),
    pytest.param({}, {"max_pixels": 0}, ["max_pixels", "got 0"], id="max_pixels-zero"),
    pytest.param({}, {"max_pixels": 2.5e8}, ["max_pixels", "250000000.0"], id="max_pixels-float"),
    pytest.param({}, {"max_pixels": True}, ["max_pixels", "True"], id="max_pixels-bool"),
    pytest.param({MAX_PIXELS_ENV: "10000000"}, {"max_pixels": 100}, ["film.png", "100 pixels"], id="argument-wins-over-env"),
]


@pytest.mark.parametrize("env, kwargs, named", LIMIT_CASES)
def test_bad_or_exceeded_pixel_limit_is_refused(tmp_path, monkeypatch, env, kwargs, named):
    for k, v in env.items(): monkeypatch.setenv(k, v)
    path = image(tmp_path/"film.png", film())
    refused(lambda: read_gray_uint8(path, **kwargs), ValueError, *named)


def test_limit_is_read_at_call_time_by_cache_threads_and_loader_workers(tmp_path, monkeypatch):
    "The environment variable set after import reaches build_cache's threads and DataLoader worker processes."
    small = [image(tmp_path/f"small{i}.png", film(64, 64, i)) for i in range(3)]
    large = [image(tmp_path/f"large{i}.png", film(96, 96, i)) for i in range(2)]
    monkeypatch.setenv(MAX_PIXELS_ENV, str(64 * 64))
    cache = build_cache(small + large, PREP, root=tmp_path/"cache", on_error="skip", workers=2, chunk=1, progress=False)
    assert len(cache) == 3 and [Path(f["path"]).name for f in cache.failures] == ["large0.png", "large1.png"]
    assert all("96 x 96" in f["error"] and "4,096" in f["error"] for f in cache.failures)
    csv = pd.DataFrame({"path": [p.name for p in small + large], "patientid": list("abcde"), "view": ["PA"] * 5})
    ds = CXRDataset(tmp_path, csv, ["x"], np.zeros((5, 1)), PREP, name="limit")
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(ValueError, match="large0.png: 96 x 96 pixels"):
        next(iter(loader))
    monkeypatch.setenv(MAX_PIXELS_ENV, str(96 * 96))
    assert next(iter(loader))["img"].shape == (5, 1, 32, 32)


# ---------------------------------------------------------------------------------------------------- 5: bit depth
DEPTH_CASES = [
    pytest.param(4095, read_gray_uint8, ["4095 of 65535", "12-bit", "depth16='bits'", "4095", "stretch", "once per folder"],
                 id="12-bit-in-16-read_gray_uint8"),
    pytest.param(1023, read_gray_float, ["1023 of 65535", "10-bit", "2**10-1 = 1023", "once per folder"], id="10-bit-in-16-read_gray_float"),
    pytest.param(16383, read_gray_uint8, ["16383 of 65535", "14-bit"], id="14-bit-in-16-read_gray_uint8"),
    pytest.param(3000, lambda p: pixel_stats([p], size=32, progress=False), ["3000 of 65535", "12-bit"], id="12-bit-through-pixel_stats"),
    pytest.param(4095, lambda p: build_cache([p], PREP, root=p.parent/"cache", workers=1, progress=False), ["4095 of 65535"],
                 id="12-bit-through-build_cache-threads"),
    pytest.param(4000, lambda p: CXRDataset(p.parent, pd.DataFrame({"path": [p.name], "patientid": ["a"], "view": ["PA"]}),
                                            ["x"], np.zeros((1, 1)), PREP)[0], ["4000 of 65535"], id="12-bit-through-dataset-item"),
]


@pytest.mark.parametrize("top, call, named", DEPTH_CASES)
def test_few_bit_data_in_16_bit_file_warns_naming_it(tmp_path, top, call, named):
    path = image(tmp_path/"film16.png", ramp16(top))
    warned(lambda: call(path), BitDepthWarning, path.name, *named)


def test_bit_depth_warning_comes_once_per_folder(tmp_path):
    for f in ("a", "b"): (tmp_path/f).mkdir()
    paths = [image(tmp_path/f/f"{i}.png", ramp16(4095)) for f, n in (("a", 4), ("b", 2)) for i in range(n)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BitDepthWarning)
        pixel_stats(paths, size=32, workers=2, progress=False)
    texts = [str(w.message) for w in caught if issubclass(w.category, BitDepthWarning)]
    assert len(texts) == 2 and {Path(t.split(":")[0]).parent.name for t in texts} == {"a", "b"}, texts


@pytest.mark.parametrize("img, kwargs", [
    pytest.param(film().astype(np.uint16) * 257, {}, id="8-bit-data-times-257"),
    pytest.param(ramp16(65535), {}, id="full-16-bit"),
    pytest.param(ramp16(4095), {"depth16": "bits"}, id="12-bit-read-with-bits"),
    pytest.param(ramp16(4095), {"depth16": "stretch"}, id="12-bit-read-with-stretch"),
    pytest.param(np.zeros((32, 32), np.uint16), {}, id="blank-16-bit"),
])
def test_no_bit_depth_warning_where_the_scale_is_right_or_chosen(tmp_path, img, kwargs):
    path = image(tmp_path/"f.png", img)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BitDepthWarning)
        read_gray_uint8(path, **kwargs)


def test_bits_mode_numbers(tmp_path):
    "depth16='bits' divides by the smallest 2**k - 1 at or above the image's maximum."
    r12 = image(tmp_path/"r12.png", ramp16(4095))
    assert read_gray_uint8(r12, "bits").max() == 255 and read_gray_float(r12, depth16="bits").max() == 1.0
    assert read_gray_uint8(image(tmp_path/"r10.png", ramp16(1000)), "bits").max() == round(1000 * 255 / 1023)
    full = film().astype(np.uint16) * 257
    assert np.array_equal(read_gray_uint8(image(tmp_path/"full.png", full), "bits"), film())
    refused(lambda: read_gray_float(r12, depth16="stretch"), ValueError, "'stretch'", "exposure differences")
    refused(lambda: read_gray_uint8(r12, "auto"), ValueError, "'auto'", "bits")


# ---------------------------------------------------------------------------------------------------- 6: routing
@pytest.fixture
def mixed_folder(tmp_path):
    "Four good films and one of each of: a bomb, a truncated PNG, a 1 x 1 placeholder, a float TIFF, a truncated JPEG."
    d = tmp_path/"images"; d.mkdir()
    good = [image(d/f"good{i}.png", film(64, 64, i)) for i in range(4)]
    bad = [forged_png(d/"bomb.png", 100_000, 100_000), truncated(image(d/"cut.png", film()), 120),
           image(d/"dot.png", np.zeros((1, 1), np.uint8)), image(d/"float.tiff", np.zeros((32, 32), np.float32)),
           truncated(image(d/"cut.jpg", film()), 600)]
    return good, bad


def test_cache_on_error_skip_lists_every_refused_file(tmp_path, mixed_folder):
    good, bad = mixed_folder
    sources = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3], bad[4], good[3]]
    cache = build_cache(sources, PREP, root=tmp_path/"cache", on_error="skip", workers=2, chunk=2, progress=False)
    assert [Path(f["path"]).name for f in cache.failures] == [p.name for p in bad]
    assert all(f["error"].startswith("ValueError:") and Path(f["path"]).name in f["error"] for f in cache.failures), cache.failures
    assert cache.paths == [str(p) for p in good]
    for i, p in enumerate(good): assert np.array_equal(cache[i], PREP(read_gray_uint8(p)))
    refused(lambda: build_cache(sources, PREP, root=tmp_path/"cache2", progress=False), PreprocessError, "bomb.png", "on_error='skip'")


def test_dataset_on_missing_skip_lists_every_refused_file(tmp_path, mixed_folder):
    good, bad = mixed_folder
    files = good + bad
    csv = pd.DataFrame({"path": [p.name for p in files], "patientid": [f"p{i}" for i in range(len(files))], "view": "PA"})
    ds = CXRDataset(tmp_path/"images", csv, ["x"], np.zeros((len(files), 1)), PREP, on_missing="skip", verify=True, name="mixed")
    skipped(ds, *bad)
    assert len(ds) == len(good) and ds[0]["img"].shape == (1, 32, 32)
    assert "100000 x 100000" in " ".join(map(str, ds.skipped["reason"]))


# ---------------------------------------------------------------------------------------------------- 7: damaged caches
@pytest.fixture
def cache_build(tmp_path):
    "A finished cache with masks (two all-False channels) and the call that builds it."
    srcs = [image(tmp_path/f"s{i}.png", film(80, 72, i)) for i in range(5)]
    masks = MaskSource(("a", "b"), tuple(srcs), _no_masks)
    build = lambda: build_cache(srcs, PREP, root=tmp_path/"cache", masks=masks, progress=False)
    cache = build()
    rows = np.array(cache.images)
    del cache                                    # no live memory map onto files the cases cut
    return build, next((tmp_path/"cache").iterdir()), rows


def _no_masks(path): return {}


def _edit_manifest(folder, edit):
    m = json.loads((folder/"manifest.json").read_text()); edit(m); (folder/"manifest.json").write_text(json.dumps(m))


DAMAGE = [
    pytest.param(lambda f: truncated(f/"images.npy", 3000), ["images.npy is truncated"], id="images-npy-cut-in-its-data"),
    pytest.param(lambda f: truncated(f/"images.npy", 50), ["images.npy is truncated"], id="images-npy-cut-in-its-header"),
    pytest.param(lambda f: truncated(f/"images.npy", 0), ["images.npy is truncated"], id="images-npy-empty"),
    pytest.param(lambda f: (f/"images.npy").unlink(), ["images.npy is missing"], id="images-npy-deleted"),
    pytest.param(lambda f: (f/"images.npy").write_bytes(b"garbage" * 100), ["images.npy", "not a .npy array"], id="images-npy-garbage"),
    pytest.param(lambda f: np.save(f/"images.npy", np.zeros((5, 16, 16), np.uint8)), ["images.npy holds a [5, 16, 16]", "[5, 32, 32]"],
                 id="images-npy-other-shape"),
    pytest.param(lambda f: truncated(f/"masks.npy", 200), ["masks.npy is truncated"], id="masks-npy-cut"),
    pytest.param(lambda f: (f/"masks.npy").unlink(), ["masks.npy is missing"], id="masks-npy-deleted"),
    pytest.param(lambda f: truncated(f/"manifest.json", 100), ["manifest.json is not valid JSON"], id="manifest-cut"),
    pytest.param(lambda f: truncated(f/"manifest.json", 0), ["manifest.json is not valid JSON"], id="manifest-empty"),
    pytest.param(lambda f: (f/"manifest.json").unlink(), ["no such JSON file", "manifest.json"], id="manifest-deleted"),
    pytest.param(lambda f: (f/"manifest.json").write_text("[1, 2]"), ["manifest.json is not that of", "list"], id="manifest-a-list"),
    pytest.param(lambda f: _edit_manifest(f, lambda m: m.pop("shape")), ["manifest.json lacks or garbles", "shape"],
                 id="manifest-without-shape"),
    pytest.param(lambda f: _edit_manifest(f, lambda m: m.update(sources=m["sources"][:3])), ["shape [5, 32, 32] disagrees with 3 sources"],
                 id="manifest-sources-cut"),
    pytest.param(lambda f: _edit_manifest(f, lambda m: m.update(version=2)), ["version 3", "2)"], id="manifest-version-changed"),
    pytest.param(lambda f: _edit_manifest(f, lambda m: m.update(failures=[{"path": "x"}])), ["lacks or garbles", "index"],
                 id="manifest-failure-without-index"),
]


@pytest.mark.parametrize("damage, named", DAMAGE)
def test_damaged_cache_is_refused_naming_folder_and_file(cache_build, damage, named):
    _, folder, _ = cache_build
    damage(folder)
    msg = refused(lambda: ImageCache(folder), CacheCorruptError, str(folder), "delete the folder and rebuild", *named)
    assert "mmap length" not in msg or "truncated" in msg


@pytest.mark.parametrize("damage, named", DAMAGE)
def test_build_cache_rebuilds_a_damaged_cache_with_a_warning(cache_build, damage, named):
    build, folder, rows = cache_build
    damage(folder)
    cache = warned(build, CacheCorruptWarning, str(folder), "rebuilding", *named)
    assert cache.built and cache.path == folder and np.array_equal(np.asarray(cache.images), rows)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]          # replaced, nothing left beside it


@pytest.mark.parametrize("file, read", [
    pytest.param("images.npy", lambda ds: ds[0], id="images-npy-cut-after-the-dataset-was-made"),
    pytest.param("masks.npy", lambda ds: ds.masks(0), id="masks-npy-cut-after-the-dataset-was-made"),
])
def test_cache_dataset_names_its_cache_when_an_array_was_cut(cache_build, file, read):
    _, folder, _ = cache_build
    ds = CacheDataset(folder)
    truncated(folder/file, 150)
    refused(lambda: read(ds), CacheCorruptError, f"damaged cache {folder}", f"{file} is truncated", "rebuild")


def test_stale_cache_entry_with_restored_mtime_is_rebuilt(tmp_path):
    "A source rewritten with other pixels of the same byte size, its mtime set back: the next build reads the new pixels."
    png0 = (cv2.IMWRITE_PNG_COMPRESSION, 0)       # stored, not deflated: the byte size depends only on the image size
    srcs = [image(tmp_path/f"s{i}.png", film(64, 64, i), *png0) for i in range(3)]
    old = build_cache(srcs, PREP, root=tmp_path/"cache", progress=False)
    st = srcs[1].stat()
    new_pixels = cxr_phantom(64, 64, frame=(12, 12, 0, 0), seed=99)
    image(srcs[1], new_pixels, *png0)
    os.utime(srcs[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (srcs[1].stat().st_size, srcs[1].stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    new = build_cache(srcs, PREP, root=tmp_path/"cache", progress=False)
    assert new.built and new.path != old.path, "the stale cache was served"
    assert np.array_equal(new[1], PREP(new_pixels)) and not np.array_equal(new[1], old[1])
    assert build_cache(srcs, PREP, root=tmp_path/"cache", progress=False).path == new.path    # and reused from then on


# ---------------------------------------------------------------------------------------------------- 8: domain statistics
def _stats(name, imgs): return pixel_stats(imgs, name, size=32, progress=False)


VARIED = [film(64, 64, i) for i in range(3)]

DOMAIN_CASES = [
    pytest.param(lambda d: domain_gap(_stats("NIH", VARIED), _stats("blank exports", [np.full((64, 64), 128, np.uint8)] * 3)),
                 ValueError, ["blank exports", "one grey level", "0.502", "128.0/255", "bit depth"], id="gap-b-all-one-grey-level"),
    pytest.param(lambda d: domain_gap(_stats("black", [np.zeros((64, 64), np.uint8)] * 4), _stats("NIH", VARIED)),
                 ValueError, ["black", "one grey level, 0 ", "blank or failed exports"], id="gap-a-all-black"),
    pytest.param(lambda d: domain_gap(_stats("white16", [np.full((40, 40), 65535, np.uint16)] * 2),
                                      _stats("grey16", [np.full((40, 40), 300, np.uint16)] * 2)),
                 ValueError, ["white16", "one grey level, 1 "], id="gap-both-constant-16-bit"),
    pytest.param(lambda d: domain_gap(_stats("NIH", VARIED), _stats("one film", VARIED[:1])), ValueError,
                 ["one film has 1 image(s)", "at least 2"], id="gap-one-image"),
    pytest.param(lambda d: pixel_stats([], "PadChest"), ValueError, ["'PadChest'", "no images"], id="stats-empty-list"),
    pytest.param(lambda d: pixel_stats([image(d/"a.png", film()), truncated(image(d/"cut.png", film()), 90)], progress=False),
                 ValueError, ["cut.png", "cannot decode"], id="stats-truncated-file"),
    pytest.param(lambda d: pixel_stats([image(d/"a.png", film()), forged_png(d/"bomb.png", 90_000, 90_000)], progress=False),
                 ValueError, ["bomb.png", "90000 x 90000"], id="stats-bomb-file"),
    pytest.param(lambda d: pixel_stats([image(d/"a.png", film()), image(d/"dot.png", np.zeros((1, 1), np.uint8))], progress=False),
                 ValueError, ["dot.png", "placeholder"], id="stats-1x1-file"),
    pytest.param(lambda d: pixel_stats([d/"gone.png"], progress=False), FileNotFoundError, ["gone.png"], id="stats-missing-file"),
    pytest.param(lambda d: pixel_stats([image(d/"a.png", film())], progress=False, depth16="stretch"), ValueError,
                 ["'stretch'", "exposure differences"], id="stats-depth16-stretch"),
]


@pytest.mark.parametrize("call, exc, named", DOMAIN_CASES)
def test_bad_domain_statistics_input_is_refused(tmp_path, call, exc, named):
    refused(lambda: call(tmp_path), exc, *named)
