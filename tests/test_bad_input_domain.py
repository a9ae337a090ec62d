"""Bad-input catalogue: what the domain-gap measures and the domain-gap study are handed. Each case is refused,
naming the source, layout, folder or dataset and saying what to do (see `badinput.py`); "{tmp}" in a named string
stands for the case's own temporary folder."""
from __future__ import annotations

import numpy as np
import pytest

from badinput import refused
from cxr_nb.domain import (ENV_REFERENCE_FILMS, gap_ci, gap_table, layout_films, open_sources, pixel_stats, radial_power_spectrum,
                           realism_report, reference_films, reference_table, spectrum_slope, spike_overlay, thumbnail_auroc,
                           realism_by_film, realism_by_seed, thumbnail_yardsticks)


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    films = [rng.uniform(0, 1, (16, 16)).astype(np.float32) for _ in range(4)]
    return {"a": pixel_stats(films[:2], "a", size=None, progress=False), "b": pixel_stats(films[2:], "b", size=None, progress=False),
            "one": pixel_stats(films[:1], "one", size=None, progress=False),
            "films": [rng.uniform(0, 1, (32, 32)).astype(np.float32) for _ in range(9)]}


def _empty_reference_folder(t, s):
    (t/"notes.txt").write_text("not a film")
    return reference_films(t)


CASES = {
    "one source": (lambda t, s: open_sources({"NIH": {"layout": "nih"}}), ValueError, ["at least two", "NIH"]),
    "sources not a mapping": (lambda t, s: open_sources(["nih", "padchest"]), ValueError, ["at least two", "['nih', 'padchest']"]),
    "a source as a bare string": (lambda t, s: open_sources({"a": {"layout": "nih"}, "b": "padchest"}), ValueError,
                                  ["source 'b'", "'padchest'", "layout"]),
    "a misspelt key": (lambda t, s: open_sources({"a": {"layout": "nih"}, "b": {"layout": "nih", "rooot": "/x"}}), ValueError,
                       ["source 'b'", "rooot", "('layout', 'root')"]),
    "no layout": (lambda t, s: open_sources({"a": {"layout": "nih"}, "b": {"root": "/x"}}), ValueError, ["source 'b'", "layout"]),
    "an unknown layout": (lambda t, s: open_sources({"a": {"layout": "nih"}, "b": {"layout": "mimic"}}), ValueError,
                          ["source 'b'", "'mimic'", "chexpert"]),
    "a plain folder with no root": (lambda t, s: open_sources({"a": {"layout": "nih"}, "b": {"layout": "folder"}}), ValueError,
                                    ["source 'b'", "'folder' needs a root"]),
    "two simulated sources of one layout": (lambda t, s: open_sources({"a": {"layout": "nih"}, "b": {"layout": "nih"}}), ValueError,
                                            ["['a', 'b']", "['nih']", "root"]),
    "a root that does not exist": (lambda t, s: open_sources({"a": {"layout": "nih", "root": str(t/"gone")}, "b": {"layout": "nih"}}),
                                   FileNotFoundError, ["gone", "nih"]),
    "a layout folder without its label file": (lambda t, s: layout_films(t, "padchest"), FileNotFoundError, ["{tmp}", "PadChest layout"]),
    "a plain folder with no films": (lambda t, s: layout_films(t, "folder"), ValueError, ["{tmp}", "no folder films", ".png"]),
    "an unknown layout to layout_films": (lambda t, s: layout_films(t, "NIH"), ValueError, ["'NIH'", "nih"]),
    "one dataset to gap_table": (lambda t, s: gap_table([s["a"]]), ValueError, ["at least two", "['a']"]),
    "two datasets of one name": (lambda t, s: gap_table([s["a"], s["a"]]), ValueError, ["distinct", "['a', 'a']"]),
    "a one-image dataset to the bootstrap": (lambda t, s: gap_ci(s["a"], s["one"]), ValueError, ["one has 1 image(s)"]),
    "a reference pair naming an unknown dataset": (lambda t, s: reference_table([s["a"], s["b"]], ["a", "NIH"]), ValueError,
                                                   ["['a', 'b']", "['a', 'NIH']"]),
    "a reference pair of three": (lambda t, s: reference_table([s["a"], s["b"]], ["a", "b", "a"]), ValueError, ["two"]),
    "a film outside [0, 1]": (lambda t, s: spike_overlay(np.full((4, 4), 1.5)), ValueError, ["film", "[0, 1]"]),
    "a missing reference folder": (lambda t, s: reference_films(t/"no-films"), FileNotFoundError,
                                   ["{tmp}/no-films", ENV_REFERENCE_FILMS]),
    "a reference folder without films": (_empty_reference_folder, ValueError, ["{tmp} holds no films", ENV_REFERENCE_FILMS, ".png"]),
    "fewer real films than folds": (lambda t, s: thumbnail_auroc(s["films"][:6], s["films"][6:]), ValueError,
                                    ["5-fold", "6 synthetic and 3 real"]),
    "one fold": (lambda t, s: thumbnail_auroc(s["films"][:6], s["films"][6:], folds=1), ValueError, ["folds=1"]),
    "a non-square film to the spectrum": (lambda t, s: radial_power_spectrum(np.zeros((32, 48))), ValueError, ["(32, 48)", "square"]),
    "a band past the Nyquist frequency": (lambda t, s: spectrum_slope(s["films"][0], band=(4, 64)), ValueError,
                                          ["(4, 64)", "32 px film"]),
    "an unknown site to the realism report": (lambda t, s: realism_report(["nih", "mimic"], n=2, reference=[]), ValueError,
                                              ["'mimic'", "padchest"]),
    "too few films per site for the realism report": (lambda t, s: realism_report(["nih"], n=3, reference=[]), ValueError,
                                                      ["n=3", "n >= 5"]),
    "a realism report too small for its spectrum band": (lambda t, s: realism_report(["nih"], n=10, size=64, reference=[]),
                                                         ValueError, ["size=64", ">= 128 px"]),
    "too few reference films for the realism report": (lambda t, s: realism_report(["nih"], n=10, reference=s["films"][:3]),
                                                       ValueError, ["3 reference films", "reference=[]"]),
    "an unknown site to the thumbnail yardsticks": (lambda t, s: thumbnail_yardsticks("mimic"), ValueError, ["'mimic'", "padchest"]),
    "fewer yardstick films than folds": (lambda t, s: thumbnail_yardsticks(n_real=3), ValueError, ["n_real=3", ">= 5"]),
    "a fractional number of yardstick draws": (lambda t, s: thumbnail_yardsticks(draws=2.5), ValueError, ["draws=2.5", "whole numbers"]),
    "an unknown site to realism_by_seed": (lambda t, s: realism_by_seed(s["films"], "mimic"), ValueError, ["'mimic'", "padchest"]),
    "a repeated seed to realism_by_seed": (lambda t, s: realism_by_seed(s["films"], seeds=[1, 1]), ValueError, ["seeds=[1, 1]", "distinct"]),
    "a fractional seed to realism_by_seed": (lambda t, s: realism_by_seed(s["films"], seeds=[0, 1.5]), ValueError, ["1.5", "whole-number"]),
    "a negative seed to realism_by_seed": (lambda t, s: realism_by_seed(s["films"], seeds=[-1]), ValueError, ["seeds=[-1]", ">= 0"]),
    "no seeds to realism_by_seed": (lambda t, s: realism_by_seed(s["films"], seeds=[]), ValueError, ["seeds=[]"]),
    "too few films per seed for realism_by_seed": (lambda t, s: realism_by_seed(s["films"], n=4), ValueError, ["n=4", "n >= 5"]),
    "too few real films for realism_by_seed": (lambda t, s: realism_by_seed(s["films"][:3]), ValueError, ["3 real films", "CXR_REFERENCE_FILMS"]),
    "an unreadable real film for realism_by_seed": (lambda t, s: realism_by_seed([t/"missing.png"] * 5), FileNotFoundError, ["missing.png"]),
    "a film size under the thumbnail's for realism_by_seed": (lambda t, s: realism_by_seed(s["films"], size=20), ValueError, ["size=20", ">= 24"]),
    "a fractional film size for realism_by_film": (lambda t, s: realism_by_film(s["films"], size=256.0), ValueError, ["realism_by_film", "size=256.0"]),
    "an unknown site to realism_by_film": (lambda t, s: realism_by_film(s["films"], "mimic"), ValueError, ["'mimic'", "padchest"]),
    "a repeated seed to realism_by_film": (lambda t, s: realism_by_film(s["films"], seeds=[2, 2]), ValueError, ["realism_by_film", "seeds=[2, 2]"]),
    "too few films per seed for realism_by_film": (lambda t, s: realism_by_film(s["films"], n=2), ValueError, ["realism_by_film", "n=2"]),
    "too few real films for realism_by_film": (lambda t, s: realism_by_film(s["films"][:4]), ValueError, ["4 real films", "CXR_REFERENCE_FILMS"]),
    "an unreadable real film for realism_by_film": (lambda t, s: realism_by_film([t/"gone.png"] * 5), FileNotFoundError, ["gone.png"]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_refused(case, tmp_path, stats):
    call, exc, named = CASES[case]
    refused(lambda: call(tmp_path, stats), exc, *(n.format(tmp=tmp_path) for n in named))
