# Environment for the recipe (ESPnet convention): the project's virtual env and its tools.
PROBE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PROBE_ROOT
if [ ! -x "${PROBE_ROOT}/tools/venv/bin/python" ]; then
  echo "path.sh: ${PROBE_ROOT}/tools/venv is missing: run tools/install.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
export PATH="${PROBE_ROOT}/tools/venv/bin:${PATH}"
export PYTHONPATH="${PROBE_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
export LC_ALL=C  # Kaldi's sort order for data dirs
# ESPnet's text frontends try to fetch NLTK data at import; this machine class is offline.
export NLTK_DATA="${PROBE_ROOT}/tools/nltk_data"
# Let each of the --nj jobs use one core instead of every job grabbing all of them.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
