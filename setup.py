"""The build's one compiled part; everything else is declared in setup.cfg.

``ingest._speedups`` runs the two per-byte loops of a CSV range in C: the scan for newlines
and quotes, and the SHA-256 of every record (SHA-NI where the CPU has it). It is optional:
where it cannot be compiled (no C compiler or no Python headers) the install goes on with a
warning, and the same results come from numpy, polars-hash and hashlib, with more CPU.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ingest._speedups",
            sources=["ingest/_speedups.c"],
            extra_compile_args=["-O3", "-std=c11"],
            optional=True,
        )
    ]
)
