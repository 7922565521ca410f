"""Host fingerprint: which CPU ran a measurement and what its ISA means for int8 speed.

Stored in every evaluation record. int8 is only fast where the CPU has int8 dot-product
instructions: VNNI on x86 (``avx512_vnni`` / ``avx_vnni``), ``asimddp`` on ARM (Cortex-A76 in
the Raspberry Pi 5 has it, the Pi 4's A72 does not). Without them int8 may be no faster than fp32,
and on x86 without VNNI the u8s8 path can saturate.

On aarch64 the flags normally come from ``/proc/cpuinfo``. Under user-mode emulation
(``qemu-aarch64``, as ``edgerobust device-check`` uses) that file is the emulator host's, an x86
CPU, so the flags are read instead from the ``AT_HWCAP``/``AT_HWCAP2`` words the kernel (or the
emulator, for the CPU it emulates) hands every process: the same bits the kernel prints as
"Features".
"""

from __future__ import annotations

import ctypes
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
            "this x86 CPU lacks VNNI (no 8-bit dot-product instruction): int8 may be little "
            "faster than fp32 here, and onnxruntime's u8s8 kernels (VPMADDUBSW) can saturate"
        )
    return None


# Linux arch/arm64/include/uapi/asm/hwcap.h: bit i of AT_HWCAP / AT_HWCAP2 is the i-th name, and
# the names are those /proc/cpuinfo prints under "Features".
AT_HWCAP, AT_HWCAP2 = 16, 26
HWCAP_NAMES = (
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32",
    "atomics", "fphp", "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc",
    "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm",
    "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg",
)  # fmt: skip
HWCAP2_NAMES = (
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2",
    "frint", "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh",
    "rng", "bti", "mte",
)  # fmt: skip


def hwcap_flags(hwcap: int, hwcap2: int = 0) -> list[str]:
    """The aarch64 feature names set in ``AT_HWCAP`` and ``AT_HWCAP2``, sorted."""
    names = [n for i, n in enumerate(HWCAP_NAMES) if hwcap >> i & 1]
    names += [n for i, n in enumerate(HWCAP2_NAMES) if hwcap2 >> i & 1]
    return sorted(names)


def read_hwcaps() -> tuple[int, int] | None:
    """``(AT_HWCAP, AT_HWCAP2)`` of this process via glibc's ``getauxval``, or None."""
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return int(getauxval(AT_HWCAP)), int(getauxval(AT_HWCAP2))


def _is_arm64(arch: str) -> bool:
    return arch.lower() in ("aarch64", "arm64")


def cpu_identity(arch: str, cpuinfo: str | None, hwcaps: tuple[int, int] | None) -> dict[str, Any]:
    """CPU model, flags and where the flags came from (``cpuinfo`` or ``AT_HWCAP``).

    An aarch64 process whose ``/proc/cpuinfo`` lists no ARM features (no ``asimd``: every aarch64
    CPU has it) is running under user-mode emulation and reads the host's file; its flags then
    come from the auxiliary vector, which describes the emulated CPU.
    """
    cpu = parse_cpuinfo(cpuinfo) if cpuinfo is not None else None
    if cpu is not None and not (_is_arm64(arch) and "asimd" not in cpu["flags"]):
        return {**cpu, "flags_source": "cpuinfo"}
    if _is_arm64(arch) and hwcaps is not None and hwcaps[0]:
        model = "unknown aarch64 CPU"
        if cpu is not None:
            model += " (/proc/cpuinfo describes another machine: emulated?)"
        return {"cpu_model": model, "flags": hwcap_flags(*hwcaps), "flags_source": "AT_HWCAP"}
    if cpu is not None:
        return {**cpu, "flags_source": "cpuinfo"}
    return {"cpu_model": platform.processor() or "unknown", "flags": [], "flags_source": None}


def host_fingerprint(runtime_info: dict[str, Any] | None = None) -> dict[str, Any]:
    arch = platform.machine()
    try:
        cpuinfo: str | None = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = None
    cpu = cpu_identity(arch, cpuinfo, read_hwcaps() if _is_arm64(arch) else None)
    flags = cpu["flags"]
    fp = {
        "arch": arch,
        "cpu_model": cpu["cpu_model"],
        "cpus": os.cpu_count(),
        "isa_flags": [f for f in INTERESTING_FLAGS if f in flags],
        "flags_source": cpu["flags_source"],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "int8_warning": int8_advice(arch, flags),
    }
    if runtime_info:
        fp["runtime"] = runtime_info
    return fp
