#!/usr/bin/env bash
# Regenerates the example plots of README.md and docs/plots.md (assets/plots/*.png) from the demo cache, and times each.
# Usage: assets/make-plots.sh [DEMO_DIR]      (default: <target dir>/plot-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin lorascope
bin="$target/release/lorascope"
demo=${1:-$target/plot-demo}
"$bin" demo "$demo" >/dev/null
p=lorascope-demo/gpt-oss-20b
plot() {
  local out=$1; shift
  local t0=$(date +%s%N)
  "$bin" plot "$@" --cache "$demo" --out "assets/plots/$out.png" >/dev/null
  printf '%-16s %4d ms  %4d kB\n' "$out" $((($(date +%s%N) - t0) / 1000000)) \
    $(($(stat -c %s "assets/plots/$out.png") / 1024))
}
plot layers "$p-moe-peft" --kind layers
plot experts "$p-moe-peft" --kind experts
plot spectrum "$p-moe-peft" --kind spectrum
plot compare-layers "$p-moe-peft" --kind layers --compare "$p-tinker-3d"
