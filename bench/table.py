#!/usr/bin/env python3
"""Puts two JSON-lines benchmark outputs side by side: table.py OURS THEIRS THEIR_NAME."""
import json
import sys


def load(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            d = json.loads(line)
            out[d["case"]] = d
    return out


def fmt(s):
    if s >= 1:
        return "%.2f s" % s
    if s >= 1e-3:
        return "%.2f ms" % (s * 1e3)
    return "%.1f µs" % (s * 1e6)


ours, theirs, name = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
print("%-22s %12s %24s %10s" % ("case", "edeploy", name, "ratio"))
for case, o in ours.items():
    t = theirs.get(case)
    if t is None:
        other, ratio = "not run", ""
    elif "timeout" in t:
        other, ratio = "> %d s (timeout)" % t["timeout"], "> %.0fx" % (t["timeout"] / o["seconds"])
    else:
        other, ratio = fmt(t["seconds"]), "%.0fx" % (t["seconds"] / o["seconds"])
    print("%-22s %12s %24s %10s" % (case, fmt(o["seconds"]), other, ratio))
