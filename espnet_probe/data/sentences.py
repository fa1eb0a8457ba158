"""Everyday English sentences from a small seeded template grammar, for the embedded corpus.

The vocabulary (about two hundred common words) and the templates are written for this
project. Sentences are 5-12 words, already in the form the ASR sees (see ``normalize``):
upper-case letters A-Z, apostrophes for contractions, single spaces, no digits or punctuation.
``sentence_pools`` draws one set of distinct sentences and cuts it into named pools, so the
train / dev / test pools never share a sentence.
"""

from __future__ import annotations

import random
import re

MIN_WORDS = 5
MAX_WORDS = 12

NAMES = ["anna", "peter", "maria", "john", "lucy", "david", "emma", "sam", "kate", "tom"]
PEOPLE = ["man", "woman", "boy", "girl", "teacher", "doctor", "farmer", "driver", "neighbour",
          "friend", "brother", "sister", "mother", "father"]
ANIMALS = ["dog", "cat", "horse", "bird", "duck", "rabbit"]
THINGS = ["book", "box", "cup", "chair", "door", "window", "bag", "ball", "key", "letter",
          "coat", "bottle", "basket", "lamp", "picture", "bicycle", "car", "boat",
          "clock", "phone", "umbrella"]
FOODS = ["bread", "apple", "cake", "soup", "cheese", "tea", "sandwich", "pie"]
PLACES = ["park", "garden", "kitchen", "market", "station", "river", "school", "shop",
          "office", "beach", "bridge", "farm"]
FURNITURE = ["table", "bed", "bench", "sofa"]
ADJ_ANY = ["old", "new", "big", "small", "little", "lovely"]
ADJ_THING = ["red", "blue", "green", "yellow", "heavy", "clean", "dirty", "warm", "bright",
             "empty", "broken", "wooden"]
ADJ_FOOD = ["big", "small", "warm", "fresh", "sweet"]
ADJ_ALIVE = ["young", "happy", "tired", "hungry", "busy", "kind"]
# (base, past) of verbs that take a thing or an animal as object.
TRANSITIVE = [("find", "found"), ("see", "saw"), ("carry", "carried"), ("wash", "washed"),
              ("paint", "painted"), ("drop", "dropped"), ("buy", "bought"), ("sell", "sold"),
              ("move", "moved"), ("open", "opened"), ("fix", "fixed"), ("bring", "brought"),
              ("take", "took"), ("watch", "watched"), ("keep", "kept"), ("lose", "lost"),
              ("hold", "held"), ("hide", "hid"), ("need", "needed")]
# (base, past) of verbs that take food.
EATING = [("eat", "ate"), ("cook", "cooked"), ("share", "shared"), ("make", "made"),
          ("like", "liked")]
# (base, past) of verbs without an object, followed by a place.
STAYING = [("walk", "walked"), ("sleep", "slept"), ("wait", "waited"), ("sit", "sat"),
           ("play", "played"), ("work", "worked"), ("stay", "stayed"), ("sing", "sang")]
MOVING = [("go", "went"), ("drive", "drove"), ("come", "came"), ("run", "ran"),
          ("return", "returned")]
PLACE_PREPOSITIONS = ["in", "near", "behind", "at", "beside"]
FURNITURE_PREPOSITIONS = ["under", "on", "beside", "behind"]
PAST_TIMES = ["yesterday", "last night", "this morning", "last week", "on monday", "early",
              "today", "in the evening", "at noon", "before dinner"]
FUTURE_TIMES = ["tomorrow", "tonight", "next week", "after school", "on friday", "soon",
                "today", "in the evening", "at noon", "before dinner"]
MODALS = ["will", "can", "should", "might", "must"]
PRONOUNS = ["i", "you", "we", "they", "he", "she"]
POSSESSIVES = ["my", "your", "his", "her", "our", "their"]
OPINIONS = ["i think", "i don't think", "she said", "he knows", "they hope", "i'm sure",
            "it's clear"]
WEATHER = ["sunny", "rainy", "windy", "cloudy", "cold"]

_ALLOWED = re.compile(r"^[A-Z']+( [A-Z']+)*$")


def normalize(text: str) -> str:
    """The transcript form the ASR sees: upper case, letters and apostrophes, single spaces."""
    text = text.upper().replace("\u2019", "'")
    text = re.sub(r"[^A-Z' ]+", " ", text)
    return " ".join(text.split())


def vocabulary() -> set[str]:
    """Every word the grammar can produce, normalised."""
    pieces = (NAMES + PEOPLE + ANIMALS + THINGS + FOODS + PLACES + FURNITURE + ADJ_ANY
              + ADJ_THING + ADJ_FOOD + ADJ_ALIVE + PLACE_PREPOSITIONS + FURNITURE_PREPOSITIONS
              + PAST_TIMES + FUTURE_TIMES + MODALS + PRONOUNS + POSSESSIVES + OPINIONS
              + WEATHER + [w for pair in TRANSITIVE + EATING + STAYING + MOVING for w in pair]
              + [_FIXED_WORDS])
    return {w for piece in pieces for w in normalize(piece).split()}


# Function words the templates use directly.
_FIXED_WORDS = "a an the this that to with not please did didn't it was were is there so very because"


class _Grammar:
    def __init__(self, rng: random.Random):
        self.r = rng

    def pick(self, seq):
        return self.r.choice(seq)

    def maybe(self, p: float) -> bool:
        return self.r.random() < p

    @staticmethod
    def article(next_word: str) -> str:
        return "an" if next_word[0] in "aeiou" else "a"

    def noun_phrase(self, nouns, adjectives, *, adj_p: float = 0.4, det: str | None = None):
        words = [self.pick(nouns)]
        if self.maybe(adj_p):
            words.insert(0, self.pick(adjectives))
        det = det or self.pick(["the", "the", "a", "this", "that"] + POSSESSIVES)
        if det == "a":
            det = self.article(words[0])
        return " ".join([det] + words)

    def person(self) -> str:
        roll = self.r.random()
        if roll < 0.35:
            return self.pick(NAMES)
        if roll < 0.55:
            return self.pick(PRONOUNS)
        return self.noun_phrase(PEOPLE, ADJ_ANY + ADJ_ALIVE)

    def creature(self) -> str:
        """A subject that can also be an animal (for walking, sleeping, running...)."""
        if self.maybe(0.25):
            return self.noun_phrase(ANIMALS, ADJ_ANY + ADJ_ALIVE)
        return self.person()

    def thing(self) -> str:
        if self.maybe(0.85):
            return self.noun_phrase(THINGS, ADJ_ANY + ADJ_THING)
        return self.noun_phrase(ANIMALS, ADJ_ANY + ADJ_ALIVE)

    def food(self) -> str:
        return self.noun_phrase(FOODS, ADJ_FOOD, adj_p=0.3)

    def place(self) -> str:
        return f"{self.pick(PLACE_PREPOSITIONS)} the {self.pick(PLACES)}"

    def spot(self) -> str:
        return f"{self.pick(FURNITURE_PREPOSITIONS)} the {self.pick(FURNITURE)}"

    def tail(self, times: list[str]) -> str:
        """An optional time or place phrase at the end."""
        roll = self.r.random()
        if roll < 0.3:
            return " " + self.pick(times)
        if roll < 0.5:
            return " " + self.place()
        return ""

    # Each template returns a lower-case sentence.
    def past_action(self) -> str:
        return f"{self.person()} {self.pick(TRANSITIVE)[1]} {self.thing()}{self.tail(PAST_TIMES)}"

    def meal(self) -> str:
        extra = f" with {self.pick(NAMES)}" if self.maybe(0.3) else self.tail(PAST_TIMES)
        return f"{self.person()} {self.pick(EATING)[1]} {self.food()}{extra}"

    def modal(self) -> str:
        if self.maybe(0.3):  # an intransitive plan: "we will go to the park tomorrow"
            if self.maybe(0.5):
                rest = f"{self.pick(MOVING)[0]} to the {self.pick(PLACES)}"
            else:
                rest = f"{self.pick(STAYING)[0]} {self.place() if self.maybe(0.6) else self.spot()}"
            when = " " + self.pick(FUTURE_TIMES) if self.maybe(0.5) else ""
            return f"{self.creature()} {self.pick(MODALS)} {rest}{when}"
        if self.maybe(0.7):
            verb, obj = self.pick(TRANSITIVE)[0], self.thing()
        else:
            verb, obj = self.pick(EATING)[0], self.food()
        neg = " not" if self.maybe(0.2) else ""
        return f"{self.person()} {self.pick(MODALS)}{neg} {verb} {obj}{self.tail(FUTURE_TIMES)}"

    def went(self) -> str:
        when = " " + self.pick(PAST_TIMES) if self.maybe(0.5) else ""
        return f"{self.creature()} {self.pick(MOVING)[1]} to the {self.pick(PLACES)}{when}"

    def stayed(self) -> str:
        where = self.place() if self.maybe(0.7) else self.spot()
        when = " " + self.pick(PAST_TIMES) if self.maybe(0.4) else ""
        return f"{self.creature()} {self.pick(STAYING)[1]} {where}{when}"

    def question(self) -> str:
        return f"did {self.person()} {self.pick(TRANSITIVE)[0]} {self.thing()}" \
               f"{self.tail(PAST_TIMES)}"

    def negative(self) -> str:
        if self.maybe(0.6):
            verb, obj = self.pick(TRANSITIVE)[0], self.thing()
        else:
            verb, obj = self.pick(EATING)[0], self.food()
        return f"{self.person()} didn't {verb} {obj}{self.tail(PAST_TIMES)}"

    def request(self) -> str:
        where = self.spot() if self.maybe(0.6) else f"to the {self.pick(PLACES)}"
        return f"please {self.pick(TRANSITIVE)[0]} {self.thing()} {where}"

    def there_is(self) -> str:
        what = self.noun_phrase(THINGS + ANIMALS, ADJ_ANY + ADJ_THING[:5], adj_p=0.6, det="a")
        where = self.spot() if self.maybe(0.5) else self.place()
        return f"there {self.pick(['is', 'was'])} {what} {where}"

    def opinion(self) -> str:
        return f"{self.pick(OPINIONS)} {self.pick([self.past_action, self.went, self.modal])()}"

    def weather(self) -> str:
        return f"it was {self.pick(['very ', ''])}{self.pick(WEATHER)} so {self.stayed()}"

    def because(self) -> str:
        who = self.pick(PRONOUNS)
        be = "was" if who in ("i", "he", "she") else "were"
        return f"{self.went()} because {who} {be} {self.pick(ADJ_ALIVE)}"

    def sentence(self) -> str:
        templates = [self.past_action, self.past_action, self.meal, self.modal, self.went,
                     self.stayed, self.question, self.negative, self.request, self.there_is,
                     self.opinion, self.weather, self.because]
        return self.pick(templates)()


def generate_sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct normalised sentences of MIN_WORDS..MAX_WORDS words, fixed by ``seed``."""
    rng = random.Random(f"espnet-probe-sentences-{seed}")
    grammar = _Grammar(rng)
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct sentences (got {len(out)})")
        sent = normalize(grammar.sentence())
        if not MIN_WORDS <= len(sent.split()) <= MAX_WORDS or sent in seen:
            continue
        assert _ALLOWED.match(sent), sent
        seen.add(sent)
        out.append(sent)
    return out


def sentence_pools(sizes: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Disjoint pools of distinct sentences, e.g. ``{"train": 448, "dev": 64, "test": 128}``."""
    if any(k < 0 for k in sizes.values()):
        raise ValueError(f"pool sizes must be >= 0, got {sizes}")
    every = generate_sentences(sum(sizes.values()), seed)
    pools, start = {}, 0
    for name, k in sizes.items():
        pools[name] = every[start:start + k]
        start += k
    return pools
