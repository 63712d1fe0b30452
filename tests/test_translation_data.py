"""Translation data: parallel folders and their errors, subwords, the numbers task, the
IWSLT'14 builder on a tiny fake release (both recipes), the cache keys."""
import io
import os
import pathlib
import re
import tarfile

import numpy as np
import pytest

from srupp_jax.data import iwslt, numbers, parallel, subwords
from srupp_jax.data import translation_data as td
from srupp_jax.data.subwords import BOS_ID, EOS_ID, PAD_ID, UNK_ID


def _write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(text, bytes):
        with open(path, "wb") as f:
            f.write(text)
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)


def _folder(root, pairs, splits=("train",), src="de", tgt="en"):
    for split in splits:
        _write(os.path.join(root, f"{split}.{src}"), "".join(p[0] + "\n" for p in pairs))
        _write(os.path.join(root, f"{split}.{tgt}"), "".join(p[1] + "\n" for p in pairs))
    return str(root)


PAIRS = [(f"Das ist Satz {i}, nicht wahr?", f"This is sentence {i}, isn't it?")
         for i in range(120)]


# ---------------------------------------------------------------- parallel folders and errors

def test_parallel_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        parallel.load_folder(str(tmp_path / "nope"), "de", "en")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no train.de and train.en .it is empty"):
        parallel.load_folder(str(tmp_path / "empty"), "de", "en")
    with pytest.raises(ValueError, match="data.src"):
        parallel.load_folder(str(tmp_path / "empty"), "de", "de")
    root = tmp_path / "a"
    _folder(root, PAIRS[:5])
    _write(str(root / "valid.de"), "nur deutsch\n")
    with pytest.raises(FileNotFoundError, match=r"valid\.de exists but .*valid\.en does not: "
                                                r"add .*valid\.en, or remove valid\.de"):
        parallel.load_folder(str(root), "de", "en")
    os.remove(root / "valid.de")
    _write(str(root / "train.en"), "one\ntwo\n")
    with pytest.raises(ValueError, match=r"train\.de has 5 lines but .*train\.en has 2"):
        parallel.load_folder(str(root), "de", "en")
    _write(str(root / "train.en"), "one\ntwo\n   \nfour\nfive\n")
    with pytest.raises(ValueError, match=r"train\.en line 3 is empty"):
        parallel.load_folder(str(root), "de", "en")
    _write(str(root / "train.en"), "one\ntwo\nthree\nfour\nf\xfcnf\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"train\.en: the bytes at offset 20 are not UTF-8"):
        parallel.load_folder(str(root), "de", "en")


def test_parallel_lines_and_held_out_split(tmp_path):
    root = tmp_path / "p"
    _folder(root, PAIRS)
    # Windows line ends, no final newline, and a U+2028 inside a line (not a line break here).
    _write(str(root / "train.de"), "\r\n".join(p[0] for p in PAIRS[:-1]) + "\r\n" +
           PAIRS[-1][0] + "\u2028x")
    splits, info = parallel.load_folder(str(root), "de", "en")
    k = round(0.02 * 120)   # 2 each
    assert [len(splits[s][0]) for s in ("train", "valid", "test")] == [120 - 2 * k, k, k]
    assert info["held_out"] == ["valid", "test"] and set(info["files"]) == {"train.de",
                                                                           "train.en"}
    everything = sorted(sum((list(zip(*splits[s])) for s in splits), []))
    expected = PAIRS[:-1] + [(PAIRS[-1][0] + "\u2028x", PAIRS[-1][1])]
    assert everything == sorted(expected)
    idx = [expected.index(p) for p in zip(*splits["valid"])]
    assert idx == sorted(idx)   # file order kept
    assert splits == parallel.load_folder(str(root), "de", "en")[0]   # deterministic
    # With valid and test files, nothing is held out.
    _folder(root, PAIRS[:3], splits=("valid", "test"))
    splits, info = parallel.load_folder(str(root), "de", "en")
    assert info["held_out"] == [] and len(splits["train"][0]) == 120
    assert splits["test"] == ([p[0] for p in PAIRS[:3]], [p[1] for p in PAIRS[:3]])


# ---------------------------------------------------------------- subwords

def test_bpe_deterministic_roundtrip_and_specials():
    recipe = subwords.TextRecipe("moses")
    lines = recipe.tokenize([p[0] for p in PAIRS], "de") + recipe.tokenize(
        [p[1] for p in PAIRS], "en")
    assert lines[120] == "This is sentence 0 , isn 't it ?"
    model = subwords.train_bpe(lines, 60)
    assert subwords.train_bpe(lines, 60) == model          # same text, same model
    assert subwords.train_bpe(lines[::-1], 60) == model    # word counts: order-free
    assert subwords.train_bpe(lines[:120], 60) != model    # other text, other model
    sw = subwords.Subwords(model, recipe, "de", "en")
    assert sw.vocab_size == 60
    assert sw.pieces()[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    ids = sw.encode_tokenized(lines)
    assert all(i.dtype == np.int32 and i.min() > EOS_ID for i in ids)
    assert sw.decode(ids) == lines                          # identity normalisation
    assert sw.detokenize(ids[120:122]) == [PAIRS[0][1], PAIRS[1][1]]
    row = np.concatenate([[BOS_ID], ids[0], [EOS_ID], ids[1], [PAD_ID]])
    assert sw.decode([row]) == [lines[0]]                   # stops at EOS, drops BOS
    assert sw.encode(["Das ist Satz 7, nicht wahr?"], "de")[0].tolist() == ids[7].tolist()
    assert UNK_ID in sw.encode_tokenized(["Qq"])[0].tolist()   # no byte fallback
    # Merges -> vocab_size: exactly that many merged pieces.
    size = subwords.vocab_size_for_merges(lines, 40)
    pieces = subwords.Subwords(subwords.train_bpe(lines, size), recipe, "de", "en").pieces()
    assert sum(len(p) > 1 for p in pieces[4:]) == 40
    assert sorted(p for p in pieces[4:] if len(p) == 1) == sorted(subwords.required_chars(lines))
    lower = subwords.TextRecipe("moses", lowercase=True, escape=True)
    assert lower.tokenize(['Er sagt "Hallo" & geht.'], "de") == [
        "er sagt &quot; hallo &quot; &amp; geht ."]
    assert lower.detokenize(["er sagt &quot; hallo &quot; &amp; geht ."], "de") == [
        'er sagt "hallo" & geht.']
    with pytest.raises(ValueError, match="data.tokenizer"):
        subwords.TextRecipe("spacy")


def test_parallel_cache_keyed_by_content(tmp_path):
    root = _folder(tmp_path / "p", PAIRS)
    cache = str(tmp_path / "cache")
    a = td.load_translation("parallel", path=root, src="de", tgt="en", vocab_size=64,
                            cache_dir=cache)
    assert a.vocab_size == 64 and a.info["held_out"] == ["valid", "test"]
    assert [len(a.train), len(a.valid), len(a.test)] == [116, 2, 2]
    b = td.load_translation("parallel", path=root, src="de", tgt="en", vocab_size=64,
                            cache_dir=cache)
    caches = [n for n in os.listdir(cache) if not n.startswith(".")]      # not the lock
    assert b.info["cache_path"] == a.info["cache_path"] and len(caches) == 1
    assert isinstance(b.train.src.flat, np.memmap)
    assert b.subwords.model == a.subwords.model
    import ml_collections
    cfg = ml_collections.ConfigDict(dict(name="parallel", path=root, src="de", tgt="en",
                                         vocab_size=64, cache_dir=cache))
    assert td.from_config(cfg).info["cache_path"] == a.info["cache_path"]
    head = a.train.head(3)
    assert len(head) == 3 and head.tgt_raw == a.train.tgt_raw[:3]
    np.testing.assert_array_equal(head.src[2], a.train.src[2])
    np.testing.assert_array_equal(b.train.tgt.flat, a.train.tgt.flat)
    assert b.test.tgt_raw == a.test.tgt_raw and b.test.tgt_text == a.test.tgt_text
    for i in range(len(a.valid)):
        assert a.subwords.decode([a.valid.tgt[i]]) == [a.valid.tgt_text[i]]
    # An edited file: a new key, a retrained model.
    _write(os.path.join(root, "train.en"), "".join(p[1].upper() + "\n" for p in PAIRS))
    c = td.load_translation("parallel", path=root, src="de", tgt="en", vocab_size=64,
                            cache_dir=cache)
    assert c.info["cache_path"] != a.info["cache_path"]
    assert c.subwords.model != a.subwords.model
    assert c.test.tgt_raw[0].isupper()
    d = td.load_translation("parallel", path=root, src="de", tgt="en", vocab_size=70,
                            lowercase=True, cache_dir=cache)
    assert d.vocab_size == 70 and d.info["lowercase"] and d.test.tgt_text[0].islower()
    assert len([n for n in os.listdir(cache) if not n.startswith(".")]) == 3   # + locks
    with pytest.raises(ValueError, match="unknown translation dataset 'wmt'"):
        td.load_translation("wmt", cache_dir=cache)


# ---------------------------------------------------------------- the numbers task

def test_numbers_disjoint_deterministic_and_grammar():
    owner = numbers.value_splits(0)
    assert owner.shape == (numbers.MAX_VALUE,)
    assert abs((owner == 2).mean() - 0.05) < 0.002 and abs((owner == 1).mean() - 0.05) < 0.002
    assert not np.array_equal(owner, numbers.value_splits(1))
    rows = {s: numbers.draw(s, n, owner) for s, n in (("train", 600), ("valid", 150),
                                                       ("test", 150))}
    for index, (split, r) in enumerate(rows.items()):
        assert all(owner[v] == index for _, v, _, _ in r)           # own values only
        assert len({de for _, _, de, _ in r}) == len(r)             # distinct sentences
        assert {k for k, *_ in r} == set(numbers.KINDS)
    values = {s: {v for _, v, _, _ in r} for s, r in rows.items()}
    assert not values["train"] & values["test"] and not values["valid"] & values["test"]
    a = numbers.generate(dict(train=200, valid=20, test=20), seed=3)
    assert a == numbers.generate(dict(train=200, valid=20, test=20), seed=3)
    assert a != numbers.generate(dict(train=200, valid=20, test=20), seed=4)
    # num2words quirks and the German grammar the generator fixes.
    assert numbers.german_cardinal(101101) == "einhunderteintausendeinhunderteins"
    assert not any(re.search("eins.", de) for _, _, de, _ in rows["train"])
    assert numbers._date(2001, 3, 6) == ("am Dienstag, dem sechsten März zweitausendeins",
                                         "on Tuesday, the sixth of March, two thousand and one")
    assert numbers._date(1999, 12, 31)[1] == ("on Friday, the thirty-first of December, "
                                              "nineteen ninety-nine")
    assert numbers._count(1, numbers.NOUNS[0]) == ("eine Katze", "one cat")
    assert numbers._count(1, numbers.NOUNS[1]) == ("ein Apfel", "one apple")
    assert numbers._count(23, numbers.NOUNS[0]) == ("dreiundzwanzig Katzen", "twenty-three cats")
    assert numbers.pair("year", 1999, None) == ("im Jahr neunzehnhundertneunundneunzig",
                                                "in the year nineteen ninety-nine")
    assert not any(k == "count" and v > 1 and v % 100 == 1 for k, v, _, _ in rows["train"])
    with pytest.raises(ValueError, match="cannot draw 1000 distinct test pairs .got 25"):
        numbers.generate(dict(train=10, valid=10, test=1000), held_fraction=0.00001)


def test_numbers_dataset_short_and_small(tmp_path):
    sizes = dict(train=2000, valid=30, test=30)
    d = td.load_translation("numbers_de_en", numbers_sizes=sizes, cache_dir=str(tmp_path))
    assert d.vocab_size == 256 and (d.src_lang, d.tgt_lang) == ("de", "en")
    assert not d.info["lowercase"]
    pieces = d.subwords.pieces()
    assert set(numbers.MORPHEMES) <= set(pieces)
    sw = d.subwords.sp
    assert sw.encode("▁neunhundertneunundneunzig"[1:], out_type=str) == [
        "▁", "neun", "hundert", "neun", "und", "neun", "zig"]
    for split in (d.train, d.test):
        assert split.src.lengths.max() <= 26 and split.tgt.lengths.max() <= 26   # short
    assert d.subwords.detokenize([d.test.tgt[i] for i in range(5)]) == d.test.tgt_raw[:5]
    assert d.subwords.decode([d.test.src[0]]) == [d.test.src_text[0]]


# ---------------------------------------------------------------- IWSLT'14 (fake release)

_TAGS = {"de": ["<url>http://www.ted.com/talks/a.html</url>", "<keywords>talks, a</keywords>",
                "<speaker>Jane Doe</speaker>", "<talkid>1</talkid>",
                "<title>Ein Titel</title>", "<description>TED: Eine Rede.</description>"],
         "en": ["<url>http://www.ted.com/talks/a.html</url>", "<keywords>talks, a</keywords>",
                "<speaker>Jane Doe</speaker>", "<talkid>1</talkid>",
                "<title>A Title</title>", "<description>TED: A talk.</description>"]}
_LONG = ("wort " * 180).strip()


def _train_lines(lang):
    body = [(f"Das ist der Satz {i}, sagte \"sie\"." if lang == "de" else
             f"That is sentence {i}, she said \"so\".") for i in range(60)]
    body[10] = _LONG if lang == "de" else _LONG.replace("wort", "word")         # > 175 words
    body[20] = "Ja." if lang == "de" else "Yes , yes , yes , yes ."             # ratio > 1.5
    body[30] = "" if lang == "de" else "Only English here."                     # empty side
    return _TAGS[lang] + body[:40] + _TAGS[lang] + body[40:]


def _xml(lang, name, segs):
    set_tag = "srcset" if lang == "de" else "refset"
    rows = "".join(f'<seg id="{i + 1}"> {s} </seg>\n' for i, s in enumerate(segs))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<{set_tag} setid="{name}">\n'
            f'<doc docid="1" genre="lectures">\n<url>http://x</url>\n<talkid>1</talkid>\n'
            f'<title>T</title>\n{rows}</doc>\n</{set_tag}>\n</mteval>\n')


_SETS = dict(dev2010=2, dev2012=2, tst2010=3, tst2011=1, tst2012=2)


def _release(root):
    """A tiny de-en.tgz in the real layout; returns its files {name: text}."""
    files = {}
    for lang in ("de", "en"):
        files[f"train.tags.de-en.{lang}"] = "\n".join(_train_lines(lang)) + "\n"
        for name, n in _SETS.items():
            corpus = "TEDX" if name == "dev2012" else "TED"
            word = "Satz" if lang == "de" else "sentence"
            segs = [f"{name} {word} {i} &amp; it’s" for i in range(n)]
            files[f"IWSLT14.{corpus}.{name}.de-en.{lang}.xml"] = _xml(lang, name, segs)
    os.makedirs(root, exist_ok=True)
    with tarfile.open(os.path.join(root, "de-en.tgz"), "w:gz") as tar:
        for name, text in sorted(files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"de-en/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return files


def test_iwslt_recipes_on_the_release_files(tmp_path):
    files = {k: v.encode("utf-8") for k, v in _release(str(tmp_path)).items()}
    read, record = iwslt.read_release(str(tmp_path))
    assert read == files and record["standard"] and "not verified" in record["note"]
    assert list(record["sha256"]) == ["de-en.tgz"]
    lin = iwslt.lin2020(files)
    # train: pairs where neither line is empty nor starts with "<": 60 - 1 (empty side) = 59
    pairs = [(x, y) for x, y in zip(_train_lines("de"), _train_lines("en"))
             if x and y and x[0] != "<" and y[0] != "<"]
    val = set(np.random.RandomState(1234).choice(np.arange(59), replace=False, size=2).tolist())
    assert len(pairs) == 59 and len(lin["valid"]["src_raw"]) == int(0.04 * 59) == 2
    assert lin["valid"]["src_raw"] == [pairs[i][0] for i in sorted(val)]
    assert lin["train"]["tgt_raw"] == [p[1] for i, p in enumerate(pairs) if i not in val]
    assert lin["test"]["tgt_raw"] == (
        [f"dev2010 sentence {i} & it’s" for i in range(2)] +
        [f"tst2010 sentence {i} & it’s" for i in range(3)] + ["tst2011 sentence 0 & it’s"] +
        [f"tst2012 sentence {i} & it’s" for i in range(2)])                 # no TEDX dev2012
    assert lin["test"]["tgt"][0] == "dev2010 sentence 0 & it ’ s"   # lower, Moses, unescaped
    assert lin["train"]["src"][0] == 'das ist der satz 0 , sagte " sie " .'
    fs = iwslt.fairseq(files)
    # fairseq: <url>/<talkid>/<keywords> lines dropped, title/description text and the
    # speaker line kept, then the length (> 175 words), ratio and empty-side filters.
    kept_tags = 3            # speaker, title, description: per talk header (two headers)
    n = 2 * kept_tags + 60 - 3
    assert len(fs["train"]["src"]) + len(fs["valid"]["src"]) == n
    assert len(fs["valid"]["src"]) == n // 23
    assert "&lt; speaker &gt; jane doe &lt; / speaker &gt;" in fs["train"]["src"]
    assert "ein titel" in fs["train"]["src"] and "ted : a talk ." in fs["train"]["tgt"]
    assert fs["train"]["tgt"][kept_tags] == "that is sentence 0 , she said &quot; so &quot; ."
    assert not any("wort wort" in s for s in fs["train"]["src"] + fs["valid"]["src"])
    assert fs["test"]["tgt_raw"][2] == "dev2012 sentence 0 &amp; it’s"     # TEDX second
    assert fs["test"]["tgt"][2] == "dev2012 sentence 0 &amp; amp ; it &apos;s"
    assert len(fs["test"]["src"]) == sum(_SETS.values())
    assert iwslt.clean(["a b c", "a b", "a |b", " ", "a " + "w" * 1001],
                       ["x", "x y z", "x  y ", "x", "x y"]) == ([1, 2], ["a b", "a b"],
                                                                ["x y z", "x y"])
    with pytest.raises(ValueError, match="data.recipe"):
        iwslt.prepare_recipe("wmt", files)


def test_iwslt_builder_prepare_and_load(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from srupp_jax.data import iwslt_tfds, prepare
    man, data_dir, cache = str(tmp_path / "man"), str(tmp_path / "tfds"), str(tmp_path / "c")
    files = {k: v.encode("utf-8") for k, v in _release(man).items()}
    with pytest.raises(FileNotFoundError, match="iwslt14_de_en/lin2020 is not prepared"):
        td.load_translation("iwslt14_de_en", data_dir=data_dir, cache_dir=cache)
    assert prepare.main(["--dataset=iwslt14_de_en", f"--manual_dir={man}", "--recipe=all",
                         f"--data_dir={data_dir}", f"--cache_dir={cache}",
                         "--vocab_size=80"]) == 0
    for recipe in iwslt.RECIPES:
        expected = iwslt.prepare_recipe(recipe, files)
        assert iwslt_tfds.read(data_dir, recipe) == expected          # records in order
        d = td.load_translation("iwslt14_de_en", recipe=recipe, vocab_size=80,
                                data_dir=data_dir, cache_dir=cache)
        assert d.vocab_size == 80 and d.info["lowercase"] and d.info["standard_source"]
        assert d.test.tgt_text == expected["test"]["tgt"]
        assert d.test.tgt_raw == expected["test"]["tgt_raw"]
        assert len(d.train) == len(expected["train"]["src"])
        assert d.subwords.decode([d.valid.src[0]]) == [expected["valid"]["src"][0]]
        assert ("pair counts" in d.info["source"]["note"]) == (recipe == "fairseq")
    # Default vocabulary: 14,000 merges, capped by what the tiny text allows.
    d = td.load_translation("iwslt14_de_en", data_dir=data_dir, cache_dir=cache)
    lin = iwslt.lin2020(files)
    chars = subwords.required_chars(lin["train"]["src"] + lin["train"]["tgt"])
    assert d.info["requested_vocab_size"] == 4 + len(chars) + 14_000
    # The extracted folder gives the same build; a changed release needs --overwrite.
    ext = tmp_path / "ext"
    for name, data in files.items():
        _write(str(ext / "de-en" / name), data)
    _write(str(ext / "de-en" / "train.tags.de-en.en"), files["train.tags.de-en.en"] + b"x\n")
    with pytest.raises(ValueError, match="prepared from other files"):
        td.prepare("iwslt14_de_en", data_dir=data_dir, manual_dir=str(ext), cache_dir=cache)
    with pytest.raises(ValueError, match="train.tags.de-en: 73 German but 74 English"):
        td.prepare("iwslt14_de_en", data_dir=data_dir, manual_dir=str(ext), cache_dir=cache,
                   overwrite=True)
    assert iwslt_tfds.read(data_dir, "lin2020") == iwslt.lin2020(files)   # old build intact
    left = [p for p in pathlib.Path(data_dir).rglob("*") if "tmp" in p.name]
    assert left == []                                          # no half build left behind
    os.remove(os.path.join(man, "de-en.tgz"))
    with pytest.raises(FileNotFoundError, match="holds neither de-en.tgz nor all"):
        iwslt.read_release(man)
