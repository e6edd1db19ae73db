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

needs=modelserve
# shellcheck source=scripts/python311.sh
source "$root/scripts/python311.sh"

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
