"""The one entry point from a dataset name to token arrays: `load_tokens`.

  default      embedded corpus (Python stdlib source, `corpus.py`), bytes, 90/5/5; never TFDS.
  enwik8       our TFDS builder, bytes, 90M/5M/5M, ids = ranks of the file's distinct byte
               values ("byte_values", 205 ids).                             unit "byte" -> BPC
  wikitext103  our TFDS builder, words + `<eos>` per line, vocab of train ("counts").
                                                                            unit "word" -> PPL
  lm1b         our TFDS builder (billion_word.py: the benchmark's files in order, valid = test
               = held-out file 0, as Transformer-XL and SRU++), vocab = 1b_word_vocab.txt
               ("file"); the stream is `<S> s1 <S> s2 <S> ...` (the pairs the reference's
               per-sentence `<S> s <S>` iterator gives).
  text         your own text file or folder of .txt files (`text.py`), bytes or words
               ("counts" with `<unk>`), 90/5/5 unless separate valid and test files are given;
               never TFDS.
The vocabulary rules are the official experiments' (vocab.py); the cache key and meta.json
name the rule, so a cache of another rule is never read.

Token arrays (int32, documents in order) are cached as .npy under
`cache_dir/<name>-<key>/` (default `~/.cache/srupp_jax`, or $SRUPP_JAX_CACHE) and opened with
`mmap_mode='r'`, each file checked first against the size and sha256 recorded when it was
written (srupp_jax/files.py: a truncated, empty or garbled cache is rebuilt, saying so; two
processes building one cache at once: one builds, the other waits and reuses); the key
hashes the dataset fingerprint (for TFDS: the prepared splits of its `dataset_info.json`;
for default: Python version, file list and sizes, max_bytes; for text: the sha256 of the
files' contents), the tokenization settings and the vocabulary rule. TensorFlow Datasets is
imported only for the TFDS names.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Optional

import numpy as np
from absl import logging

from srupp_jax import files, phases
from srupp_jax.data import corpus, text
from srupp_jax.data.vocab import ByteVocab, WordVocab

NAMES = ("default", "enwik8", "wikitext103", "lm1b")   # prepared with srupp_jax.data.prepare
TEXT = "text"                                         # your own files: nothing to prepare
PIPELINE_VERSION = 2  # bump when tokenization changes, invalidates caches (2: official vocabs)
SPLITS = ("train", "valid", "test")
_SPLITS = dict(train="train", valid="validation", test="test")   # ours -> TFDS's
# TFDS builder name and version, unit, vocabulary rule (vocab.py); every name but "text"
_TFDS = {
    "enwik8": dict(tfds="enwik8", version="1.0.0", unit="byte", rule="byte_values"),
    "wikitext103": dict(tfds="wikitext103", version="1.0.0", unit="word", rule="counts"),
    "lm1b": dict(tfds="billion_word", version="1.0.0", unit="word", rule="file"),
}


def vocab_rule(name: str, text_unit: str = "byte") -> str:
    """The vocabulary rule of dataset `name` (vocab.py), without reading it."""
    _check_name(name)
    if name in _TFDS:
        return _TFDS[name]["rule"]
    return "counts" if name == TEXT and text_unit == "word" else "bytes"


@dataclasses.dataclass
class LMData:
    """Token arrays of one dataset.

    train, valid, test: [N] int32 token ids (np.memmap when cached), documents in order.
    vocab: ByteVocab or WordVocab (`decode(ids) -> str`); unit: "byte" (report BPC) or "word"
    (report perplexity); info: fingerprint and provenance.
    """
    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab_size: int
    vocab: Any
    unit: str
    info: Dict[str, Any]


def default_cache_dir() -> str:
    return os.environ.get("SRUPP_JAX_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "srupp_jax"))


def default_data_dir() -> str:
    """TFDS's default: $TFDS_DATA_DIR or ~/tensorflow_datasets (without importing TFDS)."""
    return os.environ.get("TFDS_DATA_DIR",
                          os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))


def prepare_command(name: str, data_dir: Optional[str] = None,
                    cache_dir: Optional[str] = None) -> str:
    cmd = f"python -m srupp_jax.data.prepare --dataset={name}"
    if data_dir:
        cmd += f" --data_dir={data_dir}"
    if cache_dir:
        cmd += f" --cache_dir={cache_dir}"
    if name in _TFDS:
        cmd += " [--manual_dir=DIR_WITH_THE_SOURCE_FILES_FOR_OFFLINE]"
    return cmd


def unit_of(name: str, text_unit: str = "byte") -> str:
    """"byte" or "word": the tokens of dataset `name` (for "text", `text_unit`), without
    reading it."""
    _check_name(name)
    return text_unit if name == TEXT else _TFDS.get(name, {}).get("unit", "byte")


def _check_name(name: str) -> None:
    allowed = NAMES + (TEXT,)
    if name not in allowed:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(allowed)}")


def _tfds_dir(name: str, data_dir: str) -> str:
    return os.path.join(data_dir, _TFDS[name]["tfds"], _TFDS[name]["version"])


def _tfds_fingerprint(name: str, data_dir: str) -> str:
    path = os.path.join(_tfds_dir(name, data_dir), "dataset_info.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"dataset {name!r} is not prepared: {path} does not exist. Prepare it once with:\n"
            f"  {prepare_command(name, data_dir)}")
    info = files.read_json(path, f"prepare it again: {prepare_command(name, data_dir)} "
                                 "--overwrite")
    splits = sorted((s.get("name"), s.get("numBytes"), s.get("shardLengths"))
                    for s in info.get("splits", []))
    return hashlib.sha256(json.dumps([name, info.get("version"), splits,
                                      _source_record(name, data_dir)],
                                     sort_keys=True).encode()).hexdigest()


def _source_record(name: str, data_dir: str) -> Optional[dict]:
    """What `builders.build` recorded of the source files (sha256, standard), if anything."""
    path = os.path.join(_tfds_dir(name, data_dir), "srupp_source.json")
    if not os.path.exists(path):
        return None
    return files.read_json(path, f"prepare it again: {prepare_command(name, data_dir)} "
                                 "--overwrite")


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([PIPELINE_VERSION, *parts], sort_keys=True,
                                     default=str).encode()).hexdigest()[:16]


def _open_cache(path: str, meta: dict, rule: str):
    """(arrays, vocab) of a checked cache directory (files.cached_dir); ValueError when its
    vocabulary is not of `rule` or not the one its meta.json records."""
    if meta.get("vocab_rule") != rule:
        raise ValueError(f"the token cache {path} holds ids of the vocabulary rule "
                         f"{meta.get('vocab_rule')!r}, not {rule!r}; delete it (it is rebuilt)")
    arrays = {s: np.load(os.path.join(path, f"{s}.npy"), mmap_mode="r") for s in SPLITS}
    if meta["unit"] == "word":
        vocab = WordVocab.load(os.path.join(path, "vocab.txt"), rule=rule, eos=meta["eos"],
                               unk=meta["unk"])
    else:
        vocab = ByteVocab(meta["symbols"] if rule == "byte_values" else None)
    if vocab.fingerprint != meta["vocab_sha256"]:
        raise ValueError(f"the token cache {path} has a vocabulary other than its meta.json "
                         "records; delete it (it is rebuilt)")
    return arrays, vocab


def _write_cache(tmp: str, arrays, vocab) -> None:
    phases.enter("cache.write")
    for s in SPLITS:
        np.save(os.path.join(tmp, f"{s}.npy"), np.ascontiguousarray(arrays[s], np.int32))
    if isinstance(vocab, WordVocab):
        vocab.save(os.path.join(tmp, "vocab.txt"))


def _build_default(max_bytes):
    data, info = corpus.embedded_corpus(max_bytes)
    vocab = ByteVocab()
    tr, va, te = corpus.split_contiguous(data)
    return dict(train=vocab.encode(tr), valid=vocab.encode(va), test=vocab.encode(te)), vocab, info


def _build_tfds(name: str, data_dir: str):
    from srupp_jax.data import billion_word, builders  # imports TFDS; registers our builders
    spec = _TFDS[name]
    record = _source_record(name, data_dir) or {}
    if "files" in record:              # the prepared files, as they were written
        files.check(_tfds_dir(name, data_dir), record["files"],
                    f"prepare it again: {prepare_command(name, data_dir)} --overwrite")
    source = builders.data_source(spec["tfds"], data_dir)
    read = lambda split: builders.read_split(source[_SPLITS[split]])
    if spec["unit"] == "byte":     # enwik8: the distinct byte values of the whole file
        parts = {s: b"".join(read(s)) for s in SPLITS}
        vocab = ByteVocab.of_bytes(b"".join(parts[s] for s in SPLITS))
        return {s: vocab.encode(parts[s]) for s in SPLITS}, vocab
    if name == "lm1b":             # the vocabulary file; one <S> before the first sentence
        vocab = WordVocab.from_file(os.path.join(_tfds_dir(name, data_dir),
                                                 billion_word.VOCAB_FILE))
        return {s: np.concatenate([[vocab.eos_id], vocab.encode(read(s))]).astype(np.int32)
                for s in SPLITS}, vocab
    vocab = WordVocab.build(read("train"))
    return {s: vocab.encode(read(s)) for s in SPLITS}, vocab


def load_tokens(name: str, *, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                max_bytes: Optional[int] = None,
                text_source: Optional[Dict[str, str]] = None) -> LMData:
    """Token arrays of dataset `name` (one of NAMES), built once and then read from the cache.

    data_dir: where TFDS datasets are prepared (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
    cache_dir: token cache (default $SRUPP_JAX_CACHE or ~/.cache/srupp_jax).
    max_bytes: size of the embedded corpus ("default" only; default corpus.DEFAULT_MAX_BYTES).
    text_source: "text" only: dict(path=, valid_path=, test_path=, unit=) (see text.build).
    Raises ValueError for an unknown name, FileNotFoundError (with the command that prepares it)
    for a TFDS dataset that is not prepared in data_dir.
    """
    _check_name(name)
    cache_dir = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    if (text_source is not None) != (name == TEXT):
        raise ValueError(f"text_source is for the 'text' dataset only, got dataset {name!r}")
    if name == "default":
        key_info = dict(corpus_key=corpus.corpus_key(max_bytes))
    elif name == TEXT:
        key_info = dict(text_fingerprint=text.fingerprint(**text_source))
    else:
        if max_bytes is not None:
            raise ValueError(f"max_bytes applies to the 'default' corpus only, got "
                             f"max_bytes={max_bytes!r} for dataset {name!r}")
        data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
        key_info = dict(tfds_fingerprint=_tfds_fingerprint(name, data_dir),
                        settings={k: v for k, v in _TFDS[name].items()})
    rule = vocab_rule(name, (text_source or {}).get("unit", "byte"))
    key_info["vocab_rule"] = rule
    path = os.path.join(cache_dir, f"{name}-{_key(name, key_info)}")

    def fill(tmp: str) -> dict:
        if name == TEXT:
            source = text_source["path"]
            size = text.source_size(source)
            if size >= text.LARGE:
                logging.info("tokenizing %s (%s MB) into %ss, once: the tokens are cached in "
                             "%s", source, f"{size / 1e6:,.1f}", text_source["unit"], path)
        else:
            logging.info("building the token cache of %s, once: %s", name, path)
        if name == "default":
            arrays, vocab, info = _build_default(max_bytes)
        elif name == TEXT:
            arrays, vocab = text.build(**text_source)
            info = dict(text_source)
        else:
            arrays, vocab = _build_tfds(name, data_dir)
            info = dict(data_dir=data_dir)
        _write_cache(tmp, arrays, vocab)
        return dict(name=name, unit=vocab.unit, vocab_size=vocab.vocab_size,
                    pipeline_version=PIPELINE_VERSION, key=key_info, info=info,
                    num_tokens={s: int(arrays[s].shape[0]) for s in SPLITS},
                    vocab_rule=vocab.rule, vocab_sha256=vocab.fingerprint,
                    **(dict(eos=vocab.eos, unk=vocab.unk) if vocab.unit == "word" else
                       dict(symbols=vocab.symbols.tolist())))

    meta = files.cached_dir(path, fill, f"the token cache of {name}")
    arrays, vocab = _open_cache(path, meta, rule)
    info = dict(meta["info"], cache_path=path, key=meta["key"])
    if name in _TFDS:
        source = _source_record(name, data_dir)
        info.update(source=source, standard_source=bool(source is None or source["standard"]))
    return LMData(name=name, train=arrays["train"], valid=arrays["valid"], test=arrays["test"],
                  vocab_size=vocab.vocab_size, vocab=vocab, unit=meta["unit"], info=info)
