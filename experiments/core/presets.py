"""Presets: named runs that reproduce a published table, and the comparison of a run with it.

A :class:`Preset` names a model, a data-set kind (with where the set usually lies under a
data root), method slots and protocols, plus the published numbers (:class:`Published`) the
run should reproduce, each with the table it comes from. Numbers that could not be found in
a primary source are left out and the preset's ``note`` says so: no number here is guessed.

Match rule (:func:`verdict`): a published value ``p`` and ours ``o``, both on the table's
×100 scale, *match* when ``|o − p| ≤ tolerance`` (default 1.0 point), else they *differ*;
"not measured" when the run has no value. One point is about the sampling error of a
pointing-game or AUC score over a few thousand images; a run on a subset should be expected
to differ more.

Example::

    from experiments.core.presets import get_preset, compare
    preset = get_preset("thesis-insertion-deletion-vgg19")
    report = compare(preset, results["protocols"])    # published vs ours, match / differ
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = [
    "DEFAULT_TOLERANCE", "DatasetNeed", "MethodSlot", "Preset", "Published", "compare", "get_preset", "preset_keys",
    "register_preset", "rule_text", "statements", "verdict",
]

#: Points (on the ×100 scale) within which ours matches a published number.
DEFAULT_TOLERANCE = 1.0


@dataclass(frozen=True)
class MethodSlot:
    """One method of a preset: a method key (or a baseline key), plain or enhanced, with parameters."""

    key: str
    enhance: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_request(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "enhance": self.enhance}
        if self.params:
            out["params"] = dict(self.params)
        return out


@dataclass(frozen=True)
class DatasetNeed:
    """The data set a preset needs: its kind, its path fields relative to a data root, its options.

    ``paths`` maps each path field of the kind to where the set usually lies under one of the
    server's data roots (``{"root": "VOCdevkit/VOC2007"}``); a generated kind has none.
    """

    kind: str
    label: str
    paths: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    """One published number: method (key, enhanced or not), protocol and column of our table, value, source."""

    method: str
    protocol: str
    column: str
    value: float
    source: str
    enhance: bool = False


@dataclass(frozen=True)
class Preset:
    """A named run that reproduces a published table (see the module docstring).

    ``model``: a built-in model's zoo name, or ``None`` when the run needs an uploaded model
    (``model_need`` says which: e.g. a 20-class VOC classifier). ``headline``: the
    ``(protocol, column)`` pairs the statements speak of; ``claims``: the method keys whose
    standing the page states, and whether to state what the enhancement does.
    """

    key: str
    title: str
    summary: str
    dataset: DatasetNeed
    methods: tuple[MethodSlot, ...]
    protocols: tuple[str, ...]
    model: str | None = None
    model_need: str = ""
    num_classes: int | None = None
    published: tuple[Published, ...] = ()
    headline: tuple[tuple[str, str], ...] = ()
    claims: tuple[str, ...] = ()
    claim_enhancement: bool = False
    note: str = ""
    tolerance: float = DEFAULT_TOLERANCE
    #: Runs on a fresh install (a bundled data set and a packaged model).
    bundled: bool = False

    def method_keys(self) -> list[str]:
        """The distinct method keys, in order."""
        return list(dict.fromkeys(slot.key for slot in self.methods))

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "title": self.title, "summary": self.summary, "model": self.model,
            "model_need": self.model_need, "num_classes": self.num_classes,
            "dataset": {"kind": self.dataset.kind, "label": self.dataset.label, "paths": dict(self.dataset.paths),
                        "options": dict(self.dataset.options)},
            "methods": [slot.to_request() for slot in self.methods], "method_keys": self.method_keys(),
            "protocols": list(self.protocols), "note": self.note, "tolerance": self.tolerance,
            "rule": rule_text(self.tolerance), "bundled": self.bundled,
            "published": [{"method": p.method, "enhance": p.enhance, "protocol": p.protocol, "column": p.column,
                           "value": p.value, "source": p.source} for p in self.published],
        }


def rule_text(tolerance: float) -> str:
    return (f"Match: ours within {tolerance:g} point{'s' if tolerance != 1 else ''} of the published value "
            "(both ×100); differ otherwise. Subsets and other weights differ more than a full run.")


def verdict(ours: float | None, published: float, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """``"match"`` if ``|ours − published| ≤ tolerance``, ``"differ"`` otherwise, ``"not measured"`` without a value."""
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return "not measured"
    return "match" if abs(float(ours) - float(published)) <= tolerance + 1e-9 else "differ"


# --------------------------------------------------------------------------- comparison

def _valid(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _find_row(block: Mapping[str, Any], method: str, enhance: bool) -> Mapping[str, Any] | None:
    for row in block["rows"]:
        if row["method"] == method and bool(row.get("enhance")) == enhance:
            return row
    return None


def compare(preset: Preset, blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The published numbers beside the run's, with a verdict each, and the preset's statements.

    ``blocks`` is the aggregate's ``protocols`` list (``{name, columns, rows: [{method,
    enhance, label, values}]}``). A published number whose method or protocol the run lacks
    is listed as "not measured".
    """
    by_name = {b["name"]: b for b in blocks}
    rows = []
    for pub in preset.published:
        block = by_name.get(pub.protocol)
        row = _find_row(block, pub.method, pub.enhance) if block else None
        labels = {c["key"]: c["label"] for c in block["columns"]} if block else {}
        ours = row["values"].get(pub.column) if row else None
        ours = float(ours) if _valid(ours) else None
        label = row["label"] if row else pub.method + (" + enhancement" if pub.enhance else "")
        rows.append({"method": label, "protocol": pub.protocol, "column": pub.column,
                     "column_label": labels.get(pub.column, pub.column), "published": pub.value, "ours": ours,
                     "difference": None if ours is None else round(ours - pub.value, 4),
                     "verdict": verdict(ours, pub.value, preset.tolerance), "source": pub.source,
                     "n": row["n"] if row else 0})
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in ("match", "differ", "not measured")}
    return {"key": preset.key, "title": preset.title, "note": preset.note, "tolerance": preset.tolerance,
            "rule": rule_text(preset.tolerance), "rows": rows, "counts": counts,
            "statements": statements(preset, blocks)}


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _standing(block: Mapping[str, Any], column: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """``(rows strictly better, rows with the same value including this one, rows with a value)``."""
    mine = row["values"].get(column["key"])
    if not _valid(mine):
        return None
    values = [r["values"].get(column["key"]) for r in block["rows"]]
    values = [float(v) for v in values if _valid(v)]
    sign = 1.0 if column["better"] == "higher" else -1.0
    return sum(1 for v in values if sign * (v - mine) > 0), sum(1 for v in values if v == mine), len(values)


def statements(preset: Preset, blocks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Plain sentences from the results about the preset's claims, e.g. "MSG-CAM ranks 2nd of 12 on …".

    For each claimed method (plain): its place on every headline column (1 + the slots strictly
    better; "ties for" when others have the same value) and whether it beats every other slot
    there (a tie is no win). With ``claim_enhancement``: on every headline column, how many
    methods the enhancement improves (enhanced strictly better than the same method plain).
    """
    by_name = {b["name"]: b for b in blocks}
    heads = []
    for protocol, key in preset.headline:
        block = by_name.get(protocol)
        column = next((c for c in block["columns"] if c["key"] == key), None) if block else None
        if column is not None:
            heads.append((block, column))
    out = []
    for method in preset.claims:
        wins, standings, label = 0, [], method
        for block, column in heads:
            row = _find_row(block, method, False)
            if row is None:
                continue
            label = row["label"]
            standing = _standing(block, column, row)
            if standing is None:
                standings.append(f"no value on {column['label']} ({block['name']})")
                continue
            better, equal, of = standing
            wins += better == 0 and equal == 1
            where = f"of {of} on {column['label']} ({block['name']})"
            if equal > 1:
                others = equal - 1
                standings.append(f"ties for {_ordinal(better + 1)} {where} with {others} other{'s' if others > 1 else ''}")
            else:
                standings.append(f"ranks {_ordinal(better + 1)} {where}")
        if not standings:
            continue
        measured = sum(1 for s in standings if not s.startswith("no value"))
        if measured and wins == measured:
            verdict_text = f"so {label} beats every other method and baseline on this data"
        elif wins:
            verdict_text = f"so {label} beats the others on {wins} of {measured} headline metrics only"
        else:
            verdict_text = f"so {label} does not beat the others on this data"
        out.append(f"{label} {'; '.join(standings)}: {verdict_text}.")
    if preset.claim_enhancement:
        improved_total = pairs_total = 0
        parts = []
        for block, column in heads:
            improved = pairs = 0
            sign = 1.0 if column["better"] == "higher" else -1.0
            for row in block["rows"]:
                if row.get("enhance") or row.get("baseline"):
                    continue
                enhanced = _find_row(block, row["method"], True)
                plain_v, enh_v = row["values"].get(column["key"]), enhanced["values"].get(column["key"]) if enhanced else None
                if enhanced is None or not _valid(plain_v) or not _valid(enh_v):
                    continue
                pairs += 1
                improved += sign * (enh_v - plain_v) > 0
            if pairs:
                parts.append(f"{improved} of {pairs} methods on {column['label']} ({block['name']})")
                improved_total += improved
                pairs_total += pairs
        if pairs_total:
            if improved_total == pairs_total:
                tail = "so the enhancement beats the plain methods everywhere on this data"
            elif improved_total * 2 > pairs_total:
                tail = f"so the enhancement helps in most cases ({improved_total} of {pairs_total}) but not all"
            else:
                tail = f"so the enhancement does not beat the plain methods on this data ({improved_total} of {pairs_total} improved)"
            out.append(f"The enhancement improves {'; '.join(parts)}: {tail}.")
    return out


# --------------------------------------------------------------------------- catalogue

_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Add ``preset`` to the catalogue; a key already taken raises ``ValueError`` (keys are stored with runs)."""
    if preset.key in _PRESETS:
        raise ValueError(f"preset {preset.key!r} is already registered; add a new key such as {preset.key}-v2")
    for pub in preset.published:
        if pub.protocol not in preset.protocols:
            raise ValueError(f"preset {preset.key!r}: published number for {pub.method} names protocol "
                             f"{pub.protocol!r}, which the preset does not run")
        if not any(s.key == pub.method and s.enhance == pub.enhance for s in preset.methods):
            raise ValueError(f"preset {preset.key!r}: published number for {pub.method} "
                             f"{'(enhanced) ' if pub.enhance else ''}has no method slot")
    _PRESETS[preset.key] = preset
    return preset


def get_preset(key: str) -> Preset:
    try:
        return _PRESETS[key]
    except KeyError:
        raise ValueError(f"unknown preset {key!r}; choose one of {preset_keys()}") from None


def preset_keys() -> list[str]:
    """Registered keys in catalogue order."""
    return list(_PRESETS)


def _slots(*keys: str, enhanced: bool = False, params: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[MethodSlot, ...]:
    params = params or {}
    out = []
    for key in keys:
        out.append(MethodSlot(key, False, params.get(key, {})))
        if enhanced and not key.startswith("baseline_"):
            out.append(MethodSlot(key, True, params.get(key, {})))
    return tuple(out)


def _table(protocol: str, source: str, columns: Sequence[str], rows: Mapping[str, Sequence[float]],
           enhance: bool = False) -> tuple[Published, ...]:
    return tuple(Published(method, protocol, column, value, source, enhance)
                 for method, values in rows.items() for column, value in zip(columns, values))


ILSVRC = DatasetNeed("ilsvrc2012-val", "ILSVRC 2012 validation (50 000 images)", {"images": "ILSVRC2012/val"})
VOC07 = DatasetNeed("voc2007", "PASCAL VOC 2007 test (4 952 images)", {"root": "VOCdevkit/VOC2007"}, {"image_set": "test"})
COCO14 = DatasetNeed("coco2014-val", "COCO 2014 validation",
                     {"images": "coco/val2014", "annotations": "coco/annotations/instances_val2014.json"})
IMAGENET_SEG = DatasetNeed("imagenet-segmentation", "ImageNet-Segmentation (gtsegs_ijcv.mat, 4 276 images)",
                           {"path": "imagenet-segmentation/gtsegs_ijcv.mat"})
LOCALISATION = DatasetNeed("sample-localisation", "Bundled localisation set (generated, 12 images)",
                           options={"seed": 0, "num_images": 12})

THESIS_ID = "Thesis, insertion/deletion results on ILSVRC 2012 val with VGG19 (insertion / deletion / overall)"
THESIS_POINT = "Thesis, pointing-game mean accuracy with VGG19 ({data})"
THESIS_SEG = "Thesis, ImageNet-Segmentation mIoU without / with the enhancement ({model})"
THESIS_PERT = "Thesis, perturbation overall (negative − positive AUC, predicted class) without / with the enhancement ({model})"
TORCHRAY = "TorchRay benchmark table (docs/pointing.csv of facebookresearch/TorchRay), {data}, VGG16, all / difficult"
NOT_FOUND = ("Not found in the specification or in the sources searched, so left out rather than guessed: {what}.")

register_preset(Preset(
    key="thesis-insertion-deletion-vgg19",
    title="Thesis: insertion/deletion on ILSVRC 2012 val with VGG19",
    summary="Six CAM methods under the thesis's insertion/deletion protocol on the whole validation set.",
    model="vgg19", dataset=ILSVRC,
    methods=_slots("gradcam", "gradcampp", "xgradcam", "scorecam", "cameras", "msgcam"),
    protocols=("thesis-v1",),
    published=_table("thesis-v1", THESIS_ID, ("insertion", "deletion", "overall"), {
        "gradcam": (53.19, 11.52, 41.67), "gradcampp": (51.57, 12.16, 39.41), "xgradcam": (52.57, 11.53, 41.04),
        "scorecam": (55.10, 11.43, 43.67), "cameras": (44.10, 8.01, 36.09), "msgcam": (54.52, 9.78, 44.74)}),
    headline=(("thesis-v1", "overall"),), claims=("msgcam",),
    note="The thesis's table number is not given in the specification; the source names the result instead.",
))

_POINT_METHODS = ("gradcam", "gradcampp", "xgradcam", "scorecam", "groupcam", "cameras", "msgcam")
register_preset(Preset(
    key="thesis-pointing-voc07",
    title="Thesis: pointing game on PASCAL VOC 2007 test",
    summary="Seven CAM methods, the thesis's top-100-points pointing game, on a VGG19 fine-tuned on VOC's 20 classes.",
    model=None, model_need="a VGG19 fine-tuned on the 20 VOC classes (upload it on the Models page)", num_classes=20,
    dataset=VOC07, methods=_slots(*_POINT_METHODS), protocols=("thesis-pointing-top100-v1",),
    published=_table("thesis-pointing-top100-v1", THESIS_POINT.format(data="VOC07"), ("all",), {
        "gradcam": (83.04,), "gradcampp": (83.21,), "xgradcam": (86.70,), "scorecam": (73.92,), "groupcam": (82.41,),
        "cameras": (87.16,), "msgcam": (87.24,)}),
    headline=(("thesis-pointing-top100-v1", "all"),), claims=("msgcam",),
    note="The thesis reports mean accuracy over all pairs only; no 'difficult' subset number is published.",
))
register_preset(Preset(
    key="thesis-pointing-coco14",
    title="Thesis: pointing game on COCO 2014 val",
    summary="Seven CAM methods, the thesis's top-100-points pointing game, on a VGG19 fine-tuned on COCO's 80 classes.",
    model=None, model_need="a VGG19 fine-tuned on the 80 COCO classes (upload it on the Models page)", num_classes=80,
    dataset=COCO14, methods=_slots(*_POINT_METHODS), protocols=("thesis-pointing-top100-v1",),
    published=_table("thesis-pointing-top100-v1", THESIS_POINT.format(data="COCO14"), ("all",), {
        "gradcam": (55.50,), "gradcampp": (52.91,), "xgradcam": (55.93,), "scorecam": (51.20,), "groupcam": (54.14,),
        "cameras": (55.40,), "msgcam": (56.62,)}),
    headline=(("thesis-pointing-top100-v1", "all"),), claims=("msgcam",),
))

_VIT_SEG = ("gradcam", "lrp", "partial_lrp", "transformer_attribution")
register_preset(Preset(
    key="thesis-segmentation-vit",
    title="Thesis: ImageNet-Segmentation with ViT-B/16, plain and enhanced",
    summary="Four ViT explainers with and without the sliding-window enhancement under Chefer et al.'s segmentation protocol.",
    model="vit_b_16", dataset=IMAGENET_SEG, methods=_slots(*_VIT_SEG, enhanced=True),
    protocols=("chefer-segmentation-v1",),
    published=_table("chefer-segmentation-v1", THESIS_SEG.format(model="ViT-B/16"), ("miou",), {
        "gradcam": (40.82,), "lrp": (32.89,), "partial_lrp": (57.94,), "transformer_attribution": (62.01,)})
    + _table("chefer-segmentation-v1", THESIS_SEG.format(model="ViT-B/16"), ("miou",), {
        "gradcam": (47.81,), "lrp": (50.37,), "partial_lrp": (62.85,), "transformer_attribution": (64.56,)}, enhance=True),
    headline=(("chefer-segmentation-v1", "miou"),), claim_enhancement=True,
    note="The thesis's ViT weights may differ from the timm weights this site loads (ViT-B/16 augreg2).",
))
register_preset(Preset(
    key="thesis-segmentation-vgg19",
    title="Thesis: ImageNet-Segmentation with VGG19, plain and enhanced",
    summary="Grad-CAM and Grad-CAM++ with and without the enhancement under Chefer et al.'s segmentation protocol.",
    model="vgg19", dataset=IMAGENET_SEG, methods=_slots("gradcam", "gradcampp", enhanced=True),
    protocols=("chefer-segmentation-v1",),
    published=_table("chefer-segmentation-v1", THESIS_SEG.format(model="VGG19"), ("miou",),
                     {"gradcam": (48.99,), "gradcampp": (58.89,)})
    + _table("chefer-segmentation-v1", THESIS_SEG.format(model="VGG19"), ("miou",),
             {"gradcam": (53.82,), "gradcampp": (60.58,)}, enhance=True),
    headline=(("chefer-segmentation-v1", "miou"),), claim_enhancement=True,
))
register_preset(Preset(
    key="thesis-perturbation-vit",
    title="Thesis: positive/negative perturbation with ViT-B/16, plain and enhanced",
    summary="Transformer Attribution with and without the enhancement under Chefer et al.'s perturbation protocol.",
    model="vit_b_16", dataset=ILSVRC, methods=_slots("transformer_attribution", enhanced=True),
    protocols=("chefer-perturbation-v1",),
    published=(Published("transformer_attribution", "chefer-perturbation-v1", "predicted.overall", 37.11,
                         THESIS_PERT.format(model="ViT-B/16")),
               Published("transformer_attribution", "chefer-perturbation-v1", "predicted.overall", 40.64,
                         THESIS_PERT.format(model="ViT-B/16"), enhance=True)),
    headline=(("chefer-perturbation-v1", "predicted.overall"),), claim_enhancement=True,
    note="Only Transformer Attribution's perturbation numbers are in the specification; the other ViT methods "
         "are left out of this preset rather than run without a number to compare.",
))
register_preset(Preset(
    key="thesis-perturbation-vgg19",
    title="Thesis: positive/negative perturbation with VGG19, plain and enhanced",
    summary="Grad-CAM with and without the enhancement under Chefer et al.'s perturbation protocol.",
    model="vgg19", dataset=ILSVRC, methods=_slots("gradcam", enhanced=True), protocols=("chefer-perturbation-v1",),
    published=(Published("gradcam", "chefer-perturbation-v1", "predicted.overall", 25.93, THESIS_PERT.format(model="VGG19")),
               Published("gradcam", "chefer-perturbation-v1", "predicted.overall", 28.87, THESIS_PERT.format(model="VGG19"),
                         enhance=True)),
    headline=(("chefer-perturbation-v1", "predicted.overall"),), claim_enhancement=True,
))
register_preset(Preset(
    key="rise-insertion-deletion",
    title="RISE (Petsiuk et al. 2018): insertion/deletion protocol",
    summary="Grad-CAM and RISE under RISE's insertion/deletion protocol on VGG16.",
    model="vgg16", dataset=ILSVRC, methods=_slots("gradcam", "rise", params={"rise": {"masks": 4000, "cells": 7, "p": 0.5}}),
    protocols=("rise-v1",), headline=(("rise-v1", "insertion"), ("rise-v1", "deletion")), claims=("rise",),
    note=NOT_FOUND.format(what="the paper's insertion/deletion table (Grad-CAM, sliding window, LIME, RISE on "
                               "ResNet50 and VGG16)") + " The run still shows our numbers under RISE's protocol.",
))
register_preset(Preset(
    key="groupcam-insertion-deletion",
    title="Group-CAM (Zhang et al. 2021): insertion/deletion protocol",
    summary="Grad-CAM, Grad-CAM++, Score-CAM, RISE and Group-CAM under Group-CAM's insertion/deletion protocol on VGG19.",
    model="vgg19", dataset=ILSVRC,
    methods=_slots("gradcam", "gradcampp", "scorecam", "rise", "groupcam",
                   params={"rise": {"masks": 8000, "cells": 7, "p": 0.1}}),
    protocols=("groupcam-v1",), headline=(("groupcam-v1", "insertion"), ("groupcam-v1", "deletion")),
    claims=("groupcam",),
    note=NOT_FOUND.format(what="the paper's insertion/deletion table on VGG19")
    + " RISE runs with 8000 masks of 7×7 cells kept with p = 0.1, as in Group-CAM's code.",
))
_TORCHRAY_RISE = {"rise": {"masks": 8000, "cells": 7, "p": 0.5}}
register_preset(Preset(
    key="torchray-pointing-voc07",
    title="TorchRay: pointing game on PASCAL VOC 2007 test (VGG16)",
    summary="The centre baseline, RISE and Grad-CAM under TorchRay's pointing game, on a VGG16 fine-tuned on VOC.",
    model=None, model_need="a VGG16 fine-tuned on the 20 VOC classes (upload it on the Models page)", num_classes=20,
    dataset=VOC07, methods=_slots("baseline_centre", "rise", "gradcam", params=_TORCHRAY_RISE),
    protocols=("torchray-pointing-v1",),
    published=_table("torchray-pointing-v1", TORCHRAY.format(data="VOC07 test"), ("all", "difficult"), {
        "baseline_centre": (69.6, 42.4), "rise": (86.9, 75.1), "gradcam": (86.6, 74.0)}),
    headline=(("torchray-pointing-v1", "all"),), claims=("gradcam",),
    note="TorchRay's models are its own fine-tuned VGG16; an uploaded model trained otherwise will differ.",
))
register_preset(Preset(
    key="torchray-pointing-coco14",
    title="TorchRay: pointing game on COCO 2014 val (VGG16)",
    summary="The centre baseline, RISE and Grad-CAM under TorchRay's pointing game, on a VGG16 fine-tuned on COCO.",
    model=None, model_need="a VGG16 fine-tuned on the 80 COCO classes (upload it on the Models page)", num_classes=80,
    dataset=COCO14, methods=_slots("baseline_centre", "rise", "gradcam", params=_TORCHRAY_RISE),
    protocols=("torchray-pointing-v1",),
    published=_table("torchray-pointing-v1", TORCHRAY.format(data="COCO14 val"), ("all", "difficult"), {
        "baseline_centre": (27.8, 19.5), "rise": (50.8, 45.3), "gradcam": (54.2, 49.0)}),
    headline=(("torchray-pointing-v1", "all"),), claims=("gradcam",),
))
register_preset(Preset(
    key="chefer-perturbation-vit",
    title="Chefer et al. 2021: positive/negative perturbation with ViT-B/16",
    summary="Transformer Attribution, Attention Rollout and partial LRP under the perturbation protocol, predicted and target class.",
    model="vit_b_16", dataset=ILSVRC, methods=_slots("transformer_attribution", "attention_rollout", "partial_lrp"),
    protocols=("chefer-perturbation-v1",),
    published=(Published("transformer_attribution", "chefer-perturbation-v1", "predicted.negative", 54.16,
                         "Chefer et al. 2021, perturbation results, ViT-B/16, Transformer Attribution, predicted class"),
               Published("transformer_attribution", "chefer-perturbation-v1", "predicted.positive", 17.03,
                         "Chefer et al. 2021, perturbation results, ViT-B/16, Transformer Attribution, predicted class")),
    headline=(("chefer-perturbation-v1", "predicted.overall"),), claims=("transformer_attribution",),
    note="Chefer et al. used the original JAX ViT-B/16 weights; this site loads timm's. "
         + NOT_FOUND.format(what="the other methods' and the target-class numbers"),
))
register_preset(Preset(
    key="chefer-segmentation-vit",
    title="Chefer et al. 2021: ImageNet-Segmentation with ViT-B/16",
    summary="Transformer Attribution, Attention Rollout, partial LRP and LRP under the segmentation protocol.",
    model="vit_b_16", dataset=IMAGENET_SEG,
    methods=_slots("transformer_attribution", "attention_rollout", "partial_lrp", "lrp"),
    protocols=("chefer-segmentation-v1",), headline=(("chefer-segmentation-v1", "miou"),),
    claims=("transformer_attribution",),
    note=NOT_FOUND.format(what="the paper's segmentation table (pixel accuracy, mAP, mIoU)")
    + " The thesis's Transformer Attribution mIoU is in the 'Thesis: ImageNet-Segmentation with ViT-B/16' preset.",
))

#: Every CNN method the site has, in the thesis's order, then the extras.
BUNDLED_METHODS = ("gradcam", "gradcampp", "xgradcam", "scorecam", "groupcam", "cameras", "msgcam", "layercam", "rise",
                   "lrp")
register_preset(Preset(
    key="thesis-claims-bundled",
    title="Thesis claims on the bundled localisation set",
    summary="Every CNN method on EfficientNet-Lite0, plain and enhanced, pointing game and segmentation, next to "
            "the random and centre baselines. Runs on a fresh install.",
    model="efficientnet_lite0", dataset=LOCALISATION,
    methods=_slots(*BUNDLED_METHODS, enhanced=True, params={"rise": {"masks": 500}})
    + _slots("baseline_random", "baseline_centre"),
    protocols=("torchray-pointing-v1", "chefer-segmentation-v1"),
    headline=(("torchray-pointing-v1", "all"), ("chefer-segmentation-v1", "miou")),
    claims=("msgcam",), claim_enhancement=True, bundled=True,
    note="Nothing is published for this generated set: the page states from the numbers whether MSG-CAM and the "
         "enhancement beat the others here. RISE runs with 500 masks to keep the run short on a CPU.",
))
