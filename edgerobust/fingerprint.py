"""Host fingerprint: which CPU ran a measurement and what its ISA means for int8 speed.

Stored in every evaluation record. int8 is only fast where the CPU has int8 dot-product
instructions: VNNI on x86 (``avx512_vnni`` / ``avx_vnni``), ``asimddp`` on ARM (Cortex-A76 in
the Raspberry Pi 5 has it, the Pi 4's A72 does not). Without them int8 may be no faster than fp32,
and on x86 without VNNI the u8s8 path can saturate.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

INTERESTING_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512vnni",
    "avx_vnni",
    "amx_int8",
    "fma",
    "f16c",
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "sve",
    "sve2",
    "bf16",
    "fphp",
)


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model and flags from the text of ``/proc/cpuinfo`` (x86 or ARM)."""
    model, hardware, flags, implementer, part = None, None, set(), None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "cpu model") and not model:
            model = value
        elif key == "hardware" and not hardware:
            hardware = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "cpu implementer" and implementer is None:
            implementer = value
        elif key == "cpu part" and part is None:
            part = value
    # On ARM the part number names the core; "model name" names only the ISA ("ARMv7 Processor
    # rev 3") and "Hardware" the SoC, which every Raspberry Pi reports as BCM2835 since kernel 4.9.
    arm = implementer == "0x41"
    known = _ARM_PARTS.get((part or "").lower()) if arm else None
    if known:
        model = known
    elif not model:
        model = hardware or (f"ARM part {part}" if arm else None)
    return {"cpu_model": model or "unknown", "flags": sorted(flags)}


_ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72 (Raspberry Pi 4)",
    "0xd0b": "Cortex-A76 (Raspberry Pi 5)",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd49": "Neoverse-N2",
}


def int8_advice(arch: str, flags: set[str] | list[str]) -> str | None:
    """A warning when int8 may not pay off on this CPU, else None."""
    flags = set(flags)
    a = arch.lower()
    if a in ("aarch64", "arm64") or a.startswith("arm"):
        if "asimddp" not in flags:
            return (
                "this ARM CPU lacks dot-product instructions (asimddp): int8 may be no faster "
                "than fp32 here (e.g. Raspberry Pi 4's Cortex-A72)"
            )
        return None
    vnni = {"avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8"}
    if a in ("x86_64", "amd64", "i686", "x86") and not flags & vnni:
        return (
            "this x86 CPU lacks VNNI: int8 runs on the slower u8s8 (VPMADDUBSW) path, which "
            "can saturate and may be little faster than fp32"
        )
    return None


def host_fingerprint(runtime_info: dict[str, Any] | None = None) -> dict[str, Any]:
    arch = platform.machine()
    try:
        cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = {"cpu_model": platform.processor() or "unknown", "flags": []}
    flags = cpu["flags"]
    fp = {
        "arch": arch,
        "cpu_model": cpu["cpu_model"],
        "cpus": os.cpu_count(),
        "isa_flags": [f for f in INTERESTING_FLAGS if f in flags],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "int8_warning": int8_advice(arch, flags),
    }
    if runtime_info:
        fp["runtime"] = runtime_info
    return fp
