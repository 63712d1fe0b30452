"""The one entry point from a classification dataset to token ids: `load`.

  stdlib_lines  the offline default task (`stdlib_lines.py`): a line of Python -> its
                standard-library package, generated in a fraction of a second, never cached
  tsv           your folder `data.path` of {train,valid,test}.tsv, label<TAB>text a line
                (`labelled.py`)

The text of an example becomes ids in one of three units (`data.unit`):
  byte  its UTF-8 bytes (vocabulary 256), ended by a newline byte: a line as the byte language
        models of this project read it;
  word  whitespace words (`vocab.WordVocab` of the train texts, or the vocabulary of the
        language model a run starts from), ended by `<eos>`;
  bpe   the sentencepiece BPE of translation (`subwords.py`: the text tokenized by
        `data.tokenizer` for language `data.src` ("" = en), `data.vocab_size` pieces, 0 =
        8,000), ended by `</s>`; the BPE model is cached under cache_dir, keyed by the train
        texts and the settings.
A text longer than `max_len` - 1 ids is cut to its first max_len - 1 (the end id makes
max_len); `info["truncated"]` counts them per split. Labels are ids into `labels`, the order
first seen in train.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from srupp_jax import files
from srupp_jax.data import labelled, stdlib_lines
from srupp_jax.data.datasets import default_cache_dir
from srupp_jax.data.subwords import EOS_ID, PAD_ID, Subwords, TextRecipe, train_bpe
from srupp_jax.data.translation_data import Ragged
from srupp_jax.data.vocab import WordVocab

NAMES = ("stdlib_lines", "tsv")
UNITS = ("byte", "word", "bpe")
SPLITS = ("train", "valid", "test")
BPE_VOCAB = 8000
NEWLINE = 10


class Tokens:
    """A unit's tokenizer: encode(texts) -> [n_i] int32 ids each (without the end id);
    vocab_size, end_id, pad_id (padding is masked by length, so any id would do)."""
    pad_id = 0

    def __init__(self, unit: str, *, words: Optional[WordVocab] = None,
                 subwords: Optional[Subwords] = None, lang: str = "en"):
        self.unit, self.words, self.subwords, self.lang = unit, words, subwords, lang
        if unit == "byte":
            self.vocab_size, self.end_id = 256, NEWLINE
        elif unit == "word":
            self.vocab_size, self.end_id = words.vocab_size, words.eos_id
        else:
            self.vocab_size, self.end_id, self.pad_id = subwords.vocab_size, EOS_ID, PAD_ID

    def encode(self, texts: Sequence[str]) -> List[np.ndarray]:
        if self.unit == "byte":
            return [np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.int32) for t in texts]
        if self.unit == "word":
            return [self.words.encode(t, add_eos=False) for t in texts]
        return self.subwords.encode(list(texts), self.lang)


@dataclasses.dataclass
class Split:
    """ids: the texts' ids (cut to max_len - 1); labels: [n] int32 ids into the labels; texts:
    the texts as read."""
    ids: Ragged
    labels: np.ndarray
    texts: List[str]

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass
class ClassificationData:
    """A dataset: its splits, the labels (class order), the tokenizer and info (files,
    held_out, truncated, python_version for stdlib_lines)."""
    name: str
    labels: List[str]
    train: Split
    valid: Split
    test: Split
    tokens: Tokens
    info: Dict[str, Any]

    @property
    def unit(self) -> str:
        return self.tokens.unit

    @property
    def vocab_size(self) -> int:
        return self.tokens.vocab_size

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"split={name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def encode(self, texts: Sequence[str], max_len: int) -> Ragged:
        """Texts -> their ids, each cut to max_len - 1."""
        return Ragged.from_rows([ids[:max_len - 1] for ids in self.tokens.encode(texts)])


def _bpe(train_texts: List[str], recipe: TextRecipe, lang: str, vocab_size: int,
         cache_dir: str) -> Subwords:
    """The BPE of the train texts, learned once and cached by content and settings."""
    h = hashlib.sha256(json.dumps([dataclasses.asdict(recipe), lang, vocab_size]).encode())
    for text in train_texts:
        h.update(text.encode("utf-8") + b"\n")
    path = os.path.join(cache_dir, f"classify_bpe-{h.hexdigest()[:16]}")

    def fill(tmp: str) -> dict:
        model = train_bpe(recipe.tokenize(train_texts, lang), vocab_size)
        with open(os.path.join(tmp, "spm.model"), "wb") as f:
            f.write(model)
        return dict(vocab_size=vocab_size, lang=lang, recipe=dataclasses.asdict(recipe))

    files.cached_dir(path, fill, "the BPE model of the classification texts")
    with open(os.path.join(path, "spm.model"), "rb") as f:
        return Subwords(f.read(), recipe, lang, lang)


def tokens_for(unit: str, train_texts: List[str], *, words: Optional[WordVocab] = None,
               lang: str = "", tokenizer: str = "moses", lowercase: bool = False,
               vocab_size: int = 0, cache_dir: Optional[str] = None) -> Tokens:
    """The Tokens of `unit` (`words`: a given word vocabulary instead of the train texts')."""
    if unit not in UNITS:
        raise ValueError(f"data.unit={unit!r}; expected one of {', '.join(UNITS)} for "
                         "task=classification")
    if unit == "word":
        return Tokens(unit, words=words or WordVocab.build(train_texts, add_unk=True))
    if unit == "bpe":
        lang = lang or "en"
        recipe = TextRecipe(tokenizer or "moses", lowercase=lowercase)
        subwords = _bpe(train_texts, recipe, lang, int(vocab_size or BPE_VOCAB),
                        cache_dir or default_cache_dir())
        return Tokens(unit, subwords=subwords, lang=lang)
    return Tokens(unit)


def load(data_config, *, max_len: int, words: Optional[WordVocab] = None,
         cache_dir: Optional[str] = None) -> ClassificationData:
    """The dataset of a config's `data` block, tokenized (module docstring).

    max_len: train.max_len, the longest row (ids + end); words: the word vocabulary to use
    (a language model's) instead of building one from train.
    Raises ValueError / FileNotFoundError naming the file, line or key at fault."""
    get = data_config.get
    name = get("name")
    if name not in NAMES:
        raise ValueError(f"data.name={name!r}; expected one of {', '.join(NAMES)} for "
                         "task=classification")
    if name == "stdlib_lines":
        examples = stdlib_lines.generate()
        labels = labelled.label_order(examples["train"].labels)
        info = dict(python_version=platform.python_version(),
                    key=stdlib_lines.key(), held_out=[])
    else:
        examples, labels, info = labelled.load_folder(get("path", ""))
    tokens = tokens_for(get("unit", "byte"), examples["train"].texts, words=words,
                        lang=get("src", ""), tokenizer=get("tokenizer", "moses"),
                        lowercase=bool(get("lowercase", False)),
                        vocab_size=int(get("vocab_size", 0) or 0),
                        cache_dir=cache_dir or get("cache_dir", "") or None)
    index = {label: i for i, label in enumerate(labels)}
    splits, truncated = {}, {}
    for split in SPLITS:
        ex = examples[split]
        rows = tokens.encode(ex.texts)
        truncated[split] = int(sum(len(r) > max_len - 1 for r in rows))
        splits[split] = Split(Ragged.from_rows([r[:max_len - 1] for r in rows]),
                              np.array([index[label] for label in ex.labels], np.int32),
                              list(ex.texts))
    return ClassificationData(name, labels, **splits, tokens=tokens,
                              info=dict(info, truncated=truncated))
