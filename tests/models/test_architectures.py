"""GET /api/architectures/: the suggested list, and ``?q=`` over every classification name
torchvision and timm build (each accepted by an upload), at most 50 answers."""
from __future__ import annotations

import timm
import torchvision.models as tvm

from explain.core import custom


def test_without_a_query_the_suggested_list(alice_api):
    answer = alice_api.get("/api/architectures/").json()
    assert [a["name"] for a in answer] == list(custom.ARCHITECTURES)
    assert all(a["suggested"] and a["family"] in ("cnn", "vit") for a in answer)


def test_search_covers_both_libraries_and_every_hit_is_accepted(alice_api):
    answer = alice_api.get("/api/architectures/", {"q": "ConvNeXt"}).json()
    names = [a["name"] for a in answer]
    everything = set(tvm.list_models(module=tvm)) | set(timm.list_models())
    expected = {n for n in everything if "convnext" in n}
    assert len(names) == min(50, len(expected)) and set(names) <= expected
    assert names[0] == "convnext_tiny" and answer[0]["suggested"]          # the suggested one first
    by_name = {a["name"]: a for a in answer}
    assert by_name["convnext_atto"]["library"] == "timm" and by_name["convnext_atto"]["family"] == ""
    for name in names[:5]:
        assert custom.get_architecture(name).library == by_name[name]["library"]


def test_every_word_must_occur_and_the_answer_is_capped(alice_api):
    answer = alice_api.get("/api/architectures/", {"q": "swin tiny window7"}).json()
    assert {a["name"] for a in answer} == {n for n in set(timm.list_models()) | set(tvm.list_models(module=tvm))
                                           if "swin" in n and "tiny" in n and "window7" in n}
    assert len(alice_api.get("/api/architectures/", {"q": "a"}).json()) == 50
    assert alice_api.get("/api/architectures/", {"q": "no-such-net"}).json() == []
    assert alice_api.get("/api/architectures/", {"q": "x" * 101}).status_code == 400
