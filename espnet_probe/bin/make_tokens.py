"""Token list for CTC training from the training transcripts, with ESPnet's own tokenizers.

  python -m espnet_probe.bin.make_tokens --text data/train/text --token_type char --out_dir dump/tokens/char
writes <out_dir>/tokens.txt in ESPnet's layout (<blank> first, <unk>, the tokens by frequency,
<sos/eos> last) and, for --token_type bpe, <out_dir>/bpe.model trained with sentencepiece.
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import argparse
import sys
import tempfile
from pathlib import Path

from espnet_probe.utils.fileio import atomic_path
from espnet_probe.utils.kaldi_dir import read_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--text", required=True, type=Path, help="Kaldi text file of the training set")
    p.add_argument("--token_type", choices=("char", "bpe"), default="char")
    p.add_argument("--nbpe", type=int, default=300)
    p.add_argument("--out_dir", required=True, type=Path)
    args = p.parse_args(argv)

    from espnet2.bin.tokenize_text import tokenize

    transcripts = [t for t in read_table(args.text, allow_empty_value=True).values() if t]
    if not transcripts:
        raise SystemExit(f"{args.text}: no transcripts to build tokens from")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    bpemodel = None
    if args.token_type == "bpe":
        import sentencepiece as spm

        bpemodel = args.out_dir / "bpe.model"
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus.txt"
            corpus.write_text("\n".join(transcripts) + "\n", encoding="utf-8")
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(Path(tmp) / "bpe"), vocab_size=args.nbpe,
                model_type="unigram", character_coverage=1.0, input_sentence_size=10_000_000,
                minloglevel=2)
            with atomic_path(bpemodel) as out:
                out.write_bytes((Path(tmp) / "bpe.model").read_bytes())
    with atomic_path(args.out_dir / "tokens.txt") as out:
        tokenize(input=str(args.text), output=str(out), field="2-", delimiter=None,
                 token_type=args.token_type, space_symbol="<space>", non_linguistic_symbols=None,
                 bpemodel=str(bpemodel) if bpemodel else None, log_level="WARNING",
                 write_vocabulary=True, vocabulary_size=0, remove_non_linguistic_symbols=False,
                 cutoff=0, add_symbol=["<blank>:0", "<unk>:1", "<sos/eos>:-1"], cleaner=None,
                 g2p=None, add_nonsplit_symbol=[])
    n = len((args.out_dir / "tokens.txt").read_text(encoding="utf-8").splitlines())
    print(f"make_tokens: {n} {args.token_type} tokens in {args.out_dir / 'tokens.txt'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
