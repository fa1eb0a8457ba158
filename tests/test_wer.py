import random

import editdistance
import pytest

from espnet_probe.asr.decode import collapse, length_sorted_batches
from espnet_probe.metrics.wer import align_counts, score


def test_collapse_merges_repeats_then_drops_blanks():
    assert collapse([0, 3, 3, 0, 3, 5, 5, 0, 0]) == [3, 3, 5]
    assert collapse([0, 0]) == []


def test_hand_counted_alignment():
    c = align_counts("the cat sat on the mat".split(), "the cat sit on mat mat too".split())
    assert (c.sub, c.dele, c.ins, c.ref_len) == (2, 0, 1, 6)
    c = align_counts(list("abc"), [])
    assert (c.sub, c.dele, c.ins) == (0, 3, 0)
    c = align_counts([], list("xy"))
    assert (c.sub, c.dele, c.ins, c.rate) == (0, 0, 2, 200.0)


def test_alignment_cost_equals_edit_distance_on_random_strings():
    rng = random.Random(0)
    for _ in range(200):
        r = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        h = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        c = align_counts(r, h)
        assert c.errors == editdistance.eval(r, h)
        assert len(h) == len(r) - c.dele + c.ins


def test_corpus_wer_and_cer():
    refs = {"a": "HELLO WORLD", "b": "GOOD DAY"}
    hyps = {"a": "HELLO WORD", "b": "GOOD DAY"}
    w = score(refs, hyps, "word")
    assert w.rate == pytest.approx(25.0) and w.sentence_errors == 1
    assert score(refs, hyps, "char").errors == 1
    with pytest.raises(KeyError, match="no hypothesis"):
        score(refs, {"a": "X"}, "word")


def test_batches_respect_frame_budget_and_cover_everything():
    lengths = {f"u{i}": n for i, n in enumerate([5, 100, 40, 41, 300, 7, 90])}
    batches = length_sorted_batches(lengths, 200)
    assert sorted(u for b in batches for u in b) == sorted(lengths)
    for b in batches:
        assert len(b) == 1 or max(lengths[u] for u in b) * len(b) <= 200
