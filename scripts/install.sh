#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install modelserve into it.
#   scripts/install.sh [VENV_DIR] [EXTRAS]     e.g. scripts/install.sh .venv dev
# Safe to run again: pip skips what is already installed.
# The install is editable (the venv runs this source tree); EDITABLE=0 builds and installs a
# regular package instead, which no longer needs the tree (the container image: Dockerfile).
set -euo pipefail

venv=${1:-.venv}
extras=${2:-}
editable=${EDITABLE:-1}
if [[ $editable != [01] ]]; then
    echo "error: EDITABLE must be 1 (default) or 0, not '$editable'" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)

python=${PYTHON:-}
if [[ -z $python ]]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null; then python=$candidate; break; fi
    done
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "error: modelserve needs Python 3.11 (found: $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

if [[ ! -x $venv/bin/python ]]; then
    echo "creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip
spec="$root"
[[ -n $extras ]] && spec="${root}[$extras]"
if [[ $editable == 0 ]]; then
    echo "installing modelserve${extras:+[$extras]} into $venv (not editable)"
    "${pip[@]}" install --quiet "$spec"
else
    echo "installing modelserve${extras:+[$extras]} into $venv"
    "${pip[@]}" install --quiet --editable "$spec"
fi
# tensorflow-serving-api declares a dependency on the `tensorflow` distribution, which would
# put a second copy of TensorFlow over tensorflow-cpu (tensorflow/serving#1142); its real
# dependencies (grpcio, protobuf) come with modelserve itself.
"${pip[@]}" install --quiet --no-deps "tensorflow-serving-api>=2.21,<2.22"
