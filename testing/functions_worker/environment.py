"""The Python 3.13 environment the real worker runs in: the Function app's requirements.txt, as deployed.

Built once under `.cache/functions-worker-venv` and rebuilt when what it is made of changes (the app's
requirements.txt, the protocol file, this module, the interpreter): those are hashed into its name.
On top of requirements.txt it gets grpcio-tools, only to compile `function_rpc.proto` into
`<venv>/functions_rpc/function_rpc_pb2.py` (at the grpcio release requirements.txt resolved to, so
nothing the app imports changes).

Python 3.13 is `FUNCTIONS_WORKER_PYTHON` when set (only that one), else `python3.13` on PATH, then pyenv's
and the usual install folders; each candidate must actually run and say 3.13.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from testing import ROOT

PYTHON_VERSION = (3, 13)
HERE = Path(__file__).resolve().parent
PROTO = HERE / "function_rpc.proto"
CACHE = ROOT / ".cache"
GENERATED = "functions_rpc"  # folder inside the venv with the compiled protocol


class WorkerPythonMissing(RuntimeError):
    """No Python 3.13 on this machine: the real worker cannot run."""


def _candidates() -> list[str]:
    if os.environ.get("FUNCTIONS_WORKER_PYTHON"):
        return [os.environ["FUNCTIONS_WORKER_PYTHON"]]  # this one or none
    found = [shutil.which("python3.13") or ""]
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13")), reverse=True)
    found += ["/usr/local/bin/python3.13", "/usr/bin/python3.13", "/opt/homebrew/bin/python3.13"]
    return [c for c in dict.fromkeys(found) if c]


def find_python() -> str:
    """The path of a working Python 3.13 interpreter (a pyenv shim that refuses to run does not count)."""
    want = ".".join(map(str, PYTHON_VERSION))
    for candidate in _candidates():
        try:
            said = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if said.returncode == 0 and said.stdout.strip() == want:
            return str(Path(candidate).resolve())
    raise WorkerPythonMissing(
        f"Python {want} is needed to run the Azure Functions Python worker (azure-functions-runtime) and was "
        f"not found (tried {', '.join(_candidates())}); install it (e.g. `pyenv install {want}`) or set "
        "FUNCTIONS_WORKER_PYTHON")


def _key(python: str) -> str:
    digest = hashlib.sha256()
    for part in (python.encode(), (ROOT / "requirements.txt").read_bytes(), PROTO.read_bytes(),
                 Path(__file__).read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _run(command: list[str], log: Path) -> None:
    with open(log, "a") as output:
        output.write(f"$ {' '.join(command)}\n")
        output.flush()
        done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"building the worker environment failed ({done.returncode}): {' '.join(command)}\n{tail}")


def _build(python: str, target: Path) -> None:
    log = target.with_suffix(".log")
    log.write_text("")
    _run([python, "-m", "venv", str(target)], log)
    pip = [str(target / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "install", "--quiet", "-r", str(ROOT / "requirements.txt")], log)
    versions = subprocess.run([str(target / "bin" / "python"), "-c",
                               "import grpc, google.protobuf as p; print(grpc.__version__, p.__version__)"],
                              capture_output=True, text=True, check=True).stdout.split()
    grpc_version, protobuf_version = versions
    release = ".".join(grpc_version.split(".")[:2])
    # The protocol compiler of the same grpcio release, without moving grpcio or protobuf.
    _run([*pip, "install", "--quiet", f"grpcio-tools=={release}.*", f"grpcio=={grpc_version}",
          f"protobuf=={protobuf_version}"], log)
    out = target / GENERATED
    out.mkdir()
    _run([str(target / "bin" / "python"), "-c",
          "import sys, pathlib, grpc_tools; from grpc_tools import protoc; "
          "include = pathlib.Path(grpc_tools.__file__).parent / '_proto'; "
          "sys.exit(protoc.main(['protoc', f'-I{sys.argv[1]}', f'-I{include}', f'--python_out={sys.argv[2]}', "
          "sys.argv[3]]))", str(PROTO.parent), str(out), str(PROTO)], log)


def worker_venv(python: str | None = None) -> Path:
    """The venv folder (built now if missing or stale). Safe to call from several processes at once."""
    python = python or find_python()
    CACHE.mkdir(exist_ok=True)
    target = CACHE / f"functions-worker-venv-{_key(python)}"
    ready = target / ".ready"
    if ready.exists():
        return target
    with open(CACHE / "functions-worker-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building the same venv
        if ready.exists():
            return target
        building = target.with_name(target.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        _build(python, building)
        # Moved into place whole, so a half-built venv is never used. (Its bin/ scripts keep the old path in
        # their shebang lines; everything here runs `bin/python -m ...`, which finds the venv by its location.)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(building, target)
        ready.write_text(python + "\n")
        for stale in CACHE.glob("functions-worker-venv-*"):  # earlier builds and their logs
            if stale.name in (target.name, f"{target.name}.log"):
                continue
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    return target



def main() -> int:
    """`python -m testing.functions_worker`: build the venv now (`make test` does, before pytest,
    so the first test under the worker does not pay for it). Without Python 3.13 it says so and succeeds:
    the tests decide whether that skips or fails."""
    try:
        python = find_python()
    except WorkerPythonMissing as missing:
        print(f"worker venv: not built: {missing}")
        return 0
    print(f"worker venv: {worker_venv(python)} (Python {python})")
    return 0
