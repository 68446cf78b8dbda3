#!/usr/bin/env python3
"""Install detectron2 into the running Python environment, choosing one of three routes.

Routes (``--route``, default ``auto``):

* ``keep``   detectron2 already imports: leave it alone.
* ``source`` the official source build: ``pip install --no-build-isolation`` of a pinned commit of
             facebookresearch/detectron2 from git. It compiles ``detectron2._C`` (and the CUDA ops
             when ``FORCE_CUDA=1``). Chosen by ``auto`` when GitHub is reachable.
* ``pypi``   the PyPI wheel ``sal-detectron2==0.7.2`` (upstream detectron2 main at commit a59f0563
             plus one line), checked against a pinned sha256 *before* anything from it is used,
             then repacked as a pure-Python wheel without its CPython-3.10 ``_C`` library and
             installed with ``pip --no-deps`` (the project declares the dependencies it needs).
             It imports as ``detectron2``, is listed by ``pip list`` as ``sal-detectron2`` and is
             removed by ``pip uninstall sal-detectron2``.

This script uses only the standard library (plus ``pip`` and ``wheel`` through subprocesses), so
it runs before the project itself is installed. Every failure ends with one clear message and
exit status 2; nothing half-installed is left behind.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# Upstream detectron2 main, the commit whose Python files the PyPI wheel below carries.
DETECTRON2_GIT_URL = "https://github.com/facebookresearch/detectron2.git"
DETECTRON2_COMMIT = "a59f05630a8f205756064244bf5beb8661f96180"

PYPI_WHEEL_NAME = "sal-detectron2"
PYPI_WHEEL_VERSION = "0.7.2"
PYPI_WHEEL_FILE = "sal_detectron2-0.7.2-cp310-none-any.whl"
# Recorded in ../shared/notes/detectron2-install.md when the wheel was checked on 2026-11-25.
PYPI_WHEEL_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
# The wheel's metadata caps these below versions the code was seen to run with (numpy 2.4,
# omegaconf 2.3 is inside the cap). We drop only the numpy cap so `pip check` stays truthful.
RELAXED_REQUIREMENTS = {"Requires-Dist: numpy<2": "Requires-Dist: numpy"}

ROUTES = ("auto", "keep", "source", "pypi")


class InstallError(RuntimeError):
    """A failure with a message meant for the user, not a traceback."""


def log(msg: str) -> None:
    print(f"[install_detectron2] {msg}", flush=True)


def detectron2_importable(python: str) -> bool:
    probe = subprocess.run(
        [python, "-c", "import detectron2"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


def github_reachable(timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection(("github.com", 443), timeout=timeout):
            return True
    except OSError:
        return False


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_pip(python: str, args: list[str], what: str) -> None:
    cmd = [python, "-m", "pip", *args]
    log("running: " + " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise InstallError(
            f"{what} failed (pip exited with {proc.returncode}); see pip's output above."
        )


def install_from_source(python: str, commit: str) -> None:
    if shutil.which("git") is None:
        raise InstallError("the source build needs `git` on PATH (apt-get install git).")
    if not github_reachable():
        raise InstallError(
            "the source build needs github.com, which cannot be reached from this machine. "
            "Use --route pypi (the default when offline from GitHub) or install detectron2 by hand."
        )
    if os.environ.get("FORCE_CUDA") == "1":
        log(
            f"FORCE_CUDA=1: building CUDA ops for TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(torch default)')}"
        )
    run_pip(
        python,
        ["install", "--no-build-isolation", f"git+{DETECTRON2_GIT_URL}@{commit}"],
        f"building detectron2 from source at commit {commit}",
    )


def download_pypi_wheel(python: str, dest: Path) -> Path:
    # --python-version 3.10: the only published file is tagged cp310; we repack it below.
    proc = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.10",
            "--dest",
            str(dest),
            f"{PYPI_WHEEL_NAME}=={PYPI_WHEEL_VERSION}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wheel = dest / PYPI_WHEEL_FILE
    if proc.returncode != 0 or not wheel.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise InstallError(
            f"could not download {PYPI_WHEEL_NAME}=={PYPI_WHEEL_VERSION} from the package index "
            f"(no network, or the index does not serve it). pip said:\n{tail}\n"
            "Ways out: connect to PyPI, pass a downloaded copy with --wheel PATH, "
            "or build detectron2 from source with --route source."
        )
    return wheel


def verify_sha256(wheel: Path, expected: str) -> None:
    actual = sha256_of(wheel)
    if actual != expected:
        raise InstallError(
            f"sha256 mismatch for {wheel}: expected {expected}, got {actual}. "
            "The file is not the wheel this project was checked with; nothing was installed."
        )
    log(f"sha256 verified: {wheel.name} {actual}")


def repack_pure_python(python: str, wheel: Path, workdir: Path) -> Path:
    """Drop the CPython-3.10 `_C` extension and retag the wheel as py3-none-any."""
    unpack_dir = workdir / "unpacked"
    subprocess.run(
        [python, "-m", "wheel", "unpack", "--dest", str(unpack_dir), str(wheel)],
        check=True,
        capture_output=True,
    )
    (root,) = unpack_dir.iterdir()
    for so in root.glob("detectron2/_C*.so"):
        log(f"removing {so.name} (built for CPython 3.10 and torch 2.3; cannot load here)")
        so.unlink()
    (dist_info,) = root.glob("*.dist-info")
    wheel_meta = dist_info / "WHEEL"
    lines = [
        "Root-Is-Purelib: true"
        if ln.startswith("Root-Is-Purelib:")
        else "Tag: py3-none-any"
        if ln.startswith("Tag:")
        else ln
        for ln in wheel_meta.read_text().splitlines()
    ]
    wheel_meta.write_text("\n".join(lines) + "\n")
    metadata = dist_info / "METADATA"
    text = metadata.read_text()
    for old, new in RELAXED_REQUIREMENTS.items():
        text = text.replace(old + "\n", new + "\n")
    metadata.write_text(text)
    out_dir = workdir / "repacked"
    out_dir.mkdir()
    subprocess.run(
        [python, "-m", "wheel", "pack", "--dest-dir", str(out_dir), str(root)],
        check=True,
        capture_output=True,
    )
    (repacked,) = out_dir.glob("*.whl")
    return repacked


def install_from_pypi(python: str, wheel: Path | None, expected_sha256: str) -> None:
    with tempfile.TemporaryDirectory(prefix="instseg_d2_detectron2_") as tmp:
        tmpdir = Path(tmp)
        if wheel is None:
            wheel = download_pypi_wheel(python, tmpdir)
        elif not wheel.is_file():
            raise InstallError(f"--wheel {wheel}: no such file")
        verify_sha256(wheel, expected_sha256)
        try:
            repacked = repack_pure_python(python, wheel, tmpdir)
        except subprocess.CalledProcessError as exc:
            raise InstallError(
                f"repacking {wheel.name} failed: {exc.stderr.decode(errors='replace').strip()} "
                "(is the `wheel` package installed? pip install wheel)"
            ) from None
        run_pip(
            python,
            ["install", "--no-deps", "--force-reinstall", str(repacked)],
            f"installing the repacked {repacked.name}",
        )


def choose_route(requested: str, python: str) -> str:
    if requested != "auto":
        return requested
    if detectron2_importable(python):
        return "keep"
    return "source" if github_reachable() else "pypi"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--route",
        choices=ROUTES,
        default=os.environ.get("INSTSEG_D2_DETECTRON2_ROUTE", "auto"),
        help="how to get detectron2 (env INSTSEG_D2_DETECTRON2_ROUTE)",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter whose environment receives detectron2"
    )
    parser.add_argument("--commit", default=DETECTRON2_COMMIT, help="git commit for --route source")
    parser.add_argument("--wheel", type=Path, help="local copy of the PyPI wheel for --route pypi")
    parser.add_argument("--sha256", default=PYPI_WHEEL_SHA256, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    try:
        route = choose_route(args.route, args.python)
        log(f"route: {route}" + (" (chosen automatically)" if args.route == "auto" else ""))
        if route == "keep":
            if not detectron2_importable(args.python):
                raise InstallError(
                    "--route keep, but `import detectron2` fails in this environment."
                )
            log("detectron2 already imports; left as it is.")
        elif route == "source":
            install_from_source(args.python, args.commit)
        else:
            install_from_pypi(args.python, args.wheel, args.sha256)
        if not detectron2_importable(args.python):
            raise InstallError("detectron2 was installed but `import detectron2` still fails.")
    except InstallError as exc:
        print(f"[install_detectron2] ERROR: {exc}", file=sys.stderr)
        return 2
    log(f"done: detectron2 imports (route {route}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
