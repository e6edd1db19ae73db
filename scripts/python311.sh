# shellcheck shell=bash
# Sourced by install.sh and triton-venv.sh (set `needs` first, e.g. needs=modelserve): sets
# `python` to a Python 3.11 interpreter, $PYTHON or else python3.11 or python3 on PATH, or exits
# 1 saying what to set.
python=${PYTHON:-}
if [[ -z $python ]]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null; then
            python=$candidate
            break
        fi
    done
fi
if [[ -z $python ]] || ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    found="no python3.11 or python3 on PATH"
    if [[ -n $python ]] && command -v "$python" >/dev/null; then
        found=$("$python" --version 2>&1)
    elif [[ -n $python ]]; then
        found="$python: not found"
    fi
    echo "error: ${needs:?} needs Python 3.11 (found: $found); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
