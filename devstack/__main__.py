"""``python -m devstack up [--clusters N] [--no-services] | scale SERVICE N | down | status`` (see
``make up``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from devstack.stack import Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description="the Davit local stack")
    parser.add_argument("--dir", type=Path, default=Path(".dev"), help="state directory (default .dev)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack (idempotent)")
    up.add_argument("--clusters", type=int, choices=(1, 2), default=1)
    up.add_argument("--no-services", action="store_true", help="infrastructure only, no Davit services")
    scale = sub.add_parser("scale", help="run N worker processes of one Davit service")
    scale.add_argument("service", help="a Davit service (resources, restore, backup, ...)")
    scale.add_argument("replicas", type=int)
    sub.add_parser("down", help="stop everything up started")
    sub.add_parser("status", help="list the recorded processes")
    args = parser.parse_args(argv)

    stack = Stack(args.dir)
    if args.command == "up":
        started = time.monotonic()
        state = stack.up(clusters=args.clusters, with_services=not args.no_services)
        print(f"stack up in {time.monotonic() - started:.1f}s: {len(state.clusters)} cluster(s)")
        if stack.restarted:
            print(f"  restarted (had died; the rest kept running): {', '.join(stack.restarted)}")
        print(f"  env:        {stack.env_path()}  (source it: set -a; . {stack.env_path()}; set +a)")
        for c in state.clusters:
            print(f"  kubeconfig: {stack.kubeconfig_path(c.name)}")
        return 0
    if args.command == "scale":
        running = stack.running()
        if running is None:
            print("no running stack here: `up` first", file=sys.stderr)
            return 1
        names = stack.scale(running, args.service, args.replicas)
        print(
            f"{args.service}: {args.replicas} process(es) per cluster"
            + (f"; started {', '.join(names)}" if names else "")
        )
        return 0
    if args.command == "down":
        stopped = stack.down()
        print(f"stopped {len(stopped)} process(es)" + (f": {', '.join(stopped)}" if stopped else ""))
        return 0
    if args.command == "status":
        records = stack.procs.all()
        if not records:
            print("nothing running")
        for r in records:
            print(f"{r.name:32} pid {r.pid:<8} {'running' if r.alive() else 'dead'}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
