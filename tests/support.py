"""Constants and helpers the tests share, importable by name (``from support import ...``).

They live here rather than in ``conftest.py``: several conftest modules exist (tests/attacks has
its own), and ``from conftest import`` would pick whichever pytest loaded first.
"""

from __future__ import annotations

import sys

IMAGE_SIZE = 32
PER_CLASS = 10
SOURCE = "studio"


def one_torch_thread() -> None:
    """Run torch on one thread. The machine's two cores are shared: when another process keeps
    them busy, two OpenMP threads spin against each other and a 5 ms training step of the tiny
    model takes 1.6 s. (Runtimes set the process-wide thread count when they load, so this is
    re-applied before every test.)"""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
