"""Bad-input catalogue: what the metrics are handed. Shapes that do not line up, labels that are not 1 / 0 / NaN,
scores that are not finite, logits where probabilities are needed, labels that cannot be scored. Each is refused
naming the value, or reported as undefined with its reason; none becomes a number (see `badinput.py`)."""
from __future__ import annotations

import numpy as np
import pytest

from badinput import refused
from cxr_nb.metrics import (bootstrap_auroc, calibration_table, delong_test, fit_temperature, label_metrics, paired_bootstrap,
                            report, resample_weights, youden_thresholds)

RNG = np.random.default_rng(7)
Y = (RNG.random((200, 3)) < 0.3).astype(float)
S = Y + RNG.normal(0, 1, (200, 3))
P = 1 / (1 + np.exp(-S))


def with_value(a, row, col, value):
    a = a.copy(); a[row, col] = value
    return a


@pytest.mark.parametrize("call, named", [
    (lambda: label_metrics(Y, P.T), ["labels of shape (200, 3) and scores of shape (3, 200)"]),
    (lambda: label_metrics(Y, P[:, :2]), ["scores of shape (200, 2)"]),
    (lambda: label_metrics(Y[:, 0], P), ["labels of shape (200,)"]),
    (lambda: label_metrics(Y[:0], P[:0]), ["no predictions"]),
    (lambda: label_metrics(with_value(Y, 4, 1, 2), P), ["row 4, column 1 is 2"]),
    (lambda: label_metrics(with_value(Y, 4, 1, -1), P), ["row 4, column 1 is -1"]),
    (lambda: label_metrics(with_value(Y, 5, 0, 0.5), P), ["row 5, column 0 is 0.5"]),
    (lambda: label_metrics(Y, with_value(P, 3, 2, np.nan)), ["scores must be finite", "row 3, column 2 is nan"]),
    (lambda: label_metrics(Y, with_value(P, 3, 2, np.inf)), ["row 3, column 2 is inf"]),
    (lambda: label_metrics(Y, P, names=["a", "b"]), ["2 names for 3 label columns"]),
    (lambda: label_metrics(Y, S), ["a fixed threshold needs probabilities", "they look like logits"]),
    (lambda: report(Y, S, n_resamples=10), ["they look like logits"]),
    (lambda: calibration_table(Y[:, 0], S[:, 0]), ["calibration needs probabilities"]),
    (lambda: bootstrap_auroc(Y, S, patients=np.arange(10), n_resamples=10), ["10 patient ids for 200 predictions"]),
    (lambda: resample_weights(5, np.arange(3), 200), ["3 patient ids for 200 predictions"]),
    (lambda: resample_weights(5, np.r_[np.arange(197.0), np.nan, np.nan, np.nan], 200), ["3 patient ids are missing",
                                                                                        "rows [197, 198, 199]"]),
    (lambda: paired_bootstrap(Y, S, S[:, :2], n_resamples=10), ["scores of shape (200, 2)"]),
    (lambda: delong_test(Y, S, S), ["one label at a time, got 3 columns"]),
    (lambda: delong_test(np.zeros(200), S[:, 0], S[:, 1]), ["0 positive(s) and 200 negative(s)"]),
    (lambda: delong_test(np.ones(200), S[:, 0], S[:, 1]), ["200 positive(s) and 0 negative(s)"]),
    (lambda: fit_temperature(S[:, 0], np.zeros(200)), ["needs both classes"]),
    (lambda: fit_temperature(S[:, 0], np.full(200, np.nan)), ["needs both classes"]),
], ids=["transposed", "too-few-score-columns", "1d-labels-2d-scores", "empty", "label-2", "label-minus-1", "label-half",
        "score-nan", "score-inf", "names-count", "threshold-on-logits", "report-threshold-on-logits", "calibration-on-logits",
        "patients-count", "weights-patients-count", "patients-missing", "paired-shape", "delong-many-columns", "delong-no-positive",
        "delong-no-negative", "temperature-one-class", "temperature-all-unknown"])
def test_bad_metric_input_is_refused_naming_the_value(call, named):
    refused(call, ValueError, *named)


@pytest.mark.parametrize("column, reason", [
    (np.full(200, np.nan), "no known labels"),
    (np.zeros(200), "one class only (no positive in 200)"),
    (np.ones(200), "one class only (all positive in 200)"),
    (np.r_[np.ones(3), np.full(197, np.nan)], "one class only (all positive in 3)"),
], ids=["all-nan", "no-positive", "all-positive", "known-rows-one-class"])
def test_a_label_that_cannot_be_scored_is_undefined_with_its_reason_never_a_number(column, reason):
    y = Y.copy(); y[:, 1] = column
    table = label_metrics(y, P, names=["a", "b", "c"])
    assert np.isnan(table.loc["b", "auroc"]) and np.isnan(table.loc["b", "auprc"]) and table.loc["b", "note"] == reason
    boot = bootstrap_auroc(y, S, names=["a", "b", "c"], n_resamples=50)
    assert np.isnan(boot.loc["b", "auroc"]) and boot.loc["b", "resamples"] == 0
    assert np.isclose(boot.loc["mean", "auroc"], table.auroc[["a", "c"]].mean())     # left out of the mean, not 0.5
    assert np.isnan(youden_thresholds(y, S, names=["a", "b", "c"])["b"])
    rep = report(y, P, names=["a", "b", "c"], n_resamples=50)
    assert rep.loc["b", "AUROC [CI]"] == "undefined" and rep.attrs["left_out"] == {"b": reason}


def test_unknown_labels_are_left_out_not_counted_negative():
    y = Y.copy(); y[:50, 0] = np.nan
    table = label_metrics(y, P, names=["a", "b", "c"])
    assert table.loc["a", "n"] == 150 and table.loc["a", "tp"] + table.loc["a", "fp"] + table.loc["a", "tn"] + table.loc["a", "fn"] == 150
    assert np.isclose(table.loc["a", "auroc"], label_metrics(Y[50:], P[50:], names=["a", "b", "c"]).loc["a", "auroc"])
