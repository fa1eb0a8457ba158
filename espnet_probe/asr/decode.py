"""Greedy CTC decoding of feature scps with a trained ESPnet ASR model, batched by length.

Greedy (best path) decoding is exact for a CTC-only model without a language model up to the
prefix merging a beam would add; it is what the paper reports and costs one encoder pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

import kaldiio
import torch
from tqdm import tqdm

from espnet_probe.data.kaldi_dir import read_table
from espnet_probe.utils.device import model_device


def collapse(ids: list[int], blank: int = 0) -> list[int]:
    """CTC best path -> labels: merge repeats, then drop blanks."""
    out, prev = [], None
    for i in ids:
        if i != prev and i != blank:
            out.append(i)
        prev = i
    return out


def length_sorted_batches(lengths: dict[str, int], max_frames: int) -> list[list[str]]:
    """Utterances sorted by length, cut into batches of at most max_frames padded frames."""
    batches, cur, cur_max = [], [], 0
    for utt in sorted(lengths, key=lambda u: (lengths[u], u)):
        new_max = max(cur_max, lengths[utt])
        if cur and new_max * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur, new_max = [], lengths[utt]
        cur.append(utt)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


@torch.no_grad()
def greedy_decode(model, feats_scp: str | Path, token_type: str = "char",
                  bpemodel: str | None = None, shape_file: str | Path | None = None,
                  max_frames: int = 40000) -> dict[str, str]:
    """utt -> hypothesis text for every utterance in ``feats_scp``."""
    from espnet2.text.build_tokenizer import build_tokenizer

    reader = kaldiio.load_scp(str(feats_scp))
    if shape_file is not None:
        lengths = {u: int(v.split(",")[0]) for u, v in read_table(shape_file).items()}
        unknown = sorted(set(lengths) ^ set(reader.keys()))
        if unknown:
            raise ValueError(f"{shape_file} and {feats_scp} list different utterances "
                             f"(e.g. '{unknown[0]}')")
    else:
        lengths = {u: reader[u].shape[0] for u in reader.keys()}
    device = model_device(model)
    token_list = model.token_list
    tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel)
    hyps = {}
    batches = length_sorted_batches(lengths, max_frames)
    for batch in tqdm(batches, desc="ctc greedy", file=sys.stderr, mininterval=2):
        mats = [torch.from_numpy(reader[u]) for u in batch]
        lens = torch.tensor([m.shape[0] for m in mats])
        feats = torch.nn.utils.rnn.pad_sequence(mats, batch_first=True)
        enc, enc_lens = model.encode(feats.to(device), lens.to(device))
        best, enc_lens = model.ctc.argmax(enc).cpu(), enc_lens.cpu()
        for utt, path, n in zip(batch, best, enc_lens):
            ids = collapse(path[: int(n)].tolist(), blank=model.blank_id)
            tokens = [token_list[i] for i in ids]
            hyps[utt] = tokenizer.tokens2text(tokens)
    return hyps
