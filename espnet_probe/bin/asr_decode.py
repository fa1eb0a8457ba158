"""Greedy CTC decoding of feature sets with a trained ASR experiment, then WER/CER scoring.

  python -m espnet_probe.bin.asr_decode --asr_exp exp/asr_vgg_blstm_small_baseline \
      --feats_dir dump/fbank/test dump/fbank/test_snr10 \
      --out exp/asr_vgg_blstm_small_baseline/decode_test exp/asr_vgg_blstm_small_baseline/decode_test_snr10
writes <out>/text (hypotheses) and <out>/result.json (WER and CER with sub/del/ins counts) for
each feature set. Several sets in one process load the model (and ESPnet, ~10 s) once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from espnet_probe.asr.decode import greedy_decode
from espnet_probe.asr.scoring import score
from espnet_probe.data.kaldi_dir import read_table, write_table
from espnet_probe.utils.device import add_device_argument
from espnet_probe.utils.fileio import atomic_open


def best_checkpoint(asr_exp: Path) -> Path:
    """ESPnet's averaged model if training made one, else the best-validation one."""
    for name in ("valid.loss.ave.pth", "valid.loss.best.pth"):
        if (asr_exp / name).exists():
            return asr_exp / name
    raise FileNotFoundError(f"{asr_exp}: no valid.loss.ave.pth or valid.loss.best.pth; "
                            "has training finished?")


def decode_set(model, train_args: dict, checkpoint: Path, feats_dir: Path, out: Path,
               exp_name: str, max_frames: int) -> None:
    start = time.time()
    hyps = greedy_decode(model, feats_dir / "feats.scp", train_args.get("token_type", "char"),
                         train_args.get("bpemodel"), feats_dir / "feats_shape", max_frames)
    refs = read_table(feats_dir / "text", allow_empty_value=True)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "text", hyps)
    result = {"checkpoint": str(checkpoint), "set": feats_dir.name, "utterances": len(refs)}
    for unit, key in (("word", "wer"), ("char", "cer")):
        c = score(refs, hyps, unit)
        result[key] = {"rate": round(c.rate, 2), "ref": c.ref_len, "sub": c.sub, "del": c.dele,
                       "ins": c.ins, "sentence_errors": c.sentence_errors}
    with atomic_open(out / "result.json") as f:
        json.dump(result, f, indent=1)
    print(f"asr_decode {exp_name} {feats_dir.name}: WER {result['wer']['rate']:.2f}% "
          f"CER {result['cer']['rate']:.2f}% ({len(refs)} utts, {time.time() - start:.1f} s)",
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--asr_exp", required=True, type=Path)
    p.add_argument("--feats_dir", required=True, type=Path, nargs="+")
    p.add_argument("--out", required=True, type=Path, nargs="+", help="one per --feats_dir")
    p.add_argument("--checkpoint", type=Path, help="default: the averaged or best model")
    p.add_argument("--max_frames", type=int, default=40000, help="padded frames per batch")
    add_device_argument(p)
    args = p.parse_args(argv)
    if len(args.out) != len(args.feats_dir):
        p.error(f"{len(args.feats_dir)} --feats_dir but {len(args.out)} --out; give one out dir per set")

    from espnet_probe.layers import load_asr_model

    config = args.asr_exp / "config.yaml"
    checkpoint = args.checkpoint or best_checkpoint(args.asr_exp)
    with open(config, encoding="utf-8") as f:
        train_args = yaml.safe_load(f)
    model = load_asr_model(config, checkpoint, args.device)
    for feats_dir, out in zip(args.feats_dir, args.out):
        decode_set(model, train_args, checkpoint, feats_dir, out, args.asr_exp.name, args.max_frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
