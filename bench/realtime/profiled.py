"""The realtime process under cProfile, for `bench.realtime.run --profile OUT`: the same uvicorn
application; the event loop thread's profile is written to OUT when uvicorn exits (SIGTERM)."""

from __future__ import annotations

import cProfile
import sys

import uvicorn


def main() -> None:
    out, port = sys.argv[1], int(sys.argv[2])
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvicorn.run(
            "project.asgi:application", host="127.0.0.1", port=port, access_log=False, log_level="warning", backlog=4096
        )
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
