"""Whisper brought offline: the project's CTranslate2 reader and conversion against CTranslate2
itself, on real speech; layers over 30-s windows; loading errors in one line."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import LIBRISPEECH, REPO, need
from espnet_probe.asr.whisper import (WhisperSourceError, build_whisper, english_normaliser,
                                      load_whisper, packaged_dir, read_whisper)
from espnet_probe.layers import extract_layers
from espnet_probe.metrics.wer import score

TINY = "whisper:tiny.en"


@pytest.fixture(scope="module")
def tiny():
    return load_whisper(TINY)


def librispeech(n: int, max_seconds: float = 0) -> list[tuple[str, np.ndarray, str]]:
    """(utt, waveform, reference) of the first n utterances of the shared subset, or of the first
    n that last at most max_seconds: Whisper's encoder sees 30 s either way, but its decoder's
    work follows the words."""
    root = need(LIBRISPEECH / "train-clean-5")
    out = []
    for trans in sorted(root.rglob("*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            path = trans.parent / f"{utt}.flac"
            if max_seconds and sf.info(path).duration > max_seconds:
                continue
            wav, sr = sf.read(path, dtype="float32")
            assert sr == 16000
            out.append((utt, wav, text))
            if len(out) == n:
                return out
    return out


def windows(model, waves) -> torch.Tensor:
    return torch.stack([model.frontend.padded(torch.from_numpy(w))[:, :3000] for w in waves])


def test_list_layers_of_the_wheels_model_dir():
    proc = subprocess.run([sys.executable, "-m", "espnet_probe.bin.probe_train", "--list_layers",
                           str(packaged_dir(TINY))], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert [r[1] for r in rows] == ["input", "conv1", "conv2", "block1", "block2", "block3",
                                    "block4", "output"]
    assert [r[5] for r in rows] == ["10", "10", "20", "20", "20", "20", "20", "20"]  # period ms
    assert [r[6] for r in rows] == ["-5", "-5", "-10", "-10", "-10", "-10", "-10", "-10"]  # offset
    assert proc.stdout.startswith("input: raw waveform at 16000 Hz")


def test_encoder_equals_ctranslate2_on_real_speech(tiny):
    ctranslate2 = pytest.importorskip("ctranslate2")
    mels = windows(tiny, [w for _, w, _ in librispeech(2)])
    with torch.no_grad():
        ours = tiny.whisper.encoder(mels).numpy()
    reference = ctranslate2.models.Whisper(str(packaged_dir(TINY)), device="cpu",
                                           compute_type="float32", intra_threads=1)
    theirs = np.array(reference.encode(ctranslate2.StorageView.from_array(mels.numpy()), to_cpu=True))
    assert ours.shape == theirs.shape == (2, 1500, 384)
    assert np.abs(ours - theirs).max() < 2e-3 and ours.std() > 0.5


def test_greedy_transcripts_equal_ctranslate2s_and_recognise_speech(tiny):
    ctranslate2 = pytest.importorskip("ctranslate2")
    import whisper

    utts = librispeech(10)
    ours = tiny.transcribe([w for _, w, _ in utts])
    reference = ctranslate2.models.Whisper(str(packaged_dir(TINY)), device="cpu",
                                           compute_type="float32", intra_threads=1)
    results = reference.generate(ctranslate2.StorageView.from_array(windows(tiny, [w for _, w, _ in utts]).numpy()),
                                 [["<|startoftranscript|>", "<|notimestamps|>"]] * len(utts), beam_size=1)
    tokenizer = whisper.tokenizer.get_tokenizer(multilingual=False)
    theirs = [tokenizer.decode([t for t in r.sequences_ids[0] if t < tokenizer.eot]).strip()
              for r in results]
    assert sum(a == b for a, b in zip(ours, theirs)) >= 9, list(zip(ours, theirs))
    normalise = english_normaliser()
    wer = score({u: normalise(t) for u, _, t in utts},
                {u: normalise(h) for (u, _, _), h in zip(utts, ours)}, "word")
    assert wer.rate < 12, wer


def test_an_openai_checkpoint_of_the_same_weights_gives_the_same_layers(tiny, tmp_path):
    dims, state, facts = read_whisper(TINY)
    assert not facts["multilingual"] and dims["n_audio_layer"] == 4
    pt = tmp_path / "tiny.en.pt"
    torch.save({"dims": dims, "model_state_dict": state}, pt)
    other = load_whisper(pt)
    (_, wave, _), = librispeech(1)
    speech, lengths = torch.from_numpy(wave[None, :48000]), torch.tensor([48000])
    a, b = extract_layers(tiny, speech, lengths), extract_layers(other, speech, lengths)
    assert [x.layer for x in a] == [y.layer for y in b]
    assert all(torch.equal(x.hidden, y.hidden) for x, y in zip(a, b))


def test_layers_keep_the_utterance_frames_of_each_30s_window(tiny):
    """A 35-s utterance takes two windows; a batch gives each utterance its own layers."""
    utts = librispeech(3)
    long = np.concatenate([w for _, w, _ in utts])[: 35 * 16000]
    short = utts[0][1][: 3 * 16000 + 77]
    batch = torch.zeros(2, long.size)
    batch[0, : short.size], batch[1] = torch.from_numpy(short), torch.from_numpy(long)
    lengths = torch.tensor([short.size, long.size])
    layers = {s.layer.name: s for s in extract_layers(tiny, batch, lengths)}
    n_short, n_long = short.size // 160, long.size // 160
    assert layers["input"].lengths.tolist() == [n_short, n_long]
    assert layers["block4"].lengths.tolist() == [math.ceil(n_short / 2), math.ceil(n_long / 2)]
    alone = {s.layer.name: s for s in extract_layers(tiny, batch[:1, : short.size], lengths[:1])}
    for name, layer in alone.items():
        n = int(layer.lengths[0])
        assert torch.allclose(layers[name].hidden[0, :n], layer.hidden[0, :n], atol=1e-5), name
        assert not layers[name].hidden[0, n:].any()
    # the second window is frames 3000-5999 of the whole utterance's log-mel (normalised over
    # the whole of it, as whisper.transcribe does), encoded on its own; its utterance frames
    # follow the first window's
    mel = tiny.frontend.padded(torch.from_numpy(long))
    with torch.no_grad():
        second = dict(zip(tiny.layer_names()[1:], tiny._encode_windows(mel[None, :, 3000:6000])))
    for name, rate in (("conv1", 1), ("block4", 2)):
        k, n = 3000 // rate, int(layers[name].lengths[1])
        assert torch.allclose(layers[name].hidden[1, k:n], second[name][0, : n - k], atol=1e-5)
    assert torch.equal(layers["input"].hidden[1], mel[:, :n_long].T)


def test_probe_task_trains_on_whisper_and_the_control_reinitialises_only_the_encoder(tiny):
    from espnet_probe.probe.model import ProbeModel, probed_layers, reinitialise_encoder

    import copy

    layers = probed_layers(tiny, "all", 0.01)
    assert [layer.name for layer in layers][:3] == ["input", "conv1", "conv2"]
    # conv2 frames are centred on every second input frame: they span [2j - 0.5, 2j + 1.5)
    assert [(layer.frame_rate, layer.period, layer.offset) for layer in layers[1:3]] == [
        (1, 0.01, -0.005), (2, 0.02, -0.01)]
    model = ProbeModel(copy.deepcopy(tiny), layers[:3], n_mels=80, hidden_size=16)
    (_, wave, _), = librispeech(1)
    speech = torch.from_numpy(wave[None, :32000])
    from espnet_probe.audio.features import FbankConfig, LogMelExtractor

    mel, _ = LogMelExtractor(FbankConfig())(wave[:32000])
    loss, stats, _ = model(speech=speech, speech_lengths=torch.tensor([32000]),
                           mel=torch.from_numpy(mel[None]), mel_lengths=torch.tensor([mel.shape[0]]))
    loss.backward()
    assert torch.isfinite(loss) and set(stats) >= {"l1_input", "l1_conv1", "l1_conv2"}
    control = copy.deepcopy(tiny)
    reinitialise_encoder(control, seed=0)
    assert not torch.equal(control.encoder.conv1.weight, tiny.encoder.conv1.weight)
    assert torch.equal(control.encoder.positional_embedding, tiny.encoder.positional_embedding)
    assert torch.equal(control.whisper.decoder.token_embedding.weight,
                       tiny.whisper.decoder.token_embedding.weight)


def _copy_model_dir(tmp_path: Path) -> Path:
    src = packaged_dir(TINY)
    dst = tmp_path / "ct2"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    return dst


def test_broken_ctranslate2_dirs_are_named_in_one_line(tmp_path):
    def cli(source: Path) -> str:
        proc = subprocess.run([sys.executable, "-m", "espnet_probe.bin.probe_train", "--list_layers",
                               str(source)], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        (line,) = [l for l in proc.stderr.splitlines() if l.startswith("probe_train: error:")]
        return line

    truncated = _copy_model_dir(tmp_path / "a")
    (truncated / "model.bin").unlink()
    (truncated / "model.bin").write_bytes((packaged_dir(TINY) / "model.bin").read_bytes()[:5_000_000])
    assert "model.bin: truncated" in cli(truncated)

    other = _copy_model_dir(tmp_path / "b")
    data = bytearray((packaged_dir(TINY) / "model.bin").read_bytes())
    (n,) = struct.unpack_from("<H", data, 4)
    assert data[6:6 + n] == b"WhisperSpec\0"
    data[6:6 + n] = b"Wav2VecSpec\0"
    (other / "model.bin").unlink()
    (other / "model.bin").write_bytes(bytes(data))
    with pytest.raises(WhisperSourceError, match="a CTranslate2 Wav2VecSpec model, not a Whisper one"):
        read_whisper(other)

    no_config = _copy_model_dir(tmp_path / "c")
    (no_config / "config.json").unlink()
    with pytest.raises(WhisperSourceError, match="no config.json"):
        read_whisper(no_config)

    with pytest.raises(WhisperSourceError, match="unknown Whisper model name 'whisper:large'"):
        read_whisper("whisper:large")


def test_a_mismatched_openai_checkpoint_is_named(tmp_path):
    dims, state, _ = read_whisper(TINY)
    state.pop("encoder.ln_post.bias")
    with pytest.raises(ValueError, match="1 missing \\(whisper.encoder.ln_post.bias\\)"):
        build_whisper(dims, state, "x.pt")


def test_the_probe_trainers_layer_cache_keeps_whispers_layers_in_float16(tiny):
    import copy

    from espnet_probe.probe.model import ProbeModel, probed_layers, reinitialise_encoder

    model = copy.deepcopy(tiny)
    (_, wave, _), = librispeech(1)
    speech, lengths = torch.from_numpy(wave[None, :32000]), torch.tensor([32000])
    probe = ProbeModel(model, probed_layers(model), hidden_size=8)
    exact = probe.hidden_states(speech, lengths)
    probe.cache_layers(2**30)
    calls = []
    compute = model.utterance_layers
    model.utterance_layers = lambda *a: calls.append(1) or compute(*a)
    first = probe.hidden_states(speech, lengths)
    again = probe.hidden_states(speech, lengths)
    assert len(calls) == 1 and probe._cache_bytes == sum(
        s.hidden.numel() * 2 for s in exact.values())  # float16
    for name, e in exact.items():
        assert torch.equal(first[name].hidden, again[name].hidden)
        assert torch.equal(first[name].lengths, e.lengths)
        assert (first[name].hidden - e.hidden).abs().max() <= 1e-3 * e.hidden.abs().max()
    reinitialise_encoder(model, seed=0)  # the random control: the cached layers are stale
    probe.hidden_states(speech, lengths)
    assert len(calls) == 2


def test_espnets_whisper_modules_build_offline_from_the_local_weights(tiny, tmp_path):
    """ESPnet's encoder and decoder take a model name and would download it: the name tiny.en
    is served from the wheel's weights (espnet_probe.asr.whisper_offline), nothing is fetched."""
    from espnet2.asr.decoder.whisper_decoder import OpenAIWhisperDecoder
    from espnet2.asr.encoder.whisper_encoder import OpenAIWhisperEncoder

    encoder = OpenAIWhisperEncoder(whisper_model="tiny.en", download_dir=str(tmp_path)).eval()
    decoder = OpenAIWhisperDecoder(vocab_size=51864, encoder_output_size=384,
                                   whisper_model="tiny.en", download_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())  # no download
    ours = tiny.whisper.state_dict()
    assert all(torch.equal(v, ours[f"encoder.{k}"]) for k, v in encoder.encoders.state_dict().items())
    assert torch.equal(decoder.decoders.token_embedding.weight, ours["decoder.token_embedding.weight"])
    (_, wave, _), = librispeech(1)
    mel = windows(tiny, [wave])
    with torch.no_grad():
        theirs, _ = encoder.whisper_encode(mel)
        assert torch.allclose(theirs, tiny.whisper.encoder(mel), atol=1e-5)


def test_stage_6_brings_whisper_and_scores_it_after_its_normaliser(tmp_path, capsys):
    """bring_asr + asr_decode + asr_results on a dump dir of real waveforms, as stage 6 runs."""
    import json

    import kaldiio

    from espnet_probe.bin import asr_decode, asr_results, bring_asr

    dump = tmp_path / "dump" / "test"
    dump.mkdir(parents=True)
    utts = librispeech(4)
    with kaldiio.WriteHelper(f"ark,scp:{dump}/wave.ark,{dump}/wave.scp") as w:
        for utt, wave, _ in utts:
            w[utt] = wave
    (dump / "wave_shape").write_text("".join(f"{u} {len(w)}\n" for u, w, _ in utts))
    (dump / "text").write_text("".join(f"{u} {t}\n" for u, _, t in utts))
    exp_root = tmp_path / "exp"
    assert bring_asr.main(["--exp_root", str(exp_root), "--asr_exps", TINY]) == 0
    exp = exp_root / "asr_whisper-tiny.en_brought"
    assert asr_decode.main(["--asr_exp", str(exp), "--feats_dir", str(dump),
                            "--out", str(exp / "decode_test")]) == 0
    result = json.loads((exp / "decode_test" / "result.json").read_text())
    assert result["decoding"]["method"] == "whisper_greedy" and result["utterances"] == 4
    assert result["wer"]["rate"] < 15, result
    normalised = (exp / "decode_test" / "text.normalised").read_text()
    assert normalised == normalised.lower() and "," not in normalised  # cased, punctuated: normalised
    assert asr_results.main(["--exps", str(exp), "--out", str(tmp_path / "asr_results")]) == 0
    table = (tmp_path / "asr_results.md").read_text()
    assert "| whisper-tiny.en | brought |" in table and "Whisper's English normaliser" in table


def test_espnets_whisper_tokenizer_runs_on_pypis_openai_whisper(tmp_path):
    """ESPnet's whisper_en tokenizer, id converter and vocabulary export call the transformers
    tokenizer openai-whisper no longer has; over tiktoken (espnet_probe.asr.whisper_tokens) they
    give Whisper's own ids, round-trip the text, and size the vocabulary as the model's."""
    import whisper
    from espnet2.bin.whisper_export_vocabulary import export_vocabulary
    from espnet2.text.whisper_token_id_converter import OpenAIWhisperTokenIDConverter
    from espnet2.text.whisper_tokenizer import OpenAIWhisperTokenizer

    tokenizer, converter = OpenAIWhisperTokenizer("whisper_en"), OpenAIWhisperTokenIDConverter("whisper_en")
    reference = whisper.tokenizer.get_tokenizer(multilingual=False)
    texts = [text for _, _, text in librispeech(20)] + ["naïve café — “quoted”, 42 %"]
    for text in texts:
        tokens = tokenizer.text2tokens(text)
        ids = converter.tokens2ids(tokens)
        assert ids == [reference.no_timestamps] + reference.encode(text)
        assert tokenizer.tokens2text(tokens) == text
        assert tokenizer.tokens2text(converter.ids2tokens(ids)) == text  # specials skipped
    assert tokenizer.text2tokens("the cat")[1] == "\u0120cat"  # GPT-2's byte alphabet: " " -> "Ġ"
    assert converter.get_num_vocabulary_size() == 51864  # tiny.en's n_vocab
    assert OpenAIWhisperTokenIDConverter("whisper_multilingual").get_num_vocabulary_size() == 51865
    assert OpenAIWhisperTokenIDConverter("whisper_en", sot=True).tokens2ids(["<sc>"])[-1] == 51864
    export_vocabulary(str(tmp_path / "tokens.txt"), "whisper_en")
    vocab = (tmp_path / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 51864 and vocab[reference.eot] == "<|endoftext|>"
    assert vocab[reference.sot] == "<|startoftranscript|>" and vocab[-1] == "<|30.00|>"


class _EspnetWhisperModel(torch.nn.Module):
    """What ASRTask builds for ``encoder: whisper`` with ``input_size: 1`` (no frontend, no
    normalisation), without the decoder the layers do not need."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.frontend, self.normalize, self.preencoder = encoder, None, None, None


def test_espnets_whisper_encoder_layers_are_its_forward_one_utterance_at_a_time(tiny, tmp_path):
    from espnet2.asr.encoder.whisper_encoder import OpenAIWhisperEncoder

    from espnet_probe.asr.model_input import model_input

    model = _EspnetWhisperModel(OpenAIWhisperEncoder(whisper_model="tiny.en",
                                                     download_dir=str(tmp_path))).eval()
    spec = model_input(model)
    assert (spec.kind, spec.period, spec.offset) == ("wave", 0.01, -0.005)
    waves = [torch.from_numpy(w) for _, w, _ in librispeech(3)]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    layers = extract_layers(model, batch, lengths)
    assert [s.layer.name for s in layers] == ["input", "conv1", "conv2", "block1", "block2", "block3",
                                              "block4", "output"]
    assert [s.layer.period for s in layers] == [0.01, 0.01] + [0.02] * 6
    with torch.no_grad():
        for b, wave in enumerate(waves):
            out, olens, _ = model.encoder(wave[None], lengths[b:b + 1])
            n = int(olens[0])
            assert int(layers[-1].lengths[b]) == n == math.ceil(len(wave) // 160 / 2)
            assert torch.equal(layers[-1].hidden[b, :n], out[0])  # exactly its forward, alone
            mel, mel_lens = model.encoder.log_mel_spectrogram(wave[None], lengths[b:b + 1])
            assert torch.equal(layers[0].hidden[b, : int(mel_lens[0])], mel[0].T)
    assert not list(tmp_path.iterdir())  # tiny.en served offline
    long = torch.zeros(1, 31 * 16000)
    with pytest.raises(ValueError, match="lasts 31.0 s: ESPnet's Whisper encoder keeps its first 30 s"):
        extract_layers(model, long, torch.tensor([long.size(1)]))


def _espnet_whisper_config(tmp_path: Path) -> Path:
    """An egs2-style ESPnet Whisper config (encoder + decoder from tiny.en, Whisper's tokens)."""
    import yaml
    from espnet2.bin.whisper_export_vocabulary import export_vocabulary

    export_vocabulary(str(tmp_path / "tokens.txt"), "whisper_en")
    conf = {"token_list": str(tmp_path / "tokens.txt"), "token_type": "whisper_en",
            "bpemodel": "whisper_en", "cleaner": "whisper_en", "input_size": 1, "frontend": None,
            "normalize": None, "specaug": None,
            "encoder": "whisper", "encoder_conf": {"whisper_model": "tiny.en", "download_dir": str(tmp_path)},
            "decoder": "whisper", "decoder_conf": {"whisper_model": "tiny.en", "download_dir": str(tmp_path)},
            "model_conf": {"ctc_weight": 0.0, "sym_sos": "<|startoftranscript|>",
                           "sym_eos": "<|endoftext|>"}}
    from espnet2.tasks.asr import ASRTask

    full = {**vars(ASRTask.get_parser().parse_args([])), **conf}  # as the trainer writes it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(full))
    return tmp_path / "config.yaml"


def test_whisper_beam_search_computes_only_the_new_token_and_finds_the_same_hypotheses(tmp_path):
    """stage 6's decoding of an ESPnet Whisper model: ESPnet's Speech2Text with the encoder's
    keys and values projected once per utterance and each hypothesis's self-attention keys and
    values kept as its state gives ESPnet's own hypotheses, faster."""
    import time

    from espnet2.bin.asr_inference import Speech2Text

    from espnet_probe.asr.decode import WhisperDecoderCache

    config = _espnet_whisper_config(tmp_path)
    plain, cached = (Speech2Text(asr_train_config=str(config), asr_model_file=None, beam_size=2,
                                 ctc_weight=0.0, lm_weight=0.0, penalty=0.0, nbest=1, maxlenratio=0.15)
                     for _ in range(2))
    cache = WhisperDecoderCache.attach(cached.asr_model.decoder)
    incremental = []  # per step: did it feed only the new token?
    whole_prefix = cache._past
    cache._past = lambda states, ys: incremental.append(bool(past := whole_prefix(states, ys))) or past
    seconds = {"plain": 0.0, "cached": 0.0}
    for _, wave, _ in librispeech(2, max_seconds=6):
        start = time.perf_counter()
        theirs = plain(wave)[0]
        seconds["plain"] += time.perf_counter() - start
        cache.reset()
        start = time.perf_counter()
        ours = cached(wave)[0]
        seconds["cached"] += time.perf_counter() - start
        assert ours[2] == theirs[2] and ours[0] == theirs[0]  # token ids and text
        assert len(theirs[2]) > 5
    assert incremental.count(False) == 2 and incremental.count(True) > 10  # one full step each
    print(f"beam 2 on 2 utterances: {seconds['plain']:.1f} s as ESPnet, {seconds['cached']:.1f} s cached")
