"""Using a trained model: sampling, beam search, translating, BLEU, restoring a workdir.

  generate.py   incremental decoding and sampling from a language model
  decode.py     greedy and beam search for encoder-decoders
  translate.py  translating batches of sentences with beam search
  bleu.py       sacreBLEU and chrF
  restore.py    a workdir's best checkpoint back into its model
  classify.py   predicting labels, scores and the confusion matrix of a classifier
  export.py     jax.export artifacts of a trained model (--mode=export)
"""
