"""``python -m bench [scenario ...] [--size tiny|full] [--rounds N] [--out bench/results]``."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench._harness import SIZES, Bench, Result

Scenario = Callable[[Bench, str, int | None], Awaitable[Result]]


def scenarios() -> dict[str, Scenario]:
    """Every scenario, in the order a full run takes them (memory and scale last: they leave
    runs open)."""
    from bench._aging import aging
    from bench._cli import cli
    from bench._fanout import fanout
    from bench._locks import locks
    from bench._memory import memory
    from bench._runs import latency, rollback, sqlite, throughput
    from bench._scale import scale

    return {
        "throughput": throughput,
        "latency": latency,
        "rollback": rollback,
        "fanout": fanout,
        "locks": locks,
        "cli": cli,
        "sqlite": sqlite,
        "aging": aging,
        "memory": memory,
        "scale": scale,
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    known = list(scenarios())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Sternway against a bare Temporal SDK baseline, side by side in one run.",
    )
    parser.add_argument("scenario", nargs="*", help=f"default: all ({', '.join(known)})")
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds (samples for latency); default per scenario",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    options = parser.parse_args(argv)
    unknown = [name for name in options.scenario if name not in known]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r} (known: {', '.join(known)})")
    if options.rounds is not None and options.rounds < 1:
        parser.error("--rounds must be at least 1")
    return options


async def run(options: argparse.Namespace, command: str) -> list[Result]:
    from bench._harness import compile_bytecode
    from bench._report import load, machine, write

    chosen = options.scenario or list(scenarios())
    table = scenarios()
    report = {
        "command": command,
        "size": options.size,
        "rounds": options.rounds,
        "scenarios": chosen,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_start": load(),
    }
    results: list[Result] = []
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="sternway-bench-") as workdir:
        async with Bench(Path(workdir)) as bench:
            for name in chosen:
                print(f"bench: {name} ({options.size}) ...", file=sys.stderr, flush=True)
                started = time.perf_counter()
                try:
                    result = await table[name](bench, options.size, options.rounds)
                except Exception as err:
                    # The other scenarios' figures are still written: a full run is long.
                    print(f"bench: {name} FAILED: {err!r}", file=sys.stderr, flush=True)
                    report.setdefault("failed", {})[name] = repr(err)
                    continue
                result.seconds = time.perf_counter() - started
                results.append(result)
                for row in result.rows:
                    ratio = f"  ratio {row.ratio_text()}" if row.ratio is not None else ""
                    print(
                        f"  {row.metric}: {row.value:,.2f} {row.unit} vs "
                        f"{row.baseline or 0:,.2f}{ratio}",
                        file=sys.stderr,
                        flush=True,
                    )
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report["load_end"] = load()
    json_path, md_path = write(options.out, report, results)
    print(f"bench: wrote {json_path} and {md_path}", file=sys.stderr)
    if "failed" in report:
        raise RuntimeError(f"scenarios failed: {', '.join(report['failed'])}")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    args = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "bench", *args])
    code = 0
    try:
        asyncio.run(run(options, command))
    except KeyboardInterrupt:
        code = 130
    except Exception:
        traceback.print_exc()
        code = 1
    # The SDK can abort at interpreter exit after a client was used (DESIGN.md, known traps).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
