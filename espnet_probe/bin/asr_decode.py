"""ASR decoding of dump dirs with an ASR experiment (ours or brought), then WER/CER scoring.

CTC-only models decode greedily; hybrid CTC/attention models (experiment.yaml's decoding, see
espnet_probe/asr/brought.py) with ESPnet's Speech2Text joint beam search (--beam_size,
--maxlenratio, the model's ctc_weight).  Each model gets the input it was trained on (features
or waveforms).
A decode that cannot be right (every hypothesis empty, too few encoder frames for the
references) is refused with the reason, exit 1, and nothing is written.

  python -m espnet_probe.bin.asr_decode --asr_exp exp/asr_vgg_blstm_small_baseline \
      --feats_dir dump/fbank/test dump/fbank/test_snr10 \
      --out exp/asr_vgg_blstm_small_baseline/decode_test exp/asr_vgg_blstm_small_baseline/decode_test_snr10
writes <out>/text (hypotheses) and <out>/result.json (WER and CER with sub/del/ins counts) for
each feature set. Several sets in one process load the model (and ESPnet, ~10 s) once.
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import argparse
import json
import sys
import time
from pathlib import Path


from espnet_probe.asr.brought import best_checkpoint
from espnet_probe.asr.decode import (DecodeRefused, check_decode, ctc_min_frames, encoder_frames,
                                     greedy_decode, joint_decode, whisper_decode)
from espnet_probe.asr.whisper import english_normaliser
from espnet_probe.data.model_inputs import ModelInputError, open_inputs
from espnet_probe.experiments import read_experiment
from espnet_probe.families import UnsupportedFamily
from espnet_probe.metrics.wer import score
from espnet_probe.utils.device import add_device_argument
from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.kaldi_dir import read_table, write_table
from espnet_probe.utils.yaml_io import load_yaml


def reference_frames_needed(model, refs: dict[str, str], token_type: str, bpemodel) -> dict[str, int]:
    """utt -> encoder frames CTC needs to emit the reference in the model's own units."""
    from espnet2.text.build_tokenizer import build_tokenizer

    tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel)
    index = {tok: i for i, tok in enumerate(model.token_list)}
    unk = index.get("<unk>", 1)
    return {u: ctc_min_frames([index.get(t, unk) for t in tokenizer.text2tokens(text)])
            for u, text in refs.items()}


def text_normaliser(decoding: dict, train_args: dict):
    """(description, function) applied to references and hypotheses before scoring, or
    (None, None).  Whisper writes cased, punctuated text: its English normaliser, both sides.  A
    model trained with an ESPnet text cleaner (``cleaner: whisper_en`` in the egs2 Whisper
    recipes) writes cleaned text: that cleaner, both sides, as asr.sh scores it."""
    if decoding["method"] == "whisper_greedy":
        return "Whisper's English normaliser", english_normaliser()
    cleaner = train_args.get("cleaner")
    if cleaner in (None, "none"):
        return None, None
    from espnet2.text.cleaner import TextCleaner

    return f"ESPnet's {cleaner} text cleaner", TextCleaner(cleaner)


def decode_set(model, train_args: dict, config: Path, checkpoint: Path, feats_dir: Path,
               out: Path, exp_name: str, max_frames: int, decoding: dict, device: str) -> None:
    from espnet_probe.asr.model_input import model_input

    start = time.time()
    inputs = open_inputs(feats_dir, model_input(model).kind)
    token_type, bpemodel = train_args.get("token_type", "char"), train_args.get("bpemodel")
    refs = read_table(feats_dir / "text", allow_empty_value=True)
    normaliser, normalise = text_normaliser(decoding, train_args)
    if decoding["method"] == "whisper_greedy":
        hyps = whisper_decode(model, inputs)
        warnings = check_decode(hyps, {}, {}, f"{exp_name} on {feats_dir}")  # no CTC frames
    else:
        if decoding["method"] == "joint_ctc_attention":
            hyps = joint_decode(config, model, inputs, decoding["beam_size"],
                                decoding["ctc_weight"], device, decoding.get("maxlenratio", 0.0))
            frames = encoder_frames(model, inputs, max_frames)
        else:
            hyps, frames = greedy_decode(model, inputs, token_type, bpemodel, max_frames)
        warnings = check_decode(hyps, frames, reference_frames_needed(model, refs, token_type, bpemodel),
                                f"{exp_name} on {feats_dir}")
    scored_refs, scored_hyps = refs, hyps
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "text", hyps)
    if normalise is not None:
        scored_refs = {u: normalise(t) for u, t in refs.items()}
        scored_hyps = {u: normalise(t) for u, t in hyps.items()}
        write_table(out / "text.normalised", scored_hyps)
    result = {"checkpoint": str(checkpoint), "set": feats_dir.name, "utterances": len(refs),
              "input": inputs.kind, "decoding": decoding, "normaliser": normaliser,
              "warnings": warnings}
    for unit, key in (("word", "wer"), ("char", "cer")):
        c = score(scored_refs, scored_hyps, unit)
        result[key] = {"rate": round(c.rate, 2), "ref": c.ref_len, "sub": c.sub, "del": c.dele,
                       "ins": c.ins, "sentence_errors": c.sentence_errors}
    with atomic_open(out / "result.json") as f:
        json.dump(result, f, indent=1)
    for w in warnings:
        print(f"asr_decode {exp_name} {feats_dir.name}: warning: {w}", file=sys.stderr)
    print(f"asr_decode {exp_name} {feats_dir.name}: WER {result['wer']['rate']:.2f}% "
          f"CER {result['cer']['rate']:.2f}% ({len(refs)} utts, {decoding['method']}, "
          f"{time.time() - start:.1f} s)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--asr_exp", required=True, type=Path)
    p.add_argument("--feats_dir", required=True, type=Path, nargs="+")
    p.add_argument("--out", required=True, type=Path, nargs="+", help="one per --feats_dir")
    p.add_argument("--checkpoint", type=Path, help="default: the averaged or best model")
    p.add_argument("--max_frames", type=int, default=40000, help="padded frames per batch")
    p.add_argument("--beam_size", type=int, default=10,
                   help="joint CTC/attention beam (hybrid models; CTC-only ones decode greedily)")
    p.add_argument("--maxlenratio", type=float, default=0.0,
                   help="joint beam: ESPnet's maxlenratio, tokens per encoder frame at most (0: one,\n"
                        "with ESPnet's end detection; Whisper decoders: at most Whisper's own limit)")
    p.add_argument("--ctc_weight", type=float,
                   help="joint decoding's CTC weight (default: the model's training ctc_weight)")
    add_device_argument(p)
    args = p.parse_args(argv)
    if args.maxlenratio < 0:
        p.error(f"--maxlenratio must be >= 0, got {args.maxlenratio}")
    if len(args.out) != len(args.feats_dir):
        p.error(f"{len(args.feats_dir)} --feats_dir but {len(args.out)} --out; give one out dir per set")

    from espnet_probe.asr.model_input import InputMismatchError
    from espnet_probe.layers import load_asr_model
    from espnet_probe.utils.checkpoint import CheckpointError

    config = args.asr_exp / "config.yaml"
    try:
        checkpoint = args.checkpoint or best_checkpoint(args.asr_exp)
        with open(config, encoding="utf-8") as f:
            train_args = load_yaml(f)
        decoding = dict((read_experiment(args.asr_exp) or {}).get("decoding")
                        or {"method": "ctc_greedy", "ctc_weight": 1.0})
        if decoding["method"] == "joint_ctc_attention":
            decoding["beam_size"] = args.beam_size
            decoding["maxlenratio"] = args.maxlenratio
            if args.ctc_weight is not None:
                decoding["ctc_weight"] = args.ctc_weight
        model = load_asr_model(config, checkpoint, args.device)
        for feats_dir, out in zip(args.feats_dir, args.out):
            decode_set(model, train_args, config, checkpoint, feats_dir, out, args.asr_exp.name,
                       args.max_frames, decoding, args.device)
    except (DecodeRefused, ModelInputError, InputMismatchError, CheckpointError,
            FileNotFoundError, UnsupportedFamily) as e:
        print(f"asr_decode: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
