"""Language-model data: the embedded default corpus, TFDS builders (enwik8, WikiText-103; lm1b
from TFDS), vocabularies, the token cache (`datasets.load_tokens`) and contiguous streams."""
