"""Datasets: embedded corpus, vocabularies, TFDS builders on dummy files, load_tokens cache."""
import os

import numpy as np
import pytest
from helpers import written_counts_rule

from srupp_jax.data import corpus, datasets
from srupp_jax.data.vocab import EOS, UNK, ByteVocab, WordVocab

RULE_TEXT = ["b a b", "", "c A a b <unk>", "  ", "d  b\tz", "A c", "", "x y"]

SMALL = 200_000  # bytes of embedded corpus in these tests


def test_embedded_corpus_deterministic_and_bounded():
    a, info_a = corpus.embedded_corpus(SMALL)
    b, info_b = corpus.embedded_corpus(SMALL)
    assert a == b and len(a) == SMALL
    assert info_a == info_b and len(info_a["fingerprint"]) == 64
    assert info_a["python_version"] and info_a["num_files"] >= 1
    assert a.startswith(b"# ==== ")
    rels = [r for r, _ in corpus.corpus_files()]
    assert rels == sorted(rels)
    assert not any(p in ("test", "tests", "site-packages", "idlelib", "lib2to3", "__pycache__")
                   for r in rels for p in r.split("/")[:-1])
    assert corpus.corpus_key(SMALL) == corpus.corpus_key(SMALL) != corpus.corpus_key(SMALL + 1)
    with pytest.raises(ValueError, match="max_bytes"):
        corpus.embedded_corpus(0)


def test_splits_contiguous_90_5_5():
    assert corpus.split_sizes(100_000_000) == (90_000_000, 5_000_000, 5_000_000)
    data = bytes(range(256)) * 7 + b"xyz"
    tr, va, te = corpus.split_contiguous(data)
    assert tr + va + te == data
    assert len(va) == len(te) == len(data) * 5 // 100


def test_byte_vocab_rules():
    v = ByteVocab()
    data, _ = corpus.embedded_corpus(5000)
    ids = v.encode(data)
    assert ids.dtype == np.int32 and ids.shape == (5000,) and v.vocab_size == 256
    assert v.rule == "bytes" and np.array_equal(ids, np.frombuffer(data, np.uint8))
    assert v.decode_bytes(ids) == data
    assert v.decode(v.encode("héllo")) == "héllo"
    with pytest.raises(ValueError, match="byte ids"):
        v.decode([256])
    # enwik8's rule: id = rank of the byte value among the file's distinct values (np.unique)
    text = b"zebra\n\x00\xff abc zz\n"
    u = ByteVocab.of_bytes(text)
    values = sorted(set(text))
    assert u.rule == "byte_values" and u.vocab_size == len(values) == 10
    assert u.encode(text).tolist() == [values.index(b) for b in text]
    assert u.decode_bytes(u.encode(text)) == text
    with pytest.raises(ValueError, match="byte 0x71 is not in this vocabulary of 10"):
        u.encode(b"q")
    assert u.fingerprint != ByteVocab.of_bytes(text + b"q").fingerprint != v.fingerprint


def test_word_vocab_counts_rule_ties_empty_lines_rare_words(tmp_path):
    v = WordVocab.build(RULE_TEXT)
    assert v.tokens == written_counts_rule(RULE_TEXT)
    # b 4; a 2, A 2, c 2 (first seen in that order); <unk>, d, z, x, y once (in that order)
    assert v.tokens == [EOS, "b", "a", "c", "A", "<unk>", "d", "z", "x", "y"]
    assert v.rule == "counts" and v.unk == UNK        # <unk> is an ordinary word of the text
    ids = v.encode(RULE_TEXT)
    assert v.decode(ids) == ("b a b <eos> <eos> c A a b <unk> <eos> <eos> d b z <eos> "
                             "A c <eos> <eos> x y <eos>")   # an empty line is <eos> alone
    assert v.decode(v.encode("a qq b")) == "a <unk> b <eos>"
    # a text without <unk>: none is added (WikiText-103's rule), unknown words are an error
    plain = WordVocab.build(["q r r", "s q r"])
    assert plain.tokens == [EOS, "r", "q", "s"] and plain.unk is None
    with pytest.raises(ValueError, match="'t' is not in the vocabulary"):
        plain.encode("q t")
    # your own text (add_unk): <unk> last, for words valid and test have and train lacks
    own = WordVocab.build(["q r r", "s q r"], add_unk=True)
    assert own.tokens == [EOS, "r", "q", "s", UNK]
    assert own.decode(own.encode("t q")) == "<unk> q <eos>"
    # a literal <eos> in the text is id 0, never counted
    assert WordVocab.build(["a <eos> a b"]).tokens == [EOS, "a", "b"]
    path = tmp_path / "vocab.txt"
    v.save(path)
    assert WordVocab.load(path).tokens == v.tokens
    assert WordVocab.load(path).fingerprint == v.fingerprint != plain.fingerprint
    with pytest.raises(ValueError, match="<unk>"):
        WordVocab([EOS, "a"])


def test_word_vocab_file_rule(tmp_path):
    """Billion Word's: id = line of 1b_word_vocab.txt (`word count`), <S> the separator."""
    path = tmp_path / "1b_word_vocab.txt"
    path.write_text("<S> 30\n</S> 30\n<UNK> 9\nthe 5\ncat 2\n\ndog 2\n")
    v = WordVocab.from_file(path)
    assert v.tokens == ["<S>", "</S>", "<UNK>", "the", "cat", "dog"] and v.rule == "file"
    assert v.encode(["the cat", "a dog"]).tolist() == [3, 4, 0, 2, 5, 0]


def _visible(folder):
    """The entries of a cache folder but its lock files (.NAME.lock, srupp_jax/files.py)."""
    return [n for n in os.listdir(folder) if not n.startswith(".")]


def test_load_tokens_default_cached(tmp_path):
    d1 = datasets.load_tokens("default", cache_dir=tmp_path, max_bytes=SMALL)
    assert d1.unit == "byte" and d1.vocab_size == 256
    assert (d1.train.shape[0], d1.valid.shape[0], d1.test.shape[0]) == corpus.split_sizes(SMALL)
    assert all(a.dtype == np.int32 for a in (d1.train, d1.valid, d1.test))
    data, info = corpus.embedded_corpus(SMALL)
    assert d1.info["fingerprint"] == info["fingerprint"]
    whole = np.concatenate([d1.train, d1.valid, d1.test])
    assert d1.vocab.decode_bytes(whole) == data
    # Second call: read from the cache (memory-mapped), same arrays, no rebuild.
    meta = os.path.join(d1.info["cache_path"], "meta.json")
    mtime = os.path.getmtime(meta)
    d2 = datasets.load_tokens("default", cache_dir=tmp_path, max_bytes=SMALL)
    assert isinstance(d2.train, np.memmap) and d2.info["cache_path"] == d1.info["cache_path"]
    assert os.path.getmtime(meta) == mtime and len(_visible(tmp_path)) == 1
    for a, b in zip((d1.train, d1.valid, d1.test), (d2.train, d2.valid, d2.test)):
        np.testing.assert_array_equal(a, b)


def test_unknown_and_missing_dataset(tmp_path):
    with pytest.raises(ValueError, match="valid names: default, enwik8, wikitext103, lm1b"):
        datasets.load_tokens("enwik9", cache_dir=tmp_path)
    for name in ("enwik8", "wikitext103", "lm1b"):
        with pytest.raises(FileNotFoundError) as e:
            datasets.load_tokens(name, data_dir=tmp_path / "none", cache_dir=tmp_path)
        assert (f"python -m srupp_jax.data.prepare --dataset={name} "
                f"--data_dir={tmp_path / 'none'}") in str(e.value)
    with pytest.raises(ValueError, match="max_bytes"):
        datasets.load_tokens("enwik8", data_dir=tmp_path, max_bytes=1000)


def _write_wikitext(root):
    text = {}
    for split, n in (("train", 40), ("valid", 5), ("test", 6)):
        lines = [f" = {split} {i} = \n \n w{i % 7} the cat <unk> , {split} \n" for i in range(n)]
        text[split] = "".join(lines)
        with open(os.path.join(root, f"wiki.{split}.tokens"), "w", encoding="utf-8") as f:
            f.write(text[split])
    return text


def test_builders_enwik8_wikitext103_dummy(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    from srupp_jax.data import builders, prepare
    monkeypatch.setattr(builders.Enwik8, "CHUNK_BYTES", 4096)  # several records per split
    data_dir, cache = str(tmp_path / "tfds"), str(tmp_path / "cache")
    # enwik8: a fake 100 kB file (in a zip, as downloaded) in the manual_dir.
    man = tmp_path / "man"
    man.mkdir()
    raw = np.random.RandomState(0).randint(0, 256, 100_000).astype(np.uint8).tobytes()
    import zipfile
    with zipfile.ZipFile(man / "enwik8.zip", "w") as z:
        z.writestr("enwik8", raw)
    e = prepare.prepare("enwik8", data_dir=data_dir, manual_dir=str(man), cache_dir=cache,
                        allow_modified_source=True)   # not the published zip
    assert e.info["standard_source"] is False
    src = builders.data_source("enwik8", data_dir)
    assert {len(src[s]) for s in ("validation", "test")} == {2}  # 5000 bytes in 4096 chunks
    assert len(src["train"]) == 22
    assert (e.train.shape[0], e.valid.shape[0], e.test.shape[0]) == (90_000, 5_000, 5_000)
    assert e.vocab.decode_bytes(np.concatenate([e.train, e.valid, e.test])) == raw
    assert e.unit == "byte" and e.vocab.rule == "byte_values"
    assert e.vocab.symbols.tolist() == sorted(set(raw))        # the file's distinct bytes
    assert e.train[:50].tolist() == [sorted(set(raw)).index(b) for b in raw[:50]]
    # wikitext103: the extracted files, in a subdirectory of the manual_dir.
    wman = tmp_path / "wman" / "wikitext-103"
    wman.mkdir(parents=True)
    text = _write_wikitext(wman)
    w = prepare.prepare("wikitext103", data_dir=data_dir, manual_dir=str(tmp_path / "wman"),
                        cache_dir=cache)   # extracted files: recorded, cannot be verified
    assert w.info["standard_source"] is True and "not verified" in w.info["source"]["note"]
    src = builders.data_source("wikitext103", data_dir)
    assert [r["index"] for r in src["train"]] == list(range(120))
    assert b"\n".join(builders.read_split(src["validation"])) + b"\n" == \
        text["valid"].encode("utf-8")
    assert w.unit == "word" and w.vocab.tokens == written_counts_rule(text["train"].splitlines())
    for split, arr in (("train", w.train), ("valid", w.valid), ("test", w.test)):
        assert w.vocab.decode(arr) == w.vocab.decode(w.vocab.encode(text[split].splitlines()))
        assert arr.shape[0] == sum(len(l.split()) + 1 for l in text[split].splitlines())
    # words absent from train ("valid") are <unk>; order of lines preserved
    valid = w.vocab.decode(w.valid)
    assert valid.startswith("= <unk> 0 = <eos> <eos> w0 the cat <unk> , <unk> <eos>")
    assert valid.endswith("= <unk> 4 = <eos> <eos> w4 the cat <unk> , <unk> <eos>")
    # Cached and reloaded (memory-mapped) on the second call.
    w2 = datasets.load_tokens("wikitext103", data_dir=data_dir, cache_dir=cache)
    assert isinstance(w2.train, np.memmap) and w2.vocab.tokens == w.vocab.tokens
    np.testing.assert_array_equal(w2.train, w.train)


def test_wikitext103_builder_from_zip(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    import zipfile

    from srupp_jax.data import builders
    files = tmp_path / "files"
    files.mkdir()
    text = _write_wikitext(files)
    man = tmp_path / "man"
    man.mkdir()
    with zipfile.ZipFile(man / "wikitext-103-v1.zip", "w") as z:
        for split in ("train", "valid", "test"):
            z.write(files / f"wiki.{split}.tokens", f"wikitext-103/wiki.{split}.tokens")
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(ValueError, match="not the standard wikitext103"):
        builders.build("wikitext103", data_dir, manual_dir=str(man))
    source = builders.resolve_source("wikitext103", str(man), allow_modified=True)
    builders.build("wikitext103", data_dir, source=source)
    src = builders.data_source("wikitext103", data_dir)
    for split, tfds_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
        lines = [b.decode("utf-8") for b in builders.read_split(src[tfds_split])]
        assert lines == text[split].splitlines()


def test_download_checksum_is_verified(tmp_path):
    import hashlib

    from srupp_jax.data.builders import verify_sha256
    path = tmp_path / "f.zip"
    path.write_bytes(b"not the real enwik8.zip")
    verify_sha256(str(path), hashlib.sha256(b"not the real enwik8.zip").hexdigest())
    with pytest.raises(ValueError, match="expected 547994d9"):
        verify_sha256(str(path), "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc")


def write_billion_word(root, train=(("the cat sat", "a dog"), ("the dog ran",)),
                       heldout=("the cat ran", "a bird"), vocab="<S> 9\n</S> 9\n<UNK> 4\n"
                       "the 4\ncat 2\ndog 2\na 2\nsat 1\nran 1\n"):
    """The benchmark's layout: training files news.en-0000k-of-00100, held-out file 0 (and
    another that must not be read), 1b_word_vocab.txt; returns the folder."""
    base = root / "1-billion-word-language-modeling-benchmark-r13output"
    (base / "training-monolingual.tokenized.shuffled").mkdir(parents=True)
    (base / "heldout-monolingual.tokenized.shuffled").mkdir(parents=True)
    for k, lines in reversed(list(enumerate(train, 1))):     # written out of order
        (base / "training-monolingual.tokenized.shuffled" / f"news.en-{k:05d}-of-00100"
         ).write_text("".join(line + "\n" for line in lines))
    for k, lines in ((0, heldout), (1, ("never read",))):
        (base / "heldout-monolingual.tokenized.shuffled" / f"news.en.heldout-{k:05d}-of-00050"
         ).write_text("".join(line + "\n" for line in lines))
    (root / "1b_word_vocab.txt").write_text(vocab)
    return root


def test_billion_word_builder(tmp_path):
    """Train = the training files in order, valid = test = held-out file 0; ids = lines of
    1b_word_vocab.txt; the stream <S> s1 <S> s2 <S> ..., unknown words <UNK>."""
    pytest.importorskip("tensorflow_datasets")
    from srupp_jax.data import prepare
    man = write_billion_word(tmp_path / "man")
    data = prepare.prepare("lm1b", data_dir=str(tmp_path / "tfds"), manual_dir=str(man),
                           cache_dir=str(tmp_path / "cache"))
    assert data.vocab.rule == "file" and data.vocab_size == 9 and data.unit == "word"
    assert data.vocab.decode(data.train) == "<S> the cat sat <S> a dog <S> the dog ran <S>"
    assert data.vocab.decode(data.test) == "<S> the cat ran <S> a <UNK> <S>"
    np.testing.assert_array_equal(data.valid, data.test)
    assert "not verified" in data.info["source"]["note"]
    with pytest.raises(FileNotFoundError, match="lacks 1b_word_vocab.txt"):
        (man / "1b_word_vocab.txt").unlink()
        prepare.prepare("lm1b", data_dir=str(tmp_path / "tfds2"), manual_dir=str(man))
