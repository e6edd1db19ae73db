#!/usr/bin/env bash
# Create (or reuse) the virtual environment holding the KServe SDK, whose generated OpenAPI
# model classes are the schemas scripts/check-k8s.sh validates k8s/kserve against
# (scripts/validate_kserve.py), and whose inference clients tests/test_kserve_clients.py runs
# against a server (tests/clients/kserve_clients.py).
#   scripts/kserve-venv.sh [VENV_DIR]     default: .venv-kserve in the repository root
# `make install-dev` (and so `make test`) runs it. When the venv already has the pinned kserve
# it returns at once; otherwise pip installs what is missing.
#
# Why a venv of its own: kserve pins protobuf<7 and a server stack of its own (fastapi, uvicorn,
# grpcio versions...) that would downgrade or clash with modelserve's, and its generated gRPC
# modules register the same `inference.*` protobuf names as tritonclient's, so importing both in
# one process fails. The validator and the client script run here, in processes of their own.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv-kserve}
requirement="kserve==0.21.*"

needs="the KServe manifest check"
# shellcheck source=scripts/python311.sh
source "$root/scripts/python311.sh"

# Fast path: the pinned SDK is already there (pip would take a few seconds to say so).
if [[ -x $venv/bin/python ]] && "$venv/bin/python" - "$requirement" 2>/dev/null <<'EOF'; then
import sys
from importlib.metadata import version

prefix = sys.argv[1].split("==")[1].rstrip("*")
sys.exit(0 if version("kserve").startswith(prefix) else 1)
EOF
    echo "KServe venv ready: $venv"
    exit 0
fi

if [[ ! -x $venv/bin/python ]]; then
    echo "creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
echo "installing $requirement into $venv"
"${pip[@]}" install --quiet --upgrade pip
"${pip[@]}" install --quiet "$requirement"
"$venv/bin/python" - "$venv" <<'EOF'
import sys
from importlib.metadata import version

import kserve.models  # noqa: F401  (what scripts/validate_kserve.py loads)

print(f"KServe venv ready: {sys.argv[1]} (kserve {version('kserve')})")
EOF
