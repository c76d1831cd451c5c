"""Compare two features folders table by table and column by column: equal, or by how much they differ.

    .venv/bin/python benchmarks/compare_features.py DIR_A DIR_B [--files clips,segments,frames,failures]

Provenance (run times, commits) is ignored: only the rows are compared, in their stored order. For a
numeric column the largest absolute difference and the share of values that differ are printed; for
other columns the number of differing rows. The exit code is 0 when every table ``Table.equals``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _values(column: pa.ChunkedArray) -> np.ndarray | None:
    """A numeric column's values, flattened through list and tensor nesting; None when not numeric."""
    array = column.combine_chunks()
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    while pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) or pa.types.is_large_list(array.type):
        array = array.flatten()
    if pa.types.is_floating(array.type) or pa.types.is_integer(array.type):
        return array.to_numpy(zero_copy_only=False).astype(np.float64)
    return None


def describe_column(a: pa.ChunkedArray, b: pa.ChunkedArray) -> str:
    """ "equal" (NaN where the other has NaN counts as equal), else by how much the columns differ."""
    if a.equals(b):
        return "equal"
    va, vb = _values(a), _values(b)
    if va is not None and vb is not None and va.shape == vb.shape:
        if np.array_equal(va, vb, equal_nan=True) and a.null_count == b.null_count:
            return "equal"
        diff = np.abs(va - vb)
        diff = np.where(np.isnan(va) & np.isnan(vb), 0.0, diff)
        return f"max |diff| {np.nanmax(diff):.3g}, {np.mean(diff > 0):.2%} of {diff.size} values differ"
    rows = sum(x != y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=False)) + abs(len(a) - len(b))
    return f"{rows} of {max(len(a), len(b))} rows differ"


def compare_tables(a: pa.Table, b: pa.Table) -> list[dict[str, object]]:
    """Per column of ``a``, whether ``b`` holds the same values and, if not, by how much they differ."""
    rows: list[dict[str, object]] = []
    for c in a.column_names:
        if c not in b.column_names:
            rows.append({"column": c, "equal": False, "detail": "missing"})
        else:
            detail = describe_column(a[c], b[c])
            rows.append({"column": c, "equal": detail == "equal", "detail": detail})
    return rows


def compare(dir_a: Path, dir_b: Path, files: list[str]) -> bool:
    same = True
    for name in files:
        a = pq.read_table(dir_a / f"{name}.parquet").replace_schema_metadata(None)
        b = pq.read_table(dir_b / f"{name}.parquet").replace_schema_metadata(None)
        if a.equals(b):
            print(f"{name}: equal ({a.num_rows} rows)")
            continue
        same = False
        print(f"{name}: DIFFERS ({a.num_rows} vs {b.num_rows} rows)")
        if a.schema != b.schema:
            print(f"  schemas differ:\n    {a.schema}\n    {b.schema}")
            continue
        for column in compare_tables(a, b):
            print(f"  {column['column']}: {column['detail']}")
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir_a", type=Path)
    parser.add_argument("dir_b", type=Path)
    parser.add_argument("--files", default="clips,segments,frames,failures")
    args = parser.parse_args()
    sys.exit(0 if compare(args.dir_a, args.dir_b, args.files.split(",")) else 1)


if __name__ == "__main__":
    main()
