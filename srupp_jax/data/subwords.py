"""Words and subwords of translation: Moses tokenization per language and a joint BPE.

A `TextRecipe` turns raw sentences into the model's tokenized text and back:
  tokenizer "moses": `sacremoses.MosesTokenizer(lang)` (tokenizer.perl's rules; no aggressive
            hyphen splitting; `escape` writes & < > | " ' [ ] as XML entities, as tokenizer.perl
            does by default and fairseq's IWSLT'14 recipe keeps) and `MosesDetokenizer(lang)`;
  tokenizer "none": the text is already tokenized (whitespace-separated): used as is;
  lowercase: lower-cased after tokenizing, or before it with `lowercase_first` (Lin et al.
            2020 lower-case the raw text, then tokenize).

The subwords are ONE sentencepiece BPE model over the tokenized train text of both languages
(`train_bpe`): model_type=bpe, the identity normalisation (the tokenized text is kept byte for
byte, so decoding gives it back exactly), character_coverage 1.0 (every character of the train
text is a piece), no byte fallback (a character never seen in train becomes <unk>, shown as
" ⁇ " when decoded), one thread, all sentences in their given order: the same text always gives
the same model (a bigger thread count gives a different one). Fixed ids (`PAD_ID` .. `EOS_ID`):
  0 <pad>   1 <unk>   2 <s> (BOS, the first decoder input)   3 </s> (EOS, ends src and tgt)
`vocab_size` counts every piece: the 4 specials, user pieces, the characters and the merges.
A subword-nmt / fastBPE recipe given as a number of merges (IWSLT'14: 14,000 or 10,000) maps to
`vocab_size_for_merges` = 4 + characters + merges pieces (sentencepiece marks a word's START
with "▁" where subword-nmt marks its end, so the pieces themselves differ).

`Subwords` bundles the model and the recipe: `encode` (raw text -> ids), `encode_tokenized`,
`decode` (ids -> tokenized, BPE-merged text: what the tokenized BLEU scores) and `detokenize`
(ids -> plain text for sacreBLEU).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import threading
from typing import Iterable, List, Sequence

import numpy as np

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
TOKENIZERS = ("moses", "none")


@functools.lru_cache(maxsize=None)
def _moses(lang: str):
    from sacremoses import MosesDetokenizer, MosesTokenizer
    return MosesTokenizer(lang=lang), MosesDetokenizer(lang=lang)


@dataclasses.dataclass(frozen=True)
class TextRecipe:
    """Raw sentence <-> tokenized text (see the module docstring)."""
    tokenizer: str = "moses"
    lowercase: bool = False
    lowercase_first: bool = False
    escape: bool = False

    def __post_init__(self):
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"data.tokenizer={self.tokenizer!r}; expected one of {TOKENIZERS}")

    def tokenize(self, lines: Iterable[str], lang: str) -> List[str]:
        """Raw sentences -> tokenized sentences (single spaces between tokens)."""
        out = []
        for line in lines:
            if self.lowercase and self.lowercase_first:
                line = line.lower()
            if self.tokenizer == "moses":
                line = _moses(lang)[0].tokenize(line, return_str=True, escape=self.escape)
            else:
                line = " ".join(line.split())
            if self.lowercase and not self.lowercase_first:
                line = line.lower()
            out.append(line)
        return out

    def detokenize(self, lines: Iterable[str], lang: str) -> List[str]:
        """Tokenized sentences -> plain text (Moses detokenizer; "none": unchanged)."""
        if self.tokenizer == "none":
            return list(lines)
        detok = _moses(lang)[1]
        return [detok.detokenize(line.split(), unescape=self.escape) for line in lines]


def required_chars(lines: Iterable[str]) -> set:
    """The characters sentencepiece keeps as pieces at coverage 1.0: every non-space character
    of `lines`, and "▁" (the word-start mark that replaces spaces)."""
    chars = set()
    for line in lines:
        chars.update(line)
    return (chars - set(" \t\n\r")) | {"\u2581"}


def vocab_size_for_merges(lines: Sequence[str], merges: int,
                          user_symbols: Sequence[str] = ()) -> int:
    """vocab_size with exactly `merges` merged pieces: 4 specials + user pieces + characters."""
    return 4 + len(user_symbols) + len(required_chars(lines)) + int(merges)


def train_bpe(lines: Sequence[str], vocab_size: int, user_symbols: Sequence[str] = ()) -> bytes:
    """The serialized sentencepiece BPE model of the tokenized `lines` (see the module docstring).

    vocab_size: pieces in all; a text too small for it gives the largest model it allows
    (hard_vocab_limit off). user_symbols: pieces always kept whole (numbers task morphemes).
    """
    import sentencepiece as spm
    if int(vocab_size) != vocab_size or vocab_size < 8:
        raise ValueError(f"data.vocab_size={vocab_size!r}; expected an integer >= 8")
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ValueError("no non-empty train sentence to learn the BPE from")
    model = io.BytesIO()
    _stoppable(lambda: spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=int(vocab_size), character_coverage=1.0, normalization_rule_name="identity",
        byte_fallback=False, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        user_defined_symbols=list(user_symbols), hard_vocab_limit=False, num_threads=1,
        max_sentence_length=1 << 16, input_sentence_size=0, shuffle_input_sentence=False,
        minloglevel=2))
    return model.getvalue()


def _stoppable(work) -> None:
    """work() (one long call into C++: learning the BPE of IWSLT'14 takes a while) in a
    daemon thread while this one waits in short joins, so that SIGTERM or Ctrl-C stops the
    program within a second (Python runs signal handlers in the main thread only, between
    bytecodes); its error is raised here."""
    failed = []

    def run():
        try:
            work()
        except BaseException as e:          # noqa: BLE001 (raised again below)
            failed.append(e)

    thread = threading.Thread(target=run, name="srupp-bpe", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if failed:
        raise failed[0]


class Subwords:
    """A trained BPE model and the text recipe of one language pair.

    Args:
      model: serialized sentencepiece model (`train_bpe`).
      recipe: the TextRecipe of the data.
      src_lang, tgt_lang: Moses language codes ("de", "en").
    """

    def __init__(self, model: bytes, recipe: TextRecipe, src_lang: str, tgt_lang: str):
        import sentencepiece as spm
        self.model = model
        self.sp = spm.SentencePieceProcessor(model_proto=model)
        self.recipe, self.src_lang, self.tgt_lang = recipe, src_lang, tgt_lang
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def encode_tokenized(self, lines: Sequence[str]) -> List[np.ndarray]:
        """Tokenized sentences -> [n_i] int32 piece ids each (no BOS/EOS)."""
        return [np.asarray(ids, np.int32) for ids in self.sp.encode(list(lines))]

    def encode(self, lines: Sequence[str], lang: str) -> List[np.ndarray]:
        """Raw sentences of language `lang` -> [n_i] int32 ids (recipe tokenization + BPE)."""
        return self.encode_tokenized(self.recipe.tokenize(lines, lang))

    def decode(self, ids: Iterable[Sequence[int]]) -> List[str]:
        """Id rows -> tokenized, BPE-merged text. A row ends at its first EOS; pad and BOS ids
        are dropped."""
        rows = []
        for row in ids:
            row = [int(i) for i in np.asarray(row).reshape(-1)]
            if EOS_ID in row:
                row = row[:row.index(EOS_ID)]
            rows.append([i for i in row if i not in (PAD_ID, BOS_ID)])
        return [self.sp.decode(r) for r in rows]

    def detokenize(self, ids: Iterable[Sequence[int]], lang: str = None) -> List[str]:
        """Id rows -> plain text (decode, then the recipe's detokenizer; default: target)."""
        return self.recipe.detokenize(self.decode(ids), lang or self.tgt_lang)

    def pieces(self) -> List[str]:
        return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
