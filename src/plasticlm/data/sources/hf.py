"""Hugging Face ``datasets`` (data-sources.md, 3): the hub (e.g. uonlp/CulturaX, HuggingFaceFW/fineweb-2)
or a local dataset.

Per language the dataset is ``data.hf_dataset`` with ``{lang}`` replaced by the code (so
``/data/{lang}`` names one directory per language), and the config name is
``data.hf_configs[lang]`` (default: the code itself, as CulturaX names its configs; fineweb-2 wants
e.g. ``{vi = "vie_Latn"}``). Resolution:
  1. a directory written by ``save_to_disk`` -> ``load_from_disk`` (a DatasetDict: ``data.hf_split``);
  2. a directory whose ``<config>/`` sub-directory was written by ``save_to_disk`` -> that one;
  3. another local directory (parquet/json/text files) -> ``load_dataset(dir, data_dir=<config>)``
     when ``<config>/`` exists, else ``load_dataset(dir)`` (the path must then contain ``{lang}``);
  4. anything else is a hub name -> ``load_dataset(name, <config>, split=..., streaming=...)``.
Reading stops after ``data.max_bytes_per_language`` UTF-8 bytes. Streaming the hub needs a bound:
that cap, or token targets (``data.train_tokens`` and ``data.val_tokens``), where the shard build
reads only until its targets are met. Token shards are built from the dataset as it is read
(``direct``): build task k of n reads ``Dataset.shard(n, k)`` of a dataset on disk, or
``datasets.distributed.split_dataset_by_node`` of a streamed one (whole files per task when the
dataset has a multiple of n files, else every n-th record), in batches of ``BATCH_ROWS`` records.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plasticlm.data.paths import stable_hash
from plasticlm.data.sources import Source
from plasticlm.errors import DataError

_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
BATCH_ROWS = 1000


def _is_saved(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in _SAVED_MARKERS)


class HFSource(Source):
    """Documents from a Hugging Face dataset, one config (or directory) per language."""

    name = "hf"
    direct = True

    def __init__(self, data):
        super().__init__(data)
        if not data.hf_dataset:
            raise DataError(
                "source 'hf' needs data.hf_dataset: a hub name (e.g. HuggingFaceFW/fineweb-2) or a local "
                "dataset path, optionally with {lang}; --set data.hf_dataset=..."
            )
        self._stats: dict[str, dict[str, Any]] = {}

    def settings(self) -> dict[str, Any]:
        d = self.data
        return {
            "dataset": d.hf_dataset,
            "configs": dict(sorted(d.hf_configs.items())),
            "split": d.hf_split,
            "text_field": d.hf_text_field,
            "streaming": d.hf_streaming,
        }

    def key(self) -> str:
        return f"hf-{stable_hash(self.settings())[:12]}"

    def _load(self, lang: str) -> Any:
        import datasets

        d = self.data
        name = d.hf_dataset.replace("{lang}", lang)
        config = d.hf_configs.get(lang, lang)
        path = Path(name).expanduser()
        where = f"language {lang!r}: dataset {name!r}"
        try:
            if _is_saved(path) or _is_saved(path / config):
                ds = datasets.load_from_disk(str(path if _is_saved(path) else path / config))
                if isinstance(ds, datasets.DatasetDict):
                    if d.hf_split not in ds:
                        splits = ", ".join(ds)
                        raise DataError(f"{where}: no split {d.hf_split!r} (splits: {splits}); set data.hf_split")
                    ds = ds[d.hf_split]
                return ds
            if path.is_dir():
                if (path / config).is_dir():
                    return datasets.load_dataset(str(path), data_dir=config, split=d.hf_split, streaming=d.hf_streaming)
                if "{lang}" not in d.hf_dataset:
                    raise DataError(
                        f"{where}: a local directory without a {config!r} sub-directory would give every language "
                        "the same text; put one sub-directory per language or use {lang} in data.hf_dataset"
                    )
                return datasets.load_dataset(str(path), split=d.hf_split, streaming=d.hf_streaming)
            if d.hf_streaming and d.max_bytes_per_language <= 0 and not (d.train_tokens and d.val_tokens):
                raise DataError(
                    f"{where}: streaming from the hub without a bound would read the whole dataset; set token "
                    "targets (data.train_tokens and data.val_tokens) or data.max_bytes_per_language"
                )
            return datasets.load_dataset(name, config, split=d.hf_split, streaming=d.hf_streaming)
        except DataError:
            raise
        except Exception as e:  # datasets raises many types (FileNotFoundError, ValueError, ConnectionError...)
            raise DataError(f"{where} (config {config!r}, split {d.hf_split!r}) could not be loaded: {e}") from e

    def documents(self, lang: str) -> Iterator[str]:
        yield from self.task_documents(lang, 0, 1)

    def task_documents(self, lang: str, task: int, tasks: int) -> Iterator[str]:
        d = self.data
        ds = self._load(lang)
        columns = getattr(ds, "column_names", None)
        if columns is not None and d.hf_text_field not in columns:
            raise DataError(
                f"language {lang!r}: dataset {d.hf_dataset!r} has no column {d.hf_text_field!r} "
                f"(columns: {', '.join(columns)}); set data.hf_text_field"
            )
        if tasks > 1:
            import datasets
            from datasets.distributed import split_dataset_by_node

            if isinstance(ds, datasets.Dataset):
                ds = ds.shard(num_shards=tasks, index=task, contiguous=True)
            else:
                ds = split_dataset_by_node(ds, rank=task, world_size=tasks)
        cap = d.max_bytes_per_language
        total = rows = 0
        for batch in ds.iter(batch_size=BATCH_ROWS):
            for text in batch.get(d.hf_text_field, []):
                if not isinstance(text, str):
                    continue
                rows += 1
                yield text
                total += len(text.encode("utf-8"))
                if 0 < cap <= total:
                    self._stats[lang] = {"rows_read": rows}
                    return
        self._stats[lang] = {"rows_read": rows}

    def provenance(self, lang: str) -> dict[str, Any]:
        d = self.data
        return {
            "dataset": d.hf_dataset.replace("{lang}", lang),
            "config": d.hf_configs.get(lang, lang),
            "split": d.hf_split,
            **self._stats.get(lang, {}),
        }
