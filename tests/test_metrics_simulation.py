"""Simulation tests for `cxr_nb.metrics` (issue 9, "Done when"): the bootstrap CI covers the true AUROC at about its
nominal rate (and patient-level resampling keeps it under clustering where image-level resampling does not), the paired
tests reject a real difference and not a null one, and the metric functions agree with scikit-learn.

Every simulation uses the binormal model, whose AUROC is known in closed form: if positives' scores are N(d, v) and
negatives' N(0, v), independently, then AUROC = P(s+ > s-) = Phi(d / sqrt(2 v)).

Speed: `bootstrap_auroc` and `paired_bootstrap` take N x C matrices, so many simulated datasets go in one call as the
C columns. That is the same as running each dataset alone: the resample weights depend only on (seed, N, patients),
never on C, so column j gets exactly the CI it would get by itself with that seed (`test_a_column_of_a_batch_...`).
Columns sharing one set of weights are independent given the weights; the batches below use different bootstrap seeds
so that the coverage also averages over the bootstrap's own randomness.

Seeds: data come from one `SeedSequence` entropy, bootstrap seeds from another, each test with its own spawn key, so no
bootstrap stream correlates with a data stream and the tests do not depend on the order they run in.

Tolerances: a rate estimated from R replicates has binomial SD sqrt(p (1 - p) / R); the bands are p +- 3 SD. Coverage
bands also allow 0.01 below nominal: the percentile bootstrap under-covers slightly at these sizes (measured with
8,000 replicates at n = 200, AUROC 0.8: 0.943 +- 0.003), a known property of the method, not a defect.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (average_precision_score, confusion_matrix, f1_score, precision_score, recall_score,
                             roc_auc_score)

from cxr_nb.metrics import (bootstrap_auroc, calibration_table, delong_test, fit_temperature, label_metrics,
                            paired_bootstrap, weighted_auroc)

DATA_ENTROPY, BOOT_ENTROPY = 20_250_901, 7_340_113


def data_rng(key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(DATA_ENTROPY, spawn_key=(key,)))


def boot_seeds(key: int, k: int) -> list[int]:
    return [int(s) for s in np.random.SeedSequence(BOOT_ENTROPY, spawn_key=(key,)).generate_state(k)]


def band(p: float, reps: int, slack: float = 0.0) -> tuple[float, float]:
    "p +- 3 binomial SDs for a rate over `reps` replicates, the lower end widened by `slack`."
    sd = np.sqrt(p * (1 - p) / reps)
    return p - 3 * sd - slack, p + 3 * sd


def separation(auroc: float, var: float = 1.0) -> float:
    "The mean shift d that gives this binormal AUROC when both classes have variance `var`."
    return float(np.sqrt(2 * var) * stats.norm.ppf(auroc))


def binormal(rng, n: int, reps: int, auroc: float, prevalence: float = 0.3):
    "`reps` independent datasets as the columns of N x reps labels and scores."
    y = (rng.random((n, reps)) < prevalence).astype(float)
    return y, separation(auroc) * y + rng.normal(size=(n, reps))


def covers(table, truth: float) -> np.ndarray:
    return ((table.lo <= truth) & (truth <= table.hi)).to_numpy()


# ---------------------------------------------------------------------------------------------------------------------
# Batching many datasets into one call is the same as running each alone

def test_a_column_of_a_batch_gets_exactly_the_ci_it_gets_alone():
    rng = data_rng(0)
    y, s = binormal(rng, 120, 4, 0.75)
    y[rng.random(y.shape) < 0.1] = np.nan                       # different known rows per column
    s2 = s + rng.normal(0, 1, s.shape)
    patients = np.repeat(np.arange(40), 3)
    seed = boot_seeds(0, 1)[0]
    batch = bootstrap_auroc(y, s, n_resamples=300, seed=seed)
    batch_pat = bootstrap_auroc(y, s, patients=patients, n_resamples=300, seed=seed)
    pair = paired_bootstrap(y, s, s2, n_resamples=300, seed=seed)
    for j in range(y.shape[1]):
        alone = bootstrap_auroc(y[:, j], s[:, j], n_resamples=300, seed=seed).loc["label0"]
        np.testing.assert_array_equal(batch.iloc[j][["auroc", "lo", "hi", "resamples"]].to_numpy(float),
                                      alone[["auroc", "lo", "hi", "resamples"]].to_numpy(float))
        alone = bootstrap_auroc(y[:, j], s[:, j], patients=patients, n_resamples=300, seed=seed).loc["label0"]
        np.testing.assert_array_equal(batch_pat.iloc[j][["lo", "hi"]].to_numpy(float), alone[["lo", "hi"]].to_numpy(float))
        alone = paired_bootstrap(y[:, j], s[:, j], s2[:, j], n_resamples=300, seed=seed).loc["label0"]
        np.testing.assert_array_equal(pair.iloc[j][["diff", "lo", "hi", "p"]].to_numpy(float),
                                      alone[["diff", "lo", "hi", "p"]].to_numpy(float))
    assert batch.iloc[:4].lo.nunique() == 4                      # and the columns really are different datasets


# ---------------------------------------------------------------------------------------------------------------------
# 1. Coverage of the bootstrap CI

def test_bootstrap_ci_covers_the_true_auroc_at_its_nominal_rate():
    "1,000 datasets of 200 images (30% positive), true AUROC 0.8; 95% percentile CIs from 500 image resamples."
    truth, n, batches, per_batch = 0.8, 200, 4, 250
    rng, seeds = data_rng(1), boot_seeds(1, batches)
    hit, point = [], []
    for b in range(batches):
        y, s = binormal(rng, n, per_batch, truth)
        table = bootstrap_auroc(y, s, n_resamples=500, ci=0.95, seed=seeds[b]).drop("mean")
        assert (table.resamples == 500).all()
        hit.append(covers(table, truth)); point.append(table.auroc.to_numpy())
    hit, point = np.concatenate(hit), np.concatenate(point)
    reps = len(hit)
    # the simulation itself: the estimates centre on the closed-form truth (else coverage would test nothing)
    assert abs(point.mean() - truth) < 4 * point.std() / np.sqrt(reps), (point.mean(), truth)
    lo, hi = band(0.95, reps, slack=0.01)                        # 0.95 - 3 x 0.0069 - 0.01 = 0.919 .. 0.971
    assert lo <= hit.mean() <= hi, f"coverage {hit.mean():.3f} over {reps} datasets, expected {lo:.3f}..{hi:.3f}"


def test_patient_resampling_keeps_nominal_coverage_under_clustering_where_image_resampling_does_not():
    """200 patients x 3 films; a patient has the finding on all or none of their films (30% of patients) and a shared
    score effect u ~ N(0, 0.7) plus per-film noise N(0, 0.3). A positive and a negative film always come from different
    patients, so AUROC = Phi(d / sqrt(2)) exactly. 400 datasets, 400 resamples each."""
    truth, n_pat, films, icc, batches, per_batch = 0.8, 200, 3, 0.7, 2, 200
    d, patients = separation(truth), np.repeat(np.arange(n_pat), films)
    rng, seeds = data_rng(2), boot_seeds(2, 2 * batches)
    by_patient, by_image, point = [], [], []
    for b in range(batches):
        sick = (rng.random((n_pat, per_batch)) < 0.3).astype(float)
        u = rng.normal(0, np.sqrt(icc), (n_pat, per_batch))
        y = sick[patients]
        s = d * y + u[patients] + rng.normal(0, np.sqrt(1 - icc), y.shape)
        pat = bootstrap_auroc(y, s, patients=patients, n_resamples=400, seed=seeds[2 * b]).drop("mean")
        img = bootstrap_auroc(y, s, n_resamples=400, seed=seeds[2 * b + 1]).drop("mean")
        by_patient.append(covers(pat, truth)); by_image.append(covers(img, truth)); point.append(pat.auroc.to_numpy())
    by_patient, by_image, point = map(np.concatenate, (by_patient, by_image, point))
    reps = len(by_patient)
    assert abs(point.mean() - truth) < 4 * point.std() / np.sqrt(reps), (point.mean(), truth)
    lo, hi = band(0.95, reps, slack=0.01)                        # 0.95 - 3 x 0.0109 - 0.01 = 0.907 .. 0.983
    assert lo <= by_patient.mean() <= hi, f"patient-level coverage {by_patient.mean():.3f}, expected {lo:.3f}..{hi:.3f}"
    # films of one patient counted as independent: the CI is too narrow (about 0.78 expected here)
    assert by_image.mean() < 0.88, f"image-level coverage {by_image.mean():.3f}: clustering should make it under-cover"
    assert by_patient.mean() - by_image.mean() > 0.08


# ---------------------------------------------------------------------------------------------------------------------
# 2. Paired comparison of two models on the same images

SHARED_VAR = 0.5                                                 # signal both models see: their scores correlate


def two_models(rng, n: int, reps: int, auroc_a: float, auroc_b: float):
    """Model m scores d*y + z + e_m with z ~ N(0, 0.5) shared and e_m ~ N(0, v_m) its own, so its AUROC is
    Phi(d / sqrt(2 (0.5 + v_m))); d is fixed (AUROC 0.8 at total variance 1) and v_m solved for each target AUROC."""
    d = separation(0.8)
    noise = [(d / (np.sqrt(2) * stats.norm.ppf(a))) ** 2 - SHARED_VAR for a in (auroc_a, auroc_b)]
    assert min(noise) > 0
    y = (rng.random((n, reps)) < 0.3).astype(float)
    z = rng.normal(0, np.sqrt(SHARED_VAR), (n, reps))
    sa, sb = (d * y + z + rng.normal(0, np.sqrt(v), (n, reps)) for v in noise)
    return y, sa, sb


def paired_decisions(y, sa, sb, seed: int, alpha: float = 0.05):
    boot = paired_bootstrap(y, sa, sb, n_resamples=400, ci=1 - alpha, seed=seed).drop("mean")
    dl = [delong_test(y[:, j], sa[:, j], sb[:, j]) for j in range(y.shape[1])]
    return {"diff": boot["diff"].to_numpy(), "boot_p": boot.p.to_numpy() < alpha,
            "boot_ci": ((boot.lo > 0) | (boot.hi < 0)).to_numpy(), "boot_lo": boot.lo.to_numpy(),
            "boot_se": ((boot.hi - boot.lo) / (2 * stats.norm.ppf(1 - alpha / 2))).to_numpy(),
            "delong": np.array([r["p"] for r in dl]) < alpha, "delong_se": np.array([r["se"] for r in dl]),
            "delong_diff": np.array([r["diff"] for r in dl])}


def test_paired_tests_do_not_reject_a_null_difference():
    "400 datasets of 200 images, both models AUROC 0.8 (score correlation about 0.58): rejection at alpha = 0.05."
    reps = 400
    r = paired_decisions(*two_models(data_rng(3), 200, reps, 0.8, 0.8), seed=boot_seeds(3, 1)[0])
    np.testing.assert_allclose(r["delong_diff"], r["diff"], atol=1e-12)   # both tests see the same observed difference
    assert abs(r["diff"].mean()) < 4 * r["diff"].std() / np.sqrt(reps)
    lo, hi = band(0.05, reps)                                    # 0.05 +- 3 x 0.0109 = 0.017 .. 0.083
    for test in ("boot_p", "boot_ci", "delong"):
        assert lo <= r[test].mean() <= hi, f"{test}: rejection rate {r[test].mean():.3f} under the null, expected {lo:.3f}..{hi:.3f}"
    # the standard errors behind the decisions match the spread of the difference across datasets
    spread = r["diff"].std(ddof=1)                               # relative SE of an SD over 400 datasets: ~3.5%
    for se in ("boot_se", "delong_se"):
        assert 0.85 < r[se].mean() / spread < 1.15, (se, r[se].mean(), spread)
    assert (r["boot_p"] == r["delong"]).mean() > 0.95            # two methods, one verdict on almost every dataset


def test_paired_tests_reject_a_real_difference():
    "200 datasets of 200 images, AUROC 0.86 vs 0.72 on the same images."
    reps = 200
    r = paired_decisions(*two_models(data_rng(4), 200, reps, 0.86, 0.72), seed=boot_seeds(4, 1)[0])
    assert abs(r["diff"].mean() - 0.14) < 4 * r["diff"].std() / np.sqrt(reps), r["diff"].mean()
    for test in ("boot_p", "boot_ci", "delong"):                 # about 0.96 expected for each
        assert r[test].mean() > 0.90, f"{test}: power {r[test].mean():.3f} for a 0.14 AUROC difference"
    assert (r["boot_lo"][r["boot_ci"]] > 0).all()                # and every rejection names the better model


# ---------------------------------------------------------------------------------------------------------------------
# 3. Agreement with scikit-learn (the notebook checks AUROC and weighted AUROC; here the rest, with NaN labels)

def labelled_probabilities(rng, n: int = 300):
    "3 labels with ~15% unknown (NaN); probabilities rounded to 0.01, so ties and scores exactly at a threshold occur."
    y = (rng.random((n, 3)) < [0.2, 0.4, 0.5]).astype(float)
    p = np.round(1 / (1 + np.exp(-(1.5 * y - 0.8 + rng.normal(0, 1, (n, 3))))), 2)
    y[rng.random((n, 3)) < 0.15] = np.nan
    return y, p


@pytest.mark.parametrize("thresholds", [0.5, [0.3, 0.5, 0.62], [0.3, 1.01, 0.0]],
                         ids=["fixed", "per-label", "none-and-all-predicted-positive"])
def test_label_metrics_agree_with_scikit_learn(thresholds):
    y, p = labelled_probabilities(data_rng(5))
    assert all((p == t).any() for t in (0.3, 0.5, 0.62))         # some scores sit exactly on a threshold (>= is positive)
    table = label_metrics(y, p, ["a", "b", "c"], thresholds=thresholds)
    th = np.broadcast_to(thresholds, (3,))
    for j, name in enumerate("abc"):
        known = ~np.isnan(y[:, j])
        yj, pj = y[known, j].astype(int), p[known, j]
        pred = (pj >= th[j]).astype(int)
        row = table.loc[name]
        tn, fp, fn, tp = confusion_matrix(yj, pred, labels=[0, 1]).ravel()
        assert (row.n, row.positives, row.tp, row.fp, row.tn, row.fn) == (known.sum(), yj.sum(), tp, fp, tn, fn)
        expected = {"auroc": roc_auc_score(yj, pj), "auprc": average_precision_score(yj, pj),
                    "precision": precision_score(yj, pred, zero_division=np.nan),
                    "recall": recall_score(yj, pred, zero_division=np.nan),
                    "specificity": recall_score(yj, pred, pos_label=0, zero_division=np.nan),
                    "f1": f1_score(yj, pred, zero_division=np.nan)}
        got = {k: row[k] for k in expected}
        np.testing.assert_allclose(list(got.values()), list(expected.values()), rtol=1e-12, err_msg=f"{name}: {got}")


def test_other_auroc_implementations_agree_with_scikit_learn_on_ties_and_unknown_labels():
    "DeLong and the bootstrap's weighted Mann-Whitney compute AUROC themselves (ranks / sorting), not via scikit-learn."
    y, p = labelled_probabilities(data_rng(6))
    boot = bootstrap_auroc(y, p, n_resamples=20, seed=boot_seeds(6, 1)[0])
    for j in range(3):
        known = ~np.isnan(y[:, j])
        ref_a, ref_b = roc_auc_score(y[known, j], p[known, j]), roc_auc_score(y[known, j], p[known, (j + 1) % 3])
        dl = delong_test(y[:, j], p[:, j], p[:, (j + 1) % 3])
        np.testing.assert_allclose([dl["auroc_a"], dl["auroc_b"], boot.iloc[j].auroc], [ref_a, ref_b, ref_a], rtol=1e-12)
        ones = np.ones((1, known.sum()))
        np.testing.assert_allclose(weighted_auroc(y[known, j], p[known, j], ones)[0], ref_a, rtol=1e-12)


def test_calibration_and_temperature_agree_with_scikit_learn():
    rng = data_rng(7)
    z = rng.normal(0, 1.5, 3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-z))).astype(float)
    y[rng.random(3000) < 0.1] = np.nan
    known = ~np.isnan(y)
    prob = 1 / (1 + np.exp(-z))
    ece, table = calibration_table(y, prob, n_bins=10)
    observed, predicted = calibration_curve(y[known], prob[known], n_bins=10, strategy="uniform")
    used = table["count"] > 0
    np.testing.assert_allclose(table.observed_rate[used], observed, rtol=1e-12)
    np.testing.assert_allclose(table.mean_prediction[used], predicted, rtol=1e-12)
    np.testing.assert_allclose(ece, np.sum(table["count"][used] / known.sum() * np.abs(observed - predicted)), rtol=1e-12)
    # temperature scaling is a one-parameter logistic regression without intercept on the logit: coef = 1 / T
    over = 3 * z                                                 # three times too sure of itself
    coef = LogisticRegression(fit_intercept=False, C=np.inf).fit(over[known, None], y[known].astype(int)).coef_[0, 0]
    np.testing.assert_allclose(fit_temperature(over, y), 1 / coef, rtol=1e-3)
    assert 2.5 < fit_temperature(over, y) < 3.5
