#!/usr/bin/env python3
"""Independent reader for modelprobe's trace.json (Chrome trace-event JSON).

Parses the file with Python's own json module and checks it against the trace-event format
that Perfetto and chrome://tracing import: required keys and types per phase, non-negative
durations, names for every process and thread that has events, and properly nested complete
slices on each thread. Prints a one-line summary; exits 1 with the first problem found.

usage: check_trace.py trace.json [--expect-slice NAME:COUNT ...] [--expect-instant NAME]
"""
import collections
import json
import sys

PHASES = {"M", "X", "i", "C", "B", "E", "s", "f", "t"}


def fail(msg):
    print(f"check_trace: {msg}")
    sys.exit(1)


def main(argv):
    if len(argv) < 2:
        fail("usage: check_trace.py trace.json [--expect-slice NAME:COUNT] [--expect-instant NAME]")
    with open(argv[1]) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        fail("top level must be an object with a traceEvents array")
    events = doc["traceEvents"]
    named_pids, named_tids = set(), set()
    used = set()
    slices = collections.defaultdict(list)
    counts = collections.Counter()
    instants = collections.Counter()
    for i, e in enumerate(events):
        ph = e.get("ph")
        if ph not in PHASES:
            fail(f"event {i}: unknown phase {ph!r}")
        if not isinstance(e.get("pid"), int) or not isinstance(e.get("tid"), int):
            fail(f"event {i}: pid and tid must be integers: {e}")
        if ph == "M":
            if e.get("name") == "process_name":
                named_pids.add(e["pid"])
            elif e.get("name") == "thread_name":
                named_tids.add((e["pid"], e["tid"]))
            if not isinstance(e.get("args", {}).get("name"), str):
                fail(f"event {i}: metadata without args.name: {e}")
            continue
        if not isinstance(e.get("ts"), (int, float)) or e["ts"] < 0:
            fail(f"event {i}: ts must be a non-negative number: {e}")
        if not isinstance(e.get("name"), str) or not e["name"]:
            fail(f"event {i}: name must be a non-empty string: {e}")
        if ph == "X":
            if not isinstance(e.get("dur"), (int, float)) or e["dur"] < 0:
                fail(f"event {i}: complete event needs dur >= 0: {e}")
            slices[(e["pid"], e["tid"], e.get("cat"))].append((e["ts"], e["ts"] + e["dur"], e["name"]))
            counts[e["name"]] += 1
            used.add((e["pid"], e["tid"]))
        elif ph == "i":
            if e.get("s", "t") not in ("g", "p", "t"):
                fail(f"event {i}: instant scope must be g, p or t: {e}")
            instants[e["name"]] += 1
            used.add((e["pid"], e["tid"]))
        elif ph == "C":
            if not isinstance(e.get("args"), dict) or not all(isinstance(v, (int, float)) for v in e["args"].values()):
                fail(f"event {i}: counter args must be numbers: {e}")
    for pid, tid in used:
        if pid not in named_pids:
            fail(f"pid {pid} has events but no process_name")
        if (pid, tid) not in named_tids and tid != pid:
            fail(f"thread {pid}/{tid} has events but no thread_name")
    # Complete slices of one category on one thread must nest (a stack), as viewers draw them.
    for key, spans in slices.items():
        spans.sort(key=lambda s: (s[0], -s[1]))
        stack = []
        for start, end, name in spans:
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack and end > stack[-1][1] + 1e-3:
                fail(f"slice {name} [{start}, {end}] on {key} overlaps {stack[-1]} without nesting")
            stack.append((start, end, name))
    args = argv[2:]
    while args:
        flag, value = args[0], args[1]
        args = args[2:]
        if flag == "--expect-slice":
            name, count = value.rsplit(":", 1)
            if counts[name] != int(count):
                fail(f"expected {count} slices named {name}, found {counts[name]}")
        elif flag == "--expect-instant":
            if instants[value] == 0:
                fail(f"expected an instant named {value}")
        else:
            fail(f"unknown option {flag}")
    meta = doc.get("otherData", {})
    print(f"check_trace: ok: {len(events)} events, {sum(counts.values())} slices, "
          f"{sum(instants.values())} instants, command {meta.get('command')!r}")


if __name__ == "__main__":
    main(sys.argv)
