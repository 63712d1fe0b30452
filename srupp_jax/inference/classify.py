"""Classifying texts with a trained classifier, and scoring the predictions.

  predictor(model)(params, rest, ids, ...)  log p(class | text) [n, C] for every row of `ids`
                                            (Ragged), in order: batched by token count in the
                                            length buckets of data/batches.py
  scores(log_probs, gold, labels, split)    {split_loss, split_accuracy, split_macro_f1} and,
                                            per class, precision / recall / f1 / support
  confusion(pred, gold, C)                  [C, C] counts, rows the true class
  write_confusion_png(path, matrix, labels) the matrix as a figure (matplotlib, Agg)
  prediction_lines(log_probs, labels, gold) "label<TAB>probability[<TAB>true label]" lines

Macro-F1 is the unweighted mean of F1 = 2 P R / (P + R) over the classes that occur in the gold
labels or the predictions (P or R undefined: 0).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import jax
import numpy as np
from flax import nnx

from srupp_jax.data.batches import eval_batches
from srupp_jax.models.base import split_for_eval


def predictor(model):
    """predict(params, rest, ids, *, batch_tokens, max_len, pad_id, eos_id, bar=None) ->
    [n, C] float32 log-probabilities of ids' rows in their order; `bar(batches)` may wrap the
    batches in a progress bar. The model runs in evaluation mode (no dropout)."""
    graphdef, _, _ = split_for_eval(model)

    @jax.jit
    def log_probs(params, rest, tokens, lengths):
        return nnx.merge(graphdef, params, rest).log_probs(tokens, lengths)

    def predict(params, rest, ids, *, batch_tokens: int, max_len: int, pad_id: int,
                eos_id: int, bar=None) -> np.ndarray:
        out: Optional[np.ndarray] = None
        batches = eval_batches(ids, None, batch_tokens, max_len=max_len, pad_id=pad_id,
                               eos_id=eos_id)
        for b in (bar(batches) if bar else batches):
            lp = np.asarray(log_probs(params, rest, b.src, b.lengths))
            if out is None:
                out = np.zeros((len(ids), lp.shape[-1]), np.float32)
            real = b.index >= 0
            out[b.index[real]] = lp[real]
        return np.zeros((0, 0), np.float32) if out is None else out

    return predict


def confusion(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] int64 counts: entry (i, j) = examples of true class i predicted as j."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (gold, pred), 1)
    return matrix


def per_class(matrix: np.ndarray, labels: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """{label: {precision, recall, f1, support}} of a confusion matrix (0 where undefined)."""
    out = {}
    for i, label in enumerate(labels):
        tp, predicted, support = matrix[i, i], matrix[:, i].sum(), matrix[i].sum()
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out[label] = dict(precision=float(p), recall=float(r), f1=float(f1),
                          support=int(support))
    return out


def scores(log_probs: np.ndarray, gold: np.ndarray, labels: Sequence[str], split: str,
           *, classes: bool = True) -> dict:
    """{split_loss (mean nll, nats), split_accuracy, split_macro_f1} and, with `classes`,
    split_classes ({label: precision, recall, f1, support}) of log_probs [n, C], gold [n]."""
    gold = np.asarray(gold, np.int64)
    pred = log_probs.argmax(axis=-1)
    matrix = confusion(pred, gold, len(labels))
    each = per_class(matrix, labels)
    present = [i for i in range(len(labels)) if matrix[i].sum() or matrix[:, i].sum()]
    out = {f"{split}_loss": float(-log_probs[np.arange(len(gold)), gold].mean()),
           f"{split}_accuracy": float((pred == gold).mean()),
           f"{split}_macro_f1": float(np.mean([each[labels[i]]["f1"] for i in present]))}
    if classes:
        out[f"{split}_classes"] = each
    return out


def prediction_lines(log_probs: np.ndarray, labels: Sequence[str],
                     gold: Optional[np.ndarray] = None) -> List[str]:
    """One line per row: the predicted label, a tab, its probability (4 decimals), and with
    `gold` a tab and the true label."""
    pred = log_probs.argmax(axis=-1)
    prob = np.exp(log_probs[np.arange(len(pred)), pred])
    lines = [f"{labels[p]}\t{q:.4f}" for p, q in zip(pred.tolist(), prob.tolist())]
    if gold is not None:
        lines = [f"{line}\t{labels[g]}" for line, g in zip(lines, np.asarray(gold).tolist())]
    return lines


def write_confusion_png(path: str, matrix: np.ndarray, labels: Sequence[str],
                        title: str = "") -> None:
    """The confusion matrix as a PNG: rows the true class, columns the predicted, each cell
    its count, shaded by the share of its row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(x) for x in labels], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

