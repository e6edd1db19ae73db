#!/usr/bin/env bash
# Render every kustomization under k8s/ that is meant to be applied and validate the built-in
# objects against the Kubernetes 1.32 schemas (strict: unknown fields are errors), and the KServe
# objects (k8s/kserve) against the KServe SDK's model classes (scripts/validate_kserve.py, just
# as strict).
#
# kubernetes-validate has no schemas for custom resources (ServiceMonitor, ScaledObject,
# ServingRuntime...): it prints a WARN and passes them, exactly as it would a built-in kind with
# a mistyped or removed apiVersion. So custom resources are split off first: KServe's go to
# scripts/validate_kserve.py, the others are left to tests/test_k8s.py; and any WARN about the
# built-in objects is treated as a failure.
#
# Needs kubectl (with its built-in kustomize), kubernetes-validate and a python with PyYAML:
# all three are in the dev venv (`make test` or `make install-dev` makes it), where they are
# looked for first, then on PATH. KUBECTL, KUBERNETES_VALIDATE, PYTHON name others; VENV (default
# .venv) another venv. The KServe check runs in the KServe SDK's own venv (.venv-kserve, made by
# `make install-dev` too, with scripts/kserve-venv.sh); KSERVE_PYTHON names another python.
#   scripts/check-k8s.sh
set -euo pipefail

cd "$(dirname "$0")/.."

venv_bin=${VENV:-.venv}/bin
# tool NAME: NAME in the venv, else on PATH, else NAME itself (reported missing below).
tool() {
    if [[ -x $venv_bin/$1 ]]; then echo "$venv_bin/$1"; else command -v "$1" || echo "$1"; fi
}
KUBECTL=${KUBECTL:-$(tool kubectl)}
KUBERNETES_VALIDATE=${KUBERNETES_VALIDATE:-$(tool kubernetes-validate)}
PYTHON=${PYTHON:-$(tool python)}
KSERVE_PYTHON=${KSERVE_PYTHON:-.venv-kserve/bin/python}
KUBERNETES_VERSION=${KUBERNETES_VERSION:-1.32.0}
DIRS=(k8s/overlays/cpu k8s/overlays/gpu k8s/overlays/keda k8s/examples/remote-backend k8s/kserve)
# API groups of the custom resources used here (not known to kubernetes-validate); KServe's are
# validated by scripts/validate_kserve.py.
CRD_GROUPS=monitoring.coreos.com,keda.sh
KSERVE_GROUP=serving.kserve.io

for exe in "$KUBECTL" "$KUBERNETES_VALIDATE" "$PYTHON"; do
    command -v "$exe" >/dev/null || {
        echo "check-k8s: $exe not found (looked in $venv_bin and on PATH): run \`make test\`" \
            "(or \`make install-dev\`) first, or set KUBECTL, KUBERNETES_VALIDATE, PYTHON" >&2
        exit 2
    }
done
"$KSERVE_PYTHON" -c 'import kserve.models' 2>/dev/null || {
    echo "check-k8s: no KServe SDK at $KSERVE_PYTHON: run \`make install-dev\`" \
        "(scripts/kserve-venv.sh makes .venv-kserve) first, or set KSERVE_PYTHON" >&2
    exit 2
}
"$PYTHON" -c 'import yaml' 2>/dev/null || {
    echo "check-k8s: $PYTHON has no PyYAML: set PYTHON to the dev venv's python" >&2
    exit 2
}
echo "kubectl: $KUBECTL; kubernetes-validate: $KUBERNETES_VALIDATE; KServe SDK: $KSERVE_PYTHON"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# split RENDERED BUILTIN KSERVE CUSTOM: the documents of RENDERED in KSERVE_GROUP go to KSERVE,
# those whose API group is in CRD_GROUPS to CUSTOM, the others to BUILTIN; prints what went where.
split() {
    "$PYTHON" - "$@" "$KSERVE_GROUP" "$CRD_GROUPS" <<'EOF'
import sys

import yaml

rendered, builtin, kserve, custom, kserve_group, groups = sys.argv[1:]
crd_groups = set(groups.split(","))
with open(rendered, encoding="utf-8") as f:
    docs = [doc for doc in yaml.safe_load_all(f) if doc]
parts = {builtin: [], kserve: [], custom: []}
for doc in docs:
    group = doc["apiVersion"].rpartition("/")[0]
    path = kserve if group == kserve_group else custom if group in crd_groups else builtin
    parts[path].append(doc)
for path, part in parts.items():
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(part, f, sort_keys=False)
names = {
    path: ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in part) or "none"
    for path, part in parts.items()
}
print(f"  {len(parts[builtin])} built-in objects; KServe objects: {names[kserve]};"
      f" other custom resources (left to tests/test_k8s.py): {names[custom]}")
EOF
}

failed=0
for dir in "${DIRS[@]}"; do
    name=${dir//\//_}
    echo "== $dir"
    if ! "$KUBECTL" kustomize "$dir" >"$work/$name.yaml"; then
        echo "FAIL $dir: kubectl kustomize failed" >&2
        failed=1
        continue
    fi
    split "$work/$name.yaml" "$work/$name.builtin.yaml" "$work/$name.kserve.yaml" \
        "$work/$name.custom.yaml"
    if [ -s "$work/$name.kserve.yaml" ]; then
        # pipefail: the status is the validator's
        if "$KSERVE_PYTHON" scripts/validate_kserve.py "$work/$name.kserve.yaml" | sed 's/^/  /'; then
            echo "  ok: KServe objects valid against the KServe SDK's schemas (strict)"
        else
            echo "FAIL $dir: a KServe object does not match the KServe SDK's schemas" >&2
            failed=1
        fi
    fi
    [ -s "$work/$name.builtin.yaml" ] || continue
    status=0
    "$KUBERNETES_VALIDATE" --strict --quiet -k "$KUBERNETES_VERSION" \
        "$work/$name.builtin.yaml" >"$work/$name.out" 2>&1 || status=$?
    sed "s|$work/||" "$work/$name.out"
    if [ "$status" -ne 0 ]; then
        echo "FAIL $dir: kubernetes-validate exited $status" >&2
        failed=1
    elif grep -q '^WARN' "$work/$name.out"; then
        echo "FAIL $dir: a built-in object was not validated (unknown kind or apiVersion)" >&2
        failed=1
    else
        echo "  ok: valid against Kubernetes $KUBERNETES_VERSION (strict)"
    fi
done

if [ "$failed" -ne 0 ]; then
    echo "check-k8s: FAILED" >&2
    exit 1
fi
echo "check-k8s: all ${#DIRS[@]} kustomizations render and validate"
