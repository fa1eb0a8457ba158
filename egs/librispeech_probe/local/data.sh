#!/usr/bin/env bash
# LibriSpeech -> Kaldi data dirs for the probe recipe. Run from egs/librispeech_probe.
#
# Full corpus (the paper's setup): three subsets -> train / valid / test sets, downloaded into
# --download_dir unless --librispeech_dir points at an existing copy:
#   local/data.sh --subsets "train-clean-100 dev-clean test-clean"
#   local/data.sh --librispeech_dir /corpora/LibriSpeech
# One subset split by speaker (test speakers never seen in training), e.g. the small shared copy:
#   local/data.sh --librispeech_dir ../../../shared/data/LibriSpeech --subsets train-clean-5 \
#       --split_by_speaker 14,2,4
# A split spec without names ("14,2,4" or "0.7,0.1,0.2") fills in the train, valid and test set
# names in that order; "name=count,..." names the output dirs itself.
set -euo pipefail

librispeech_dir=""      # existing copy (folder with the subset folders); empty: download
download_dir=downloads  # where downloads go when --librispeech_dir is empty
url_base=""             # override the corpus site (mirror, or a local server in tests)
subsets="train-clean-100 dev-clean test-clean"  # train, valid, test (or one: see split)
train_set=train         # output data dir names under --out
valid_set=dev           # "
test_set=test           # "
split_by_speaker=""     # spec for a single subset, e.g. "14,2,4" or "train=0.7,dev=0.1,test=0.2"
max_utts_per_spk=""     # keep at most N utterances per speaker (quick runs)
utt_choice=random       # which ones: random (seeded) or shortest (quicker runs)
seed=0                  # seed for the speaker split and utterance limit
out=data                # parent folder of the data dirs
nj=1                    # accepted for run.sh's interface; preparation is I/O-light and serial

help_message="$(sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//')
$(grep -E '^[a-z_]+=.*#' "$0" | sed 's/^/  --/')"
. "$(dirname "$0")/../../../scripts/parse_options.sh"

# The project's python (tools/venv) via the repo's path.sh, found from this script's location.
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# shellcheck source=/dev/null
. "${repo_root}/path.sh"

read -r -a subset_list <<< "$subsets"
args=(--subsets "${subset_list[@]}" --out "$out" --seed "$seed")
if [ -n "$split_by_speaker" ]; then
  if [ ${#subset_list[@]} -ne 1 ]; then
    echo "$0: --split_by_speaker needs exactly one subset, got: $subsets" >&2; exit 2
  fi
  args+=(--split_by_speaker "$split_by_speaker" --names "$train_set" "$valid_set" "$test_set")
elif [ ${#subset_list[@]} -eq 3 ]; then
  args+=(--names "$train_set" "$valid_set" "$test_set")
else
  echo "$0: give three subsets (train, valid, test) or one subset with --split_by_speaker;" \
       "got ${#subset_list[@]}: $subsets" >&2
  exit 2
fi
[ -z "$max_utts_per_spk" ] || args+=(--max_utts_per_spk "$max_utts_per_spk" --utt_choice "$utt_choice")

if [ -n "$librispeech_dir" ]; then
  args+=(--librispeech_dir "$librispeech_dir")
else
  echo "$0: no --librispeech_dir; downloading ${subsets} into ${download_dir}" >&2
  args+=(--download_dir "$download_dir")
  [ -z "$url_base" ] || args+=(--url_base "$url_base")
fi

python -m espnet_probe.bin.prepare_librispeech "${args[@]}"
for name in "$train_set" "$valid_set" "$test_set"; do
  [ -s "${out}/${name}/wav.scp" ] || { echo "$0: ${out}/${name} was not made" >&2; exit 1; }
done
echo "$0: done: ${out}/{${train_set},${valid_set},${test_set}}"
