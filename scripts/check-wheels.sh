#!/usr/bin/env bash
# Checks built wheels without installing them: the file name's tags agree with the WHEEL record, the wheel is
# abi3 (cp310-abi3), and the native module's ELF machine (or Mach-O/PE kind) matches the platform tag; for
# musllinux, the module must not need glibc. Usage: scripts/check-wheels.sh dist/*.whl
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 WHEEL..." >&2; exit 2; }
python3 - "$@" <<'PY'
import re, struct, sys, zipfile

ELF_MACHINE = {0x3E: "x86_64", 0xB7: "aarch64", 0x03: "i686", 0x28: "armv7l", 0x15: "ppc64le", 0x16: "s390x"}


def elf_facts(data: bytes) -> tuple[str, list[str]]:
    """(machine, DT_NEEDED names) of a 64-bit little-endian ELF shared object."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF")
    (machine,) = struct.unpack_from("<H", data, 18)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    needed = []
    for s in sections:
        if s[1] == 6:  # SHT_DYNAMIC
            strtab = sections[s[6]]
            off, size = s[4], s[5]
            for i in range(0, size, 16):
                tag, val = struct.unpack_from("<qQ", data, off + i)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    start = strtab[4] + val
                    needed.append(data[start : data.index(b"\0", start)].decode())
    return ELF_MACHINE.get(machine, hex(machine)), needed


bad = 0
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1]
    problems = []
    py, abi, plat = name[:-4].split("-")[-3:]
    with zipfile.ZipFile(path) as z:
        wheel_meta = next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL"))
        tags = {l.split(":", 1)[1].strip() for l in z.read(wheel_meta).decode().splitlines() if l.startswith("Tag:")}
        want = {f"{a}-{b}-{c}" for a in py.split(".") for b in abi.split(".") for c in plat.split(".")}
        if tags != want:
            problems.append(f"WHEEL tags {sorted(tags)} differ from the file name's {sorted(want)}")
        if (py, abi) != ("cp310", "abi3"):
            problems.append(f"expected cp310-abi3, got {py}-{abi}")
        natives = [n for n in z.namelist() if "/_native" in n and n.endswith((".so", ".pyd"))]
        if len(natives) != 1:
            problems.append(f"expected one native module, found {natives}")
        detail = ""
        for n in natives:
            data = z.read(n)
            if n.endswith(".pyd"):
                detail = "PE module"
                if data[:2] != b"MZ":
                    problems.append(f"{n}: not a PE file")
                continue
            if data[:4] in (b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):
                detail = "Mach-O module"
                continue
            machine, needed = elf_facts(data)
            detail = f"ELF {machine}, needs {', '.join(needed) or 'nothing'}"
            for p in plat.split("."):
                tag_arch = re.sub(r"^(manylinux_\d+_\d+|musllinux_\d+_\d+|manylinux\d+|linux)_", "", p)
                if tag_arch != machine:
                    problems.append(f"platform tag {p} but the module is ELF {machine}")
            if "musllinux" in plat and any(x.startswith("libc.so.6") for x in needed):
                problems.append("a musllinux wheel whose module needs glibc (libc.so.6)")
    status = "ok  " if not problems else "FAIL"
    print(f"{status} {name}: {detail}")
    for p in problems:
        print(f"     {p}")
    bad += bool(problems)
sys.exit(1 if bad else 0)
PY
