#!/usr/bin/env bash
# Install modelserve the way the container image has it: a regular (non-editable) install into
# VENV_DIR, so the venv works once copied away from the source tree, then for the GPU variant
# the CUDA build of TensorFlow in place of the CPU-only one.
#   scripts/docker/install-app.sh VENV_DIR [cpu|gpu]
# Run by the Dockerfile's builder stage and by scripts/check-docker.sh (cpu), so CI runs the
# same step the image build does.
set -euo pipefail

usage="usage: $0 VENV_DIR [cpu|gpu]"
venv=${1:?$usage}
variant=${2:-cpu}
case $variant in
    cpu | gpu) ;;
    *) echo "error: unknown variant '$variant'; $usage" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/../.." && pwd)
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

# The dependency list and the --no-deps install of tensorflow-serving-api live there.
EDITABLE=0 "$root/scripts/install.sh" "$venv"

python=$venv/bin/python
pip=("$python" -m pip --disable-pip-version-check)
if [[ $variant == gpu ]]; then
    # The same TensorFlow release, as the `tensorflow` distribution with its `and-cuda` extra:
    # the CUDA and cuDNN libraries come as pip wheels (nvidia-*) that TensorFlow finds in
    # site-packages, so no CUDA base image is needed. Both distributions install the same
    # `tensorflow` package directory, hence the uninstall first. Every other package is held
    # at the version already installed (and tested with the CPU build).
    version=$("$python" -c 'from importlib.metadata import version; print(version("tensorflow-cpu"))')
    constraints=$(mktemp)
    trap 'rm -f "$constraints"' EXIT
    "${pip[@]}" freeze --exclude tensorflow-cpu --exclude modelserve >"$constraints"
    echo "swapping tensorflow-cpu $version for tensorflow[and-cuda] $version"
    "${pip[@]}" uninstall --quiet --yes tensorflow-cpu
    "${pip[@]}" install --quiet --constraint "$constraints" "tensorflow[and-cuda]==$version"
    # modelserve's metadata still names tensorflow-cpu, so `pip check` would report it missing;
    # the import check below is what matters.
fi

# The installed package, not a source tree, and a TensorFlow build matching the variant.
(cd / && "$python" - "$venv" "$variant") <<'PY'
import sys
from pathlib import Path

venv, variant = Path(sys.argv[1]).resolve(), sys.argv[2]

import service
import tensorflow as tf

where = Path(service.__file__).resolve()
if venv not in where.parents or "site-packages" not in where.parts:
    sys.exit(f"error: `service` imports from {where}, not from {venv}'s site-packages")
cuda = tf.test.is_built_with_cuda()
if cuda != (variant == "gpu"):
    sys.exit(f"error: variant {variant} but TensorFlow {tf.__version__} built with CUDA: {cuda}")
print(f"modelserve {service.__version__} in {where.parent}; TensorFlow {tf.__version__}, CUDA: {cuda}")
PY
