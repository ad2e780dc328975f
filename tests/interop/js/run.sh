#!/bin/sh
# Run one of the interop scripts the way the Python tests do (they run
# `node --import ./polyfill.mjs <script> ...` with this directory as cwd):
#   tests/interop/js/run.sh import.mjs <dir-or-file> <v1|v0> [shardSplitThresholdBytes]
#   tests/interop/js/run.sh verify-car.mjs <file.car>
# Install first: cd tests/interop/js && npm ci
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
script="$1"
shift
exec node --import "file://$here/polyfill.mjs" "$here/$script" "$@"
