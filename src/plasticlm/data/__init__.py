"""Data: corpora, tokenizer, token shards and the language stream."""
