"""PyTorch language models with the module structure and parameter names of the SRU++ paper's
released files (asappresearch/sru 3.0.0-dev, experiments/srupp_experiments: train_enwik8.py,
train_wt103.py, train_lm1b.py), written for the tests from the written form of those files
(their state dicts' keys and the equations of the adaptive layers), and their official final
evaluation: batch 1, segments of L tokens, the previous segment's layer inputs as attention
memory, the recurrent state carried, the mask of `set_mask(L, same_length=True)`.

    model = ReleasedLM(vocab_size=V, d=16, d_proj=8, depth=3, k=1)                 # enwik8
    model = ReleasedLM(V, 16, 8, 3, cutoffs=[10, 20], n_e=16, div_val=2.0)       # WikiText-103
    model = ReleasedLM(V, ..., cutoffs=[...], tie_proj=False)                     # Billion Word
    train(model, ids, steps=40)        # a few Adam steps so predictions are far from uniform
    logp = official_eval(model, ids, L)   # per-token log p(y) of ids[1:], the official segments
"""
import numpy as np
import sru
import torch
import torch.nn as nn
import torch.nn.functional as F


class AdaptiveEmbedding(nn.Module):
    """e(w) = P_i E_i[w - c_i]: tables `emb_weights` (given: not registered, the output's),
    projections `emb_projs` [d, d_i] (a ParameterList, the output's own object when tied)."""

    def __init__(self, cutoffs, tables, projs):
        super().__init__()
        self.bounds = list(zip([0] + cutoffs[:-1], cutoffs))
        self.emb_weights = tables          # a plain list: not in the state dict
        self.emb_projs = projs

    def forward(self, x):
        out = torch.zeros(*x.shape, self.emb_projs[0].shape[0])
        for (lo, hi), table, proj in zip(self.bounds, self.emb_weights, self.emb_projs):
            inside = (x >= lo) & (x < hi)
            e = F.embedding((x - lo).clamp(0, hi - lo - 1), table) @ proj.t()
            out = torch.where(inside[..., None], e, out)
        return out


class AdaptiveLogSoftmax(nn.Module):
    """out_layers[i] = Linear(d_i, |V_i| (+ n-1 cluster rows for i = 0)), out_projs[i] [d, d_i];
    log p(w) = head[w] (w < c_1), head[-i] + tail_i[w - c_i] (cluster i >= 1)."""

    def __init__(self, vocab_size, n_e, d, cutoffs, div_val):
        super().__init__()
        self.cutoffs = list(cutoffs) + [vocab_size]
        n = len(self.cutoffs)
        widths = [int(n_e // div_val ** i) for i in range(n)]
        sizes = [hi - lo for lo, hi in zip([0] + self.cutoffs[:-1], self.cutoffs)]
        self.out_layers = nn.ModuleList(
            [nn.Linear(w, s + (n - 1 if i == 0 else 0)) for i, (w, s) in
             enumerate(zip(widths, sizes))])
        self.out_projs = nn.ParameterList([nn.Parameter(torch.randn(d, w) / d ** 0.5)
                                           for w in widths])

    def log_probs(self, h):
        """h [N, d] -> [N, V]."""
        logit = lambda i: (h @ self.out_projs[i]) @ self.out_layers[i].weight.t() \
            + self.out_layers[i].bias
        head = F.log_softmax(logit(0), -1)
        parts = [head[:, :self.cutoffs[0]]]
        for i in range(1, len(self.cutoffs)):
            parts.append(head[:, -i, None] + F.log_softmax(logit(i), -1))
        return torch.cat(parts, -1)


class ReleasedLM(nn.Module):
    """The released `Model`: drop, embedding_layer, rnn (sru.SRUpp), output_layer."""

    def __init__(self, vocab_size, d, d_proj, depth, k=1, layer_norm=False, cutoffs=None,
                 n_e=0, div_val=4.0, tie_proj=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.depth, self.d = depth, d
        self.drop = nn.Dropout(0.0)
        if cutoffs is None:           # enwik8
            self.embedding_layer = nn.Embedding(vocab_size, d)
        self.rnn = sru.SRUpp(d, d, d_proj, num_layers=depth, highway_bias=-2.0,
                             layer_norm=layer_norm, attn_layer_norm=True,
                             attention_every_n_layers=k)
        if cutoffs is None:
            self.output_layer = nn.Linear(d, vocab_size)
        else:
            self.output_layer = AdaptiveLogSoftmax(vocab_size, n_e or d_proj, d, cutoffs,
                                                   div_val)
            tables = [layer.weight for layer in self.output_layer.out_layers]
            projs = (self.output_layer.out_projs if tie_proj else nn.ParameterList(
                [nn.Parameter(torch.randn_like(p) / d ** 0.5)
                 for p in self.output_layer.out_projs]))
            self.embedding_layer = AdaptiveEmbedding(list(cutoffs) + [vocab_size], tables,
                                                     projs)
        with torch.no_grad():                 # attention that matters from the start
            for name, p in self.rnn.named_parameters():
                if name.endswith("alpha"):
                    p.fill_(0.7)

    def forward(self, x, hidden, memory, attn_mask):
        """x [L, 1] -> (log p [L, V], hidden, memory): Model.forward's path."""
        emb = self.drop(self.embedding_layer(x))
        out, hidden, saved = self.rnn(emb, hidden, memory=memory, attn_mask=attn_mask)
        h = self.drop(out).reshape(-1, self.d)
        if isinstance(self.output_layer, nn.Linear):
            logp = F.log_softmax(self.output_layer(h), -1)
        else:
            logp = self.output_layer.log_probs(h)
        return logp, hidden, saved["saved_inputs"]


def set_mask(L, same_length):
    """The reference's [2L, 2L] additive mask (Model.set_mask)."""
    ones = torch.ones(2 * L, 2 * L)
    mask = torch.triu(ones, diagonal=1)
    if same_length:
        mask = mask + torch.tril(ones, diagonal=-1 - L)
    return mask * -10000.0


def train(model, ids, steps=40, unroll=12, lr=1e-2, seed=0):
    """Adam on random windows of `ids` (causal mask, no memory): predictions far from
    uniform."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.RandomState(seed)
    mask = set_mask(unroll, False)[:unroll, :unroll]
    model.train()
    for _ in range(steps):
        s = rng.randint(0, len(ids) - unroll - 1)
        x = torch.as_tensor(ids[s:s + unroll], dtype=torch.long)[:, None]
        y = torch.as_tensor(ids[s + 1:s + unroll + 1], dtype=torch.long)
        logp, _, _ = model(x, torch.zeros(model.depth, 1, model.d), None, mask)
        loss = -logp.gather(1, y[:, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss)


@torch.no_grad()
def official_eval(model, ids, L):
    """log p(ids[t+1] | ids[:t+1]) [len(ids) - 1] as the official final evaluation computes
    them: x = ids[:-1], y = ids[1:], segments x[i:i+L], batch 1, memory = the previous
    segment's layer inputs, c carried, set_mask(L, same_length=True) sliced per segment."""
    model.eval()
    mask = set_mask(L, True)
    x_all = torch.as_tensor(ids[:-1], dtype=torch.long)
    y_all = torch.as_tensor(ids[1:], dtype=torch.long)
    hidden, memory, out = torch.zeros(model.depth, 1, model.d), [None] * model.depth, []
    for i in range(0, len(x_all), L):
        x, y = x_all[i:i + L][:, None], y_all[i:i + L]
        mem_len = 0 if memory[0] is None else memory[0].size(0)
        attn_mask = mask[mem_len:mem_len + len(y), :mem_len + len(y)]
        logp, hidden, memory = model(x, hidden, memory, attn_mask)
        out.append(logp.gather(1, y[:, None])[:, 0])
    return torch.cat(out).numpy().astype(np.float64)
