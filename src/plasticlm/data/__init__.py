"""Data: corpora, tokenizer, token shards and the language stream (README, "Data").

corpus (sources/, corpus.py) -> document-level split (splits.py) -> tokenizer (tokenizer.py)
-> memory-mapped token shards (shards.py); ``prepare.prepare_data`` ties them together; the
language stream (stream.py) serves batches from its token arrays. Nothing is built at import time.
"""
