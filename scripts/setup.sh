#!/usr/bin/env bash
# One-command set-up: a project virtual environment with pinned torch/torchvision, the project
# (with its declared dependencies and dev tools) and detectron2 (route chosen and reported by
# scripts/install_detectron2.py). Re-running when everything is in place takes seconds.
#
# Environment knobs:
#   VENV=.venv                     where the environment goes
#   PYTHON=python3.11              interpreter that creates it (falls back to python3)
#   TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"   or "keep" to use a torch already visible
#                                  (the Dockerfile does this with --system-site-packages)
#   VENV_ARGS=""                   extra `python -m venv` flags (e.g. --system-site-packages)
#   INSTSEG_D2_DETECTRON2_ROUTE=auto|keep|source|pypi
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
VENV_ARGS=${VENV_ARGS:-}

say() { echo "[setup] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $PYTHON"
    # shellcheck disable=SC2086
    "$PYTHON" -m venv $VENV_ARGS "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# The stamp records what the last complete set-up installed; when nothing changed we only
# re-check that the imports work, so a re-run takes seconds.
stamp_file="$VENV/.instseg_d2_setup"
stamp=$(cat pyproject.toml scripts/setup.sh scripts/install_detectron2.py | sha256sum | cut -c1-16)
stamp="$stamp $TORCH_SPEC ${INSTSEG_D2_DETECTRON2_ROUTE:-auto}"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
    && "$PY" -c "import torch, torchvision, detectron2, instseg_d2" 2>/dev/null; then
    say "already set up ($VENV); nothing to do"
    "$PY" -m instseg_d2.env --short
    exit 0
fi

if [ "$TORCH_SPEC" = "keep" ]; then
    "$PY" -c "import torch, torchvision" || { say "TORCH_SPEC=keep but torch does not import"; exit 2; }
else
    say "installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    "${PIP[@]}" install -q $TORCH_SPEC
fi
say "installing the project and its dependencies"
"${PIP[@]}" install -q wheel -e ".[dev]"
say "installing detectron2"
"$PY" scripts/install_detectron2.py --python "$PY"
"$PY" -c "import detectron2, instseg_d2"
echo "$stamp" > "$stamp_file"
"$PY" -m instseg_d2.env --short
say "done. Activate with: source $VENV/bin/activate"
