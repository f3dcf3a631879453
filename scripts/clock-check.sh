#!/usr/bin/env bash
# The unit and API tests with a clock that runs ten times too fast (libfaketime: every clock read,
# time.monotonic() included, advances 10 s per real second).  To the code under test this is a machine
# ten times slower than ours: a test that reads "now" once and relies on it minutes later, counts
# requests inside a wall-clock window, or expects work to finish within a fixed time fails here at once
# instead of once in a while on a busy CI machine.  Extra arguments go to pytest.
#
# Left out: tests whose timing lives in the kernel (socket and subprocess timeouts, which libfaketime does
# not scale, so the two clocks disagree in a way no real machine does): test_fetch.py and test_ocsp.py
# (real HTTP servers, an openssl OCSP responder, per-fetch deadlines), the wheel install (pip), and the
# e2e/browser suites (nginx and gunicorn would run on the real clock while the test runs on the fast one).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
speed=${CLOCK_SPEED:-10}
if ! command -v faketime >/dev/null 2>&1; then
  echo "clock-check: faketime is missing; scripts/install-system-deps.sh installs it" >&2
  exit 1
fi

# A self-test first: if the preload did not take (a static Python, a changed libfaketime), the run below
# would prove nothing.  A busy loop until the faked clock has advanced 5 s must take well under 5 real
# seconds (bash's EPOCHREALTIME is not faked).
started=$EPOCHREALTIME
FAKETIME_NO_CACHE=1 faketime -f "+0 x$speed" "$python" -c '
import time
until = time.monotonic() + 5
while time.monotonic() < until:
    pass'
real=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
if ! awk -v r="$real" 'BEGIN { exit !(r < 2.5) }'; then
  echo "clock-check: faketime did not speed the clock up (5 faked seconds took $real real ones)" >&2
  exit 1
fi
echo "== unit and API tests with the clock running x$speed (faketime: 5 faked seconds took $real s)"

exec env -u DATABASE_URL FAKETIME_NO_CACHE=1 faketime -f "+0 x$speed" "$python" -m pytest -q -p no:cacheprovider \
  -m "not e2e and not browser" \
  --ignore=tests/e2e --ignore=tests/browser \
  --ignore=tests/test_fetch.py --ignore=tests/test_ocsp.py --ignore=tests/test_wheel_install.py \
  "$@"
