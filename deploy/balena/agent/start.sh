#!/bin/sh
# Enroll once (the key is made here and never leaves the device), then run the agent.
set -eu
CONFIG=/etc/ondijon/agent.toml
STATE="${ONDIJON_AGENT__GATEWAY__STATE_DIR:-/var/lib/ondijon/agent}"
mkdir -p "$STATE"
if [ ! -e "$STATE/identity/current/gateway.pem" ]; then
    if [ -z "${ONDIJON_ENROLL_TOKEN:-}" ]; then
        echo "not enrolled: set the device variable ONDIJON_ENROLL_TOKEN (ondijon gateway add)" >&2
        exit 1
    fi
    ondijon edge enroll --config "$CONFIG" --token "$ONDIJON_ENROLL_TOKEN"
fi
exec ondijon edge run --config "$CONFIG"
