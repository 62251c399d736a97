"""The Function app's deployment package, built the way the Functions deployment builds it.

`azd deploy` and `func azure functionapp publish` upload the app folder minus what `.funcignore` names,
in gitignore syntax; the platform then installs `requirements.txt`. `package_files` applies the same
rules (through pathspec's gitignore implementation): an ignored folder is not descended into, so nothing
below it can come back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pathspec

from testing import ROOT


def funcignore(root: Path = ROOT) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text(encoding="utf-8").splitlines())


def package_files(root: Path = ROOT) -> list[str]:
    """Every file the deployment would upload, as sorted POSIX paths relative to `root`."""
    spec = funcignore(root)
    files = []
    for folder, subfolders, names in os.walk(root):
        relative = Path(folder).relative_to(root)
        prefix = "" if relative == Path(".") else f"{relative.as_posix()}/"
        subfolders[:] = sorted(d for d in subfolders if not spec.match_file(f"{prefix}{d}/"))
        files.extend(f"{prefix}{name}" for name in names if not spec.match_file(f"{prefix}{name}"))
    return sorted(files)


def build_package(target: Path, root: Path = ROOT) -> Path:
    """A copy of what the deployment uploads, in `target` (emptied first)."""
    if target.exists():
        shutil.rmtree(target)
    for name in package_files(root):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination)
    return target
