"""Language-model data: the embedded default corpus, TFDS builders of our own (enwik8,
WikiText-103, One Billion Word), vocabularies (the official experiments' rules), the token
cache (`datasets.load_tokens`) and contiguous streams.
Translation data: parallel folders, the IWSLT'14 builder, the numbers task, Moses + joint BPE
subwords (`translation_data.load_translation`) and token-bucket batches (`batches`).
Classification data: labelled TSV folders and the stdlib_lines task (`classification_data`).

  datasets.py, builders.py, billion_word.py, corpus.py, text.py   LM datasets; prepare.py the
      `python -m srupp_jax.data.prepare` program; vocab.py the vocabularies; streams.py
  translation_data.py, iwslt.py, iwslt_tfds.py, parallel.py, numbers.py, subwords.py
  classification_data.py, labelled.py, stdlib_lines.py
  batches.py (token-count buckets), lines.py (files of one item a line: read and written)"""
