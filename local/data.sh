#!/usr/bin/env bash
# Stage 1 of the top-level recipe: synthesize the embedded default corpus with espeak-ng
# (offline, CPU, a few seconds) into Kaldi data dirs <out>/{train,dev,test}, plus a babble
# pool for the noise stage. Re-running with the same settings does nothing.
set -euo pipefail

out=data            # data root
seed=0              # sentences, gains and pauses
nj=2                # parallel worker processes
utts_per_voice=32   # utterances per train/dev/test voice
babble_utts=8       # utterances per babble voice
babble_dir=         # default: <out>/local/noise/speech/espeak (MUSAN speech/ layout)
python=             # default: tools/venv/bin/python if present, else python3

help_message="Usage: $0 [--out DIR] [--seed N] [--nj N] [--utts_per_voice N] [--babble_utts N]
          [--babble_dir DIR] [--python PATH]
Writes DIR/{train,dev,test} (Kaldi data dirs), DIR/local/embedded/{wav/,speakers.tsv}
and the babble wavs (default DIR/local/noise/speech/espeak)."
. "$(dirname "$0")/../scripts/parse_options.sh"

if [ -f ./path.sh ]; then . ./path.sh; fi
if [ -z "$python" ]; then
  if [ -x tools/venv/bin/python ]; then python=tools/venv/bin/python; else python=python3; fi
fi

args=(--out "$out" --seed "$seed" --nj "$nj" --utts_per_voice "$utts_per_voice"
      --babble_utts "$babble_utts")
if [ -n "$babble_dir" ]; then args+=(--babble_dir "$babble_dir"); fi

echo "$0: embedded corpus -> $out (seed $seed, nj $nj)"
"$python" -m espnet_probe.bin.make_embedded_corpus "${args[@]}"
