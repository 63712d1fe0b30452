"""Whole models: a base per model kind, a module per family, and the architecture table.

  archs.py                the table `config.model.arch` -> a frozen, validated config class
  base.py                 what every model config shares (compute dtype, kernel options, reading
                          a config section)
  lm.py                   the language-model base (LanguageModel, LMState, the carried memory)
  srupp_lm.py             SRU++ language models (SRUppConfig, SRUppLM)
  transformer_xl.py       the Transformer-XL baseline
  sha_rnn.py              the SHA-RNN baseline
  seq2seq.py              the encoder-decoder base (Seq2SeqModel, the label-smoothed loss)
  srupp_seq2seq.py        the SRU++ encoder-decoder (Table 8)
  transformer_seq2seq.py  the Transformer encoder-decoder baseline
  classifier.py           the classifier base (pooling, ClassifierModel); srupp_classifier.py
                          and transformer_classifier.py its encoders
  flops.py                FLOPs per training token of an SRU++ model
"""
