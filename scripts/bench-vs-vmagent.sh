#!/usr/bin/env bash
# metricspool against vmagent, side by side (examples/vs_vmagent). Installs vmagent and
# VictoriaMetrics (Debian package `victoria-metrics`) and the chart font when missing, builds
# release, and runs every phase; extra arguments go to the benchmark, e.g.
#
#   scripts/bench-vs-vmagent.sh                                  # quick: 2M / 5M / 10M backlog
#   scripts/bench-vs-vmagent.sh --steps 10M,50M,100M --pass 10M  # the full memory curve
#
# The figures are printed as a Markdown table; the chart goes to docs/bench/vs-vmagent.png.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v vmagent >/dev/null || missing+=(victoria-metrics)
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

cargo build --release --bin metricspool --example vs_vmagent
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(uptime)"
exec target/release/examples/vs_vmagent --chart docs/bench/vs-vmagent.png "$@"
