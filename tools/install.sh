#!/usr/bin/env bash
# One-command install: a virtual env under tools/venv with everything the recipe needs, pinned.
# Usage: tools/install.sh [--python python3.11] [--with-browser]
# Order matters (measured on CPU-only machines, see ../shared/DESIGN.md):
#   1. torch 2.13.0 first (CPU wheel), so nothing later pulls a multi-GB CUDA build;
#   2. espnet with --no-deps (its setuptools<74 pin would otherwise make pip replace torch);
#   3. espnet's own dependencies under a constraint that keeps that torch;
#   4. torchaudio without its compiled extensions (ESPnet only needs its pure-Python parts).
set -euo pipefail

python=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python=$2; shift 2 ;;
    -h|--help) sed -n 2,3p "$0"; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; exit 2 ;;
  esac
done

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${tools_dir}/venv
constraints=${tools_dir}/constraints.txt

"$python" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is required"'
[ -x "${venv}/bin/python" ] || "$python" -m venv "$venv"
pip=("${venv}/bin/python" -m pip --disable-pip-version-check)

"${pip[@]}" install -q 'pip<26.3'   # 26.3 rejects ci_sdr's metadata
"${pip[@]}" install -q torch==2.13.0
"${pip[@]}" install -q --no-deps espnet==202511
"${pip[@]}" install -q -c "$constraints" -r "${tools_dir}/requirements.txt"

# torchaudio: PyPI only has builds linked against other torch releases; their compiled
# extensions fail to load beside torch 2.13, so install without deps and drop them.
"${pip[@]}" install -q --no-deps -c "$constraints" torchaudio
site=$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
find "${site}/torchaudio" \( -name '*.so' -o -name '*.so.*' \) -delete
# The project itself, editable, so `python -m espnet_probe.bin.*` works from anywhere.
"${pip[@]}" install -q --no-deps --no-build-isolation -e "${tools_dir}/.."

"${venv}/bin/python" - <<'PY'
import torch, espnet2.tasks.asr, kaldiio, pesq, pystoi, resemblyzer, espeakng_loader  # noqa
print(f"install ok: torch {torch.__version__}, espnet {__import__('espnet').__version__}")
PY
touch "${venv}/.install_done"
