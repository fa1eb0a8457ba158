"""Real, tiny, *stock* ESPnet2 ASR models, trained the way an egs2 recipe trains them.

Not a test module: a helper that tests import (``from stock_models import ...``; tests/ is on
sys.path when pytest collects them). It lays out an egs2-style recipe directory, runs ESPnet's
own command-line tools in it with the recipe directory as the working directory, and leaves an
experiment directory that looks like the one ``asr.sh`` leaves:

    recipe_dir/
      conf/train_asr_<kind>.yaml
      log/tokenize_text.char.log                               (this helper's own log)
      data/{train,valid}/{wav.scp,text,utt2spk,spk2utt}
      data/token_list/bpe_unigram<N>/{train.txt,bpe.model,bpe.vocab,tokens.txt}
      data/token_list/char/tokens.txt
      data/token_list/whisper_en/tokens.txt                    (only with the Whisper kind)
      exp/asr_stats_raw_bpe<N>/ and exp/asr_stats_raw_char/   (the collect-stats pass)
      exp/asr_<kind>/{config.yaml,train.log,*epoch.pth,valid.*.best.pth,valid.*.ave.pth,...}

The steps mirror asr.sh's stages: the token lists, collect stats with one job plus the
aggregation and the ``text_shape.<token_type>`` files, training, and packing. Each tool is
``python -m espnet2.bin.<tool>`` from the project's venv (the trainer's main through our entry
point for every kind but the CTC-only transformer: see ``TRAINER``), so every path inside
``exp/asr_<kind>/config.yaml`` is relative to the recipe directory, like a real recipe's.

Reuse: :func:`stock_recipe` trains each kind once per pytest run, also across pytest-xdist
workers (a JSON record of the finished kinds next to the recipe, read and written under a file
lock), and returns a :class:`StockRecipe` of every kind finished so far; ``stock_asr_models`` is
a session-scoped fixture around it that a conftest can re-export.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

STOCK_KINDS = ("conformer_hybrid_bpe", "transformer_conv2d6", "rnn")

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / "tools" / "venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))

NBPE = 40                       # sentencepiece units (plus <blank>, <unk>, <sos/eos>)
BPE_MODE = "unigram"
FS = "16k"
FOLD_LENGTH = {"speech": 80000, "text": 150}   # asr.sh's defaults for raw waveforms

# Shared by every kind: ESPnet's default STFT front end, written out so it is explicit.
_FRONTEND = """\
frontend: default
frontend_conf:
    n_fft: 512
    hop_length: 128
    n_mels: 80
"""

_COMMON = """\
batch_type: folded
batch_size: 6
valid_batch_size: 6
accum_grad: 1
grad_clip: 5.0
max_epoch: 2
patience: null
num_workers: 0
num_att_plot: 0
use_tensorboard: false   # tensorboard is not installed in tools/venv
log_interval: 1
"""

# The conformers' sizes and modules, and the hybrid CTC/attention tail (decoder, loss, optimiser,
# checkpoint choice) the conformer kinds share
_SIZES = """\
    output_size: 48
    attention_heads: 4
    linear_units: 64
    num_blocks: 2
    dropout_rate: 0.1
    positional_dropout_rate: 0.1
    attention_dropout_rate: 0.1
"""
_CONFORMER = """\
    normalize_before: true
    macaron_style: true
    rel_pos_type: latest
    pos_enc_layer_type: rel_pos
    selfattention_layer_type: rel_selfattn
    activation_type: swish
    use_cnn_module: true
    cnn_module_kernel: 7
"""
_HYBRID = """\
decoder: transformer
decoder_conf:
    attention_heads: 4
    linear_units: 64
    num_blocks: 1
    dropout_rate: 0.1
    positional_dropout_rate: 0.1
    self_attention_dropout_rate: 0.1
    src_attention_dropout_rate: 0.1

model_conf:
    ctc_weight: 0.3
    lsm_weight: 0.1
    length_normalized_loss: false

optim: adam
optim_conf:
    lr: 0.002
scheduler: warmuplr
scheduler_conf:
    warmup_steps: 10

best_model_criterion:
-   - valid
    - acc
    - max
keep_nbest_models: 2
nbest_averaging_interval: 0
"""

# Each kind's training config, as a recipe would keep it in conf/. Like egs2 configs, the global_mvn
# kinds leave `normalize` out: the training command adds `--normalize global_mvn` with the stats
# file from the collect-stats pass (the stats pass itself cannot build a GlobalMVN without it).
CONFIGS: dict[str, str] = {
    "conformer_hybrid_bpe": _FRONTEND + """\
specaug: specaug
specaug_conf:
    apply_time_warp: true
    time_warp_window: 5
    time_warp_mode: bicubic
    apply_freq_mask: true
    freq_mask_width_range: [0, 10]
    num_freq_mask: 1
    apply_time_mask: true
    time_mask_width_range: [0, 20]
    num_time_mask: 1

encoder: conformer
encoder_conf:
""" + _SIZES + """\
    input_layer: conv2d
""" + _CONFORMER + _HYBRID + _COMMON,
    "transformer_conv2d6": _FRONTEND + """\
normalize: utterance_mvn
specaug: null

encoder: transformer
encoder_conf:
    output_size: 48
    attention_heads: 4
    linear_units: 64
    num_blocks: 2
    dropout_rate: 0.1
    positional_dropout_rate: 0.1
    attention_dropout_rate: 0.1
    input_layer: conv2d6
    normalize_before: true

decoder: null
model_conf:
    ctc_weight: 1.0
    length_normalized_loss: false

optim: adam
optim_conf:
    lr: 0.002
scheduler: warmuplr
scheduler_conf:
    warmup_steps: 10

# CTC-only: there is no attention decoder, hence no accuracy; the loss picks the best epochs.
best_model_criterion:
-   - valid
    - loss
    - min
keep_nbest_models: 2
""" + _COMMON,
    "rnn": _FRONTEND + """\
specaug: null

encoder: rnn
encoder_conf:
    rnn_type: lstm
    bidirectional: true
    use_projection: true
    num_layers: 3
    hidden_size: 32
    output_size: 32
    dropout: 0.0
    subsample: [2, 2, 1]      # layers 1-2 halve the frame rate: 4x in all

decoder: rnn
decoder_conf:
    rnn_type: lstm
    num_layers: 1
    hidden_size: 32
    dropout: 0.0
    att_conf:
        atype: location
        adim: 32
        aconv_chans: 4
        aconv_filts: 10

model_conf:
    ctc_weight: 0.5
    length_normalized_loss: false

optim: adadelta
optim_conf:
    lr: 1.0
    rho: 0.95
    eps: 1.0e-08

best_model_criterion:
-   - valid
    - acc
    - max
keep_nbest_models: 2
""" + _COMMON,
}

# Whisper fine-tuned, shaped as the egs2 Whisper recipes' configs (encoder and decoder from a
# pretrained Whisper, its own tokens, no CTC, no frontend: the encoder computes its own log-mel).
# Not trained unless asked for (stock_recipe(kinds=...)): one update (MAX_EPOCH) at a small
# learning rate, so the model still recognises speech: what is under test is that ESPnet's
# trainer made it, not what fine-tuning does.
WHISPER_KIND = "whisper_tiny_en"
CONFIGS[WHISPER_KIND] = """\
input_size: 1
frontend: null
normalize: null
specaug: null

encoder: whisper
encoder_conf:
    whisper_model: tiny.en
    dropout_rate: 0.0
    do_pad_trim: true     # 30-s windows, as Whisper was trained: on the bare utterance (ESPnet's
                          # default) tiny.en, fine-tuned or not, ends after the first sentence
                          # (WER 36 %, nearly all deletions, on the recipe test's speakers)
decoder: whisper
decoder_conf:
    whisper_model: tiny.en
    dropout_rate: 0.0

model_conf:
    ctc_weight: 0.0
    lsm_weight: 0.1
    length_normalized_loss: false
    sym_sos: "<|startoftranscript|>"
    sym_eos: "<|endoftext|>"

optim: adamw
optim_conf:
    lr: 1.0e-05
    weight_decay: 0.01

best_model_criterion:
-   - valid
    - acc
    - max
keep_nbest_models: 1
num_iters_per_epoch: 1
""" + _COMMON

# A streaming conformer shaped as egs2/librispeech's train_asr_streaming_conformer config (blocks
# of 40 frames, hop 16, look-ahead 16), small; not trained unless asked for (stock_recipe(kinds=...))
STREAMING_KIND = "contextual_block_conformer"
CONFIGS[STREAMING_KIND] = _FRONTEND + """\
normalize: utterance_mvn
specaug: null

encoder: contextual_block_conformer
encoder_conf:
""" + _SIZES + """\
    input_layer: conv2d
    normalize_before: true
    macaron_style: true
    selfattention_layer_type: rel_selfattn
    activation_type: swish
    use_cnn_module: true
    cnn_module_kernel: 7
    block_size: 40
    hop_size: 16
    look_ahead: 16
    init_average: true
    ctx_pos_enc: true
""" + _HYBRID + _COMMON

# A conformer on ESPnet's s3prl frontend (the weighted sum of every layer of an SSL upstream), as
# egs2 recipes with `frontend: s3prl` / `multilayer_feature: true` have it. The upstream is a random
# tiny HuBERT written in s3prl's local-checkpoint layout (tests/ssl_upstream.py) into the recipe's
# downloads/, the path a user's converted checkpoint would have. Trained through our entry point:
# s3prl imports beside torchaudio >= 2.9 only through espnet_probe's import hooks.
S3PRL_KIND = "s3prl_hubert_conformer"
S3PRL_UPSTREAM = Path("downloads") / "hubert_tiny.pt"
CONFIGS[S3PRL_KIND] = """\
frontend: s3prl
frontend_conf:
    frontend_conf:
        upstream: hubert_local
        path_or_url: {recipe_dir}/downloads/hubert_tiny.pt
    multilayer_feature: true
normalize: utterance_mvn
specaug: null

encoder: conformer
encoder_conf:
""" + _SIZES + """\
    input_layer: conv2d2   # 2x on the upstream's 20 ms frames
""" + _CONFORMER + _HYBRID + _COMMON

# token type, normalisation and text cleaner per kind (asr.sh's --token_type, --feats_normalize
# and --cleaner)
TOKEN_TYPE = {"conformer_hybrid_bpe": "bpe", "transformer_conv2d6": "char", "rnn": "char",
              WHISPER_KIND: "whisper_en", STREAMING_KIND: "char", S3PRL_KIND: "char"}
FEATS_NORMALIZE = {"conformer_hybrid_bpe": "global_mvn", "transformer_conv2d6": "utterance_mvn",
                   "rnn": "global_mvn", WHISPER_KIND: None, STREAMING_KIND: "utterance_mvn",
                   S3PRL_KIND: "utterance_mvn"}
CLEANER = {WHISPER_KIND: "whisper_en"}
# ESPnet's trainer: its own `python -m espnet2.bin.asr_train` trains the CTC-only transformer, the
# witness that what the untouched tool writes is brought (or refused) as it should be; the same
# ESPnet main through espnet_probe.bin.asr_train trains the others and runs every stats pass. That
# entry point starts ESPnet as every tool of ours does: typeguard off (utils/typecheck.py: 6 CPU-s
# of import a process, and checks at run time), tiny.en's weights served offline (ESPnet's Whisper
# encoder would download them), s3prl importable beside torchaudio >= 2.9. The model, config.yaml
# and checkpoints it writes are ESPnet's.
TRAINER = {kind: "espnet_probe.bin.asr_train" for kind in CONFIGS if kind != "transformer_conv2d6"}
# Whisper's epochs are few: each is one update and a validation pass over 30-s windows (~1 min
# on one CPU thread); one is enough to show ESPnet's trainer made the model
MAX_EPOCH = {WHISPER_KIND: 1}
# ... and its update on 2 of the 30-s windows, not 6: forward and backward through tiny.en are
# nearly all of its training (24 CPU-s for the update on 6)
BATCH_SIZE = {WHISPER_KIND: 2}


class StockModelError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- small helpers

# One intra-op thread unless STOCK_MODELS_THREADS says otherwise. Measured on the 2-vCPU test VM:
# with 2 threads the same rnn training took 37 s in one run and 113 s in the next (one epoch went
# from 8 s to 85 s, apparently contention for the vCPUs); with 1 thread it took 37 s every time.
THREADS = os.environ.get("STOCK_MODELS_THREADS", "1")


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = THREADS
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '')}"
    return env


def _run(args: Sequence[str], cwd: Path, log: Path) -> None:
    """Run one ESPnet tool with cwd=recipe dir; its output goes to `log` (as run.pl's --log)."""
    log = cwd / log if not log.is_absolute() else log
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [PYTHON, *args]
    with log.open("w", encoding="utf-8") as f:
        f.write("# " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-40:])
        raise StockModelError(f"{' '.join(args[:2])} failed (rc={proc.returncode}), "
                              f"see {log}:\n{tail}")


def _read_table(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def _write_table(path: Path, table: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for key in sorted(table):
            f.write(f"{key} {table[key]}\n")


def write_kaldi_dir(out_dir: Path, utts: Iterable[tuple[str, str, str, str]]) -> Path:
    """Write a Kaldi data dir from (utt_id, speaker, audio path, transcript) tuples."""
    wav, text, utt2spk = {}, {}, {}
    for utt, spk, audio, words in utts:
        if not utt.startswith(spk):
            raise ValueError(f"{utt}: Kaldi sorting needs the speaker id as utterance prefix")
        wav[utt], text[utt], utt2spk[utt] = str(Path(audio).resolve()), words, spk
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    _write_table(out_dir / "wav.scp", wav)
    _write_table(out_dir / "text", text)
    _write_table(out_dir / "utt2spk", utt2spk)
    _write_table(out_dir / "spk2utt", {s: " ".join(u) for s, u in spk2utt.items()})
    return out_dir


def librispeech_kaldi_dirs(subset_dir: Path, out_root: Path, n_train_spk: int = 6,
                           n_train_utt: int = 6, n_valid_spk: int = 2,
                           n_valid_utt: int = 4) -> tuple[Path, Path]:
    """Two speaker-disjoint Kaldi dirs (train, valid) from a LibriSpeech subset directory.

    Speakers in sorted order: the first n_train_spk train, the next n_valid_spk validate. Each
    speaker contributes its shortest utterances (keeps training fast). Texts stay uppercase and
    wav.scp points at the original 16 kHz FLAC files (absolute paths).
    """
    import soundfile as sf

    subset_dir = Path(subset_dir)
    speakers = sorted((p for p in subset_dir.iterdir() if p.is_dir()), key=lambda p: p.name)
    if len(speakers) < n_train_spk + n_valid_spk:
        raise StockModelError(f"{subset_dir}: {len(speakers)} speakers, need "
                              f"{n_train_spk + n_valid_spk}")

    def pick(spk_dir: Path, n: int) -> list[tuple[str, str, str, str]]:
        found = []
        for trans in sorted(spk_dir.glob("*/*.trans.txt")):
            for utt, words in _read_table(trans).items():
                audio = trans.parent / f"{utt}.flac"
                info = sf.info(str(audio))
                if info.samplerate != 16000 or info.channels != 1:
                    raise StockModelError(f"{audio}: not 16 kHz mono")
                found.append((info.frames, utt, spk_dir.name, str(audio), words))
        found.sort()
        return [f[1:] for f in found[:n]]

    train = [u for s in speakers[:n_train_spk] for u in pick(s, n_train_utt)]
    valid = [u for s in speakers[n_train_spk:n_train_spk + n_valid_spk]
             for u in pick(s, n_valid_utt)]
    return (write_kaldi_dir(Path(out_root) / "train", train),
            write_kaldi_dir(Path(out_root) / "valid", valid))


# ----------------------------------------------------------------------------- the recipe

def bpe_dir(recipe_dir: Path | None = None) -> Path:
    rel = Path("data") / "token_list" / f"bpe_{BPE_MODE}{NBPE}"
    return rel if recipe_dir is None else Path(recipe_dir) / rel


def char_dir(recipe_dir: Path | None = None) -> Path:
    rel = Path("data") / "token_list" / "char"
    return rel if recipe_dir is None else Path(recipe_dir) / rel


def stats_dir(kind: str) -> Path:
    """asr.sh's asr_stats_dir for lang=noinfo: exp/asr_stats_<feats_type>_<token_type>[<nbpe>]."""
    token_type = TOKEN_TYPE[kind]
    return Path("exp") / (f"asr_stats_raw_bpe{NBPE}" if token_type == "bpe"
                          else f"asr_stats_raw_{token_type}")


def _copy_kaldi_dir(src: Path, dst: Path) -> None:
    src = Path(src)
    for name in ("wav.scp", "text", "utt2spk"):
        if not (src / name).is_file():
            raise StockModelError(f"{src}: no {name}")
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file():
            shutil.copyfile(f, dst / f.name)
    wav, text, utt2spk = (_read_table(dst / n) for n in ("wav.scp", "text", "utt2spk"))
    if not (set(wav) == set(text) == set(utt2spk)):
        raise StockModelError(f"{src}: wav.scp, text and utt2spk list different utterances")
    for utt, path in wav.items():
        if not Path(path).is_absolute() or not Path(path).is_file():
            raise StockModelError(f"{src}/wav.scp: {utt} -> {path} is not an absolute file path")
    if not (dst / "spk2utt").is_file():
        spk2utt: dict[str, list[str]] = {}
        for utt in sorted(utt2spk):
            spk2utt.setdefault(utt2spk[utt], []).append(utt)
        _write_table(dst / "spk2utt", {s: " ".join(u) for s, u in spk2utt.items()})


def make_recipe(recipe_dir: Path, train_dir: Path, valid_dir: Path) -> None:
    """Lay out an egs2 recipe dir: conf/, data/{train,valid}, data/token_list/{bpe..,char}."""
    import sentencepiece as spm

    recipe_dir = Path(recipe_dir)
    _copy_kaldi_dir(train_dir, recipe_dir / "data" / "train")
    _copy_kaldi_dir(valid_dir, recipe_dir / "data" / "valid")
    conf = recipe_dir / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for kind, text in CONFIGS.items():
        text = text.replace("{recipe_dir}", str(recipe_dir.resolve()))
        (conf / f"train_asr_{kind}.yaml").write_text(text, encoding="utf-8")

    # BPE (asr.sh's token-list stage): sentencepiece on the train transcripts. tokens.txt is
    # <blank>, <unk>, every piece in id order (minus sentencepiece's <unk>, <s>, </s>), <sos/eos>.
    bdir = bpe_dir(recipe_dir)
    bdir.mkdir(parents=True, exist_ok=True)
    texts = _read_table(recipe_dir / "data" / "train" / "text")
    (bdir / "train.txt").write_text("".join(f"{t}\n" for t in texts.values()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(bdir / "train.txt"), vocab_size=NBPE, model_type=BPE_MODE,
        model_prefix=str(bdir / "bpe"), character_coverage=1.0,
        input_sentence_size=100000000, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(bdir / "bpe.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i))]
    (bdir / "tokens.txt").write_text(
        "\n".join(["<blank>", "<unk>", *pieces, "<sos/eos>"]) + "\n", encoding="utf-8")

    # Characters (the same stage): ESPnet's own tokenize_text in write-vocabulary mode.
    cdir = char_dir(recipe_dir)
    cdir.mkdir(parents=True, exist_ok=True)
    _run(["-m", "espnet2.bin.tokenize_text", "--token_type", "char",
          "--input", "data/train/text", "--output", str(char_dir() / "tokens.txt"),
          "--field", "2-", "--cleaner", "none", "--g2p", "none", "--write_vocabulary", "true",
          "--add_symbol", "<blank>:0", "--add_symbol", "<unk>:1",
          "--add_symbol", "<sos/eos>:-1"], recipe_dir, Path("log") / "tokenize_text.char.log")


def as_our_tool(module: str) -> list[str]:
    """Python's arguments that run ESPnet's tool ``module`` as our tools start ESPnet: typeguard
    off (its checks only re-verify argument types) and espnet_probe's import hooks in."""
    return ["-c", "import espnet_probe.utils.typecheck, runpy, espnet_probe; "
                  f"runpy.run_module({module!r}, run_name='__main__')"]


def whisper_token_list(recipe_dir: Path | None = None) -> Path:
    rel = Path("data") / "token_list" / "whisper_en" / "tokens.txt"
    return rel if recipe_dir is None else Path(recipe_dir) / rel


def export_whisper_token_list(recipe_dir: Path) -> None:
    """asr.sh's token-list stage for Whisper: ESPnet's whisper_export_vocabulary (in a process
    that has imported espnet_probe: ESPnet's Whisper text classes need its tokenizer view). Run
    from ``-c``, its ``__main__`` has no source file for typeguard to instrument, so the process
    turns the checks off first, as our own tools do."""
    if whisper_token_list(recipe_dir).is_file():
        return
    _run([*as_our_tool("espnet2.bin.whisper_export_vocabulary"),
          "--whisper_model", "whisper_en", "--output", str(whisper_token_list())],
         recipe_dir, Path("log") / "whisper_export_vocabulary.log")


def _token_args(kind: str) -> list[str]:
    token_type = TOKEN_TYPE[kind]
    if token_type == "bpe":
        return ["--token_type", "bpe", "--token_list", str(bpe_dir() / "tokens.txt"),
                "--bpemodel", str(bpe_dir() / "bpe.model")]
    if token_type == "whisper_en":
        return ["--token_type", token_type, "--token_list", str(whisper_token_list()),
                "--bpemodel", token_type]
    return ["--token_type", token_type, "--token_list", str(char_dir() / "tokens.txt")]


def _trainer(kind: str) -> list[str]:
    return ["-m", TRAINER.get(kind, "espnet2.bin.asr_train")]


def _cleaner(kind: str) -> list[str]:
    return ["--cleaner", CLEANER.get(kind, "none")]


def _data_args(split: str) -> list[str]:
    return [f"--{split}_data_path_and_name_and_type", f"data/{split}/wav.scp,speech,sound",
            f"--{split}_data_path_and_name_and_type", f"data/{split}/text,text,text"]


def _stats_complete(recipe_dir: Path, kind: str) -> bool:
    sdir = recipe_dir / stats_dir(kind)
    token_type = TOKEN_TYPE[kind]
    return all((sdir / split / name).is_file() for split in ("train", "valid")
               for name in ("feats_stats.npz", "speech_shape", f"text_shape.{token_type}"))


def collect_stats(recipe_dir: Path, kind: str) -> Path:
    """asr.sh's collect-stats stage with nj=1: stats pass, aggregation, text_shape.<type>."""
    recipe_dir = Path(recipe_dir)
    sdir = stats_dir(kind)
    logdir = sdir / "logdir"
    (recipe_dir / logdir).mkdir(parents=True, exist_ok=True)
    # key files: asr.sh splits wav.scp into nj pieces; with one job the piece is wav.scp itself
    for split in ("train", "valid"):
        shutil.copyfile(recipe_dir / "data" / split / "wav.scp",
                        recipe_dir / logdir / f"{split}.1.scp")
    # through our entry point for every kind: the pass writes shapes and feature statistics, not
    # a model (ESPnet's untouched binary, typeguard on, took 18 CPU-s for it instead of 5)
    _run(["-m", "espnet_probe.bin.asr_train", "--collect_stats", "true",
          "--use_preprocessor", "true",
          *_token_args(kind), "--non_linguistic_symbols", "none", *_cleaner(kind),
          "--g2p", "none", *_data_args("train"), *_data_args("valid"),
          "--train_shape_file", str(logdir / "train.1.scp"),
          "--valid_shape_file", str(logdir / "valid.1.scp"),
          "--output_dir", str(logdir / "stats.1"),
          "--config", f"conf/train_asr_{kind}.yaml", "--frontend_conf", f"fs={FS}",
          "--ngpu", "0", "--num_workers", "0"], recipe_dir, logdir / "stats.1.log")
    _run(["-m", "espnet2.bin.aggregate_stats_dirs", "--input_dir", str(logdir / "stats.1"),
          "--output_dir", str(sdir)], recipe_dir, logdir / "aggregate.log")
    # append the vocabulary size to text_shape, as asr.sh does for the trainer's shape files
    token_list = recipe_dir / _token_args(kind)[3]
    n_tokens = sum(1 for _ in token_list.open(encoding="utf-8"))
    for split in ("train", "valid"):
        shape = recipe_dir / sdir / split / "text_shape"
        lines = [f"{line},{n_tokens}\n" for line in shape.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
        (shape.parent / f"text_shape.{TOKEN_TYPE[kind]}").write_text("".join(lines),
                                                                   encoding="utf-8")
    return recipe_dir / sdir


def prepare_stock_model(recipe_dir: Path, kind: str, reuse_stats: bool = True) -> Path:
    """asr.sh's stages before training for one kind: its token list (Whisper's) and its collect
    stats pass, unless this token type's stats dir is complete and reuse_stats. Kinds that share
    a token type share asr.sh's stats dir (exp/asr_stats_raw_char): the stats depend only on the
    data, the front end (the same for every kind) and the token list. Returns the recipe dir."""
    if kind not in CONFIGS:
        raise ValueError(f"unknown kind {kind!r}; one of {tuple(CONFIGS)}")
    recipe_dir = Path(recipe_dir).resolve()
    if not (recipe_dir / "conf" / f"train_asr_{kind}.yaml").is_file():
        raise StockModelError(f"{recipe_dir}: no recipe here (call make_recipe first)")
    if TOKEN_TYPE[kind] == "whisper_en":
        export_whisper_token_list(recipe_dir)
    if kind == S3PRL_KIND and not (recipe_dir / S3PRL_UPSTREAM).is_file():
        from ssl_upstream import write_tiny_hubert

        write_tiny_hubert(recipe_dir / S3PRL_UPSTREAM)
    if not (reuse_stats and _stats_complete(recipe_dir, kind)):
        collect_stats(recipe_dir, kind)
    return recipe_dir


def train_stock_model(recipe_dir: Path, kind: str, max_epoch: int = 2, seed: int = 0,
                      reuse_stats: bool = True, prepared: bool = False) -> Path:
    """Train with `python -m espnet2.bin.asr_train` from the recipe dir (after
    prepare_stock_model, unless prepared). Returns exp/asr_<kind>. Training runs with --resume
    true as in asr.sh, so calling again on a finished exp dir only re-averages."""
    if not prepared:
        prepare_stock_model(recipe_dir, kind, reuse_stats)
    recipe_dir = Path(recipe_dir).resolve()
    sdir = stats_dir(kind)
    token_type = TOKEN_TYPE[kind]
    exp = Path("exp") / f"asr_{kind}"
    args = [*_trainer(kind), "--use_preprocessor", "true", *_token_args(kind),
            "--non_linguistic_symbols", "none", *_cleaner(kind), "--g2p", "none",
            *_data_args("valid"),
            "--valid_shape_file", str(sdir / "valid" / "speech_shape"),
            "--valid_shape_file", str(sdir / "valid" / f"text_shape.{token_type}"),
            "--resume", "true", "--ignore_init_mismatch", "false",
            "--fold_length", str(FOLD_LENGTH["speech"]), "--fold_length", str(FOLD_LENGTH["text"]),
            "--output_dir", str(exp),
            "--config", f"conf/train_asr_{kind}.yaml", "--frontend_conf", f"fs={FS}"]
    if FEATS_NORMALIZE[kind] == "global_mvn":
        args += ["--normalize", "global_mvn",
                 "--normalize_conf", f"stats_file={sdir / 'train' / 'feats_stats.npz'}"]
    args += [*_data_args("train"),
             "--train_shape_file", str(sdir / "train" / "speech_shape"),
             "--train_shape_file", str(sdir / "train" / f"text_shape.{token_type}"),
             "--ngpu", "0", "--num_workers", "0", "--seed", str(seed),
             "--max_epoch", str(min(max_epoch, MAX_EPOCH.get(kind, max_epoch)))]
    if kind in BATCH_SIZE:
        args += ["--batch_size", str(BATCH_SIZE[kind])]
    _run(args, recipe_dir, exp / "train.log")
    return recipe_dir / exp


def inference_model_name(exp_dir: Path) -> str:
    """The checkpoint asr.sh decodes and packs: <phase>.<metric>.ave.pth of the first criterion."""
    import yaml

    with (Path(exp_dir) / "config.yaml").open(encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    phase, metric, _ = conf["best_model_criterion"][0]
    for name in (f"{phase}.{metric}.ave.pth", f"{phase}.{metric}.best.pth"):
        if (Path(exp_dir) / name).exists():
            return name
    raise StockModelError(f"{exp_dir}: neither {phase}.{metric}.ave.pth nor .best.pth")


def pack_model(recipe_dir: Path, exp_dir: Path, out_zip: Path) -> Path:
    """asr.sh's packing stage: `python -m espnet2.bin.pack asr ...` run from the recipe dir.

    Packs the first criterion's averaged model (as asr.sh's default inference model), the bpe
    model for bpe kinds, the feats stats for global_mvn kinds and exp/asr_<kind>/images."""
    import yaml

    recipe_dir, exp_dir, out_zip = (Path(p).resolve() for p in (recipe_dir, exp_dir, out_zip))
    rel_exp = Path(os.path.relpath(exp_dir, recipe_dir))
    with (exp_dir / "config.yaml").open(encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    args = ["-m", "espnet2.bin.pack", "asr",
            "--asr_train_config", str(rel_exp / "config.yaml"),
            "--asr_model_file", str(rel_exp / inference_model_name(exp_dir))]
    if conf.get("token_type") == "bpe" and conf.get("bpemodel"):
        args += ["--option", conf["bpemodel"]]
    stats_file = (conf.get("normalize_conf") or {}).get("stats_file")
    if conf.get("normalize") == "global_mvn" and stats_file:
        args += ["--option", stats_file]
    for extra in ("RESULTS.md", "images"):
        if (exp_dir / extra).exists():
            args += ["--option", str(rel_exp / extra)]
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    # the log goes beside the zip: asr.sh leaves nothing of the packing in the exp dir
    _run([*args, "--outpath", str(out_zip)], recipe_dir, out_zip.with_name(out_zip.name + ".log"))
    return out_zip


# ----------------------------------------------------------------------------- session cache

@dataclass
class StockRecipe:
    """One recipe dir with every requested kind trained in it."""
    recipe_dir: Path
    exp_dirs: dict[str, Path]
    train_seconds: dict[str, float] = field(default_factory=dict)

    def exp(self, kind: str) -> Path:
        return self.exp_dirs[kind]

    def config(self, kind: str) -> Path:
        return self.exp_dirs[kind] / "config.yaml"

    def checkpoint(self, kind: str) -> Path:
        return self.exp_dirs[kind] / inference_model_name(self.exp_dirs[kind])


_RECORD = "stock_models.json"   # beside the recipe dir: {kind: training seconds} of finished kinds


def librispeech_subset() -> Path:
    data = Path(os.environ.get("PROBE_SHARED_DATA", REPO.parent / "shared" / "data"))
    return data / "LibriSpeech" / "train-clean-5"


def stock_recipe(tmp_path_factory, kinds: Sequence[str] = STOCK_KINDS, max_epoch: int = 2,
                 seed: int = 0, subset_dir: Path | None = None, name: str = "stock") -> StockRecipe:
    """Train `kinds` once per pytest run in <basetemp>/<name>_recipe_e<max_epoch>_s<seed>/ and
    return the recipe (a test that trains other kinds at the same time as another worker gives
    its own `name`: the kinds of one recipe train under its lock). Kinds already trained by an earlier call are reused, also by the other
    workers of a pytest-xdist run (the recipe sits in the run's shared basetemp and is built
    under a file lock, its record naming the finished kinds); pytest.skip()s when the
    LibriSpeech subset is missing. The missing kinds are prepared one after another (token
    lists, stats) and trained side by side, one single-threaded training per core (at most 2)."""
    import pytest
    from filelock import FileLock

    subset = Path(subset_dir) if subset_dir is not None else librispeech_subset()
    if not subset.is_dir():
        pytest.skip(f"real speech not found at {subset} (set PROBE_SHARED_DATA)")
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the run's workers
    root = base / f"{name}_recipe_e{max_epoch}_s{seed}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        recipe_dir = root / "egs2" / "stock" / "asr1"
        record = root / _RECORD
        done = json.loads(record.read_text()) if record.is_file() else {}
        if not (recipe_dir / "data" / "token_list" / "char" / "tokens.txt").is_file():
            train, valid = librispeech_kaldi_dirs(subset, root / "source")
            make_recipe(recipe_dir, train, valid)
            done = {}
        missing = [kind for kind in kinds if kind not in done]
        for kind in missing:
            prepare_stock_model(recipe_dir, kind)

        def train(kind: str) -> tuple[str, float]:
            start = time.monotonic()
            train_stock_model(recipe_dir, kind, max_epoch=max_epoch, seed=seed, prepared=True)
            return kind, round(time.monotonic() - start, 1)

        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            done.update(pool.map(train, missing))
        record.write_text(json.dumps(done, indent=1))
    return StockRecipe(recipe_dir.resolve(), {k: recipe_dir.resolve() / "exp" / f"asr_{k}" for k in done},
                       dict(done))


def _stock_recipe_fixture(tmp_path_factory) -> StockRecipe:
    return stock_recipe(tmp_path_factory)


try:  # a session fixture a conftest can re-export: `from stock_models import stock_asr_models`
    import pytest as _pytest

    stock_asr_models = _pytest.fixture(scope="session", name="stock_asr_models")(
        _stock_recipe_fixture)
except ImportError:  # pragma: no cover - pytest is always there when tests run
    pass
