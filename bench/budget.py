#!/usr/bin/env python3
"""The per-login budget (BENCHMARKS.md): Latchkey's profile split into parts.

Usage: budget.py LATCHKEY.folded NULL.folded BENCH.txt

The folded files are `perf script | inferno-collapse-perf --all` output (one
call stack per line, frames joined by ';', a sample count last); BENCH.txt is
`latchkey-bench run` output with --server-pid and --baseline-pid, whose run
lines give each side's logins per second and server CPU (cores). A stack is
charged to the first part below whose pattern one of its frames contains, so
the order puts the login's own steps before the syscalls and waits they make.
Prints each part's share of the samples and what that is in µs of server CPU
per login (the share times the median run's CPU per login), for Latchkey
and for the null server side by side.
"""

import re
import statistics
import sys

# (part, frame patterns); first match wins.
PARTS = [
    ("keyed hash (BLAKE3)", [r"blake3", r"TokenKey.*hash"]),
    ("token checksum", [r"token::validate", r"crc32"]),
    ("lookup (map by hash)", [r"Replica.*by_hash", r"registry.*read"]),
    ("left-right epoch", [r"left_right"]),
    ("throttle", [r"throttle"]),
    ("last-use record", [r"note_use", r"registry::uses", r"UseLedger"]),
    ("metrics", [r"latchkey_server::metrics"]),
    ("the rest of the login command", [r"command::login"]),
    ("frame decode and dispatch", [r"latchkey_protocol.*decode", r"command::dispatch", r"Command.*decode"]),
    ("reply encoding", [r"latchkey_protocol.*encode", r"ReplyBody", r"encode_reply"]),
    ("read syscall (kernel)", [r"(ksys_read|__x64_sys_read|sys_recvfrom|tcp_recvmsg)\w*_\[k\]"]),
    ("write syscall (kernel, waking the client included)",
     [r"(ksys_write|__x64_sys_write|sys_writev|sys_sendto|tcp_sendmsg)\w*_\[k\]"]),
    ("epoll and futex waits, switches, wake-ups (kernel)",
     [r"(epoll|ep_poll|futex|schedule|finish_task_switch|try_to_wake_up|ttwu|hrtimer)\w*_\[k\]"]),
    ("other kernel", [r"_\[k\]"]),
    ("tokio: parking and waking workers", [r"tokio::runtime::park", r"Parker", r"Unparker", r"unpark"]),
    ("tokio: other runtime work", [r"tokio::"]),
    ("memory (malloc/free/memcpy)", [r"malloc", r"\bfree", r"memcpy", r"memmove", r"memset"]),
]


def folded(path):
    """Sample counts by part."""
    counts = {part: 0 for part, _ in PARTS}
    counts["other"] = 0
    compiled = [(part, [re.compile(pattern) for pattern in patterns]) for part, patterns in PARTS]
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            for part, patterns in compiled:
                if any(pattern.search(frame) for pattern in patterns for frame in frames):
                    counts[part] += int(count)
                    break
            else:
                counts["other"] += int(count)
    return counts


RUN = re.compile(r"run \d+: (\S+)\s+login\s+conns\s+\d+ depth\s+\d+\s+([\d.]+) ops/s.*client cpu ([\d.-]+)\s+server cpu ([\d.-]+)")


def per_login(path):
    """Median µs of server and client CPU per login, and median logins/s, by target."""
    runs = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            match = RUN.search(line)
            if not match or match.group(4) == "-":
                continue
            target, ops, client, server = match.groups()
            ops = float(ops)
            client_us = float(client) / ops * 1e6 if client != "-" else float("nan")
            runs.setdefault(target, []).append((ops, float(server) / ops * 1e6, client_us))
    return {
        target: tuple(statistics.median(values[i] for values in found) for i in range(3))
        for target, found in runs.items()
    }


def main():
    latchkey, null, bench = sys.argv[1:4]
    sides = {"latchkey": folded(latchkey), "null": folded(null)}
    costs = per_login(bench)
    print()
    for target, (ops, server_us, client_us) in sorted(costs.items()):
        print(f"{target}: median {ops:,.0f} logins/s, server CPU {server_us:.2f} µs per login, "
              f"load generator {client_us:.2f} µs per login")
    print()
    print(f"{'part':<52} {'latchkey %':>10} {'µs/login':>9} {'null %':>8} {'µs/login':>9}")
    totals = {side: sum(counts.values()) or 1 for side, counts in sides.items()}
    for part in [part for part, _ in PARTS] + ["other"]:
        cells = []
        for side in ("latchkey", "null"):
            share = sides[side][part] / totals[side]
            server_us = costs.get(side, (0, float("nan"), 0))[1]
            cells += [f"{100 * share:>9.1f}%", f"{share * server_us:>9.2f}"]
        print(f"{part:<52} {cells[0]} {cells[1]} {cells[2]:>8} {cells[3]}")


if __name__ == "__main__":
    main()
