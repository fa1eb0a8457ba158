"""ASR decoding of a dump dir with a trained ESPnet ASR model, on the input it was trained on.

Greedy (best path) decoding for CTC-only models: exact without a language model up to the
prefix merging a beam would add; it is what the paper reports and costs one encoder pass.
Hybrid CTC/attention models (stock ESPnet models) decode with ESPnet's own Speech2Text joint
beam search.  ``check_decode`` refuses results that cannot be right.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from espnet_probe.asr.model_input import model_input
from espnet_probe.asr.whisper import WINDOW_FRAMES
from espnet_probe.data.model_inputs import InputSet
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


class DecodeRefused(RuntimeError):
    """A decode whose result cannot be right (every hypothesis empty, too few encoder frames)."""


def _input_batches(inputs: InputSet, max_units: int):
    """Padded batches of what the model takes, longest first within a batch (ESPnet's rnn
    encoder packs with enforce_sorted)."""
    for batch in length_sorted_batches(inputs.lengths, max_units):
        batch = sorted(batch, key=lambda u: (-inputs.lengths[u], u))
        mats = [torch.from_numpy(inputs.read(u)) for u in batch]
        lens = torch.tensor([m.shape[0] for m in mats])
        yield batch, torch.nn.utils.rnn.pad_sequence(mats, batch_first=True), lens


def max_units(inputs: InputSet, max_frames: int, hop: int = 160) -> int:
    """Batch size in the input's own units: frames, or samples for waveforms."""
    return max_frames * hop if inputs.kind == "wave" else max_frames


@torch.no_grad()
def greedy_decode(model, inputs: InputSet, token_type: str = "char",
                  bpemodel: str | None = None, max_frames: int = 40000
                  ) -> tuple[dict[str, str], dict[str, int]]:
    """utt -> hypothesis text, and utt -> encoder frames, for every utterance of ``inputs``
    (``espnet_probe.data.model_inputs.open_inputs`` of the kind the model takes)."""
    from espnet2.text.build_tokenizer import build_tokenizer

    device = model_device(model)
    spec = model_input(model)
    token_list = model.token_list
    tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel)
    hyps, enc_frames = {}, {}
    for batch, speech, lens in tqdm(list(_input_batches(inputs, max_units(inputs, max_frames))),
                                    desc="ctc greedy", file=sys.stderr, mininterval=2):
        spec.check(speech, f"the ASR model decoding {inputs.scp}")
        enc, enc_lens = model.encode(speech.to(device), lens.to(device))
        best, enc_lens = model.ctc.argmax(enc).cpu(), enc_lens.cpu()
        for utt, path, n in zip(batch, best, enc_lens):
            ids = collapse(path[: int(n)].tolist(), blank=model.blank_id)
            hyps[utt] = tokenizer.tokens2text([token_list[i] for i in ids])
            enc_frames[utt] = int(n)
    return hyps, enc_frames


@torch.no_grad()
def encoder_frames(model, inputs: InputSet, max_frames: int = 40000) -> dict[str, int]:
    """utt -> frames the encoder yields (to check a decode another decoder made)."""
    device = model_device(model)
    frames = {}
    for batch, speech, lens in _input_batches(inputs, max_units(inputs, max_frames)):
        _, enc_lens = model.encode(speech.to(device), lens.to(device))
        frames.update({u: int(n) for u, n in zip(batch, enc_lens.cpu())})
    return frames


def joint_decode(asr_config: str | Path, model, inputs: InputSet, beam_size: int,
                 ctc_weight: float, device: str = "cpu", maxlenratio: float = 0.0) -> dict[str, str]:
    """ESPnet's own Speech2Text: joint CTC/attention beam search, one utterance at a time (as
    espnet2.bin.asr_inference does), no language model, no length penalty. ``maxlenratio`` as
    ESPnet's: 0 allows a token per encoder frame and stops at its end detection; r > 0 allows r
    tokens per encoder frame and searches to that length.

    ``model`` is the ASR model as loaded by ``load_asr_model`` (its checkpoint checked to hold
    tensors only): Speech2Text builds its own from the config without a file (its loader would
    unpickle the checkpoint in full) and takes these weights."""
    from espnet2.bin.asr_inference import Speech2Text

    speech2text = Speech2Text(asr_train_config=str(asr_config), asr_model_file=None,
                              device=device, beam_size=beam_size, ctc_weight=ctc_weight,
                              lm_weight=0.0, penalty=0.0, nbest=1, maxlenratio=maxlenratio)
    speech2text.asr_model.load_state_dict(model.state_dict(), strict=True)
    positions = text_positions(speech2text.asr_model.decoder)
    if positions:
        # ESPnet's default allows one token per encoder frame (750 for 15 s), past the 448
        # positions of Whisper's decoder; Whisper's own decoding allows half of them (224 tokens)
        # per 30-s window of 1,500 frames: that ratio, which also bounds the cost (any ratio but
        # 0 turns ESPnet's end detection off, so every hypothesis runs to it); a smaller one asked
        # for wins
        whisper_ratio = positions // 2 / (WINDOW_FRAMES // 2)
        speech2text.maxlenratio = min(maxlenratio, whisper_ratio) if maxlenratio > 0 else whisper_ratio
    whisper_cache = WhisperDecoderCache.attach(speech2text.asr_model.decoder)
    hyps = {}
    for utt in tqdm(sorted(inputs.entries), desc=f"beam {beam_size}", file=sys.stderr, mininterval=5):
        if whisper_cache is not None:
            whisper_cache.reset()
        results = speech2text(inputs.read(utt))
        hyps[utt] = results[0][0] if results and results[0][0] is not None else ""
    return hyps


class WhisperDecoderCache:
    """Beam steps of ESPnet's Whisper decoder that compute only the new token.

    ``OpenAIWhisperDecoder.batch_score`` recomputes every step from scratch (it ignores caches):
    each step projects all of the utterance's encoder frames to cross-attention keys and values,
    and runs the whole prefix through every block again, so a hypothesis of n tokens costs
    O(n^2) token passes; hypotheses run to Whisper's 224-token limit in noise.  ``batch_score``
    here does the same computation incrementally: the cross-attention projections are made once
    per utterance (handed to openai-whisper's attention as its ``kv_cache``), and each
    hypothesis keeps its self-attention keys and values as its beam-search state (ESPnet's
    ``select_state`` carries them to the hypotheses it extends), so a step feeds only the newest
    token, whose keys and values are appended by forward hooks on the projections, as
    openai-whisper's own incremental decoding does.  The hypotheses equal ESPnet's
    (tests/test_whisper.py).  Installed on the decoder instance; ESPnet's files are untouched.
    """

    def __init__(self, decoder):
        self.decoder = decoder
        blocks = decoder.decoders.blocks
        self.self_attention = [m for block in blocks for m in (block.attn.key, block.attn.value)]
        self.past: dict = {}    # projection -> (hypotheses, tokens so far, dim), this step
        self.present: dict = {}  # projection -> the same with the new token, for the states
        self.active = False      # the hooks act only inside batch_score
        for module in self.self_attention:
            module.register_forward_hook(self._append)
        self.reset()

    @classmethod
    def attach(cls, decoder):
        """Install on ``decoder`` if it is ESPnet's Whisper decoder; returns the cache or None."""
        from espnet2.asr.decoder.whisper_decoder import OpenAIWhisperDecoder

        if not isinstance(decoder, OpenAIWhisperDecoder):
            return None
        cache = cls(decoder)
        decoder.batch_score = cache.batch_score
        return cache

    def reset(self) -> None:
        """Forget the cross-attention projections (call before each utterance)."""
        self.projections = {}

    def _append(self, module, _inputs, output):
        if not self.active:
            return None
        full = torch.cat([self.past[module], output], dim=1) if module in self.past else output
        self.present[module] = full
        return full

    def _past(self, states, ys: torch.Tensor) -> dict:
        """The hypotheses' self-attention keys and values, if every one holds its whole prefix
        but the newest token (else {}: the step is computed from scratch)."""
        if not isinstance(states, list) or len(states) != ys.size(0) or any(
                s is None or s[0].size(1) != ys.size(1) - 1 for s in states):
            return {}
        return {m: torch.cat([s[i] for s in states]) for i, m in enumerate(self.self_attention)}

    def batch_score(self, ys: torch.Tensor, states, xs: torch.Tensor):
        whisper_decoder = self.decoder.decoders
        if not self.projections:  # the beam search passes one encoder output, expanded
            one = xs[:1]
            for block in whisper_decoder.blocks:
                attention = block.cross_attn
                self.projections[attention.key] = attention.key(one)
                self.projections[attention.value] = attention.value(one)
        kv_cache = {m: t.expand(xs.size(0), -1, -1) for m, t in self.projections.items()}
        self.past, self.present = self._past(states, ys), {}
        first = ys.size(1) - 1 if self.past else 0
        x = whisper_decoder.token_embedding(ys[:, first:]) + \
            whisper_decoder.positional_embedding[first: ys.size(1)]
        x = self.decoder.dropout(x).to(xs.dtype)
        self.active = True
        try:
            for i, block in enumerate(whisper_decoder.blocks):
                x = block(x, xs, mask=whisper_decoder.mask, kv_cache=kv_cache)
                if i < len(whisper_decoder.blocks) - 1:
                    x = self.decoder.dropout(x)
            x = whisper_decoder.ln(x)[:, -1]
            logits = (x @ whisper_decoder.token_embedding.weight.to(x.dtype).T).float()
            states = [tuple(self.present[m][h:h + 1] for m in self.self_attention)
                      for h in range(ys.size(0))]
        finally:
            self.active, self.past, self.present = False, {}, {}
        return torch.log_softmax(logits, dim=-1), states


def text_positions(decoder) -> int:
    """How many tokens ``decoder`` has positions for, if limited (Whisper's: 448), else 0."""
    embedding = getattr(getattr(decoder, "decoders", None), "positional_embedding", None)
    return int(embedding.size(0)) if isinstance(embedding, torch.Tensor) else 0


@torch.no_grad()
def whisper_decode(model, inputs: InputSet, batch_size: int = 8) -> dict[str, str]:
    """Whisper's own greedy decoding (espnet_probe.asr.whisper.WhisperASR.transcribe) of every
    utterance's waveform, ``batch_size`` at a time."""
    if inputs.kind != "wave":
        raise DecodeRefused(f"{inputs.scp}: Whisper takes the waveform, not {inputs.kind}")
    utts = sorted(inputs.entries)
    hyps = {}
    for first in tqdm(range(0, len(utts), batch_size), desc="whisper greedy", file=sys.stderr,
                      mininterval=5):
        batch = utts[first:first + batch_size]
        hyps.update(zip(batch, model.transcribe([inputs.read(u) for u in batch], batch_size)))
    return hyps


def ctc_min_frames(token_ids: list[int]) -> int:
    """Frames a CTC path needs for a label sequence: one per label, plus a blank between repeats."""
    return len(token_ids) + sum(a == b for a, b in zip(token_ids, token_ids[1:]))


def check_decode(hyps: dict[str, str], enc_frames: dict[str, int], needed: dict[str, int],
                 where: str) -> list[str]:
    """Refuse a decode that cannot be right; return warnings for the doubtful utterances.

    Refused: every hypothesis empty; hypotheses that do not depend on the input (all made of
    one symbol, as "A A A ..." from a CTC model collapsed onto one token, or, over 10 or more
    utterances, all the same text); more than half the utterances with fewer encoder frames
    than their reference needs (CTC cannot emit it: the wrong input kind, sample rate or
    frontend).  A few such utterances, or identical text over fewer than 10, are reported.
    """
    if hyps and not any(h.strip() for h in hyps.values()):
        raise DecodeRefused(
            f"{where}: every one of the {len(hyps)} hypotheses is empty; a WER of 100 % here "
            "means the model was not given what it was trained on (or is untrained), so no "
            "result is written")
    short = sorted(u for u in hyps if enc_frames.get(u, 0) < needed.get(u, 0))
    if len(short) * 2 > len(hyps):
        u = short[0]
        raise DecodeRefused(
            f"{where}: {len(short)} of {len(hyps)} utterances get fewer encoder frames than their "
            f"reference needs (e.g. {u}: {enc_frames.get(u, 0)} frames for {needed[u]} tokens); "
            "check the model's input kind, sample rate and frontend")
    symbols = set("".join(hyps.values())) - set(" \t")
    if hyps and len(symbols) == 1:
        raise DecodeRefused(
            f"{where}: all {len(hyps)} hypotheses are made of the one symbol {symbols.pop()!r} "
            f"(e.g. {next(iter(hyps.values()))[:30]!r}): the model emits one token whatever the "
            "input (collapsed or untrained), so no result is written")
    same = ""
    if len(hyps) > 1 and len(set(hyps.values())) == 1:
        same = (f"all {len(hyps)} hypotheses are the same text, whatever the input "
                f"({next(iter(hyps.values()))[:40]!r}...): the model has not learnt to listen")
        if len(hyps) >= 10:
            raise DecodeRefused(f"{where}: {same}, so no result is written")
    warnings = []
    if short:
        warnings.append(f"{len(short)} utterance(s) have fewer encoder frames than their reference "
                        f"needs (e.g. {short[0]}: {enc_frames.get(short[0], 0)} for {needed[short[0]]})")
    if same:
        warnings.append(same)
    return warnings
