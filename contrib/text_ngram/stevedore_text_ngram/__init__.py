"""stevedore-text-ngram: a small text plugin for stevedore-server's OpenAI-compatible routes, trained on Shakespeare.

- ``ngram-lm`` (``predictor.NgramLM``): a word trigram language model with backoff; chat and completions,
  streamed a word at a time, and predict (a continuation a prompt).
- ``ngram-embed`` (``predictor.NgramEmbed``): TF-IDF plus truncated SVD (latent semantic analysis), 64
  L2-normalised dimensions; embeddings, and predict (a vector a text).

Both are fitted by ``train.py`` (in the source tree, next to this package) on ``data/shakespeare.txt`` and load
their NPZ artifact with NumPy alone (no pickle).
"""
