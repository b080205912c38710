"""The site (and anything calling ``cpu_memory.apply()``) settles how the process gets CPU memory for tensors.

Each probe runs in a fresh interpreter, because PyTorch reads ``THP_MEM_ALLOC_ENABLE`` once, at
the process's first tensor allocation, and glibc's malloc reads its variables at start-up.
Whether a 64 MB tensor landed on huge pages is read from the kernel's own accounting
(``AnonHugePages`` in ``/proc/self/smaps_rollup``); whether freed memory was kept, from the page
faults a smaller tensor costs after a larger one was freed (``ru_minflt``, huge pages off).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explain import cpu_memory

ROOT = Path(__file__).resolve().parents[2]
SETTING = "THP_MEM_ALLOC_ENABLE"

PROBE = """
import json, os
import {module}
import torch

def huge_kb():
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    return 0

before = huge_kb()
x = torch.ones(16 << 20)  # 64 MB, every page written
print(json.dumps({{"setting": os.environ.get("{setting}"), "huge_kb": huge_kb() - before}}))
"""


def kernel_thp_mode() -> str:
    """The kernel's transparent-huge-page mode: ``always``, ``madvise`` or ``never``."""
    text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    return text[text.index("[") + 1:text.index("]")]


def probe(module: str, setting: str | None, code: str = PROBE, **variables: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != SETTING and k not in cpu_memory.GLIBC_VARIABLES}
    if setting is not None:
        env[SETTING] = setting
    env.update(variables)
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code.format(module=module, setting=SETTING)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["explain.cpu_memory; explain.cpu_memory.apply()", "saliency_site"])
def test_the_site_or_apply_puts_large_tensors_on_huge_pages(module):
    result = probe(module, setting=None)
    assert result["setting"] == "1"
    if kernel_thp_mode() == "never":
        assert result["huge_kb"] == 0       # the kernel gives none to anybody
    else:
        assert result["huge_kb"] >= 32 * 1024, result


def test_an_operator_can_turn_huge_pages_off():
    result = probe("explain.cpu_memory; explain.cpu_memory.apply()", setting="0")
    assert result["setting"] == "0"
    if kernel_thp_mode() != "always":       # "always" gives huge pages whatever PyTorch asks
        assert result["huge_kb"] == 0, result


HEAP_PROBE = """
import json, resource
import {module}
from explain import cpu_memory
import torch

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

x = torch.ones(4 << 20)      # 16 MB, every page written, then freed
del x
before = faults()
y = torch.ones(3 << 20)      # 12 MB: fits in the freed block with room for malloc's alignment
print(json.dumps({{"heap_kept": cpu_memory.apply()[1], "faults": faults() - before}}))
"""


@pytest.mark.parametrize("module", ["explain.cpu_memory; explain.cpu_memory.apply()", "saliency_site"])
def test_freed_tensor_memory_is_reused_without_page_faults(module):
    # huge pages off, so that every fresh 4 kB page counts: 12 MB from the kernel is 3072 faults
    result = probe(module, setting="0", code=HEAP_PROBE)
    assert result["heap_kept"] is True
    assert result["faults"] <= 4, result


def test_glibc_variables_of_the_operator_are_left_alone():
    # glibc's static defaults: every block over 128 kB is mapped afresh and unmapped when freed
    result = probe("explain.cpu_memory; explain.cpu_memory.apply()", setting="0", code=HEAP_PROBE,
                   MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    assert result["heap_kept"] is False
    assert result["faults"] >= 8, result
