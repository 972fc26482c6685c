#!/usr/bin/env bash
# `npm test`: every suite, in three groups, within CI's time budget (README: "Tests").
#
# Test files are independent (each makes its own database, Redis key prefix, ports and data
# directory), and most of their time is spent waiting on the servers they start, so they run
# several at a time. Files whose assertions are about time or load (latency bounds, timeouts,
# floods, several workers) run one at a time after them, so the others' load cannot fail them.
# The embedded PostgreSQL pass then repeats the suites that exercise storage on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One file at a time: timing bounds, floods, worker processes.
SERIAL=(
  tests/integration/presence.test.ts
  tests/integration/profile-propagation.test.ts
  tests/integration/request-paths.test.ts
  tests/integration/websocket.test.ts
  tests/integration/upgrades.test.ts
  tests/integration/sync-fanout.test.ts
  tests/integration/overload.test.ts
  tests/integration/isolation.test.ts
  tests/integration/workers.test.ts
  tests/integration/workers-redis.test.ts
  tests/integration/workers-cluster.test.ts
)
# On the embedded PostgreSQL too: the suites whose subject is storage (start-up, crashes,
# backups, the room engine's writes and reads, accounts, media, keys). The rest run the same SQL.
# (embedded-pg.test.ts tests the embedded PostgreSQL itself, whatever the backend: the first group runs it.)
EMBEDDED=(
  tests/integration/startup.test.ts
  tests/integration/crash.test.ts
  tests/integration/operations.test.ts
  tests/integration/backup.test.ts
  tests/integration/chat.test.ts
  tests/integration/rooms.test.ts
  tests/integration/sync.test.ts
  tests/integration/accounts.test.ts
  tests/integration/visibility.test.ts
  tests/integration/media-upload.test.ts
  tests/integration/e2ee-keys.test.ts
  tests/integration/notifications.test.ts
  tests/integration/dag-engine.test.ts
)
PARALLEL_JOBS="${TEST_JOBS:-3}"

is_serial() {
  local f
  for f in "${SERIAL[@]}"; do [[ "$1" == "$f" ]] && return 0; done
  return 1
}

parallel=()
for f in tests/unit/*.test.ts tests/integration/*.test.ts tests/federation/*.test.ts tests/edge/*.test.ts; do
  [[ -e "$f" ]] || continue
  is_serial "$f" || parallel+=("$f")
done
serial=("${SERIAL[@]}")
for f in tests/attacks/*.test.ts tests/browser/*.test.ts; do [[ -e "$f" ]] && serial+=("$f"); done

run() { node --import tsx --test "$@"; }

echo "# npm test: ${#parallel[@]} files ${PARALLEL_JOBS} at a time, then ${#serial[@]} one at a time, then ${#EMBEDDED[@]} on the embedded PostgreSQL"
# The first two groups on the external PostgreSQL only (a suite that runs both backends when
# TEST_BACKEND is unset runs its embedded half in the third group).
TEST_BACKEND=external run --test-concurrency="$PARALLEL_JOBS" "${parallel[@]}"
TEST_BACKEND=external run --test-concurrency=1 "${serial[@]}"
TEST_BACKEND=embedded run --test-concurrency=2 "${EMBEDDED[@]}"
