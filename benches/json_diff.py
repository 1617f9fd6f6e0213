#!/usr/bin/env python3
"""The largest relative difference between two `lorascope ... --json` outputs (same structure,
same non-float values; floats compared relative to the larger of the two).
Usage: benches/json_diff.py OLD.json NEW.json"""
import json
import sys


def main(old, new):
    worst = [0.0, None]

    def walk(x, y, path):
        if isinstance(x, dict):
            assert set(x) == set(y), (path, set(x) ^ set(y))
            for k in x:
                walk(x[k], y[k], f"{path}.{k}")
        elif isinstance(x, list):
            assert len(x) == len(y), (path, len(x), len(y))
            for i, (p, q) in enumerate(zip(x, y)):
                walk(p, q, f"{path}[{i}]")
        elif isinstance(x, float) or isinstance(y, float):
            assert (x is None) == (y is None), path
            scale = max(abs(x), abs(y))
            d = abs(x - y) / scale if scale > 0 else 0.0
            if d > worst[0]:
                worst[:] = [d, (path, x, y)]
        else:
            assert x == y, (path, x, y)

    walk(json.load(open(old)), json.load(open(new)), "")
    print(f"largest relative difference {worst[0]:.3g} at {worst[1]}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
