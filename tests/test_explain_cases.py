"""Case reports and their optional chat-model reading. The LLM backend is run end to end with the real `openai` client
against a stub server on 127.0.0.1 that checks what it is sent (path, model, the numeric report, the key in the
Authorization header) and answers with a canned reading: no network. Heat boxes are checked on maps with known blobs,
lung zones on SynthCXR lungs, case categories on a constructed pair and on the four-model study's own worked cases,
and one case end to end with the demo stand-in."""
from __future__ import annotations

import base64
import json
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cxr_nb.explain.cases import (  # noqa: E402
    NO_OPENAI, PAIR, Case, CaseSide, build_case, case_panel, case_report, heat_boxes, heat_by_zone, lung_zones,
    model_right, numeric_report, pick_cases, select_cases)
from cxr_nb.synth import render_study  # noqa: E402

CANNED = "Both maps sit over the lower zones; the fine-tuned model's heat is on the effusion. Verdict: improved."
STUB_MODEL = "stub-chat-model"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def blob(shape, x, y, sigma):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))


@pytest.fixture(scope="module")
def effusion_film():
    "A SynthCXR film with a pleural effusion, its lungs and the effusion's mask (128 px)."
    return render_study(seed=3, patient=11, size=128, view="PA", findings={"Pleural Effusion"})


@pytest.fixture
def case(effusion_film):
    "A case on a real SynthCXR film: a baseline map off in the upper zone, a fine-tuned map on the effusion."
    masks = effusion_film.masks
    rows, columns = np.nonzero(masks["Pleural Effusion"])
    on_finding = blob((128, 128), columns.mean(), rows.mean(), 6)
    upper_rows, upper_columns = np.nonzero(lung_zones(masks["_lung_r"], masks["_lung_l"])["right upper"])
    off_finding = blob((128, 128), upper_columns.mean(), upper_rows.mean(), 6)   # in the patient's right upper zone
    sides = (CaseSide("baseline", [("Cardiomegaly", .61), ("Effusion", .40), ("Edema", .20)], off_finding, False, -0.1),
             CaseSide("fine-tuned", [("Effusion", .83), ("Edema", .22), ("Cardiomegaly", .10)], on_finding, True, 0.67))
    return Case(7, effusion_film.image, ["Effusion"], "Effusion", "medium", "improved", sides,
                masks["_lung_r"], masks["_lung_l"], masks["Pleural Effusion"])


class StubChat:
    "An OpenAI-compatible chat server on 127.0.0.1 (a free port) that records each request and answers `answer(request)`."

    def __init__(self, answer=lambda request: CANNED, status=200):
        self.requests, stub = [], self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
                stub.requests.append(request)
                reply = {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": body.get("model"),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": answer(request)}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                data = json.dumps(reply if status == 200 else {"error": {"message": "refused by the stub"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args): pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self): return f"http://127.0.0.1:{self.server.server_address[1]}/v1"
    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *exc): self.server.shutdown(); self.server.server_close(); self.thread.join()


@pytest.fixture
def key(monkeypatch):
    "A fresh key in OPENAI_API_KEY, no proxy and no base URL or model from the environment."
    for name in (*PROXY_VARIABLES, "OPENAI_BASE_URL", "CXR_LLM_MODEL"): monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    value = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", value)
    return value


def saved_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def user_content(request) -> list:
    messages = request["body"]["messages"]
    return next(m for m in messages if m["role"] == "user")["content"]


# ---- the LLM backend against the stub


def test_llm_backend_sends_the_report_and_saves_the_run_without_the_key(case, key, tmp_path):
    pytest.importorskip("openai")
    folder = tmp_path/"case-7"
    with StubChat() as stub:
        answer = case_report(case, llm=True, folder=folder, model=STUB_MODEL, base_url=stub.base_url)
    assert answer == CANNED
    (request,) = stub.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == STUB_MODEL
    assert request["authorization"] == f"Bearer {key}"
    content = user_content(request)
    report = numeric_report(case)
    assert content[0]["type"] == "text" and content[0]["text"] == report
    assert "Effusion 0.83" in report and "heat inside the Effusion mask" in report
    image = content[1]["image_url"]["url"]
    assert image.startswith("data:image/png;base64,")
    files = saved_bytes(folder)
    assert sorted(files) == ["answer.txt", "llm.json", "panel.png", "prompt.txt", "report.txt"]
    assert base64.b64decode(image.split(",", 1)[1]) == files["panel.png"]              # the panel sent is the one saved
    assert files["panel.png"].startswith(b"\x89PNG")
    assert report in files["prompt.txt"].decode() and "panel.png" in files["prompt.txt"].decode()
    assert files["answer.txt"].decode().strip() == CANNED
    assert json.loads(files["llm.json"])["model"] == STUB_MODEL
    for name, data in files.items():
        assert key.encode() not in data, f"the key is in {name}"
    assert key not in answer


def test_an_answer_echoing_the_key_is_scrubbed(case, key, tmp_path):
    pytest.importorskip("openai")
    with StubChat(answer=lambda request: f"I was called with {request['authorization']}") as stub:
        answer = case_report(case, llm=True, folder=tmp_path/"echo", model=STUB_MODEL, base_url=stub.base_url)
    assert stub.requests and key not in answer and "Bearer" in answer
    assert all(key.encode() not in data for data in saved_bytes(tmp_path/"echo").values())


def test_server_and_model_from_the_environment_and_no_panel(case, key, tmp_path, monkeypatch):
    pytest.importorskip("openai")
    with StubChat() as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("CXR_LLM_MODEL", "model-from-the-environment")
        answer = case_report(case, llm=True, folder=tmp_path/"env", send_panel=False)
    assert answer == CANNED
    (request,) = stub.requests
    assert request["body"]["model"] == "model-from-the-environment"
    assert [part["type"] for part in user_content(request)] == ["text"]                  # no image sent
    assert "[attached:" not in (tmp_path/"env"/"prompt.txt").read_text()


def test_a_refusing_server_is_an_error_naming_model_and_server_not_the_key(case, key, tmp_path):
    pytest.importorskip("openai")
    with StubChat(status=401) as stub:
        with pytest.raises(RuntimeError) as info:
            case_report(case, llm=True, folder=tmp_path/"refused", model=STUB_MODEL, base_url=stub.base_url)
    message = str(info.value)
    assert STUB_MODEL in message and stub.base_url in message and str(tmp_path/"refused") in message
    assert key not in message
    assert (tmp_path/"refused"/"prompt.txt").exists() and not (tmp_path/"refused"/"answer.txt").exists()


def test_without_openai_the_report_falls_back_to_the_numbers_and_says_so(case, key, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)                                     # import openai now fails
    with pytest.warns(UserWarning, match="openai"):
        text = case_report(case, llm=True, folder=tmp_path/"no-openai")
    assert text.startswith(f"[{NO_OPENAI}]") and numeric_report(case) in text
    assert "pip install 'cxr-nb[llm]'" in text
    files = saved_bytes(tmp_path/"no-openai")
    assert sorted(files) == ["panel.png", "report.txt"]                                 # nothing was sent
    assert files["report.txt"].decode().strip() == text.strip()


def test_off_by_default(case, key, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)          # not even imported when off
    assert case_report(case) == numeric_report(case)
    assert case_report(case, folder=tmp_path/"off") == numeric_report(case)
    assert sorted(p.name for p in (tmp_path/"off").iterdir()) == ["panel.png", "report.txt"]


# ---- heat boxes, zones, the report's numbers


def test_heat_boxes_find_known_blobs():
    shape = (96, 128)
    centres = [(30, 30, 6), (100, 40, 4), (60, 80, 8)]
    heat = np.max([blob(shape, x, y, s) for x, y, s in centres], axis=0)
    boxes = heat_boxes(heat, threshold=0.5, min_area=10)
    assert len(boxes) == 3
    for x, y, sigma in centres:                               # each blob has one box round its centre, of its half-width
        hit = boxes[(boxes.x0 <= x) & (x < boxes.x1) & (boxes.y0 <= y) & (y < boxes.y1)]
        assert len(hit) == 1
        half_width = sigma * np.sqrt(2 * np.log(2))
        assert abs((hit.x1.iloc[0] - hit.x0.iloc[0]) / 2 - half_width) <= 1.0
    assert boxes.share.is_monotonic_decreasing and boxes.peak.min() > 0.99
    labelled, count = ndimage.label(heat >= 0.5, structure=np.ones((3, 3)))  # an independent count of the regions
    assert count == 3 and sorted(boxes.area) == sorted(np.bincount(labelled.ravel())[1:])
    assert abs(boxes.share.sum() - heat[heat >= 0.5].sum() / heat.sum()) < 1e-5
    for box in boxes.itertuples():                            # half-open: the region fits heat[y0:y1, x0:x1] exactly
        inside = heat[box.y0:box.y1, box.x0:box.x1] >= 0.5
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    assert len(heat_boxes(heat, threshold=0.5, min_area=200)) == 1          # only the largest blob is that big


@pytest.mark.parametrize("patient", [11, 12, 13, 14])
def test_lung_zones_on_synthcxr_lungs(patient):
    film = render_study(seed=3, patient=patient, size=128, view="PA")
    lung_r, lung_l = film.masks["_lung_r"], film.masks["_lung_l"]
    zones = lung_zones(lung_r, lung_l)
    assert len(zones) == 6
    union = np.logical_or.reduce(list(zones.values()))
    assert (union == (lung_r | lung_l)).all() and sum(z.sum() for z in zones.values()) == union.sum()
    columns = {name: np.nonzero(mask)[1].mean() for name, mask in zones.items()}
    rows = {name: np.nonzero(mask)[0].mean() for name, mask in zones.items()}
    assert all(columns[f"right {t}"] < 64 < columns[f"left {t}"] for t in ("upper", "middle", "lower"))  # right on image left
    for side in ("right", "left"):
        assert rows[f"{side} upper"] < rows[f"{side} middle"] < rows[f"{side} lower"]
    uniform_on_lungs = (lung_r | lung_l).astype(float)
    shares = heat_by_zone(uniform_on_lungs, lung_r, lung_l)
    assert shares["outside lungs"] == 0
    for name, mask in zones.items():                          # a uniform map shares out by area
        assert abs(shares[name] - mask.sum() / union.sum()) < 1e-6


def test_a_real_film_has_image_thirds_not_lung_zones(case):
    real = Case(**{**case.__dict__, "lung_r": None, "lung_l": None, "finding": None})
    report = numeric_report(real)
    assert "no lung masks" in report and "heat by image thirds" in report
    assert "heat inside the lungs: unknown" in report and "heat by lung zones" not in report
    assert "heat by lung zones" in numeric_report(case)


def test_the_report_reads_the_numbers(case):
    report = numeric_report(case)
    baseline, finetuned = report.split("\n\nfine-tuned")[0], report.split("\n\nfine-tuned")[1]
    share = float(finetuned.split("heat inside the Effusion mask: ")[1].split("%")[0]) / 100
    on_finding = case.sides[1].heat
    assert abs(share - on_finding[case.finding].sum() / on_finding.sum()) < 0.006
    assert "heat by lung zones" in baseline and "right upper" in baseline
    upper = float(baseline.split("right upper ")[1].split("%")[0])
    assert upper > 50                                          # the baseline's blob sits in the right upper zone
    assert "Verdict: improved: only the fine-tuned is right." in report


# ---- categories and verdicts


def test_case_categories_on_a_constructed_pair():
    labels = ["Atelectasis", "Cardiomegaly", "Effusion", "Pneumothorax"]
    truth = pd.DataFrame([[0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], columns=labels)
    baseline = pd.DataFrame([[.1, .9, .2, .1], [.8, .1, .3, .2], [.2, .3, .6, .1], [.2, .3, .4, .1], [.7, .1, .1, .1]],
                            columns=labels)
    finetuned = pd.DataFrame([[.1, .7, .2, .1], [.1, .2, .9, .7], [.45, .3, .6, .1], [.6, .3, .4, .1], [.1, .1, .2, .1]],
                             columns=labels)
    cases = select_cases(truth, baseline, finetuned, k=2)
    assert cases.category.tolist() == ["easy", "medium", "hard", "medium", "medium"]
    assert cases.right.tolist() == ["both", "fine-tuned", "neither", "baseline", "fine-tuned"]
    assert cases.verdict.tolist() == ["worse", "improved", "improved", "worse", "improved"]   # easy: separation .77 -> .57
    assert cases.loc[1, "truth"] == ["Effusion", "Pneumothorax"]
    assert cases.loc[1, "finetuned_top"] == [("Effusion", .9), ("Pneumothorax", .7)]
    assert pick_cases(cases).film.tolist() == [0, 1, 2]
    anywhere = select_cases(truth, baseline, finetuned, k=2, rule="any")
    assert anywhere.category[2] == "medium"                   # Atelectasis is second in the fine-tuned top-2, not first
    same = select_cases(truth, baseline, baseline, k=2)
    assert (same.verdict == "no change").all() and not (same.category == "medium").any()


def test_the_study_worked_cases_fix_the_definition():
    hard_truth = ["Edema", "Lung Opacity"]
    baseline = [("Pneumonia", .68), ("Infiltration", .67), ("Atelectasis", .64), ("Consolidation", .64), ("Nodule", .63)]
    finetuned = [("Support Devices", .56), ("Lung Opacity", .37), ("Atelectasis", .24), ("Edema", .19), ("Fracture", .11)]
    assert not model_right(hard_truth, baseline) and not model_right(hard_truth, finetuned)   # the study: hard
    assert model_right(hard_truth, finetuned, "any") and model_right(hard_truth, finetuned, "all")


# ---- end to end with the demo stand-in


def test_a_case_end_to_end_with_the_stand_in():
    import copy

    import torch

    from cxr_nb.explain.cams import demo_standin, explain_films
    from cxr_nb.explain.cases import film_truth, label_probabilities
    torch.manual_seed(0)
    finetuned = demo_standin()
    baseline = copy.deepcopy(finetuned)
    for module in baseline.modules():
        if hasattr(module, "reset_parameters"): module.reset_parameters()
    baseline.eval()
    films = explain_films(finetuned, n=48, seed=21)
    labels = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumothorax"]
    truth = film_truth(films, finetuned, labels)
    probabilities = [label_probabilities(model, films.images, labels) for model in (baseline, finetuned)]
    cases = select_cases(truth, *probabilities)
    assert set(cases.category) <= {"easy", "medium", "hard"} and len(cases) == len(films)
    medium = cases[(cases.category == "medium") & (cases.truth.str.len() > 0)].iloc[0]
    case = build_case(cases, medium.film, films, baseline, finetuned)
    winner = case.sides[PAIR.index(medium.right)]
    label, p = winner.top[0]
    assert label in case.truth and f"{label} {p:.2f}" in numeric_report(case)
    assert case.finding is not None and case.finding.any() and case.lung_r.any()
    fig = case_panel(case)
    assert len(fig.axes) == 3 and f"{label}: {p:.2f}" in fig.axes[1 + PAIR.index(medium.right)].get_title(loc="left")
    plt.close(fig)


def test_saved_server_urls_keep_no_credentials_or_query():
    from cxr_nb.explain.cases import _without_credentials
    assert _without_credentials("https://user:pw@llm.example:8443/v1?api-key=SECRET#x") == "https://llm.example:8443/v1"
    assert _without_credentials("http://[::1]:8000/v1") == "http://[::1]:8000/v1"            # IPv6 host kept as written
    assert _without_credentials(None) is None
