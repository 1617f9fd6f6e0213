#!/usr/bin/env bash
# Scan benchmark: `discovery::scan` over 140 survey-shaped adapters at real gpt-oss-20b sizes,
# written once as sparse files (~19 GB apparent, a few MB on disk) in a temporary folder.
# Goal: <= 0.3 s. Extra arguments go to criterion (e.g. --save-baseline NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench scan -- "$@"
