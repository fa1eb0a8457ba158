"""Train the ThinResNet + GhostVLAD speaker encoder with ESPnet's trainer.

ESPnet's trainer with espnet_probe.tasks.speaker.SpeakerTask, so every ESPnet training option
works (--resume, --ngpu, checkpoints, DDP through espnet2.bin.launch). Given a Kaldi data dir,
this also writes the task's data lists first:

  python -m espnet_probe.bin.speaker_train --config conf/speaker/resnet_small.yaml \\
      --train_data_dir data/train --output_dir exp/speaker_resnet_small \\
      [--valid_fraction 0.1] [--split_seed 0] [any ESPnet option, e.g. --max_epoch 5]

Held-out set: the recipe's dev speakers are unseen in training, and a speaker classifier's
loss on unseen speakers means nothing, so validation (best-checkpoint choice, the loss curve)
uses a seeded ``--valid_fraction`` of *each training speaker's* utterances instead, at least
one per speaker with two or more utterances; those utterances are not trained on.

Written under OUTPUT_DIR: ``spk2id`` (speaker -> integer id, sorted speakers),
``data/{train,valid}/{wav.scp,spk_labels,speech_shape}`` (spk_labels: ``utt id``; the shape
file, in samples, lists the training utterances with the speakers interleaved, so each batch
of ESPnet's unsorted sampler holds many speakers), ``data/split.json`` (the split's counts),
and ``data/wav/`` for utterances that are ``cmd |`` pipes or segments (ESPnet's ``sound``
loader reads plain files only). Without --train_data_dir this is plain ESPnet: give the data
options and --num_spk yourself.
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from espnet_probe.audio.io import SAMPLE_RATE, AudioError, load_audio, write_wav
from espnet_probe.utils.checkpoint import CheckpointError, checked_init_params
from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.kaldi_dir import DataDirError, load_data_dir


def split_speakers(spk2utt: dict[str, list[str]], valid_fraction: float, seed: int
                   ) -> tuple[list[str], list[str]]:
    """(train utterances with the speakers interleaved, sorted valid utterances)."""
    rng = np.random.default_rng(seed)
    train_by_spk, valid = [], []
    for spk in sorted(spk2utt):
        utts = list(rng.permutation(sorted(spk2utt[spk])))
        n_valid = 0
        if len(utts) >= 2 and valid_fraction > 0:
            n_valid = min(len(utts) - 1, max(1, int(round(valid_fraction * len(utts)))))
        valid += utts[:n_valid]
        train_by_spk.append(utts[n_valid:])
    train = []
    for rank in range(max(len(u) for u in train_by_spk)):
        row = [utts[rank] for utts in train_by_spk if rank < len(utts)]
        train += [row[i] for i in rng.permutation(len(row))]
    return [str(u) for u in train], sorted(str(u) for u in valid)


def _plain_file(utt: str, path: str) -> int:
    """Samples of a 16 kHz mono file that ESPnet can read directly."""
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(utt, path, f"not readable audio ({e})") from None
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise AudioError(utt, path, f"{info.samplerate} Hz, {info.channels} channel(s); "
                                    f"expected {SAMPLE_RATE} Hz mono")
    if info.frames == 0:
        raise AudioError(utt, path, "no samples")
    return info.frames


def prepare_speaker_data(data_dir: str | Path, output_dir: str | Path,
                         valid_fraction: float = 0.1, seed: int = 0) -> dict:
    """Write spk2id, the train/valid lists and split.json; return the ESPnet arguments."""
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"--valid_fraction must be in [0, 1), got {valid_fraction}")
    data = load_data_dir(data_dir, require_text=False)
    output_dir = Path(output_dir)
    spk2utt = data.spk2utt
    if len(spk2utt) < 2:
        raise DataDirError(f"{data_dir}: {len(spk2utt)} speaker(s); a speaker classifier needs 2+")
    spk2id = {spk: i for i, spk in enumerate(sorted(spk2utt))}
    train, valid = split_speakers(spk2utt, valid_fraction, seed)
    if not valid:
        raise DataDirError(f"{data_dir}: no utterance held out for validation (--valid_fraction "
                           f"{valid_fraction}; speakers need 2+ utterances)")
    with atomic_open(output_dir / "spk2id") as f:
        f.writelines(f"{spk} {i}\n" for spk, i in spk2id.items())
    args = ["--num_spk", str(len(spk2id))]
    for subset, utts in (("train", train), ("valid", valid)):
        sub = output_dir / "data" / subset
        paths, samples = {}, {}
        for utt in tqdm(utts, desc=f"speaker data {subset}", file=sys.stderr, mininterval=5):
            entry, segment = data.audio_entry(utt)
            if segment is None and not entry.strip().endswith("|"):
                paths[utt], samples[utt] = entry.strip(), _plain_file(utt, entry.strip())
                continue
            wav_path = output_dir / "data" / "wav" / f"{utt}.wav"
            if not wav_path.exists():  # written atomically, so an existing file is whole
                write_wav(wav_path, load_audio(utt, entry, segment))
            paths[utt], samples[utt] = str(wav_path.resolve()), sf.info(wav_path).frames
        with atomic_open(sub / "wav.scp") as f:
            f.writelines(f"{u} {paths[u]}\n" for u in sorted(utts))
        with atomic_open(sub / "spk_labels") as f:
            f.writelines(f"{u} {spk2id[data.utt2spk[u]]}\n" for u in sorted(utts))
        with atomic_open(sub / "speech_shape") as f:  # sampler order: as listed
            f.writelines(f"{u} {samples[u]}\n" for u in utts)
        args += [f"--{subset}_data_path_and_name_and_type", f"{sub}/wav.scp,speech,sound",
                 f"--{subset}_data_path_and_name_and_type", f"{sub}/spk_labels,spk_labels,text_int",
                 f"--{subset}_shape_file", f"{sub}/speech_shape"]
    info = {"data_dir": str(data_dir), "valid_fraction": valid_fraction, "seed": seed,
            "speakers": len(spk2id), "train_utts": len(train), "valid_utts": len(valid),
            "valid_is": "held-out utterances of the training speakers"}
    with atomic_open(output_dir / "data" / "split.json") as f:
        json.dump(info, f, indent=1)
    print(f"speaker_train: {len(spk2id)} speakers, {len(train)} training and {len(valid)} "
          f"held-out utterances (seeded {valid_fraction:.0%} of each speaker)", file=sys.stderr)
    return {"espnet_args": args, **info}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ours = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    ours.add_argument("--train_data_dir", default=None)
    ours.add_argument("--valid_fraction", type=float, default=0.1)
    ours.add_argument("--split_seed", type=int, default=0)
    ours.add_argument("--output_dir", default=None)
    known, rest = ours.parse_known_args(argv)
    if "--help" in argv or "-h" in argv:
        print(__doc__)
    if known.output_dir is not None:
        rest += ["--output_dir", known.output_dir]
    from espnet_probe.tasks.speaker import SpeakerTask

    if known.train_data_dir is not None:
        if known.output_dir is None:
            print("speaker_train: --train_data_dir needs --output_dir", file=sys.stderr)
            return 2
        try:
            prep = prepare_speaker_data(known.train_data_dir, known.output_dir,
                                        known.valid_fraction, known.split_seed)
        except (AudioError, DataDirError, ValueError) as e:
            print(f"speaker_train: error: {e}", file=sys.stderr)
            return 1
        rest = prep["espnet_args"] + rest  # later options (the user's) win
    try:
        with checked_init_params(rest) as rest:
            SpeakerTask.main(cmd=rest)
    except CheckpointError as e:  # an --init_param file
        print(f"speaker_train: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
