"""Numeric CSV columns in, for the analysis commands (onset scores, onset tables).

A CSV problem is reported as a ``PlasticError`` naming the file, the line and the fix. Atomic
output files are written with ``plasticlm.runlog``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from plasticlm.errors import PlasticError
from plasticlm.units import parse_count

_EMPTY = {"", "null", "none", "nan", "na"}


def read_csv_columns(
    path: str | Path, columns: list[str], *, allow_empty: tuple[str, ...] = (), unique: tuple[str, ...] = (),
    text: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Read the named numeric columns of a CSV file with a header row (other columns are ignored).

    Returns one float64 array per requested column, in file order, plus ``"_line"``: the 1-based
    line number of each row (for messages). Numbers may carry a count suffix (``27M``, ``1.8T``:
    ``units.parse_count``), as onset tables in papers often do. Cells of the columns in ``allow_empty`` may be empty
    (or ``null``/``nan``/``none``/``na``) and then read as NaN; any other non-numeric cell is an
    error. ``unique``: when the header names all of these columns, no two rows may have the same
    cells there (e.g. a run's ``name``). Columns named in ``text`` are optional and read as stripped
    strings ("" where the column or the cell is absent). Raises ``PlasticError`` naming the file for
    a missing file, a file that is not UTF-8 CSV, a missing column, a non-numeric or non-finite cell,
    a duplicated row, or a file without data rows.
    """
    try:
        return _read_csv_columns(Path(path), columns, allow_empty, unique, text)
    except UnicodeDecodeError as e:
        raise PlasticError(f"{path}: not UTF-8 text (byte {e.start}); save the table as UTF-8 CSV") from None


def _read_csv_columns(p: Path, columns: list[str], allow_empty: tuple[str, ...],
                      unique: tuple[str, ...], text: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not p.is_file():
        raise PlasticError(f"{p}: file does not exist")
    with p.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's BOM is not a header
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise PlasticError(f"{p}: empty file; expected a header row with columns {', '.join(columns)}") from None
        except csv.Error as e:
            raise PlasticError(f"{p}: not a valid CSV file: {e}") from e
        names = [h.strip() for h in header]
        missing = [c for c in columns if c not in names]
        if missing:
            raise PlasticError(
                f"{p}: missing column(s) {', '.join(missing)}; the header row must name "
                f"{', '.join(columns)} (found: {', '.join(names) or 'nothing'})"
            )
        pos = {c: names.index(c) for c in columns}
        keys = [names.index(c) for c in unique] if unique and all(c in names for c in unique) else []
        seen: dict[tuple[str, ...], int] = {}
        values: dict[str, list[float]] = {c: [] for c in columns}
        texts: dict[str, list[str]] = {c: [] for c in text}
        lines: list[int] = []
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                line = reader.line_num
                for c in columns:
                    cell = row[pos[c]].strip() if pos[c] < len(row) else ""
                    values[c].append(_parse_cell(cell, c, line, p, c in allow_empty))
                for c in text:
                    i = names.index(c) if c in names else len(row)
                    texts[c].append(row[i].strip() if i < len(row) else "")
                lines.append(line)
                if keys:
                    key = tuple(row[k].strip() if k < len(row) else "" for k in keys)
                    if key in seen:
                        raise PlasticError(f"{p}: lines {seen[key]} and {line} repeat {', '.join(unique)} = "
                                           f"{', '.join(key)}; each row must appear once: delete one")
                    seen[key] = line
        except csv.Error as e:
            raise PlasticError(f"{p}: not a valid CSV file (line {reader.line_num}): {e}") from e
    if not lines:
        raise PlasticError(f"{p}: no data rows below the header")
    out = {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}
    out["_line"] = np.asarray(lines, dtype=np.int64)
    out.update({c: np.asarray(v, dtype=object) for c, v in texts.items()})
    return out


def _parse_cell(cell: str, column: str, line: int, path: Path, allow_empty: bool) -> float:
    if cell.lower() in _EMPTY:
        if allow_empty:
            return math.nan
        what = "is empty" if not cell else f"= {cell!r} has no value"
        raise PlasticError(f"{path}: line {line}: column {column!r} {what}; every row needs a number there")
    try:
        value = parse_count(cell)
    except ValueError:
        raise PlasticError(
            f"{path}: line {line}: column {column!r} = {cell!r} is not a number (write e.g. 27000000, 2.7e7 or 27M)"
        ) from None
    if not math.isfinite(value):
        raise PlasticError(f"{path}: line {line}: column {column!r} = {cell!r} is not a finite number")
    return value
