#!/usr/bin/env bash
# /src/provisioning_script.sh: provision this box with Red (the script used inside the container).
# Converges the box with Red's deploy and the runtime environment (/opt/red/deploy, pyinfra
# @local): supervisord is started when it is not running, changed programs are applied and
# the others are left running. Idempotent; one run at a time (a second waits for the first,
# up to PROVISIONING_LOCK_TIMEOUT seconds, then exits 75). Markers: /var/lib/red/provisioning.
# Log: /logs/provisioning.log and /logs/converge.log. Inputs: the environment only.
# Identical in effect to /vast_ai_provisioning_script.sh.
set -euo pipefail
exec /opt/red/bin/red-provision run --by /src/provisioning_script.sh
