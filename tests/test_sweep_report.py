"""The layer x pooling sweep, train --auto, and the HTML report with its plots."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest

from bertprobe.cli import main
from bertprobe.encoders.cache import open_cache
from bertprobe.encoders.encode import embed
from bertprobe.encoders.encoder import load_encoder
from bertprobe.encoders.options import FeatureSpec
from bertprobe.report import calibration_bins
from bertprobe.training.sweep import MIN_SCREEN_ROWS, candidates, run_sweep


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    return out


def test_candidates_cover_every_layer_and_the_concatenations():
    names = [c.name for c in candidates(7, ("cls", "mean"))]
    assert names[:7] == [f"layer {i} cls" for i in range(7)]
    assert "layers 3-6 mean" in names and "layers 0-6 mean" in names
    assert len(names) == 2 * (7 + 2)
    assert [c.name for c in candidates(3, ("max",))] == [
        "layer 0 max",
        "layer 1 max",
        "layer 2 max",
        "layers 0-2 max",
    ]


def test_one_pass_fills_every_view_and_scores_each_by_cv(tiny_distilbert, sentiment_rows, tmp_path):
    texts = [t for t, _ in sentiment_rows]
    labels = [y for _, y in sentiment_rows]
    model = load_encoder(str(tiny_distilbert))
    with open_cache(tmp_path) as cache:
        result = run_sweep(
            texts, labels, model, poolings=("cls", "mean"), cv=3, cache=cache, min_screen_rows=0
        )
        # Everything the sweep looked at is now in the cache: no forward pass needed.
        for pooling in ("cls", "mean"):
            _, stats = embed(texts, model, FeatureSpec(pooling, (0, 1, 2)), cache=cache)
            assert stats.n_computed == 0
    assert [r.name for r in result.rows] == [c.name for c in candidates(3, ("cls", "mean"))]
    assert result.embed.n_computed == len(set(texts))
    # Every candidate screened; the three best by the screen scored by CV; the best of those wins.
    assert all(r.screen_score is not None for r in result.rows)
    by_screen = sorted(result.rows, key=lambda r: (-round(r.screen_score, 6), len(r.layers)))
    assert [r.name for r in result.finalists] == [r.name for r in result.rows if r in by_screen[:3]]
    assert all(r.cv_accuracy is None and r.C is None for r in by_screen[3:])
    assert result.best.cv_accuracy == max(r.cv_accuracy for r in result.finalists)
    assert result.best.cv_accuracy > 0.8
    assert 0.0 <= result.tfidf_cv_accuracy <= 1.0
    # One word decides the label: TF-IDF should find it too.
    assert result.tfidf_cv_accuracy > 0.8
    assert json.loads(json.dumps(result.to_dict()))["best"] == result.best.name


def test_a_set_too_small_to_screen_scores_every_candidate_by_cv(tiny_distilbert, sentiment_rows):
    # The screen's three finalists missed SST-2's best pooling at 64 labels a class; below
    # MIN_SCREEN_ROWS every candidate's CV is cheap, and it is what decides.
    texts = [t for t, _ in sentiment_rows]
    labels = [y for _, y in sentiment_rows]
    assert len(texts) < MIN_SCREEN_ROWS
    result = run_sweep(texts, labels, load_encoder(str(tiny_distilbert)), poolings=("mean",), cv=3)
    assert result.screen_rows is None
    assert all(r.screen_score is None and r.cv_accuracy is not None for r in result.rows)
    assert result.best.cv_accuracy == max(r.cv_accuracy for r in result.rows)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_ridge_screen_holds_out_each_row_exactly_as_scikit_learn(n_classes):
    from sklearn.linear_model import RidgeCV

    from bertprobe.training.sweep import _ridge_loo_predictions, _signed_targets, _standardize

    rng = np.random.default_rng(n_classes)
    X = rng.normal(size=(150, 12)) * rng.uniform(0.1, 10, size=12)
    y = np.array(["a", "b", "c"][:n_classes])[rng.integers(0, n_classes, 150)]
    Z, targets, alphas = _standardize(X), _signed_targets(y), np.array([0.3, 3.0, 30.0, 300.0])
    ours = _ridge_loo_predictions(Z, targets, Z.T @ Z, alphas)
    theirs = RidgeCV(alphas=alphas, store_cv_results=True, scoring="r2").fit(Z, targets)
    np.testing.assert_allclose(ours, theirs.cv_results_, atol=1e-10)


def test_screen_of_concatenations_equals_screening_their_features_alone():
    from bertprobe.training.sweep import ridge_loo_accuracy, screen_candidates

    rng = np.random.default_rng(0)
    n, layers, hidden = 120, 3, 4
    by_view = rng.normal(size=(n, 2 * layers, hidden))  # views: cls 0-2, then mean 0-2
    y = (by_view[:, 1, 0] + by_view[:, 5, 1] + 0.3 * rng.normal(size=n) > 0).astype(int)
    cands = candidates(layers, ("cls", "mean"))
    scores = screen_candidates(by_view, y, cands, layers, ("cls", "mean"))
    assert set(scores) == {c.name for c in cands}
    for cand in cands:
        offset = 0 if cand.pooling == "cls" else layers
        alone = by_view[:, [offset + layer for layer in cand.layers], :].reshape(n, -1)
        assert scores[cand.name] == pytest.approx(ridge_loo_accuracy(alone, y)[0])


def test_the_screen_of_a_label_matrix_is_the_mean_of_each_labels_screen():
    """Several labels per text: each label's ridge column scored alone, then averaged; the
    view that carries both labels ranks first."""
    from bertprobe.training.sweep import (
        RIDGE_ALPHA_GRID,
        _accuracy_of,
        _ridge_loo_predictions,
        _standardize,
        screen_candidates,
    )

    rng = np.random.default_rng(1)
    n, layers, hidden = 150, 3, 4
    by_view = rng.normal(size=(n, layers, hidden))  # one pooling, layers 0-2
    Y = np.column_stack(
        [by_view[:, 2, 0] + 0.2 * rng.normal(size=n) > 0, by_view[:, 2, 1] > 0.5]
    ).astype(int)
    cands = candidates(layers, ("mean",))
    scores = screen_candidates(by_view, Y, cands, layers, ("mean",))
    for cand in cands:
        Z = _standardize(by_view[:, list(cand.layers), :].reshape(n, -1))
        alphas = n * np.asarray(RIDGE_ALPHA_GRID)
        per_label = []
        for j in range(2):  # each label alone, as a two-class problem: -1/+1 targets
            targets = np.where(Y[:, [j]] > 0, 1.0, -1.0)
            loo = _ridge_loo_predictions(Z, targets, Z.T @ Z, alphas)
            per_label.append(_accuracy_of(loo, targets))
        # One penalty for all labels: the best of the per-penalty means.
        assert scores[cand.name] == pytest.approx(np.mean(per_label, axis=0).max())
    assert max(scores, key=scores.get) in {c.name for c in cands if 2 in c.layers}


def test_finalists_zero_scores_every_candidate_by_cv(tiny_distilbert, sentiment_rows):
    texts = [t for t, _ in sentiment_rows]
    labels = [y for _, y in sentiment_rows]
    result = run_sweep(
        texts, labels, load_encoder(str(tiny_distilbert)), poolings=("mean",), cv=3,
        finalists=0, tfidf=False,
    )  # fmt: skip
    assert all(r.finalist and r.screen_score is None for r in result.rows)
    assert result.screen_seconds < 1.0


def test_final_search_refines_the_sweeps_c():
    from bertprobe.heads.probe import DEFAULT_C_GRID
    from bertprobe.training.target import near_grid as _near

    assert _near(DEFAULT_C_GRID, 1.0) == pytest.approx((10**-0.5, 1.0, 10**0.5))
    assert _near(DEFAULT_C_GRID, 100.0) == pytest.approx((10**1.5, 100.0))
    assert _near((0.1, 1.0), None) == (0.1, 1.0)


def test_calibration_bins_and_ece():
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 1, 0, 1, 0], dtype=bool)
    bins, ece = calibration_bins(confidence, correct)
    assert [b["count"] for b in bins] == [2, 4]
    # |0.55 - 0.5| * 2/6 + |0.95 - 0.75| * 4/6
    assert ece == pytest.approx(0.05 * 2 / 6 + 0.20 * 4 / 6)
    _, perfect = calibration_bins(np.array([1.0, 1.0]), np.array([True, True]))
    assert perfect == 0.0


def test_report_computes_calibration_and_class_metrics_once(tmp_path, monkeypatch):
    import sklearn.metrics

    from bertprobe import report

    calls = {"bins": 0, "classes": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(report, "calibration_bins", counted("bins", report.calibration_bins))
    monkeypatch.setattr(
        sklearn.metrics,
        "classification_report",
        counted("classes", sklearn.metrics.classification_report),
    )
    rng = np.random.default_rng(0)
    y_true = rng.choice(["neg", "pos"], 40)
    data = report.ReportData(
        model_id="m",
        card={
            "probe": {"alpha": 1e-4, "holdout": 0.1, "holdout_accuracy": 0.7},
            "encoder": {"name": "tiny", "fingerprint": "sha256:0"},
            "features": {"pooling": "mean", "layers": [-1], "max_length": 64},
            "labels": ["neg", "pos"],
            "data": {},
            "created": "today",
            "versions": {},
            "metrics": {},
        },
        texts=[f"text {i}" for i in range(40)],
        y_true=y_true,
        y_pred=np.where(rng.random(40) < 0.8, y_true, "neg"),
        proba=rng.dirichlet([1, 1], 40),
        classes=["neg", "pos"],
        features=rng.normal(size=(40, 4)),
        test_source="test.tsv",
    )
    page = report.write_report(data, tmp_path / "report").read_text()
    summary = data.summary()
    assert calls == {"bins": 1, "classes": 1}
    assert f"{summary['expected_calibration_error']:.3f}" in page
    assert (tmp_path / "report" / "reliability.png").is_file()


@pytest.fixture
def auto_model(tiny_distilbert, sentiment_tsv, tmp_path, capsys):
    out = tmp_path / "auto"
    result = json.loads(
        run(
            [
                "train",
                sentiment_tsv,
                "--encoder",
                tiny_distilbert,
                "--auto",
                "--poolings",
                "cls,mean",
                "--cv",
                "3",
                "--out",
                out,
                "--json",
            ],
            capsys,
        )
    )
    return out, result


def test_train_auto_uses_and_records_the_sweep_winner(auto_model):
    out, result = auto_model
    card = json.loads((out / "card.json").read_text())
    finalists = [r for r in card["sweep"]["rows"] if r["cv_accuracy"] is not None]
    best = max(finalists, key=lambda r: r["cv_accuracy"])
    assert card["sweep"]["choice"] == result["auto"]
    assert result["auto"] in {
        r["name"] for r in finalists if r["cv_accuracy"] == best["cv_accuracy"]
    }
    # The final probe refined the sweep's C: it searched the default grid's values next to it.
    grid = sorted(card["probe"]["c_grid"])
    assert len(grid) <= 3 and min(grid) <= best["C"] <= max(grid)
    chosen = next(r for r in card["sweep"]["rows"] if r["name"] == result["auto"])
    assert card["features"]["pooling"] == chosen["pooling"]
    assert card["features"]["layers"] == chosen["layers"]


def test_sweep_command_writes_table_json_and_plot(tiny_distilbert, sentiment_tsv, tmp_path, capsys):
    out = tmp_path / "sweep"
    printed = run(
        [
            "sweep",
            sentiment_tsv,
            "--encoder",
            tiny_distilbert,
            "--poolings",
            "mean",
            "--cv",
            "3",
            "--out",
            out,
        ],
        capsys,
    )
    assert "layer 0 mean" in printed and "<- best" in printed and "TF-IDF" in printed
    saved = json.loads((out / "sweep.json").read_text())
    assert len(saved["rows"]) == 4
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_holds_the_plots_and_the_numbers(auto_model, sentiment_tsv, tmp_path, capsys):
    model_dir, _ = auto_model
    out = tmp_path / "report"
    summary = json.loads(
        run(["report", "--model", model_dir, sentiment_tsv, "--out", out, "--json"], capsys)
    )
    evaluated = json.loads(run(["evaluate", "--model", model_dir, sentiment_tsv, "--json"], capsys))
    assert summary["accuracy"] == pytest.approx(evaluated["accuracy"])
    assert summary["tfidf_accuracy"] is not None  # the training file was found via the card
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {
        "confusion_matrix.png",
        "cv_vs_c.png",
        "layer_sweep.png",
        "learning_curve.png",
        "reliability.png",
        "precision_recall.png",
        "projection.png",
    }
    page = (out / "report.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 7
    assert f"{100 * summary['accuracy']:.2f}%" in page
    assert "Most confident errors" in page and "Per class" in page
    assert f"{summary['expected_calibration_error']:.3f}" in page


def test_report_without_the_training_file_says_so(auto_model, sentiment_tsv, tmp_path, capsys):
    model_dir, _ = auto_model
    sentiment_tsv.rename(tmp_path / "moved.tsv")
    test_copy = tmp_path / "test.tsv"
    test_copy.write_text((tmp_path / "moved.tsv").read_text())
    with pytest.raises(SystemExit) as info:
        main(["report", "--model", str(model_dir), str(test_copy), "--out", str(tmp_path / "r")])
    assert info.value.code == 0
    assert "not found; pass --train" in capsys.readouterr().err
    assert not (tmp_path / "r" / "learning_curve.png").exists()
    assert (tmp_path / "r" / "report.html").exists()


def test_report_page_loads_every_image_in_chromium(auto_model, sentiment_tsv, tmp_path, capsys):
    from playwright.sync_api import sync_playwright

    from browser import open_browser

    model_dir, _ = auto_model
    out = tmp_path / "report"
    run(["report", "--model", model_dir, sentiment_tsv, "--out", out], capsys)
    with sync_playwright() as p:
        browser = open_browser(p)
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto((out / "report.html").as_uri())
        widths = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
        )
        title = page.title()
        browser.close()
    # One decoded image on the page per figure the report wrote beside it: the figure list grows
    # with the features (precision-recall came with skewed classes), the check should not.
    written = sorted(out.glob("*.png"))
    assert {"confusion_matrix.png", "precision_recall.png"} <= {p.name for p in written}
    assert len(widths) == len(written) and all(w > 0 for w in widths), (widths, written)
    assert problems == []
    assert title.startswith("bertprobe report")


def test_auto_adds_the_tfidf_vote_when_cv_prefers_it(tiny_distilbert, tmp_path, capsys):
    from bertprobe.datasets import load_sst2
    from bertprobe.model.classifier import load_model
    from conftest import write_tsv

    # Random tiny-encoder features are weak on real reviews; word n-grams add what they miss.
    train = load_sst2("train")
    rows = list(zip(train.texts[:300], train.labels[:300], strict=True))
    data = write_tsv(tmp_path / "train.tsv", rows)
    out = tmp_path / "voted"
    result = json.loads(
        run(
            [
                "train",
                data,
                "--test",
                data,
                "--encoder",
                tiny_distilbert,
                "--auto",
                "--poolings",
                "mean",
                "--cv",
                "3",
                "--out",
                out,
                "--json",
            ],
            capsys,
        )
    )
    sweep = json.loads((out / "card.json").read_text())["sweep"]
    best = max(r["cv_accuracy"] or 0.0 for r in sweep["rows"])
    assert sweep["vote_cv_accuracy"] > best  # the rule: the vote only where CV says it helps
    assert result["auto"] == sweep["choice"] == f"{sweep['best']} + TF-IDF vote"

    model = load_model(out)
    assert model.text_model is not None and (out / "tfidf.skops").is_file()
    # The vocabulary is a JSON node per term inside skops' schema: deflated, not stored.
    for name in ("tfidf.skops", "probe.skops"):
        with zipfile.ZipFile(out / name) as archive:
            schema = archive.getinfo("schema.json")
        assert schema.compress_type == zipfile.ZIP_DEFLATED
        assert schema.compress_size < schema.file_size / 3
    texts = [t for t, _ in rows[:20]]
    X, _ = model.embed(texts)
    expected = (model.probe.predict_proba(X) + model.text_model.predict_proba(texts)) / 2
    np.testing.assert_allclose(model.predict_proba(texts), expected)
    # The saved test accuracy is the vote's, as evaluate computes it.
    evaluated = json.loads(run(["evaluate", "--model", out, data, "--json"], capsys))
    assert evaluated["accuracy"] == pytest.approx(result["test_accuracy"])


def test_a_tampered_voter_is_refused(tmp_path, tiny_model_dir):
    import shutil

    from bertprobe.core.errors import ModelFolderError
    from bertprobe.heads.tfidf import tfidf_pipeline
    from bertprobe.model.classifier import load_model
    from bertprobe.model.persist import save_model

    model = load_model(tiny_model_dir)
    texts = ["good film", "bad film", "great acting", "awful acting"] * 5
    labels = [1, 0, 1, 0] * 5
    voter = tfidf_pipeline(cv=2).fit(texts, labels)
    out = save_model(
        tmp_path / "m", model.probe, model.encoder, model.spec, max_length=64, text_model=voter
    )
    assert load_model(out).card["vote"]["with"] == "tfidf.skops"
    shutil.copy(out / "probe.skops", out / "tfidf.skops")
    with pytest.raises(ModelFolderError, match="altered"):
        load_model(out)
    with pytest.raises(ValueError, match="classes differ"):
        save_model(
            tmp_path / "m2",
            model.probe,
            model.encoder,
            model.spec,
            max_length=64,
            text_model=tfidf_pipeline(cv=2).fit(texts, ["a", "b", "c", "d"] * 5),
        )


def test_a_report_on_one_test_text_leaves_out_the_projection(tiny_model_dir, tmp_path, capsys):
    """Found by the fuzz: PCA to 2-D needs two texts; one text is still a report."""
    from bertprobe.cli import main

    one = tmp_path / "one.tsv"
    one.write_text("the film was great\t1\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["report", "--model", str(tiny_model_dir), str(one), "--out", str(tmp_path / "r")])
    assert info.value.code == 0
    assert (tmp_path / "r" / "report.html").is_file()
    assert not (tmp_path / "r" / "projection.png").exists()
    assert "projection of the test vectors is left out" in (
        tmp_path / "r" / "report.html"
    ).read_text(encoding="utf-8")


# --- "Why these labels" ------------------------------------------------------------------------


def test_explained_rows_are_the_surest_errors_then_a_seeded_sample_of_right_answers():
    from bertprobe.report import ReportData

    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05], [0.5, 0.5]])
    data = ReportData(
        model_id="m",
        card={},
        texts=[f"t{i}" for i in range(6)],
        y_true=np.array([1, 1, 1, 0, 0, 0]),
        y_pred=proba.argmax(axis=1),
        proba=proba,
        classes=[0, 1],
        features=np.zeros((6, 2)),
        test_source="t.tsv",
    )
    rows = data.explained_rows(n=2)
    assert rows[:2] == [("error", 0), ("error", 3)]  # wrong, most confident first
    assert [k for k, _ in rows[2:]] == ["correct", "correct"]
    assert {i for _, i in rows[2:]} <= {1, 4, 5} and rows == data.explained_rows(n=2)


@pytest.fixture
def report_with_errors(tiny_model_dir, sentiment_rows, tmp_path, capsys):
    """A report on the training rows with a few labels flipped: errors to explain."""
    rows = [(t, 1 - y if i % 7 == 0 else y) for i, (t, y) in enumerate(sentiment_rows)]
    test = tmp_path / "flipped.tsv"
    test.write_text("".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    out = tmp_path / "report"
    run(["report", "--model", tiny_model_dir, test, "--out", out], capsys)
    return out / "report.html", rows


def test_report_explains_errors_and_right_answers_with_shaded_words(report_with_errors):
    from playwright.sync_api import sync_playwright

    from browser import open_browser

    path, rows = report_with_errors
    html = path.read_text(encoding="utf-8")
    assert "Why these labels" in html and "The most confident errors" in html
    assert "A sample of correct answers" in html
    assert html.count("a word&#39;s score is the evidence") == 1  # the caveat, once
    with sync_playwright() as p:
        browser = open_browser(p)
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(path.as_uri())
        tables = page.eval_on_selector_all(
            "table.why",
            """ts => ts.map(t => [...t.querySelectorAll("tr[data-scale]")].map(r => [
                r.cells[0].innerText,
                [...r.querySelectorAll(".w")].map(w => [w.textContent,
                    getComputedStyle(w).backgroundColor, w.title])]))""",
        )
        browser.close()
    assert problems == []
    errors, correct = tables
    assert 1 <= len(errors) <= 10 and len(correct) == 10
    texts = {t for t, _ in rows}
    assert all(text in texts for text, _ in errors + correct)
    for text, words in errors + correct:
        assert "".join(w for w, _, _ in words).replace(" ", "") == text.replace(" ", "")
        assert all(bg.startswith("rgba(") and title.count(":") == 2 for _, bg, title in words)


def test_report_no_explain_leaves_the_section_out(tiny_model_dir, sentiment_tsv, tmp_path, capsys):
    out = tmp_path / "r"
    run(["report", "--model", tiny_model_dir, sentiment_tsv, "--out", out, "--no-explain"], capsys)
    assert "Why these labels" not in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("width", [12, 400])
def test_the_screen_decomposes_rows_or_features_to_the_same_predictions(width):
    """Features wider than the rows are screened through the rows' kernel: the same held-out
    predictions as through the features' Gram matrix."""
    from bertprobe.training.sweep import (
        _ridge_loo_predictions,
        _ridge_loo_predictions_dual,
        _signed_targets,
        _standardize,
    )

    rng = np.random.default_rng(width)
    X = rng.normal(size=(150, width)) * rng.uniform(0.1, 10, size=width)
    y = (X[:, 0] + rng.normal(size=150) > 0).astype(int)
    Z, targets, alphas = _standardize(X), _signed_targets(y), np.array([0.3, 3.0, 30.0, 300.0])
    primal = _ridge_loo_predictions(Z, targets, Z.T @ Z, alphas)
    dual = _ridge_loo_predictions_dual(Z, targets, Z @ Z.T, alphas)
    np.testing.assert_allclose(dual, primal, atol=1e-8)


def test_a_screen_past_its_budget_reads_a_stratified_sample_of_rows():
    from bertprobe.training.sweep import screen_candidates, screen_cost, screen_rows

    rng = np.random.default_rng(2)
    n, layers, hidden = 1500, 3, 40
    by_view = rng.normal(size=(n, layers, hidden))
    y = (by_view[:, 2, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    cands = candidates(layers, ("mean",))
    widths = [len(c.layers) * hidden for c in cands]
    full = screen_candidates(by_view, y, cands, layers, ("mean",))
    assert screen_rows(n, widths) == n
    budget = screen_cost(1200, widths)
    assert screen_rows(n, widths, budget) == 1200
    sampled = screen_candidates(by_view, y, cands, layers, ("mean",), budget=budget)
    # The sample keeps the classes' shares, and the ranking: the layer with the signal first.
    best = max(full, key=full.get)
    assert max(sampled, key=sampled.get) == best and "2" in best
    assert all(abs(sampled[c] - full[c]) < 0.05 for c in full)
