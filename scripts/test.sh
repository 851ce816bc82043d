#!/usr/bin/env bash
# Runs every test: unit, integration, examples and benches (as tests), then the doc tests.
# Installs what the tests need first, so it works on a fresh machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# --- Debian packages the tests need --------------------------------------------------------
# Add packages here (e.g. real backend servers that forwarder tests start on 127.0.0.1).
# tests/forward_e2e.rs and tests/forward_crash.rs start Prometheus, VictoriaMetrics and
# InfluxDB (apt-get install -y --no-install-recommends victoria-metrics prometheus influxdb);
# tests/backend_nats.rs and tests/backend_mqtt.rs start nats-server and mosquitto;
# only the missing ones are installed.
debian_packages=()
command -v victoria-metrics >/dev/null || debian_packages+=(victoria-metrics)
command -v prometheus >/dev/null || debian_packages+=(prometheus)
command -v influxd >/dev/null || debian_packages+=(influxdb)
command -v nats-server >/dev/null || debian_packages+=(nats-server)
command -v mosquitto >/dev/null || debian_packages+=(mosquitto)
# tests/daemon.rs makes a test CA and certificate for the TLS listener with openssl.
command -v openssl >/dev/null || debian_packages+=(openssl)
python3 -m pip --version >/dev/null 2>&1 || debian_packages+=(python3-pip)
if ((${#debian_packages[@]} > 0)); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${debian_packages[@]}"
fi
# tests/backend_elasticsearch.rs starts osmem-server, an OpenSearch-compatible server from PyPI
# (Debian has no Elasticsearch or OpenSearch server); installed only when the module is missing.
python3 -c 'import osmem_server' 2>/dev/null ||
  python3 -m pip install --break-system-packages osmem-server
# --------------------------------------------------------------------------------------------

cargo test --all-targets
cargo test --doc
