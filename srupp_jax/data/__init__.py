"""Language-model data: the embedded default corpus, TFDS builders of our own (enwik8,
WikiText-103, One Billion Word), vocabularies (the official experiments' rules), the token
cache (`datasets.load_tokens`) and contiguous streams.
Translation data: parallel folders, the IWSLT'14 builder, the numbers task, Moses + joint BPE
subwords (`translation_data.load_translation`) and token-bucket batches (`batches`)."""
