"""`.ci/run` installs each missing tool on its own, and what it would install here installs.

A new CI machine has Node.js from NodeSource (with its own npm) and no Chromium. Asking apt for
Chromium, Node.js and npm together there fails ("nodejs : Conflicts: npm"), and a machine that happens
to have Chromium never runs the apt line at all, so the mistake hides. These tests read the apt
blocks of `.ci/run`, work out what it would ask apt for on this machine, also with each tool hidden
that this machine got from those very Debian packages, and dry-run it (`apt-get install -s`). Node.js
never comes from apt (Debian's npm conflicts with NodeSource's nodejs, Debian's nodejs has no npm):
its block is run for real, on a PATH without node, and must leave a working node and npm.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_tool

from testing import ROOT

CI_RUN = ROOT / ".ci" / "run"
BLOCK = re.compile(r"^if ! command -v (\S+) >/dev/null; then.*?\n(.*?)^fi$", re.MULTILINE | re.DOTALL)
APT_INSTALL = re.compile(r"apt-get install ((?:-\S+ )*)([^>\n]+)")


@dataclass(frozen=True)
class Install:
    tool: str  # the command whose absence triggers the install
    packages: tuple[str, ...]


def script() -> str:
    """.ci/run without its comments."""
    return re.sub(r"(^|\s)#.*$", "", CI_RUN.read_text(), flags=re.MULTILINE)


def installs() -> list[Install]:
    found = []
    for tool, body in BLOCK.findall(script()):
        lines = APT_INSTALL.findall(body)
        assert len(lines) == 1, f"the block for {tool} must have exactly one apt-get install line"
        found.append(Install(tool, tuple(lines[0][1].split())))
    return found


def test_every_apt_line_installs_one_missing_tool() -> None:
    text = script()
    found = installs()
    assert {i.tool for i in found} == {"chromium"}
    assert len(APT_INSTALL.findall(text)) == len(found), "an apt-get install outside an `if ! command -v` block"
    assert text.count("apt-get update") == len(found), "apt-get update once, only when something is installed"
    asked = {p for i in found for p in i.packages}
    assert not asked & {"nodejs", "npm"}, "Node.js from apt: Debian's npm conflicts with NodeSource's nodejs"


def test_the_test_command_is_readmes() -> None:
    assert re.search(r"^make test$", script(), re.MULTILINE)
    assert "make test" in (ROOT / "README.md").read_text()


def _from_debian_archive(tool: str, packages: tuple[str, ...]) -> bool:
    """True when this machine's `tool` comes from one of `packages` at a version the apt sources offer
    (so hiding it simulates a machine without it faithfully; NodeSource's nodejs, say, is not)."""
    path = shutil.which(tool)
    assert path is not None
    owner = subprocess.run(["dpkg", "-S", os.path.realpath(path)],
                           capture_output=True, text=True)
    package = owner.stdout.split(":")[0].strip() if owner.returncode == 0 else ""
    if package not in packages:
        return False
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    offered = subprocess.run(["apt-cache", "madison", package], capture_output=True, text=True)
    return installed.stdout.strip() in {line.split("|")[1].strip() for line in offered.stdout.splitlines()}


def scenarios() -> list[tuple[str, frozenset[str]]]:
    """(name, tools to treat as missing): this machine as it is, and without each tool it has from Debian."""
    found = installs()
    present = [i for i in found if shutil.which(i.tool)]
    hidden = [i.tool for i in present if _from_debian_archive(i.tool, i.packages)]
    return [("as it is", frozenset()), *((f"without {tool}", frozenset({tool})) for tool in hidden)]


def test_what_ci_would_install_here_installs() -> None:
    require_tool("apt-get")
    found = installs()
    checked = 0
    for name, hidden in scenarios():
        for install in found:
            if install.tool in hidden or not shutil.which(install.tool):
                result = subprocess.run(["apt-get", "install", "-s", "-y", *install.packages],
                                        capture_output=True, text=True, timeout=120)
                problems = [line for line in result.stdout.splitlines() + result.stderr.splitlines()
                            if line.startswith(("E:", " ")) and ("Conflicts" in line or line.startswith("E:"))]
                assert result.returncode == 0, (
                    f".ci/run on this machine {name}: `apt-get install {' '.join(install.packages)}` "
                    f"would fail:\n" + "\n".join(problems))
                checked += 1
    if checked == 0:
        pytest.skip("every tool .ci/run installs is present here and none of them came from Debian's archive")


def test_the_plan_follows_what_is_missing(tmp_path: Path) -> None:
    """With a PATH that hides a tool, the block for that tool (and only for missing tools) would run."""
    require_tool("apt-get")
    bash = shutil.which("bash")
    assert bash
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Only the apt blocks run, with apt-get replaced by a recorder: nothing is installed.
    blocks = script().split("if ! command -v node")[0]
    blocks = blocks.replace("apt-get ", "record apt-get ").replace('cd "$(dirname "$0")/.."', "")
    blocks = 'record() { echo "$*" >&2; }\n' + blocks
    result = subprocess.run([bash, "-c", blocks], env={"PATH": str(bin_dir)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stderr.splitlines() if line.startswith("apt-get")]
    assert commands == ["apt-get update -qq", "apt-get install -y -qq chromium"]


NODE_BLOCK = re.compile(r"^if ! command -v node >/dev/null \|\| ! command -v npm >/dev/null; then\n(.*?)^fi$",
                        re.MULTILINE | re.DOTALL)


def test_without_node_ci_gets_a_working_node_and_npm(tmp_path: Path) -> None:
    """The Node.js block, run for real where neither node nor npm is on PATH, leaves both working."""
    bash = shutil.which("bash")
    assert bash
    # The interpreter `python3` runs, not a launcher script (pyenv's shims need more than this PATH).
    python3 = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    bin_dir = tmp_path / "bin"  # python3 and what the block runs, but no node or npm
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(python3)
    for command in ("mkdir", "ln"):
        (bin_dir / command).symlink_to(shutil.which(command))  # type: ignore[arg-type]
    (block,) = NODE_BLOCK.findall(script())
    probe = block + '\nnode --version && npm --version && command -v node\n'
    result = subprocess.run([bash, "-euo", "pipefail", "-c", probe], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PATH": str(bin_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    node_version, npm_version, node_path = result.stdout.split()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", node_version) and re.fullmatch(r"\d+\.\d+\.\d+", npm_version)
    assert node_path == str(tmp_path / ".cache" / "node" / "path" / "node")
