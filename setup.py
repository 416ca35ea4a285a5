"""The build's one compiled part; everything else is declared in setup.cfg.

``ingest._sha256`` hashes the records of a CSV range in C (SHA-NI where the CPU has it). It
is optional: where it cannot be compiled (no C compiler or no Python headers) the install
goes on with a warning, and ``ingest.hashing`` uses polars-hash, then hashlib, for the same
digests.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ingest._sha256",
            sources=["ingest/_sha256.c"],
            extra_compile_args=["-O3", "-std=c11"],
            optional=True,
        )
    ]
)
