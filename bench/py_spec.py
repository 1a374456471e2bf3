#!/usr/bin/env python3
"""The python `hardware` library (eDeploy's successor) on the spec-engine benchmark inputs.

Prints one JSON object per case: {"case": ..., "seconds": median, "runs": n} or {"timeout": ...}.
"""
import ast
import json
import os
import pprint
import signal
import statistics
import sys
import time

from hardware import matcher
from hardware.generate import generate

d = sys.argv[1]
max_k = int(sys.argv[2]) if len(sys.argv) > 2 else 3
timeout = int(sys.argv[3]) if len(sys.argv) > 3 else 120


class Timeout(Exception):
    pass


def on_alarm(*_):
    raise Timeout()


signal.signal(signal.SIGALRM, on_alarm)


def timed(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def emit(case, fn, runs):
    signal.alarm(timeout)
    try:
        print(json.dumps({"case": case, "seconds": timed(fn, runs), "runs": runs}), flush=True)
    except Timeout:
        print(json.dumps({"case": case, "timeout": timeout}), flush=True)
    finally:
        signal.alarm(0)


hw = [tuple(l) for l in json.load(open(os.path.join(d, "hw.json")))]
cfg = os.path.join(d, "config")
state = ast.literal_eval(open(os.path.join(cfg, "state")).read())
texts = {name: open(os.path.join(cfg, name + ".specs")).read() for name, _ in state}


def pick():
    # What hardware.state.State.find_match does, minus file reads and CMDB.
    for name, _ in state:
        specs = ast.literal_eval(texts[name])
        if matcher.match_all(hw, specs, {}, {}):
            assert name == "target", name
            return name
    raise AssertionError("no profile matched")


emit("pick", pick, 3)

for k in range(1, max_k + 1):
    specs = ast.literal_eval(open(os.path.join(d, "adversarial", "k%d.specs" % k)).read())

    def adv():
        assert not matcher.match_all(hw, specs, {}, {})

    emit("adversarial k=%d" % k, adv, 1)

gen_text = open(os.path.join(d, "generate.cmdb")).read()


def gen():
    # eDeploy's upload.py evaluated the CMDB file with generate() in scope.
    entries = eval(gen_text, {"__builtins__": {}, "generate": generate})
    assert len(entries) == 10000, len(entries)


emit("generate 10000", gen, 3)


def gen_write():
    # eDeploy's save_cmdb wrote the expanded list with pprint.
    entries = eval(gen_text, {"__builtins__": {}, "generate": generate})
    assert len(pprint.pformat(entries)) > 10000


emit("generate+write 10000", gen_write, 3)
