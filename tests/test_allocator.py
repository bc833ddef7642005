"""capslab.allocator: large CPU tensors reuse mapped pages instead of faulting on every step.

Each case runs in a fresh interpreter: the malloc setting is process-wide and lasts until exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")

# A loop that allocates, touches and frees a 64 MiB tensor, as a training step does with its
# large intermediates; report the minor page faults of the last 8 of 24 rounds (the steady
# state: the heap may grow for a few rounds first, because PyTorch's 64-byte-aligned requests
# do not always fit a freed block exactly).
PROBE = r"""
import json, resource, sys, torch
from capslab.allocator import keep_freed_memory
applied = keep_freed_memory()
assert keep_freed_memory() == applied  # once per process
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(16):
    torch.empty(16 * 2**20).fill_(1.0)
before = faults()
for _ in range(8):
    torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB, freed at once
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""

PAGES = 8 * 64 * 2**20 // 4096  # the pages of eight 64 MiB tensors


def _probe(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults():
    kept = _probe(CAPSLAB_MALLOC="")
    system = _probe(CAPSLAB_MALLOC="system")
    assert kept["applied"] is True and system["applied"] is False
    # glibc's own malloc maps every 64 MiB block afresh: a fault per page, each time
    assert system["faults"] > 0.9 * PAGES
    assert kept["faults"] < 0.05 * PAGES


def test_the_training_loop_keeps_freed_memory_from_batch_2_on():
    code = ("import json, torch\n"
            "from capslab.allocator import keep_freed_memory_for, keeps_freed_memory\n"
            "cpu = torch.device('cpu')\n"
            "seen = [keep_freed_memory_for(cpu, 1), keeps_freed_memory(),\n"
            "        keep_freed_memory_for(cpu, 2), keep_freed_memory_for(cpu, 1)]\n"
            "print(json.dumps(seen))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "CAPSLAB_MALLOC": ""}, timeout=120, check=True)
    # batch 1 leaves malloc alone; batch 2 turns it on, for good (process-wide, one-way)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, False, True, True]


RELEASE = r"""
import json, torch
from capslab.allocator import keep_freed_memory, keeps_freed_memory, release_freed_memory

def rss_mib():
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

assert release_freed_memory() is False  # nothing kept yet
keep_freed_memory()
blocks = [torch.ones(16 * 2**20) for _ in range(8)]  # 512 MiB touched, then freed
del blocks
kept = rss_mib()
released = release_freed_memory()
after = rss_mib()
again = keep_freed_memory()  # the next candidate applies the setting again
print(json.dumps({"kept": kept, "after": after, "released": released, "again": again,
                  "keeps": keeps_freed_memory()}))
"""


def test_released_memory_goes_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["released"] and r["again"] and r["keeps"]
    assert r["kept"] - r["after"] > 400  # MiB: the 512 MiB kept in the heap were returned
