#!/usr/bin/env bash
# The fault suite's figures against the issue's targets: runs tests/faults (the real server, real
# Redis) and prints the measured figures as a table. Run alone: other load on the 2 cores shows up.
set -euo pipefail
cd "$(dirname "$0")/.."
figures=$(mktemp)
rm -f "$figures"
FAULT_FIGURES=$figures .venv/bin/python -m pytest -q -p no:cacheprovider tests/faults >/dev/null
.venv/bin/python - "$figures" <<'PY'
import json, sys
from tabulate import tabulate
figures = json.load(open(sys.argv[1]))
targets = {"bombs_rss_growth_mb": ("server RSS growth, 100 bombs + oversized requests (MB)", "<= 300"),
           "slow_clients_health_p99_ms": ("/health p99 with 8 slow clients (ms)", "< 100"),
           "slow_clients_health_p50_ms": ("/health p50 with 8 slow clients (ms)", ""),
           "flood_webhook_1_clients_p99_ms": ("/webhook p99, 1,050 events, 1 client (ms)", "< 50"),
           "flood_webhook_8_clients_p99_ms": ("/webhook p99, 1,050 events, 8 clients at once (ms)", "< 50"),
           "flood_webhook_8_clients_p50_ms": ("/webhook p50, 8 clients at once (ms)", ""),
           "flood_webhook_max_ms": ("/webhook slowest of 2,100 events (ms; Label Studio drops after 1 s)", "< 1000"),
           "flood_jobs_created": ("training jobs from 2,100 events", ""),
           "auth_refusals": ("requests without valid credentials, all refused", "no bypass"),
           "allow_list_attempts": ("image URLs aimed at forbidden hosts, none fetched", "no bypass")}
print(tabulate([(label, figures.get(key, "not measured"), target) for key, (label, target) in targets.items()],
               headers=["figure", "measured", "target"], tablefmt="github"))
PY
