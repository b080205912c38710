"""Presets: the catalogue is consistent with the registries, the match rule and the sentences on
hand-made tables, the API says what a preset needs here, and the bundled preset runs end to end."""
from __future__ import annotations

import pytest

from experiments import services
from experiments.core import metrics
from experiments.core.presets import compare, get_preset, preset_keys, statements, verdict
from experiments.core.protocols import get_protocol
from experiments.models import Experiment
from explain.core import registry
from explain.core.zoo import BUILTIN_MODELS

# --------------------------------------------------------------------------- the catalogue


@pytest.mark.parametrize("key", preset_keys())
def test_every_preset_names_things_that_exist(key):
    preset = get_preset(key)
    assert preset.dataset.kind in services.DATASET_KINDS
    assert set(preset.dataset.paths) == set(services.DATASET_KINDS[preset.dataset.kind].paths)
    assert preset.model in BUILTIN_MODELS if preset.model else (preset.model_need and preset.num_classes)
    for slot in preset.methods:
        assert slot.key in services.BASELINES or registry.get_method_class(slot.key).key == slot.key
    columns = {}
    for name in preset.protocols:
        protocol = get_protocol(name)
        columns[name] = {c["key"] for c in metrics.get_family(protocol.metric).columns(protocol)}
    for protocol, column in preset.headline:
        assert column in columns[protocol]
    for pub in preset.published:
        assert pub.column in columns[pub.protocol], (pub.method, pub.column)
        assert pub.source and 0 <= pub.value <= 100
    if not preset.published:
        assert "left out" in preset.note or "Nothing is published" in preset.note   # says why there is no number


def test_the_thesis_table_adds_up():
    """Overall = insertion − deletion in every row of the thesis's table: a typo in one number shows."""
    table = {}
    for pub in get_preset("thesis-insertion-deletion-vgg19").published:
        table.setdefault(pub.method, {})[pub.column] = pub.value
    assert len(table) == 6
    for method, row in table.items():
        assert row["insertion"] - row["deletion"] == pytest.approx(row["overall"], abs=0.006), method


def test_the_bundled_preset_covers_every_cnn_method_plain_and_enhanced():
    preset = get_preset("thesis-claims-bundled")
    cnn = {k for k in registry.method_keys() if "cnn" in registry.get_method_class(k).families}
    assert {s.key for s in preset.methods if not s.enhance} == cnn | {"baseline_random", "baseline_centre"}
    assert {s.key for s in preset.methods if s.enhance} == cnn
    assert preset.dataset.kind == "sample-localisation" and preset.model == "efficientnet_lite0" and preset.bundled


# --------------------------------------------------------------------------- match rule and sentences


def test_verdict_uses_the_tolerance_in_points():
    assert verdict(86.6, 86.6) == "match"
    assert verdict(87.6, 86.6) == "match"            # exactly one point off
    assert verdict(85.5, 86.6) == "differ"
    assert verdict(None, 86.6) == "not measured"
    assert verdict(float("nan"), 86.6) == "not measured"
    assert verdict(84.0, 86.6, tolerance=3) == "match"


def _row(method, value, *, enhance=False, baseline=False, label=None):
    return {"method": method, "enhance": enhance, "baseline": baseline, "n": 4,
            "label": label or method + (" + enhancement" if enhance else ""), "values": {"all": value, "miou": None}}


POINTING = {"name": "torchray-pointing-v1", "columns": [{"key": "all", "label": "Pointing (all)", "better": "higher"},
                                                        {"key": "difficult", "label": "Pointing (difficult)", "better": "higher"}]}


def test_compare_sets_published_beside_ours():
    preset = get_preset("torchray-pointing-voc07")
    block = {**POINTING, "rows": [_row("baseline_centre", 69.0, baseline=True, label="Centre map (baseline)"),
                                  _row("gradcam", 80.0, label="Grad-CAM")]}
    report = compare(preset, [block])
    by = {(r["method"], r["column"]): r for r in report["rows"]}
    assert by[("Centre map (baseline)", "all")]["verdict"] == "match"           # 69.0 vs 69.6
    assert by[("Centre map (baseline)", "all")]["difference"] == pytest.approx(-0.6)
    assert by[("Grad-CAM", "all")]["verdict"] == "differ"                       # 80.0 vs 86.6
    assert by[("Grad-CAM", "difficult")]["verdict"] == "not measured"           # the run has no value
    assert by[("rise", "all")]["verdict"] == "not measured" and by[("rise", "all")]["ours"] is None  # not in the run
    assert report["counts"] == {"match": 1, "differ": 1, "not measured": 4}
    assert "within 1 point" in report["rule"]


def test_statements_say_plainly_who_beats_whom():
    preset = get_preset("thesis-claims-bundled")
    segmentation = {"name": "chefer-segmentation-v1", "columns": [{"key": "miou", "label": "mIoU", "better": "higher"}]}
    rows = [_row("msgcam", 70.0, label="MSG-CAM"), _row("msgcam", 75.0, enhance=True, label="MSG-CAM + enhancement"),
            _row("gradcam", 60.0, label="Grad-CAM"), _row("gradcam", 55.0, enhance=True, label="Grad-CAM + enhancement"),
            _row("baseline_centre", 72.0, baseline=True, label="Centre map (baseline)")]
    seg_rows = [{**r, "values": {"miou": v}} for r, v in zip(rows, (50.0, 40.0, 45.0, 47.0, 30.0))]
    out = statements(preset, [{**POINTING, "rows": rows}, {**segmentation, "rows": seg_rows}])
    # pointing: 75 > 72 > 70 → MSG-CAM 3rd of 5; mIoU: 50 is the best of five
    assert out[0] == ("MSG-CAM ranks 3rd of 5 on Pointing (all) (torchray-pointing-v1); ranks 1st of 5 on mIoU "
                      "(chefer-segmentation-v1): so MSG-CAM beats the others on 1 of 2 headline metrics only.")
    # pointing: MSG-CAM improved, Grad-CAM not; mIoU: MSG-CAM not, Grad-CAM improved
    assert out[1] == ("The enhancement improves 1 of 2 methods on Pointing (all) (torchray-pointing-v1); 1 of 2 methods "
                      "on mIoU (chefer-segmentation-v1): so the enhancement does not beat the plain methods on this "
                      "data (2 of 4 improved).")


def test_a_tie_is_no_win():
    preset = get_preset("thesis-claims-bundled")
    rows = [_row("msgcam", 80.0, label="MSG-CAM"), _row("gradcam", 80.0, label="Grad-CAM")]
    [sentence] = statements(preset, [{**POINTING, "rows": rows}])
    assert sentence == ("MSG-CAM ties for 1st of 2 on Pointing (all) (torchray-pointing-v1) with 1 other: "
                        "so MSG-CAM does not beat the others on this data.")


# --------------------------------------------------------------------------- the API


@pytest.mark.django_db
def test_the_list_says_what_each_preset_needs_here(alice_api, lite0, settings, tmp_path):
    settings.DATA_ROOTS = [tmp_path]
    listed = {p["key"]: p for p in alice_api.get("/api/presets/").json()}
    assert list(listed) == preset_keys()
    assert listed["thesis-claims-bundled"]["available"] and not listed["thesis-claims-bundled"]["reasons"]
    voc = listed["torchray-pointing-voc07"]
    assert not voc["available"]
    assert voc["reasons"] == ["needs a VGG16 fine-tuned on the 20 VOC classes (upload it on the Models page)",
                              f"needs data set PASCAL VOC 2007 test (4 952 images) at root VOCdevkit/VOC2007 under {tmp_path}"]
    assert voc["published"][0] == {"method": "baseline_centre", "enhance": False, "protocol": "torchray-pointing-v1",
                                   "column": "all", "value": 69.6, "source": voc["published"][0]["source"]}
    (tmp_path / "VOCdevkit" / "VOC2007").mkdir(parents=True)
    voc = next(p for p in alice_api.get("/api/presets/").json() if p["key"] == "torchray-pointing-voc07")
    assert voc["dataset_found"] and len(voc["reasons"]) == 1          # the model is still missing

    response = alice_api.post("/api/presets/torchray-pointing-voc07/run/", {}, format="json")
    assert response.status_code == 409 and "needs a VGG16 fine-tuned" in response.json()["detail"]
    response = alice_api.post("/api/presets/thesis-insertion-deletion-vgg19/run/", {"images": 2}, format="json")
    assert response.status_code == 409, response.content                 # VGG19's weights, or ILSVRC, are absent
    assert alice_api.post("/api/presets/no-such-preset/run/", {}, format="json").status_code == 404
    bad = alice_api.post("/api/presets/thesis-claims-bundled/run/", {"methods": ["vit_magic"]}, format="json")
    assert bad.status_code == 400 and "vit_magic" in str(bad.json())
    bad = alice_api.post("/api/presets/thesis-claims-bundled/run/", {"images": 0}, format="json")
    assert bad.status_code == 400
    assert not Experiment.objects.exists()                               # nothing half-created


@pytest.mark.django_db
def test_the_bundled_preset_runs_and_states_its_claims(alice_api, lite0):
    body = {"images": 2, "methods": ["gradcam", "msgcam"], "params": {"msgcam": {"scales": 1}}}
    response = alice_api.post("/api/presets/thesis-claims-bundled/run/", body, format="json")
    assert response.status_code == 202, response.content
    created = response.json()
    assert created["preset"] == "thesis-claims-bundled" and created["name"] == "Thesis claims on the bundled localisation set"
    run = Experiment.objects.get(pk=created["id"])
    assert [(m["key"], m["enhance"]) for m in run.methods] == [
        ("gradcam", False), ("gradcam", True), ("msgcam", False), ("msgcam", True),
        ("baseline_random", False), ("baseline_centre", False)]
    assert run.methods[2]["params"]["scales"] == 1 and run.num_images == 2
    assert [p["name"] for p in run.protocols] == ["torchray-pointing-v1", "chefer-segmentation-v1"]
    services.experiment_run_sync(experiment=run)

    results = alice_api.get(created["url"]).json()["results"]
    preset = results["preset"]
    assert preset["rows"] == []                                          # nothing is published for this set
    msg_sentence, enh_sentence = preset["statements"]
    for block, column in ((results["protocols"][0], "all"), (results["protocols"][1], "miou")):
        values = {r["label"]: r["values"][column] for r in block["rows"]}
        mine = values["MSG-CAM"]
        place = 1 + sum(v > mine for v in values.values())
        tied = sum(v == mine for v in values.values()) - 1
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(place, "th")
        label = next(c["label"] for c in block["columns"] if c["key"] == column)
        expected = (f"ties for {place}{suffix} of {len(values)} on {label} ({block['name']}) with {tied} other"
                    if tied else f"ranks {place}{suffix} of {len(values)} on {label} ({block['name']})")
        assert expected in msg_sentence
        improved = sum(values[f"{m} + enhancement"] > values[m] for m in ("Grad-CAM", "MSG-CAM"))
        assert f"{improved} of 2 methods on {label} ({block['name']})" in enh_sentence
    # the rankings cover all seven columns of the two protocols and the six slots
    assert len(results["rankings"]["metrics"]) == 2 + 5 and len(results["rankings"]["aggregate"]) == 6
    text = alice_api.get(f"{created['url']}export/txt/").content.decode()
    assert "Preset thesis-claims-bundled" in text and msg_sentence in text
