#!/usr/bin/env bash
# Remake the pictures the README shows (needs Graphviz's dot and Chromium: Debian's graphviz and
# chromium packages). Run from the repository root: bash docs/make_pictures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome)
shot() {  # shot URL PNG WIDTH HEIGHT
  "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --no-first-run --user-data-dir="$tmp/profile" --hide-scrollbars --window-size="$3,$4" --screenshot="$2" "$1" \
    2>/dev/null
}
# the HTML compile report of the seed Net's training step
python -m ember report examples/seed_net.py:Net --input 4x3x32x32 --train -o "$tmp/report.html"
shot "file://$tmp/report.html" "$out/report.png" 1100 1300
# a training step: forward, backward and optimizer update, one box per fused kernel
python -m ember dump examples/seed_net.py:Net --input 4x3x32x32 --train --stage fused --format dot -o "$tmp/step.dot"
dot -Tpng -Gdpi=24 "$tmp/step.dot" -o "$out/training_step.png"
# the memory plan of that step: one rectangle per buffer, time against arena offset
python -m ember dump examples/seed_net.py:Net --input 4x3x32x32 --train --stage planned --format svg -o "$tmp/plan.svg"
shot "file://$tmp/plan.svg" "$out/memory_plan.png" 960 520
ls -l "$out"/*.png
