#!/usr/bin/env bash
# Build the Snakemake report of a finished run and render it to a PNG with headless Chromium.
#   tools/report_screenshot.sh [RUN_DIR [PNG [SNAKEMAKE_ARGS...]]]
# RUN_DIR: the run's working directory (default .); PNG: default docs/images/report.png;
# SNAKEMAKE_ARGS: e.g. --configfile config.yaml configs/tiny.yaml, as the run was started.
# The page opens RESULT (default results/figures/progression.png): its caption in the side bar,
# the image beside it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=$(cd "${1:-.}" && pwd)
png=$(realpath -m "${2:-$root/docs/images/report.png}")
shift $(($# < 2 ? $# : 2))
result=${RESULT:-results/figures/progression.png}
(cd "$run" && "${SNAKEMAKE:-$root/.venv/bin/snakemake}" --snakefile "$root/Snakefile" --cores 1 "$@" \
  --report results/report.html)
page=$(mktemp --suffix=.html)
trap 'rm -f "$page"' EXIT
{ cat "$run/results/report.html"
  echo "<script>setTimeout(() => { const r = results['$result']; app.setView({navbarMode: 'resultinfo',
    resultPath: '$result', ...(r.mime_type.startsWith('image/') ? {content: 'img', contentPath: r.data_uri} : {})});
  }, 500);</script>"
} > "$page"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=10000 \
  --window-size="${WINDOW:-1400,1000}" --screenshot="$png" "file://$page" 2>/dev/null
echo "$png"
