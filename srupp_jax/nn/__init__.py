"""The paper's building blocks, as Flax NNX modules (no model, task or training code).

  recurrence.py  the elementwise recurrence of eq. 1-4, `sru_recurrence(..., impl=)`, and its
                 backends (scan, assoc, pallas, pallas_tpu; `resolve_backend`); solvers.py
                 the scans and step functions every backend shares
  remat.py       gradient checkpointing of an SRU++ stack (`model.remat`)
  attention.py   the SRU++ attention transform (eq. 5-7), the projection without attention,
                 attention masks and the key/value cache for decoding
  sru.py         SRULayer, the SRU stack and the SRU++ stack (`SRUpp`)
  adaptive.py    adaptive input and tied adaptive softmax (Baevski & Auli 2019), in the form
                 of the released SRU++ models; clusters.py their cluster ranges and widths
  linear.py      the linear layers, feed-forward block and layer norm every model shares
"""
