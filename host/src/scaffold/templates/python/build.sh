#!/bin/sh
# Builds {{name}}.wasm from app.py: `./build.sh`. On first use it makes a venv in .venv
# with componentize-py (pinned with hashes in requirements.txt; CPython comes inside it).
# It needs Python 3 with venv (Debian: apt-get install python3 python3-venv); PYTHON
# names another interpreter.
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/componentize-py ] || ! cmp -s requirements.txt .venv/installed-requirements.txt; then
    rm -rf .venv
    "$PYTHON" -m venv .venv
    .venv/bin/pip install --quiet --require-hashes -r requirements.txt
    cp requirements.txt .venv/installed-requirements.txt
fi
# app.py and the kit wasmroom.py, on the world `room` of wit/consumer.wit.
PYTHONDONTWRITEBYTECODE=1 .venv/bin/componentize-py -d wit -w room componentize app -p . -o {{name}}.wasm >/dev/null
echo "built {{name}}.wasm"
