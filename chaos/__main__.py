"""python -m chaos --sessions N --seed S: the chaos suite against a real standalone host and a real Redis.

It starts its own persistent redis-server (on a free loopback port) and the
standalone host (`python -m travelplanner`: its process group, in-memory durable backend, offline
model), then runs N sessions, a few dozen at a time. Each session starts one
agent run and reads it to its terminal event while hanging up at random byte
offsets (mid-event included) and resuming after random delays, alternating
Last-Event-ID and ?cursor=; then it reads the run again uninterrupted (SSE,
and for about a third plain text too) and compares.

Injected along the way: overlapping redeliveries of host runs and models that
fail mid-stream (executed in this process through the product's
RecordedAgent, as a second durable worker would), cancels, a Redis freeze
(SIGSTOP 1.5 s), two Redis restarts (1 s down; persistent, same port) and one
host SIGKILL + restart. --no-faults leaves out the freeze, restarts and kill.

It prints ONE summary line of counts, then up to 40 notes on failures. The
FAILURES columns must all be 0:
  text_mismatch        a session's reassembled text differs from an uninterrupted
                       read, or the final answer differs from the model's (or the
                       injected execution's) text byte for byte
  gaps, duplicate_ids  events a resuming client missed, or got twice
  bad_terminal_count   a run without exactly one terminal event (in the log and read)
  open_after_terminal  a response still open 5 s after its terminal event
  unfinished           a session without its terminal event after --session-seconds
  server_errors        a 5xx other than the 503 of a Redis outage
  unexpected_status    any other status a resuming reader should never get (404, 410, ...)
  keys_without_ttl     a key with no expiry, or outside the agent-stream: key space
  leaked_connections   the host holding more Redis connections than its pools allow,
                       or HTTP connections once every client has gone
  leaked_readers       the host's live tail still blocked in XREAD with no reader
  crashes              a session that failed with an exception in this harness
Seeded: the sessions' kinds, messages, cut offsets, delays and read modes all
come from --seed; the machine's timing does the rest. Traffic: 127.0.0.1 only.
Exit status 1 when any failure column is not 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from chaos.suite import Config, run_chaos


def parse(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=300, help="sessions to run (default 300)")
    parser.add_argument("--seed", type=int, default=1, help="the seed of every random choice (default 1)")
    parser.add_argument("--concurrency", type=int, default=40, help="sessions at once (default 40)")
    parser.add_argument("--rate", type=float, default=8.0, help="new sessions per second (default 8)")
    parser.add_argument("--pace", type=float, default=150.0,
                        help="the host's offline model, chunks per second (default 150)")
    parser.add_argument("--session-seconds", type=float, default=120.0,
                        help="a session without its terminal event after this long counts as unfinished")
    parser.add_argument("--no-faults", action="store_true", help="no Redis freeze/restarts, no host kill")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the Redis files and host log go")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    return Config(sessions=args.sessions, seed=args.seed, concurrency=args.concurrency,
                  arrivals_per_second=args.rate, pace=args.pace, faults=not args.no_faults,
                  session_seconds=args.session_seconds, data_dir=args.data_dir, verbose=args.verbose)


def main(argv: list[str] | None = None) -> int:
    config = parse(argv)
    # The product logs every retry, fallback and interruption we cause; the summary counts them instead.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    report = asyncio.run(run_chaos(config))
    print(report.line(config), flush=True)
    for note in report.notes:
        print(f"  {note}")
    if config.verbose:
        print(f"  all counts: {dict(sorted(report.counts.items()))}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
