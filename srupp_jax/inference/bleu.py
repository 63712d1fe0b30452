"""Translation metrics with sacreBLEU: corpus BLEU, tokenized BLEU and chrF.

  bleu      sacreBLEU's corpus BLEU on detokenized (plain) text against the raw references:
            the standard, comparable number; `lowercase=True` where the data are lower-cased
            (the IWSLT'14 recipes), which its signature records ("case:lc").
  bleu_tok  corpus BLEU on tokenized, lower-cased, BPE-merged text, sacreBLEU with
            tokenize="none" and lowercase=True: the number of the paper's Table 8 (Lin et al.
            2020 score the tokenized text; fairseq's `--scoring bleu` also scores it). It
            depends on the tokenizer, so it is comparable only within one recipe.
  chrf      sacreBLEU's chrF (character 6-grams, beta 2) on detokenized text.

Each returns a `Score` (score in 0..100, sacreBLEU's signature string); `scores` computes all
three and their signatures for one split, the dictionary an evaluation logs.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Sequence


@dataclasses.dataclass(frozen=True)
class Score:
    score: float
    signature: str


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references; give one "
                         "hypothesis per reference")
    if not refs:
        raise ValueError("no references: BLEU needs at least one sentence")


def bleu(hyps: Sequence[str], refs: Sequence[str], *, lowercase: bool = False,
         tokenize: str = "13a") -> Score:
    """sacreBLEU corpus BLEU of plain-text hypotheses against one reference each."""
    from sacrebleu.metrics import BLEU
    _check(hyps, refs)
    metric = BLEU(lowercase=lowercase, tokenize=tokenize)
    result = metric.corpus_score(list(hyps), [list(refs)])
    return Score(float(result.score), str(metric.get_signature()))


def bleu_tok(hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """Corpus BLEU of tokenized text as it is (tokenize="none"), lower-cased."""
    return bleu(hyps, refs, lowercase=True, tokenize="none")


def chrf(hyps: Sequence[str], refs: Sequence[str], *, lowercase: bool = False) -> Score:
    """sacreBLEU chrF of plain-text hypotheses against one reference each."""
    from sacrebleu.metrics import CHRF
    _check(hyps, refs)
    metric = CHRF(lowercase=lowercase)
    result = metric.corpus_score(list(hyps), [list(refs)])
    return Score(float(result.score), str(metric.get_signature()))


def scores(hyps: Sequence[str], refs: Sequence[str], hyps_tok: Sequence[str],
           refs_tok: Sequence[str], *, lowercase: bool = False) -> Dict[str, object]:
    """{bleu, bleu_tok, chrf: float, signatures: {bleu, bleu_tok, chrf: str}} of one split.

    hyps, refs: detokenized hypotheses and raw references (`Subwords.detokenize`,
    `TranslationSplit.tgt_raw`); hyps_tok, refs_tok: tokenized BPE-merged hypotheses and
    tokenized references (`Subwords.decode`, `TranslationSplit.tgt_text`); lowercase: whether
    the data are lower-cased (`TranslationData.info["lowercase"]`)."""
    out = dict(bleu=bleu(hyps, refs, lowercase=lowercase), bleu_tok=bleu_tok(hyps_tok, refs_tok),
               chrf=chrf(hyps, refs, lowercase=lowercase))
    return dict({k: v.score for k, v in out.items()},
                signatures={k: v.signature for k, v in out.items()})
