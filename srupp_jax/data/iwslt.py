"""IWSLT'14 German-English (the TED release `de-en.tgz`): its files and the two recipes.

The release (`de-en.tgz`, folder `de-en/`): `train.tags.de-en.{de,en}` (one sentence a line,
with talk metadata lines such as `<url>`, `<talkid>`, `<title>...</title>`) and the xml files
`IWSLT14.TED.{dev2010,tst2010,tst2011,tst2012}.de-en.{de,en}.xml`,
`IWSLT14.TEDX.dev2012.de-en.{de,en}.xml` (one `<seg id="N">` per sentence).

Recipes (`data.recipe`), each {split: dict(src_raw, tgt_raw, src, tgt)}: raw text (the reference
of detokenized BLEU) and the tokenized, lower-cased text the BPE is learned on:

  lin2020  Lin et al. 2020 (asappresearch/imitkd, `generation/datasets.py` IWSLTDataset and
           `configs/iwslt/teacher.yaml`), the recipe of the paper's Table 8:
           train = the pairs of train.tags lines (split at "\\n") where both lines are non-empty
           and neither starts with "<"; valid = int(4% of them) drawn by numpy's legacy
           `RandomState(1234).choice(n, replace=False)` (their `np.random.seed(1234)`), in train
           order, and train keeps the rest; test = the `<seg>` texts (xml parse after their
           "& amp ;" -> "&amp;" fix, stripped) of TED dev2010, tst2010, tst2011, tst2012.
           Lower-cased, then word-tokenized. They use NLTK's `word_tokenize` (Punkt + Treebank);
           we use the Moses tokenizer without XML escaping (`sacremoses`), which differs in
           quotes (NLTK writes `` and ''), contractions (NLTK "do n't", Moses "don 't") and
           abbreviations; then a joint BPE of 14,000 merges (they: fastBPE codes).
  fairseq  fairseq's examples/translation/prepare-iwslt14.sh: train.tags without the lines
           containing <url>, <talkid> or <keywords>, the tags <title> </title> <description>
           </description> deleted (their text kept); Moses-tokenized (tokenizer.perl defaults:
           XML escaping); Moses clean-corpus-n with ratio 1.5 and 1-175 words (`clean`);
           lower-cased; valid = every 23rd pair (7,283), train the rest (160,239); test = the
           `<seg id` lines of TED dev2010, TEDX dev2012, TED tst2010, tst2011, tst2012 in that
           order (6,750; seg tags cut by their sed rules, "’" -> "'"), tokenized and lower-cased,
           unfiltered; a joint BPE of 10,000 merges (they: subword-nmt).

No checksum of de-en.tgz is published: `read_release` records the sha256 of what it read
(`standard` stays true, the note says it is unverified), and the fairseq recipe's pair counts are
compared with fairseq's published 160,239 / 7,283 / 6,750.
"""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from typing import Dict, List, Tuple

import numpy as np

from srupp_jax.data.subwords import TextRecipe

SRC, TGT = "de", "en"
RECIPES = ("lin2020", "fairseq")
TRAIN = "train.tags.de-en.{lang}"
XML = "IWSLT14.{corpus}.{name}.de-en.{lang}.xml"
TEST_SETS = dict(
    lin2020=(("TED", "dev2010"), ("TED", "tst2010"), ("TED", "tst2011"), ("TED", "tst2012")),
    fairseq=(("TED", "dev2010"), ("TEDX", "dev2012"), ("TED", "tst2010"), ("TED", "tst2011"),
             ("TED", "tst2012")))
TEXT_RECIPES = dict(lin2020=TextRecipe("moses", lowercase=True, lowercase_first=True),
                    fairseq=TextRecipe("moses", lowercase=True, escape=True))
MERGES = dict(lin2020=14_000, fairseq=10_000)
FAIRSEQ_COUNTS = dict(train=160_239, valid=7_283, test=6_750)
ARCHIVE = "de-en.tgz"


def file_names() -> List[str]:
    """Every file of the release that a recipe reads."""
    names = [TRAIN.format(lang=lang) for lang in (SRC, TGT)]
    sets = sorted(set(TEST_SETS["lin2020"]) | set(TEST_SETS["fairseq"]))
    return names + [XML.format(corpus=c, name=n, lang=lang) for c, n in sets
                    for lang in (SRC, TGT)]


def _find_files(root: str, names) -> Dict[str, str]:
    found = {}
    for dirpath, _, filenames in sorted(os.walk(root)):
        for name in sorted(set(names) & set(filenames)):
            found.setdefault(name, os.path.join(dirpath, name))
    return found


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_release(manual_dir: str) -> Tuple[Dict[str, bytes], Dict]:
    """({file name: bytes} of every file in `file_names()`, source record) from `manual_dir`
    holding de-en.tgz or its extracted files (searched recursively; the extracted files win).

    Raises FileNotFoundError naming what is missing, ValueError for a tgz that is not one."""
    names = file_names()
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"--manual_dir={manual_dir} does not exist (expected a folder "
                                f"holding {ARCHIVE} or its extracted de-en/ folder)")
    found = _find_files(manual_dir, names)
    note = "no checksum of de-en.tgz is published: sha256 recorded, not verified"
    if len(found) == len(names):
        files = {}
        for name, path in found.items():
            with open(path, "rb") as f:
                files[name] = f.read()
        sha = {name: _sha256(data) for name, data in sorted(files.items())}
        return files, dict(sha256=sha, standard=True, note="extracted files; " + note)
    archive = _find_files(manual_dir, [ARCHIVE]).get(ARCHIVE)
    if archive is None:
        missing = sorted(set(names) - set(found))
        raise FileNotFoundError(f"--manual_dir={manual_dir} holds neither {ARCHIVE} nor all "
                                f"of its files (missing e.g. {missing[0]}); put the IWSLT 2014 "
                                f"release {ARCHIVE} there")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            missing = sorted(set(names) - set(members))
            if missing:
                raise FileNotFoundError(f"{archive} holds no {missing[0]} (and "
                                        f"{len(missing) - 1} more missing): not the IWSLT 2014 "
                                        "de-en release")
            files = {n: tar.extractfile(members[n]).read() for n in names}
    except tarfile.TarError as e:
        raise ValueError(f"{archive} is not a valid tar.gz ({e}); download it again") from None
    with open(archive, "rb") as f:
        digest = _sha256(f.read())
    return files, dict(sha256={ARCHIVE: digest}, standard=True, note=note)


def _text(files: Dict[str, bytes], name: str) -> str:
    try:
        return files[name].decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: the bytes at offset {e.start} are not UTF-8; not the IWSLT "
                         "release") from None


def _pairs(src: List[str], tgt: List[str], what: str) -> List[Tuple[str, str]]:
    if len(src) != len(tgt):
        raise ValueError(f"{what}: {len(src)} German but {len(tgt)} English sentences; the "
                         "release files do not match (a damaged archive?)")
    return list(zip(src, tgt))


def _tokenized(recipe: str, splits: Dict[str, List[Tuple[str, str]]]) -> Dict[str, dict]:
    text = TEXT_RECIPES[recipe]
    out = {}
    for split, pairs in splits.items():
        src_raw, tgt_raw = [p[0] for p in pairs], [p[1] for p in pairs]
        out[split] = dict(src_raw=src_raw, tgt_raw=tgt_raw,
                          src=text.tokenize(src_raw, SRC), tgt=text.tokenize(tgt_raw, TGT))
    return out


def _lin_xml(data: str) -> List[str]:
    root = ET.fromstring(data.replace("& amp ;", "&amp;"))
    return [(seg.text or "").strip() for seg in root.iter("seg")]


def lin2020(files: Dict[str, bytes]) -> Dict[str, dict]:
    """The lin2020 recipe (module docstring): {train, valid, test: dict(src_raw, tgt_raw, src,
    tgt)}."""
    lines = [_text(files, TRAIN.format(lang=lang)).split("\n") for lang in (SRC, TGT)]
    train = [(x, y) for x, y in _pairs(*lines, "train.tags.de-en")
             if x and y and x[0] != "<" and y[0] != "<"]
    n_val = int(0.04 * len(train))
    val_idx = set(np.random.RandomState(1234).choice(
        np.arange(len(train)), replace=False, size=n_val).tolist())
    test = []
    for corpus, name in TEST_SETS["lin2020"]:
        segs = [_lin_xml(_text(files, XML.format(corpus=corpus, name=name, lang=lang)))
                for lang in (SRC, TGT)]
        test += _pairs(*segs, f"IWSLT14.{corpus}.{name}")
    return _tokenized("lin2020", dict(
        train=[p for i, p in enumerate(train) if i not in val_idx],
        valid=[p for i, p in enumerate(train) if i in val_idx], test=test))


_DROP = ("<url>", "<talkid>", "<keywords>")
_CUT = ("<title>", "</title>", "<description>", "</description>")


def _fairseq_train(text: str) -> List[str]:
    out = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        if any(tag in line for tag in _DROP):
            continue
        for tag in _CUT:
            line = line.replace(tag, "")
        out.append(line)
    return out


def _fairseq_xml(text: str) -> List[str]:
    lines = [line for line in text.split("\n") if "<seg id" in line]
    lines = [re.sub(r'<seg id="[0-9]*">\s*', "", line) for line in lines]
    return [re.sub(r"\s*</seg>\s*", "", line) for line in lines]


def clean(src: List[str], tgt: List[str], lo: int = 1, hi: int = 175, ratio: float = 1.5,
          max_word: int = 1000) -> Tuple[List[int], List[str], List[str]]:
    """Moses clean-corpus-n.perl: (kept indices, cleaned source, cleaned target). A side is
    cleaned of "|", runs of whitespace become one space, the ends are trimmed; a pair is kept
    when both sides have lo..hi words, neither has `ratio` times the words of the other, and no
    word is longer than max_word characters."""
    kept, out_src, out_tgt = [], [], []
    too_long = re.compile(r"[^\s|]{%d}" % (max_word + 1))
    for i, (f, e) in enumerate(zip(src, tgt)):
        f = re.sub(r"\s+", " ", f.replace("|", "")).strip(" ")
        e = re.sub(r"\s+", " ", e.replace("|", "")).strip(" ")
        if not f or not e:
            continue
        fc, ec = len(f.split(" ")), len(e.split(" "))
        if not (lo <= fc <= hi and lo <= ec <= hi) or ec / fc > ratio or fc / ec > ratio:
            continue
        if too_long.search(e) or too_long.search(f):
            continue
        kept.append(i)
        out_src.append(f)
        out_tgt.append(e)
    return kept, out_src, out_tgt


def fairseq(files: Dict[str, bytes]) -> Dict[str, dict]:
    """The fairseq recipe (module docstring): {train, valid, test: dict(src_raw, tgt_raw, src,
    tgt)}."""
    text = TEXT_RECIPES["fairseq"]
    raw = _pairs(*[_fairseq_train(_text(files, TRAIN.format(lang=lang))) for lang in (SRC, TGT)],
                 "train.tags.de-en (after dropping the <url>, <talkid>, <keywords> lines)")
    src_tok = text.tokenize([p[0] for p in raw], SRC)
    tgt_tok = text.tokenize([p[1] for p in raw], TGT)
    kept, src_tok, tgt_tok = clean(src_tok, tgt_tok)
    out = dict(train=dict(src_raw=[], tgt_raw=[], src=[], tgt=[]),
               valid=dict(src_raw=[], tgt_raw=[], src=[], tgt=[]))
    for j, i in enumerate(kept):
        split = out["valid" if (j + 1) % 23 == 0 else "train"]
        for key, value in (("src_raw", raw[i][0]), ("tgt_raw", raw[i][1]), ("src", src_tok[j]),
                           ("tgt", tgt_tok[j])):
            split[key].append(value)
    test = []
    for corpus, name in TEST_SETS["fairseq"]:
        segs = [_fairseq_xml(_text(files, XML.format(corpus=corpus, name=name, lang=lang)))
                for lang in (SRC, TGT)]
        test += _pairs(*segs, f"IWSLT14.{corpus}.{name}")
    out["test"] = dict(src_raw=[p[0] for p in test], tgt_raw=[p[1] for p in test],
                       src=text.tokenize([p[0].replace("’", "'") for p in test], SRC),
                       tgt=text.tokenize([p[1].replace("’", "'") for p in test], TGT))
    return out


def prepare_recipe(recipe: str, files: Dict[str, bytes]) -> Dict[str, dict]:
    if recipe not in RECIPES:
        raise ValueError(f"data.recipe={recipe!r}; expected one of {', '.join(RECIPES)}")
    return (lin2020 if recipe == "lin2020" else fairseq)(files)


def count_note(recipe: str, counts: Dict[str, int]) -> str:
    """How the pair counts compare with fairseq's published ones (fairseq recipe only)."""
    if recipe != "fairseq":
        return ""
    if counts == FAIRSEQ_COUNTS:
        return "pair counts match fairseq's 160,239 / 7,283 / 6,750"
    return (f"pair counts {counts['train']:,} / {counts['valid']:,} / {counts['test']:,} differ "
            "from fairseq's 160,239 / 7,283 / 6,750 (another release, or sacremoses vs "
            "tokenizer.perl in the length filter)")
