"""Test access to the local stack (see devstack)."""

from devstack import (
    ManagedProcess,
    MotoServer,
    RedisServer,
    free_port,
    local_s3_client,
    port_open,
    procfile_commands,
    wait_for,
)

__all__ = [
    "ManagedProcess",
    "MotoServer",
    "RedisServer",
    "free_port",
    "local_s3_client",
    "port_open",
    "procfile_commands",
    "wait_for",
]
