"""edgerobust.evaluate.fingerprint: which CPU ran a measurement, and whether int8 can be fast on it.

The samples are /proc/cpuinfo as these machines print it (serial numbers made up, cores trimmed).
"""

from __future__ import annotations

import platform

import pytest

from edgerobust.evaluate.fingerprint import (
    INTERESTING_FLAGS,
    cpu_identity,
    host_fingerprint,
    hwcap_flags,
    int8_advice,
    parse_cpuinfo,
)

# Raspberry Pi 4 Model B, Raspberry Pi OS 64-bit (Cortex-A72: no dot-product instructions).
# Every Pi reports "Hardware : BCM2835" since kernel 4.9, whatever its SoC.
PI4_CPUINFO = """\
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

processor	: 1
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

Hardware	: BCM2835
Revision	: c03114
Serial		: 10000000a1b2c3d4
Model		: Raspberry Pi 4 Model B Rev 1.4
"""

# The same board on 32-bit Raspberry Pi OS: "model name" names the ISA, not the core.
PI4_32BIT_CPUINFO = """\
processor	: 0
model name	: ARMv7 Processor rev 3 (v7l)
BogoMIPS	: 108.00
Features	: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer	: 0x41
CPU architecture: 7
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

Hardware	: BCM2711
Revision	: c03111
Serial		: 10000000b0d3e6f2
Model		: Raspberry Pi 4 Model B Rev 1.1
"""

# Raspberry Pi 5 (Cortex-A76: has asimddp).
PI5_CPUINFO = """\
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

processor	: 1
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

Revision	: c04170
Serial		: 3c1a2b4d5e6f7a8b
Model		: Raspberry Pi 5 Model B Rev 1.0
"""

# Cascade Lake server (AWS c5): AVX-512 VNNI.
XEON_VNNI_CPUINFO = """\
processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 85
model name	: Intel(R) Xeon(R) Platinum 8275CL CPU @ 3.00GHz
stepping	: 7
microcode	: 0x5003604
cpu MHz		: 3599.998
cache size	: 36608 KB
physical id	: 0
siblings	: 4
core id		: 0
cpu cores	: 2
apicid		: 0
initial apicid	: 0
fpu		: yes
fpu_exception	: yes
cpuid level	: 13
wp		: yes
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch invpcid_single pti fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid mpx avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves ida arat pku ospke avx512_vnni
bugs		: cpu_meltdown spectre_v1 spectre_v2 spec_store_bypass l1tf mds swapgs itlb_multihit mmio_stale_data retbleed gds
bogomips	: 5999.99
clflush size	: 64
cache_alignment	: 64
address sizes	: 46 bits physical, 48 bits virtual
power management:
"""  # noqa: E501

# Coffee Lake desktop: AVX2 but no VNNI ("vnmi" is virtual NMI, not VNNI).
I7_NO_VNNI_CPUINFO = """\
processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 158
model name	: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
stepping	: 10
microcode	: 0xf4
cpu MHz		: 800.060
cache size	: 12288 KB
physical id	: 0
siblings	: 12
core id		: 0
cpu cores	: 6
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb invpcid_single pti ssbd ibrs ibpb stibp tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid mpx rdseed adx smap clflushopt intel_pt xsaveopt xsavec xgetbv1 xsaves dtherm ida arat pln pts hwp hwp_notify hwp_act_window hwp_epp md_clear flush_l1d
bugs		: cpu_meltdown spectre_v1 spectre_v2 spec_store_bypass l1tf mds swapgs taa itlb_multihit srbds mmio_stale_data retbleed gds
bogomips	: 6399.96
"""  # noqa: E501


@pytest.mark.parametrize(
    "text, arch, model, warns",
    [
        (PI4_CPUINFO, "aarch64", "Cortex-A72", True),
        (PI4_32BIT_CPUINFO, "armv7l", "Cortex-A72", True),
        (PI5_CPUINFO, "aarch64", "Cortex-A76", False),
        (XEON_VNNI_CPUINFO, "x86_64", "Xeon(R) Platinum 8275CL", False),
        (I7_NO_VNNI_CPUINFO, "x86_64", "i7-8700", True),
    ],
    ids=["pi4", "pi4-32bit", "pi5", "xeon-vnni", "i7-no-vnni"],
)
def test_recorded_cpus(text, arch, model, warns):
    cpu = parse_cpuinfo(text)
    assert model in cpu["cpu_model"]
    # Flags come from the first processor block, split into words.
    first = next(
        line for line in text.splitlines() if line.lower().startswith(("flags", "features"))
    )
    assert cpu["flags"] == sorted(first.split(":", 1)[1].split())
    advice = int8_advice(arch, cpu["flags"])
    assert (advice is not None) == warns
    if warns:
        assert ("asimddp" if arch.startswith(("aarch64", "arm")) else "VNNI") in advice


def test_raspberry_pi_soc_string_is_not_taken_for_the_cpu():
    # "BCM2835" is what every Pi reports; it must not hide which core the board has.
    assert "BCM2835" not in parse_cpuinfo(PI4_CPUINFO)["cpu_model"]
    assert parse_cpuinfo(PI4_CPUINFO)["cpu_model"] != parse_cpuinfo(PI5_CPUINFO)["cpu_model"]


def test_advice_by_flags():
    assert int8_advice("x86_64", {"avx2", "avx_vnni"}) is None  # Alder Lake: VEX VNNI
    assert int8_advice("x86_64", {"avx2", "amx_int8"}) is None
    assert int8_advice("AMD64", {"avx2"}) is not None
    assert int8_advice("arm64", ["asimd", "asimddp"]) is None
    assert int8_advice("arm64", ["asimd"]) is not None


def test_unknown_arm_part_and_empty_text():
    text = "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xfff\n"
    assert parse_cpuinfo(text)["cpu_model"] == "ARM part 0xfff"
    assert parse_cpuinfo("") == {"cpu_model": "unknown", "flags": []}


def test_host_fingerprint():
    fp = host_fingerprint({"runtime": "onnxruntime"})
    assert fp["arch"] == platform.machine()
    assert fp["cpus"] >= 1 and fp["cpu_model"]
    assert set(fp["isa_flags"]) <= set(INTERESTING_FLAGS)
    assert fp["runtime"] == {"runtime": "onnxruntime"}
    assert fp["int8_warning"] is None or isinstance(fp["int8_warning"], str)
    assert fp["flags_source"] in ("cpuinfo", "AT_HWCAP", None)


# --------------------------------------------------------------------------- AT_HWCAP (emulation)

# AT_HWCAP words. A real Pi's kernel sets the bits of its "Features" line (bit numbers from
# arch/arm64/include/uapi/asm/hwcap.h: fp 0, asimd 1, evtstrm 2, crc32 7, cpuid 11, asimddp 20...).
PI4_HWCAP = 0x887
PI5_HWCAP = 0x119FFF
# What qemu-aarch64 7.2 (Debian bookworm) hands a process with QEMU_CPU=cortex-a72 / cortex-a76
# (read with getauxval inside the emulated root): no evtstrm, and its A72 has the crypto extension.
QEMU_A72_HWCAP = 0x8FB
QEMU_A76_HWCAP = 0x119FFB


def _features(text: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith("Features"))
    return sorted(line.split(":", 1)[1].split())


def test_hwcap_bits_name_the_features_the_kernel_prints():
    assert hwcap_flags(PI4_HWCAP) == _features(PI4_CPUINFO)
    assert hwcap_flags(PI5_HWCAP) == _features(PI5_CPUINFO)
    assert "asimddp" in hwcap_flags(1 << 20) and hwcap_flags(0) == []
    assert hwcap_flags(0, 1 << 13) == ["i8mm"] and "sve2" in hwcap_flags(0, 1 << 1)


@pytest.mark.parametrize(
    "hwcap, warns", [(QEMU_A72_HWCAP, True), (QEMU_A76_HWCAP, False)], ids=["a72", "a76"]
)
def test_emulated_arm_reads_flags_from_auxv_not_the_hosts_cpuinfo(hwcap, warns):
    # Under qemu-user /proc/cpuinfo is the x86 host's: its flags (VNNI here) must not leak into
    # an aarch64 fingerprint, and the dot-product verdict must follow the emulated CPU.
    cpu = cpu_identity("aarch64", XEON_VNNI_CPUINFO, (hwcap, 0))
    assert cpu["flags_source"] == "AT_HWCAP"
    assert "avx512_vnni" not in cpu["flags"] and {"fp", "asimd"} <= set(cpu["flags"])
    assert "Xeon" not in cpu["cpu_model"] and "emulated" in cpu["cpu_model"]
    assert (int8_advice("aarch64", cpu["flags"]) is not None) == warns


def test_real_cpuinfo_wins_over_auxv():
    # On a real Pi /proc/cpuinfo names the core; the auxiliary vector is only the fallback.
    cpu = cpu_identity("aarch64", PI5_CPUINFO, (QEMU_A72_HWCAP, 0))
    assert cpu == {**parse_cpuinfo(PI5_CPUINFO), "flags_source": "cpuinfo"}
    assert cpu_identity("x86_64", XEON_VNNI_CPUINFO, None)["flags_source"] == "cpuinfo"
    # 32-bit ARM has no "asimd" (it says "neon"): its cpuinfo is still its own.
    assert cpu_identity("armv7l", PI4_32BIT_CPUINFO, None)["flags_source"] == "cpuinfo"


def test_no_cpuinfo_at_all():
    cpu = cpu_identity("aarch64", None, (PI4_HWCAP, 0))
    assert cpu["flags"] == _features(PI4_CPUINFO) and cpu["flags_source"] == "AT_HWCAP"
    assert "emulated" not in cpu["cpu_model"]  # nothing says so: only that the model is unknown
    assert cpu_identity("aarch64", None, None)["flags_source"] is None
