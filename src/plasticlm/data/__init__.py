"""Corpora, tokenizers and token shards (shared/spec/data-sources.md).

corpus (sources/, corpus.py) -> document-level split (splits.py) -> tokenizer (tokenizer.py)
-> memory-mapped token shards (shards.py); ``prepare.prepare_data`` ties them together and is what
the language stream and the trainer use. Nothing is built at import time.
"""
