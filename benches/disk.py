#!/usr/bin/env python3
"""What a durable commit costs on this disk: write N pages of 4 KiB, then fsync, repeated.

SQLite's WAL commit is exactly that (one frame per dirty page, then one fsync), so this
is the floor under recordhook's acknowledgement on the embedded store. Like the WAL, the
probe overwrites a file that already exists (16 MiB, the size recordhook lets the WAL
reach before a checkpoint), wrapping around at its end. Prints a markdown table.
Usage: benches/disk.py [DIR] (default: target/bench).
"""

import os
import sys
import time

PAGE = 4096
ROUNDS = 200
FILE_SIZE = 16 << 20


def commit_cost(path: str, pages: int) -> float:
    """Seconds per (write `pages` pages, fsync), averaged over ROUNDS commits."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\xa5" * PAGE
        for offset in range(0, FILE_SIZE, PAGE):
            os.pwrite(fd, block, offset)
        os.fsync(fd)
        offset = 0
        started = time.perf_counter()
        for _ in range(ROUNDS):
            for _ in range(pages):
                os.pwrite(fd, block, offset)
                offset = (offset + PAGE) % FILE_SIZE
            os.fsync(fd)
        return (time.perf_counter() - started) / ROUNDS
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    directory = sys.argv[1] if len(sys.argv) > 1 else "target/bench"
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "disk-probe.tmp")
    print("| pages written, then fsync | ms per commit | MB/s |")
    print("|---:|---:|---:|")
    for pages in (1, 12, 25, 50, 100):
        seconds = commit_cost(path, pages)
        print(f"| {pages} ({pages * PAGE // 1024} KiB) | {seconds * 1e3:.2f} | {pages * PAGE / seconds / 1e6:.0f} |")


if __name__ == "__main__":
    main()
