"""Bad input and order properties of the domain module that its notebook covers thinly."""
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_nb.domain import pixel_stats, sample_paths
from cxr_nb.preprocess import BitDepthWarning, read_gray_float


@pytest.fixture()
def films(tmp_path):
    "Six small 8-bit PNGs of different brightness."
    out = []
    for i in range(6):
        p = tmp_path/f"film_{i}.png"
        img = np.clip(np.arange(64 * 64).reshape(64, 64) % 200 + 10 * i, 0, 255).astype(np.uint8)
        assert cv2.imwrite(str(p), img)
        out.append(p)
    return out


def test_truncated_png_error_names_it(films, tmp_path):
    bad = tmp_path/"truncated.png"
    bad.write_bytes(films[0].read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated.png"):
        read_gray_float(bad, 224)


def test_empty_file_and_directory_errors_name_them(tmp_path):
    (tmp_path/"empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg"):
        read_gray_float(tmp_path/"empty.jpg", 224)
    (tmp_path/"a_folder.png").mkdir()
    with pytest.raises(FileNotFoundError, match="a_folder.png"):
        read_gray_float(tmp_path/"a_folder.png", 224)


def test_bad_file_among_threads_is_named(films, tmp_path):
    bad = tmp_path/"corrupt_07.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ValueError, match="corrupt_07.png"):
        pixel_stats(films[:3] + [bad] + films[3:], size=32, workers=4, progress=False)


def test_sample_paths_independent_of_input_order():
    paths = [Path(f"/data/images/{i:08d}_000.png") for i in range(1000)]
    ref = sample_paths(paths, 50, seed=42)
    for k in range(5):
        shuffled = paths[:]
        random.Random(k).shuffle(shuffled)
        assert sample_paths(shuffled, 50, seed=42) == ref
        assert sample_paths([str(p) for p in shuffled], 50, seed=42) == [str(p) for p in ref]
    assert ref == sorted(ref) and len(set(ref)) == 50


def test_sample_paths_seeds_differ_and_never_repeat():
    "Different seeds give different samples; a sample never repeats a file."
    paths = [f"p{i:04d}.png" for i in range(300)]
    samples = {tuple(sample_paths(paths, 30, seed=s)) for s in range(10)}
    assert len(samples) == 10
    assert all(len(set(s)) == 30 for s in samples)


def test_sixteen_bit_is_scaled_by_its_type_not_stretched(tmp_path):
    "A 12-bit film stored in 16 bits stays dark, with a BitDepthWarning: the divisor is 65535, not the file's own maximum."
    img = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path/"twelve_bit.png"), img)
    with pytest.warns(BitDepthWarning, match="twelve_bit.png"):
        x = read_gray_float(tmp_path/"twelve_bit.png", None)
    assert x.dtype == np.float32 and x.max() == pytest.approx(4095 / 65535)


def test_colour_file_reads_as_grey(tmp_path):
    grey = np.tile(np.arange(256, dtype=np.uint8), (32, 1))
    assert cv2.imwrite(str(tmp_path/"rgb.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    np.testing.assert_allclose(read_gray_float(tmp_path/"rgb.png", None), grey / 255, atol=1e-6)


def test_threads_keep_input_order(films):
    one = pixel_stats(films, size=32, workers=1, progress=False)
    many = pixel_stats(films, size=32, workers=4, progress=False)
    np.testing.assert_array_equal(one.image_means, many.image_means)
    assert list(np.argsort(one.image_means)) == list(range(len(films)))   # film i is brighter than film i-1
    assert many.sources == [str(p) for p in films]


def test_realism_by_seed_is_the_report_protocol_per_seed(tmp_path):
    "Each row is thumbnail_auroc of that seed's films against the same real films, read from their files as the report reads them; rows keep the seeds' order."
    from cxr_nb.domain import _film, _site_films, realism_by_seed, thumbnail_auroc
    real = []                     # chexpert films of another seed stand in for real ones: the AUROC is near chance and differs by seed
    for i, film in enumerate(_site_films("chexpert", 99, 5, 128)):
        real.append(tmp_path/f"real_{i}.png"); assert cv2.imwrite(str(real[-1]), (film * 255).round().astype(np.uint8))
    table = realism_by_seed(real, "chexpert", seeds=(7, 3), n=6, size=128, progress=False)
    assert list(table.index) == [7, 3] and (table["films"] == 6).all() and (table["real films"] == 5).all()
    films = [_film(f, 128, "r") for f in real]
    for seed in (7, 3):
        assert table.loc[seed, "auroc"] == thumbnail_auroc(_site_films("chexpert", seed, 6, 128), films).mean
    assert table["auroc"].max() < 0.9 and table.loc[7, "auroc"] != table.loc[3, "auroc"]   # the null, another draw per seed


def test_realism_by_film_decomposes_each_seeds_auroc(tmp_path):
    "Each column holds one share per real film, named by its file, and averages to realism_by_seed's AUROC for that seed; a real film that is a copy of a synthetic one is not told apart."
    from cxr_nb.domain import _site_films, realism_by_film, realism_by_seed
    real = []
    for i, film in enumerate(_site_films("padchest", 99, 5, 128)):     # another site's films: its acquisition tells them apart
        real.append(tmp_path/f"real_{i}.png"); assert cv2.imwrite(str(real[-1]), (film * 255).round().astype(np.uint8))
    copy = tmp_path/"copy_of_synthetic.png"                           # patient 0 of seed 7 itself, among the real films
    assert cv2.imwrite(str(copy), (_site_films("chexpert", 7, 1, 128)[0] * 255).round().astype(np.uint8))
    films = real[:4] + [copy]
    table = realism_by_film(films, "chexpert", seeds=(7, 3), n=6, size=128, progress=False)
    by_seed = realism_by_seed(films, "chexpert", seeds=(7, 3), n=6, size=128, progress=False)
    assert list(table.index) == [f.name for f in films] and list(table.columns) == [7, 3, "mean"]
    for seed in (7, 3):
        np.testing.assert_allclose(table[seed].mean(), by_seed.loc[seed, "auroc"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["mean"], table[[7, 3]].mean(axis=1))
    assert table[7].idxmin() == table["mean"].idxmin() == copy.name, table   # seed 7 holds the film it copies: scored as synthetic
