"""A revision counter shared by every process on the host through a small memory-mapped file.

Writers bump it after each committed change; every data-plane worker reads it once per request
(a single memory load) and re-reads the store's change log only when it has moved. That is how
a revocation is seen by the very next request in every worker without a database round trip
per request.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

_SIZE = 4096  # one page; the counter is the first aligned 8-byte word


class RevisionCounter:
    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._words = memoryview(self._map).cast("Q")
        self._lock_path = path

    def read(self) -> int:
        return int(self._words[0])

    def bump(self) -> int:
        """Advance the counter; the lock keeps concurrent writers in other processes monotonic."""
        fd = os.open(self._lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            value = int(self._words[0]) + 1
            self._words[0] = value
            return value
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def close(self) -> None:
        self._words.release()
        self._map.close()
