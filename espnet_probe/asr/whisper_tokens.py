"""ESPnet's Whisper tokenizer (``token_type: whisper_en`` / ``whisper_multilingual``) on
openai-whisper's tiktoken tokenizer.

ESPnet 202511's ``OpenAIWhisperTokenizer``, ``OpenAIWhisperTokenIDConverter`` and
``whisper_export_vocabulary`` call ``whisper.tokenizer.get_tokenizer(...).tokenizer``: the
transformers GPT-2 tokenizer that openai-whisper carried until 2023 (and ESPnet's own fork of it
still does, installed from GitHub).  openai-whisper from PyPI, the one this project installs,
tokenises with tiktoken and has no such attribute, so an ESPnet Whisper model could be neither
trained nor decoded.  ``TransformersStyleTokenizer`` gives ESPnet the calls it makes, over the
tiktoken encoding, with the same ids and token strings:

* ids are tiktoken's, which are GPT-2's / Whisper's: the token list ESPnet writes has the
  model's ``n_vocab`` entries in id order (51,864 for the English-only models);
* a token's string is its bytes in GPT-2's printable byte alphabet ("Ġthe" for b" the"), as in
  transformers' vocab files, so ``text2tokens`` / ``tokens2ids`` round-trip;
* special tokens (``<|endoftext|>``, ``<|startoftranscript|>``, languages, tasks, timestamps)
  keep their ids; tokens ESPnet adds (a speaker-change symbol, prompt tokens) get the next ids.

``espnet_probe.asr.whisper_offline`` attaches it to every tokenizer ``get_tokenizer`` returns.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Dict, Iterable, List, Sequence, Union


@lru_cache(maxsize=1)
def byte_alphabet() -> Dict[int, str]:
    """GPT-2's printable stand-in for each byte value: the printable Latin-1 bytes stand for
    themselves, the others (controls, space, DEL, NBSP, soft hyphen) for code points 256, 257, ...
    in byte order, so a token's string never holds whitespace or a control character."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    stand_ins, extra = {}, 0
    for b in range(256):
        if b in printable:
            stand_ins[b] = chr(b)
        else:
            stand_ins[b] = chr(256 + extra)
            extra += 1
    return stand_ins


@lru_cache(maxsize=1)
def _byte_of() -> Dict[str, int]:
    return {c: b for b, c in byte_alphabet().items()}


class TransformersStyleTokenizer:
    """The part of transformers' tokenizer interface ESPnet's Whisper text classes use."""

    def __init__(self, whisper_tokenizer):
        encoding = whisper_tokenizer.encoding
        self.encoding = encoding
        specials = sorted((encoding.encode_single_token(t), t) for t in encoding.special_tokens_set)
        self._added: Dict[str, int] = {t: i for i, t in specials}
        self._special = set(self._added)
        self._by_id: Dict[int, str] = {i: t for t, i in self._added.items()}
        self._pattern = None  # the added tokens, longest first: built when first needed
        self.eot_token = self._by_id[whisper_tokenizer.eot]
        # transformers counted the base vocabulary as its vocab.json held it: 50,257 entries for
        # both of Whisper's vocabularies (the English one's includes <|endoftext|>, the
        # multilingual one's ends just before it); ESPnet's size arithmetic assumes that
        english = not encoding.name.startswith("multilingual")  # whisper names it by its file
        self.vocab_size = encoding.n_vocab - len(specials) + int(english)

    # -- what ESPnet adds --------------------------------------------------------------------
    @property
    def additional_special_tokens(self) -> List[str]:
        return [t for i, t in sorted(self._by_id.items()) if t in self._special and t != self.eot_token]

    def _add(self, tokens: Iterable[str], special: bool) -> int:
        new = 0
        for token in tokens:
            if token not in self._added:
                token_id = max(self.encoding.n_vocab, max(self._by_id) + 1)
                self._added[token], self._by_id[token_id] = token_id, token
                new += 1
            if special:
                self._special.add(token)
        self._pattern = None
        return new

    def add_special_tokens(self, special_tokens: Dict[str, Sequence[str]]) -> int:
        tokens = list(special_tokens.get("additional_special_tokens", []))
        tokens += [v for k, v in special_tokens.items() if k != "additional_special_tokens"]
        return self._add(tokens, special=True)

    def add_tokens(self, tokens: Union[str, Sequence[str]]) -> int:
        return self._add([tokens] if isinstance(tokens, str) else tokens, special=False)

    def get_added_vocab(self) -> Dict[str, int]:
        return dict(self._added)

    # -- text <-> tokens <-> ids -----------------------------------------------------------
    def _split_on_added(self, text: str) -> List[str]:
        if self._pattern is None:
            names = sorted(self._added, key=len, reverse=True)
            self._pattern = re.compile("(" + "|".join(map(re.escape, names)) + ")")
        return [piece for piece in self._pattern.split(text) if piece]

    def tokenize(self, text: str, add_special_tokens: bool = False) -> List[str]:
        """Byte-level BPE token strings; a special or added token in the text stays whole."""
        tokens: List[str] = []
        for piece in self._split_on_added(text):
            if piece in self._added:
                tokens.append(piece)
            else:
                tokens.extend(self._token_string(i) for i in self.encoding.encode_ordinary(piece))
        return tokens

    def _token_string(self, token_id: int) -> str:
        if token_id in self._by_id:
            return self._by_id[token_id]
        alphabet = byte_alphabet()
        return "".join(alphabet[b] for b in self.encoding.decode_single_token_bytes(token_id))

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, int) or (hasattr(ids, "ndim") and ids.ndim == 0):
            return self._token_string(int(ids))
        return [self._token_string(int(i)) for i in ids
                if not (skip_special_tokens and self._by_id.get(int(i)) in self._special)]

    def _token_id(self, token: str) -> int:
        if token in self._added:
            return self._added[token]
        byte_of = _byte_of()
        try:
            return self.encoding.encode_single_token(bytes(byte_of[c] for c in token))
        except KeyError:
            raise KeyError(f"{token!r} is not a token of Whisper's {self.encoding.name} vocabulary") \
                from None

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._token_id(tokens)
        return [self._token_id(t) for t in tokens]

    def convert_tokens_to_string(self, tokens: Iterable[str]) -> str:
        byte_of, out, pending = _byte_of(), [], bytearray()
        for token in tokens:
            if token in self._added:
                out.append(pending.decode("utf-8", errors="replace"))
                pending = bytearray()
                out.append(token)
            else:
                pending.extend(byte_of[c] for c in token)
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)


def with_transformers_view(get_tokenizer):
    """``whisper.tokenizer.get_tokenizer`` whose tokenizers carry ``.tokenizer`` (module doc)."""

    def get(*args, **kwargs):
        tokenizer = get_tokenizer(*args, **kwargs)
        if not hasattr(tokenizer, "tokenizer"):  # cached by whisper: one view per tokenizer
            tokenizer.tokenizer = TransformersStyleTokenizer(tokenizer)
        return tokenizer

    get.transformers_view = True
    return get
