#!/usr/bin/env bash
# Create (or update) the virtual environment of the Triton peer of benchmarks/serving.py
# (benchmarks/triton_peer.py): TensorFlow and PyTriton's bundled Triton server, nothing of
# modelserve.
#   scripts/triton-venv.sh [VENV_DIR]     default: .venv-triton in the repository root
# Then: python benchmarks/serving.py [--triton-python VENV_DIR/bin/python]
# (the default is .venv-triton/bin/python when it exists). Safe to run again: pip skips what
# is already installed.
#
# Why a venv of its own: nvidia-pytriton 0.7.0 requires numpy<2 (its Triton Python backend stub
# is built against numpy 1, and under numpy 2 it misreads arrays or crashes), while modelserve's
# venv has numpy 2 and protobuf 7 (grpcio-reflection/health need them). Installing PyTriton
# there would downgrade both; TensorFlow 2.21 accepts numpy 1.26, so the peer's venv pins that.
# The peer's stub links libpython: benchmarks/serving.py points LD_LIBRARY_PATH at this venv's
# interpreter's LIBDIR, which must hold a shared libpython (a Python built with --enable-shared).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv-triton}

needs="the Triton peer"
# shellcheck source=scripts/python311.sh
source "$root/scripts/python311.sh"

if [[ ! -x $venv/bin/python ]]; then
    echo "creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if "${pip[@]}" show --quiet modelserve >/dev/null 2>&1; then
    echo "error: $venv has modelserve installed: the Triton peer needs a venv of its own (numpy<2 would break modelserve's)" >&2
    exit 1
fi
echo "installing tensorflow-cpu and nvidia-pytriton (numpy<2) into $venv"
"${pip[@]}" install --quiet --quiet --upgrade pip
"${pip[@]}" install --quiet --quiet "tensorflow-cpu==2.21.0" "nvidia-pytriton==0.7.0" "numpy<2"

# Check what the peer needs, and say what is there.
"$venv/bin/python" - "$venv" <<'EOF'
import importlib.metadata as metadata
import os
import sys
import sysconfig

import numpy
import pytriton.triton  # noqa: F401  (the server the peer starts)

if int(numpy.__version__.split(".")[0]) >= 2:
    sys.exit(f"error: numpy {numpy.__version__} in {sys.argv[1]}: nvidia-pytriton needs numpy<2")
libdir = sysconfig.get_config_var("LIBDIR")
library = sysconfig.get_config_var("LDLIBRARY")
if not os.path.exists(os.path.join(libdir, library)):
    sys.exit(f"error: no {library} in {libdir}: Triton's stub needs a shared libpython")
versions = ", ".join(
    f"{name} {metadata.version(name)}" for name in ("tensorflow-cpu", "nvidia-pytriton", "numpy")
)
print(f"Triton venv ready: {sys.argv[1]} (Python {sys.version.split()[0]}; {versions})")
EOF
