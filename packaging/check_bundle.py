"""Check a built bundle holds no torch: no file or folder of a FORBIDDEN package, and no
FORBIDDEN module in the executable's embedded PYZ archive.

    python packaging/check_bundle.py build/packaging/linux/dist/orchard

Prints what it found and exits 1 if anything is there.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

#: Packages the GUI process must never hold: torch, what pulls it in, and its CUDA libraries.
FORBIDDEN = (
    "torch",
    "torchvision",
    "torchaudio",
    "functorch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "tokenizers",
    "triton",
    "nvidia",
    "xformers",
    "bitsandbytes",
    "sympy",
    "networkx",
)
#: Shared libraries that only a torch install brings.
FORBIDDEN_LIBS = re.compile(r"^lib(torch|c10|cudnn|cublas|cufft|curand|cusparse|nccl|nvrtc)")


def forbidden_files(bundle: Path) -> list[str]:
    bad = []
    for path in bundle.rglob("*"):
        rel = path.relative_to(bundle)
        for part in rel.parts:
            stem = part.split(".")[0].split("-")[0].lower()
            if stem in FORBIDDEN or FORBIDDEN_LIBS.match(part):
                bad.append(str(rel))
                break
    return bad


def forbidden_modules(executable: Path) -> list[str]:
    from PyInstaller.archive.readers import pkg_archive_contents

    names = pkg_archive_contents(str(executable), recursive=True)
    return sorted(n for n in names if n.split(".")[0].lower() in FORBIDDEN)


def main(argv: list[str]) -> int:
    bundle = Path(argv[0])
    exe = next(p for p in (bundle / "orchard", bundle / "orchard.exe") if p.exists())
    files = forbidden_files(bundle)
    modules = forbidden_modules(exe)
    count = sum(1 for _ in bundle.rglob("*"))
    if files or modules:
        print(f"FAIL: {bundle} holds torch or its kin:")
        for item in (files + modules)[:50]:
            print(f"  {item}")
        return 1
    print(f"ok: no torch in {bundle} ({count} files and folders, PYZ checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
