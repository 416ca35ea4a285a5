"""What a range is measured against in ``profile_range.py --stages``.

:func:`pyarrow_ceiling` parses the range's bytes with pyarrow's ``read_csv`` alone, the
ceiling the import is compared with; :func:`parquet_columns` writes each stored column of
the range's output alone, to show what each costs the Parquet write.
"""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

__all__ = ["parquet_columns", "pyarrow_ceiling"]


def pyarrow_ceiling(data: bytes, repeat: int) -> tuple[float, float]:
    """pyarrow's ``read_csv`` of the range's bytes: CPU ms/MB on one thread, MB/s threaded.

    The same bytes in the same process and minutes as the range runs, so the ratio to it
    carries over between machines and loads better than either figure alone.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = data[: data.rfind(b"\n") + 1]  # a span ends mid-record: its last one is cut
    mb = len(data) / 1e6
    # The cut may fall inside a quoted field: a malformed last row is skipped, not an error.
    parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip")
    one, wall = [], []
    for _ in range(repeat):
        started = time.process_time()
        pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=parse,
        )
        one.append(time.process_time() - started)
        started = time.perf_counter()
        pacsv.read_csv(pa.py_buffer(data), parse_options=parse)
        wall.append(time.perf_counter() - started)
    return statistics.median(one) * 1e3 / mb, mb / statistics.median(wall)


def parquet_columns(table: Any, size: int, repeat: int) -> str:
    """What each stored column costs the Parquet write: CPU ms per MB of input, and bytes.

    Each leaf is written alone, inside its struct as the sink writes it, with the sink's
    own ``write_parquet``; the sum is below the whole write (per-file and struct costs).
    """
    import pyarrow as pa

    from ingest.sinks.file import write_parquet

    mb = size / 1e6
    lines = [f"Parquet write, each column alone (CPU ms per MB of input; best of {repeat}):"]

    def cost(part: Any) -> tuple[float, int]:
        best, written = float("inf"), 0
        for _ in range(repeat):
            out = io.BytesIO()
            started = time.process_time()
            write_parquet(part, out)
            best = min(best, time.process_time() - started)
            written = out.tell()
        return best * 1e3 / mb, written

    total, written = cost(table)
    lines.append(f"  {'(whole table)':<30} {total:6.2f}  {written / 1e6:7.2f} MB")
    for top in table.column_names:
        column = table.column(top).combine_chunks()
        for index, field in enumerate(column.type):
            child = pa.StructArray.from_arrays([column.field(index)], fields=[field])
            part = pa.table({top: child})
            spent, written = cost(part)
            label = f"{top}.{field.name}"
            lines.append(f"  {label:<30} {spent:6.2f}  {written / 1e6:7.2f} MB  {field.type}")
    return "\n".join(lines)
