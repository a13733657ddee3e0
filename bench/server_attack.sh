#!/bin/sh
# bench/server_attack.sh [EMBD_BIN] — the attacks of issue 26 at full size on
# loopback (5,000 idle and 5,000 trickling connections from 127.0.0.2 against
# a normal client on 127.0.0.1; 100 clients that never read 10 MB replies),
# printing the numbers SECURITY.md records. Takes about 3 minutes.
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
export EMBD_BIN="${1:-${EMBD_BIN:-$here/build/release/embd}}"
export EMBD_TEST_MODELS="${EMBD_TEST_MODELS:-$HOME/.cache/embd/models}"
grep -m1 'model name' /proc/cpuinfo
echo "cores: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg); binary: $EMBD_BIN"
EMBD_HOSTILE_FULL=1 python3 "$here/tests/server/test_server_hostile.py"
