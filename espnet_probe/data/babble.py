"""Babble voices from the training set's own speakers, for a user who has no MUSAN.

Babble is other people talking, and a training set is many people talking.  ``make_babble_voices``
writes, for each training speaker, one 16 kHz WAV of up to ``seconds_per_speaker`` of their
utterances end to end (a seeded choice), into a folder of a MUSAN-layout ``speech/`` dir, and
beside them ``file2spk``: each file's speaker.  The augmenter reads ``file2spk`` and never mixes
an utterance's own speaker into its babble, and takes each talker of one babble from another
speaker (espnet_probe.data.augment), so the noisy copy of an utterance is that speaker among
others.  ``noise_info`` names every voice file used, as for MUSAN.

Only the training set is used: test speakers stay unseen, heard neither as speech nor as noise in
training.  The fixed-SNR test sets get their babble from these training voices too (other people
than every test speaker).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from espnet_probe.audio.io import SAMPLE_RATE, load_utterance, write_wav
from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.freshness import Stamp, fingerprint
from espnet_probe.utils.kaldi_dir import load_data_dir

FILE2SPK = "file2spk"
# at most this many seconds of speech per voice: 14 speakers give 14 minutes of babble, like
# MUSAN-mini's scale, without copying a large training set
SECONDS_PER_SPEAKER = 60.0
PEAK = 0.9


def read_file2spk(speech_dir: str | Path) -> dict[str, str]:
    """Every ``file2spk`` below a MUSAN ``speech/`` dir: path relative to the MUSAN dir -> speaker.
    Files not listed are each taken as a speaker of their own (MUSAN's own layout)."""
    speech_dir = Path(speech_dir)
    mapping = {}
    for table in sorted(speech_dir.rglob(FILE2SPK)):
        prefix = table.parent.relative_to(speech_dir.parent)
        for n, line in enumerate(table.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{table}:{n}: expected '<file> <speaker>', got {line!r}")
            mapping[str(prefix / parts[0])] = parts[1]
    return mapping


def _utterance_order(utts: list[str], seed: int, speaker: str) -> list[str]:
    key = lambda u: hashlib.sha256(f"{seed}\0babble\0{speaker}\0{u}".encode()).hexdigest()
    return sorted(utts, key=key)


def make_babble_voices(data_dir: str | Path, out_dir: str | Path, seed: int = 0,
                       seconds_per_speaker: float = SECONDS_PER_SPEAKER) -> dict:
    """Write ``out_dir/<speaker>.wav`` for every speaker of ``data_dir`` and ``out_dir/file2spk``;
    returns the summary (speakers, seconds).  Skipped when already made from the same data."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    stamp = Stamp(out_dir)
    settings = {"source": str(data_dir.resolve()), "data": fingerprint(data_dir), "seed": seed,
                "seconds_per_speaker": seconds_per_speaker}
    if stamp.begin(settings, resumable=False) == "done":
        return stamp.summary()
    data = load_data_dir(data_dir, require_text=False)
    limit = int(seconds_per_speaker * SAMPLE_RATE)
    seconds = {}
    for speaker, utts in data.spk2utt.items():
        pieces, total = [], 0
        for utt in _utterance_order(utts, seed, speaker):
            wav = load_utterance(data, utt)
            pieces.append(wav[: limit - total])
            total += pieces[-1].size
            if total >= limit:
                break
        voice = np.concatenate(pieces)
        peak = float(np.max(np.abs(voice)))
        if peak > PEAK:  # several utterances end to end may each be near full scale
            voice = voice * (PEAK / peak)
        write_wav(out_dir / f"{speaker}.wav", voice)
        seconds[speaker] = round(voice.size / SAMPLE_RATE, 2)
    with atomic_open(out_dir / FILE2SPK) as f:
        f.writelines(f"{speaker}.wav {speaker}\n" for speaker in seconds)
    summary = {"speakers": len(seconds), "seconds": round(sum(seconds.values()), 1)}
    stamp.finish(settings, **summary)
    return summary
