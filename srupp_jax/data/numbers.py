"""The offline default translation task: German number words -> English (`numbers_de_en`).

Every pair is generated with `num2words` (lang "de" and "en"), so translation runs on a fresh
machine with no download. Five kinds of sentence (weights in `KINDS`):

  cardinal  "dreiundzwanzigtausendeinhundertvier" -> "twenty-three thousand, one hundred and four"
            values 0 .. 999,999 (the number of digits drawn uniformly, then the value)
  ordinal   "der dreiundzwanzigste" -> "the twenty-third"                       1 .. 999
  year      "im Jahr neunzehnhundertfünf" -> "in the year nineteen oh-five"     1100 .. 2099
  date      "am Dienstag, dem dritten März zweitausendeins"
            -> "on Tuesday, the third of March, two thousand and one"
            (a real calendar date: the weekday is the date's own; years 1100 .. 2099)
  count     "dreiundzwanzig Katzen" -> "twenty-three cats", "eine Katze" -> "one cat" 1 .. 9,999

Train, valid and test are DISJOINT in the values they use: every integer 0 .. 999,999 belongs to
exactly one split (`value_splits`: a splitmix64 hash of (seed, value); valid and test take
`held_fraction` each), and a split draws its cardinals, ordinals, years, date years and counts
only from its own integers (so the year 1997 of a test date is in no train sentence as a year, a
cardinal, an ordinal or a count; weekday, month and day names are a closed set shared by all).
Within a split, source sentences are distinct. Everything is a pure function of the seed.

num2words (0.5.x) quirks handled here: German cardinals of x01,000 .. x01,999 come out as
"...einstausend..." (fixed to "...eintausend...", `german_cardinal`); a count whose German number
ends in a lone "eins" (101, 201, ...) needs "hundertundeine Katze"-style grammar and is not drawn;
1 before a noun is "ein"/"eine" by gender. Lengths: German 1-6 words, English 1-10 words
(with the default 256-piece BPE: at most 21 pieces a side before EOS, about 13 on average).

`MORPHEMES` are the German number morphemes, given to the joint BPE as user-defined pieces (kept
whole wherever they occur): plain BPE merges across morpheme boundaries ("zigtausendneun"),
which hides the compositional structure that the model must learn to translate values it never
saw. English "hundred", "thousand" and "Sunday" are in the list too, so that the German "und"
piece does not cut them ("h|und|red").
"""
from __future__ import annotations

import calendar
import datetime
import functools
from typing import Dict, List, Tuple

import numpy as np
from num2words import num2words

SPLITS = ("train", "valid", "test")
MAX_VALUE = 1_000_000
KINDS = dict(cardinal=0.3, ordinal=0.15, year=0.15, date=0.2, count=0.2)
RANGES = dict(cardinal=(0, MAX_VALUE), ordinal=(1, 1000), year=(1100, 2100),
              date=(1100, 2100), count=(1, 10_000))
DEFAULT_SIZES = dict(train=40_000, valid=800, test=800)
MONTHS_DE = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
             "September", "Oktober", "November", "Dezember")
MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December")
WEEKDAYS_DE = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")
WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# (gender, German singular, German plural, English singular, English plural)
NOUNS = (
    ("f", "Katze", "Katzen", "cat", "cats"), ("m", "Apfel", "Äpfel", "apple", "apples"),
    ("n", "Haus", "Häuser", "house", "houses"), ("n", "Buch", "Bücher", "book", "books"),
    ("m", "Stuhl", "Stühle", "chair", "chairs"), ("n", "Kind", "Kinder", "child", "children"),
    ("f", "Frau", "Frauen", "woman", "women"), ("m", "Mann", "Männer", "man", "men"),
    ("f", "Maus", "Mäuse", "mouse", "mice"), ("n", "Auto", "Autos", "car", "cars"),
    ("m", "Tag", "Tage", "day", "days"), ("f", "Stadt", "Städte", "city", "cities"),
    ("m", "Baum", "Bäume", "tree", "trees"), ("m", "Vogel", "Vögel", "bird", "birds"),
    ("m", "Fisch", "Fische", "fish", "fish"), ("n", "Schaf", "Schafe", "sheep", "sheep"),
    ("f", "Flasche", "Flaschen", "bottle", "bottles"), ("f", "Blume", "Blumen", "flower",
                                                        "flowers"),
    ("m", "Zug", "Züge", "train", "trains"), ("n", "Pferd", "Pferde", "horse", "horses"),
)
MORPHEMES = ("hundert", "tausend", "und", "zig", "ßig", "zehn", "null", "eins", "ein", "zwei",
             "drei", "vier", "fünf", "sechs", "sech", "sieben", "sieb", "acht", "neun", "elf",
             "zwölf", "zwan", "hundred", "thousand", "Sunday")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 (wrapping arithmetic): a fixed, well-mixed hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def value_splits(seed: int = 0, held_fraction: float = 0.05) -> np.ndarray:
    """[MAX_VALUE] int8: the split (0 train, 1 valid, 2 test) of every integer value.

    u = hash(seed, value) / 2^64 uniform in [0, 1): test if u < f, valid if u < 2f, else train.
    """
    if not 0.0 < held_fraction < 0.5:
        raise ValueError(f"held_fraction={held_fraction!r}; expected 0 < held_fraction < 0.5")
    values = np.arange(MAX_VALUE, dtype=np.uint64)
    key = _splitmix64(np.uint64(int(seed) % (1 << 64)) + _splitmix64(values))
    u = (key >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.where(u < held_fraction, 2, np.where(u < 2 * held_fraction, 1, 0)).astype(np.int8)


@functools.lru_cache(maxsize=1 << 16)
def _words(n: int, lang: str, to: str = "cardinal") -> str:
    """num2words(n, lang=lang, to=to), memoised (days, years, small numbers recur)."""
    return num2words(n, lang=lang, to=to)


def german_cardinal(n: int) -> str:
    """num2words(n, lang="de") with its "einstausend" (x01,000 .. x01,999) fixed."""
    return _words(n, "de").replace("einstausend", "eintausend")


def _count(n: int, noun) -> Tuple[str, str]:
    gender, de_sg, de_pl, en_sg, en_pl = noun
    if n == 1:
        return f"{'eine' if gender == 'f' else 'ein'} {de_sg}", f"one {en_sg}"
    return f"{german_cardinal(n)} {de_pl}", f"{_words(n, 'en')} {en_pl}"


def _date(year: int, month: int, day: int) -> Tuple[str, str]:
    weekday = datetime.date(year, month, day).weekday()
    de_day = _words(day, "de", "ordinal") + "n"          # dative: "dem dritten"
    en_day = _words(day, "en", "ordinal")
    de = (f"am {WEEKDAYS_DE[weekday]}, dem {de_day} {MONTHS_DE[month - 1]} "
          f"{_words(year, 'de', 'year')}")
    en = (f"on {WEEKDAYS_EN[weekday]}, the {en_day} of {MONTHS_EN[month - 1]}, "
          f"{_words(year, 'en', 'year')}")
    return de, en


def pair(kind: str, value: int, rng: np.random.RandomState) -> Tuple[str, str]:
    """(German, English) of one sentence of `kind` about integer `value` (rng draws the date's
    month and day, or the count's noun)."""
    if kind == "cardinal":
        return german_cardinal(value), _words(value, "en")
    if kind == "ordinal":
        return (f"der {_words(value, 'de', 'ordinal')}",
                f"the {_words(value, 'en', 'ordinal')}")
    if kind == "year":
        return (f"im Jahr {_words(value, 'de', 'year')}",
                f"in the year {_words(value, 'en', 'year')}")
    if kind == "date":
        month = int(rng.randint(1, 13))
        day = int(rng.randint(1, calendar.monthrange(value, month)[1] + 1))
        return _date(value, month, day)
    if kind == "count":
        return _count(value, NOUNS[int(rng.randint(len(NOUNS)))])
    raise ValueError(f"kind={kind!r}; expected one of {sorted(KINDS)}")


def _draw_value(kind: str, pool: np.ndarray, rng: np.random.RandomState):
    """A value of `kind` from this split's sorted integers `pool`, or None (empty range)."""
    lo, hi = RANGES[kind]
    if kind in ("cardinal", "ordinal", "count"):   # digits uniform, then the value
        digits = int(rng.randint(len(str(lo)), len(str(hi - 1)) + 1))
        lo, hi = max(lo, 10 ** (digits - 1) if digits > 1 else 0), min(hi, 10 ** digits)
    a, b = np.searchsorted(pool, [lo, hi])
    if a == b:
        return None
    value = int(pool[int(rng.randint(a, b))])
    if kind == "count" and value > 1 and value % 100 == 1:   # "hundertundeine Katze": skipped
        return None
    return value


def draw(split: str, size: int, owner: np.ndarray, seed: int = 0) -> List[tuple]:
    """[(kind, value, German, English)] * size: distinct sentences of one split, values from
    its own integers (owner == its index; `value_splits`)."""
    index = SPLITS.index(split)
    pool = np.nonzero(owner == index)[0]
    rng = np.random.RandomState([int(seed) % (1 << 32), index])   # legacy: a stable stream
    kinds, weights = list(KINDS), np.array(list(KINDS.values()))
    seen, out = set(), []
    for _ in range(50 * size + 1000):
        if len(out) == size:
            return out
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        value = _draw_value(kind, pool, rng)
        if value is None:
            continue
        de, en = pair(kind, value, rng)
        if de not in seen:
            seen.add(de)
            out.append((kind, value, de, en))
    if len(out) == size:
        return out
    raise ValueError(f"numbers: cannot draw {size} distinct {split} pairs (got {len(out)}); "
                     f"lower data.numbers.{split}_size")


def generate(sizes: Dict[str, int] = None, seed: int = 0,
             held_fraction: float = 0.05) -> Dict[str, Tuple[List[str], List[str]]]:
    """{split: (German lines, English lines)} with sizes[split] distinct pairs each.

    sizes: {"train", "valid", "test": int >= 1} (default DEFAULT_SIZES); seed: the value
    partition and the draws; held_fraction: share of the integers held out for valid and for
    test each. Raises ValueError when a split cannot reach its size with distinct sentences.
    """
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    if sorted(sizes) != sorted(SPLITS) or any(int(v) != v or v < 1 for v in sizes.values()):
        raise ValueError(f"numbers sizes={sizes!r}; expected integers >= 1 for "
                         f"{', '.join(SPLITS)}")
    owner = value_splits(seed, held_fraction)
    out = {}
    for split in SPLITS:
        rows = draw(split, int(sizes[split]), owner, seed)
        out[split] = ([r[2] for r in rows], [r[3] for r in rows])
    return out
