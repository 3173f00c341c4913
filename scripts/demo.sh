#!/usr/bin/env bash
# Set everything up (scripts/setup.sh) and run the demo. DDS stays on loopback, on a domain of
# its own, whatever the caller's shell says.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${HEADPOSE_DEMO_DOMAIN_ID:-$((1 + $$ % 100))}"
unset ROS_LOCALHOST_ONLY
exec "$ROOT/.venv/bin/headpose_demo" "$@"
