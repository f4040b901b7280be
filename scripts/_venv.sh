# Sourced by scripts/demo and scripts/test: create or reuse .venv and install the project.
# Needs only Python 3.11+ on PATH (as python3, or set PYTHON).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# pip >= 25.1 understands [dependency-groups] (--group).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
