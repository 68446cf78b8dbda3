"""The repository speaks of the project only: no absolute paths of a development machine in any
tracked file (the Docker image's own home folder is the one path that belongs to the product)."""

from __future__ import annotations

import re
import subprocess

import pytest

# Roots of machines' file systems; /home/instseg is the Dockerfile's user inside the image.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|Users|mnt|tmp|home(?!/instseg))/")


def _tracked_files(repo_root) -> list[str]:
    try:
        proc = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    return proc.stdout.splitlines()


def test_no_machine_paths_in_tracked_files(repo_root):
    found = []
    for name in _tracked_files(repo_root):
        path = repo_root / name
        if name.endswith((".png", ".jpg", ".sha256")) or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line) and "MACHINE_PATH" not in line:
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not found, "absolute machine paths:\n" + "\n".join(found)


def test_the_check_finds_a_machine_path():
    assert MACHINE_PATH.search("see /work/some_checkout/data/x")
    assert MACHINE_PATH.search("--output /tmp/panels")
    assert not MACHINE_PATH.search("-v $PWD/output:/home/instseg/instseg_d2/output")
    assert not MACHINE_PATH.search("configs/PennFudan/x.yaml and output/tmp/ and ../shared/data")
