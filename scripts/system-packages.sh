#!/usr/bin/env bash
# Debian packages the tests need: Chromium for the web page's browser tests, promtool (in the
# package prometheus) to check and unit-test deploy/prometheus/alerts.yaml; checks kubectl.
# Installs only what is missing; needs root (or sudo) when something is.
set -euo pipefail

packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v chromedriver >/dev/null || packages+=(chromium-driver)
command -v promtool >/dev/null || packages+=(prometheus)
# kubectl renders the k8s/ overlays (kustomize components need kubectl >= 1.21; Debian's
# kubernetes-client is 1.20), so it is not installed from here: say so clearly instead.
if ! command -v kubectl >/dev/null; then
    echo "error: kubectl (>= 1.21, with kustomize) is needed to render k8s/; install it from" \
        "https://kubernetes.io/docs/tasks/tools/" >&2
    exit 1
fi
if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
echo "installing ${packages[*]}"
"${as_root[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"
