"""Audio for every layer of probe decoding directories: mel.scp -> wav per layer, in one process.

  python -m espnet_probe.bin.vocode_layers --data data --max_utts 32 \\
      --decode_dirs exp/probe_x/decode_test exp/probe_x/decode_test_snr10

For each DECODE_DIR and each layer of its decode summary (probe/summary.py), in encoder order,
writes <layer>/wav/<utt>.wav and <layer>/wav.scp from <layer>/mel.scp; lengths equal the
summary's set's data/<set>/wav.scp. --max_utts picks the same utterances for every layer and
condition (round-robin over speakers, ids sorted) and lists them in DECODE_DIR/vocoded_utts;
re-running skips wavs already written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from espnet_probe.audio.features import FbankConfig
from espnet_probe.audio.io import AudioError
from espnet_probe.audio.vocoder import VocodeError, VocoderConfig, torch_threads, vocode_scp
from espnet_probe.probe.summary import read_summary
from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.kaldi_dir import DataDirError, read_table


def balanced_subset(utt2spk: dict[str, str], max_utts: int) -> list[str]:
    """Up to max_utts utterance ids, taken in turn from each speaker (ids sorted)."""
    by_spk: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        by_spk.setdefault(utt2spk[utt], []).append(utt)
    queues = [by_spk[s] for s in sorted(by_spk)]
    chosen: list[str] = []
    depth = 0
    while len(chosen) < max_utts and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < max_utts:
                chosen.append(q[depth])
        depth += 1
    return sorted(chosen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--decode_dirs", type=Path, nargs="+", required=True)
    p.add_argument("--data", type=Path, default=Path("data"), help="holds <set>/wav.scp, utt2spk")
    p.add_argument("--max_utts", type=int, default=0, help="per set; 0 = all")
    p.add_argument("--fbank_config", default="conf/fbank.yaml")
    p.add_argument("--config", default="conf/vocoder.yaml")
    p.add_argument("--num_threads", type=int, default=1)
    args = p.parse_args(argv)
    cfg = FbankConfig.from_yaml(args.fbank_config)
    vocoder_cfg = VocoderConfig.from_yaml(args.config)
    total = 0
    try:
        for decode_dir in args.decode_dirs:
            summary = read_summary(decode_dir)
            data_dir = args.data / summary.set_name
            utt2spk = read_table(data_dir / "utt2spk")
            utts = balanced_subset(utt2spk, args.max_utts) if args.max_utts > 0 else sorted(utt2spk)
            with atomic_open(decode_dir / "vocoded_utts") as f:
                f.write("".join(f"{u}\n" for u in utts))
            for name in summary.layer_names:
                layer, mel_scp = decode_dir / name, summary.mel_scp(name)
                mels = read_table(mel_scp)
                missing = [u for u in utts if u not in mels]
                if missing:
                    raise VocodeError(f"{mel_scp} lacks {len(missing)} utterance(s) of "
                                      f"{data_dir}, e.g. {missing[:3]}")
                subset = layer / "mel.vocode.scp"
                with atomic_open(subset) as f:
                    f.write("".join(f"{u} {mels[u]}\n" for u in utts))
                with torch_threads(1):
                    vocoded = vocode_scp(subset, layer, cfg, vocoder_cfg, data_dir / "wav.scp",
                                         workers=args.num_threads)
                total += len(utts)
                print(f"vocode_layers {layer}: {json.dumps(vocoded)}", file=sys.stderr)
    except (VocodeError, AudioError, DataDirError, ValueError, FileNotFoundError) as e:
        print(f"vocode_layers: error: {e}", file=sys.stderr)
        return 1
    print(f"vocode_layers: {total} wavs in {len(args.decode_dirs)} decode dirs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
