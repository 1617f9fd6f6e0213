#!/usr/bin/env bash
# End-to-end timing of `lorascope stats --json` on real-shape adapters against a numpy peer that
# does the same factored QR + SVD (benches/numpy_peer.py, OPENBLAS_NUM_THREADS=1).
# Usage: benches/e2e.sh [RUNS]      (makes its fixtures and Python venv under target/)
# LORASCOPE_BIN=PATH times another build (e.g. an older commit's) on the same fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
cargo build --release --quiet --bin lorascope --example synth
fx=target/bench-fixtures
if [ ! -f "$fx/.done" ]; then
  rm -rf "$fx"
  target/release/examples/synth "$fx/attn-r32" attn --rank 32 --dtype F32
  target/release/examples/synth "$fx/peft-r8" peft --rank 8 --expert-rank 8 --expert-layers 0,7,11,15,23 --dtype F32
  touch "$fx/.done"
fi
# E2E_LARGE=1: also the issue-15 adapters (1.4 GB and 0.9 GB F32), timed without the peer
# (numpy_peer.py reads PEFT's packed layout, not Tinker's 3D one).
large=()
if [ "${E2E_LARGE:-0}" = 1 ]; then
  layers=$(seq -s, 0 23)
  [ -f "$fx/peft-all/.done" ] || { target/release/examples/synth "$fx/peft-all" peft --rank 32 --expert-rank 32 --expert-layers "$layers" --dtype F32 && touch "$fx/peft-all/.done"; }
  [ -f "$fx/tinker/.done" ] || { target/release/examples/synth "$fx/tinker" tinker --rank 32 --expert-rank 32 --dtype F32 && touch "$fx/tinker/.done"; }
  large=(peft-all tinker)
fi
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet numpy
fi
export OPENBLAS_NUM_THREADS=1
"$venv/bin/python" - "$fx" "$runs" "${LORASCOPE_BIN:-target/release/lorascope}" "${large[@]}" <<'PY'
import json, os, statistics, subprocess, sys, time
fx, runs, exe, large = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
settle = os.environ.get("E2E_SETTLE", "1") == "1"

def settled(folder):
    """The page cache as reading the file leaves it (after a reboot or an eviction): the cached
    pages are dropped, then the file is read in 8 MB pieces, into large folios that the kernel
    maps with 2 MB entries. Folios split since (memory pressure) map 4 KB pages, a quarter of
    the CPU on the largest adapters: E2E_SETTLE=0 times the page cache as found."""
    if not settle:
        return
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            while os.read(fd, 8 << 20):
                pass
            os.close(fd)
print(f"page cache: {'settled (dropped, then read)' if settle else 'as found'}; binary: {exe}")
print(f"{'adapter':<10} {'deltas':>6} {'file MB':>8} {'lorascope ms':>13} {'peak MB':>8} {'numpy ms':>9} {'speed-up':>9}")
for name in ["attn-r32", "peft-r8"]:
    folder = f"{fx}/{name}"
    settled(folder)
    size = os.path.getsize(f"{folder}/adapter_model.safetensors") / 1e6
    walls, peak = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run([exe, "stats", folder, "--json"], check=True, capture_output=True).stdout
        walls.append(time.perf_counter() - t0)
    # Peak resident memory of one more run, from GNU time's %M (KiB).
    t = subprocess.run(["/usr/bin/time", "-f", "%M", exe, "stats", folder, "--json"], check=True, capture_output=True, text=True)
    peak = int(t.stderr.strip().splitlines()[-1]) / 1024
    n = len(json.loads(out)["deltas"])
    peer = [json.loads(subprocess.run([sys.executable, "benches/numpy_peer.py", folder], check=True, capture_output=True).stdout)["seconds"] for _ in range(3)]
    ours, theirs = statistics.median(walls) * 1e3, statistics.median(peer) * 1e3
    print(f"{name:<10} {n:>6} {size:>8.1f} {ours:>13.1f} {peak:>8.1f} {theirs:>9.1f} {theirs / ours:>8.1f}x")
for name in large:
    folder = f"{fx}/{name}"
    settled(folder)
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run([exe, "stats", folder, "--json"], check=True, capture_output=True).stdout
        walls.append(time.perf_counter() - t0)
    t = subprocess.run(["/usr/bin/time", "-f", "%M", exe, "stats", folder, "--json"], check=True, capture_output=True, text=True)
    peak = int(t.stderr.strip().splitlines()[-1]) / 1024
    n = len(json.loads(out)["deltas"])
    size = os.path.getsize(f"{folder}/adapter_model.safetensors") / 1e6
    print(f"{name:<10} {n:>6} {size:>8.1f} {statistics.median(walls) * 1e3:>13.1f} {peak:>8.1f} {'-':>9} {'-':>9}")
PY
