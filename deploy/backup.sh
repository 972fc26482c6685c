#!/usr/bin/env bash
# Backs up the homeserver into one archive: the database (one consistent snapshot, taken while the
# server runs; no pg_dump needed), the media files (DATA_DIR/media) and the signing key file when
# the server keeps one on disk (the key is in the database too). Works on the embedded default
# (DATA_DIR/pg) and on DATABASE_URL. Same as `npm run backup`. The archive holds the signing key:
# keep it private (it is written mode 0600).
# Usage: deploy/backup.sh [out-file]   (configuration from the environment or /etc/super-server/env)
set -euo pipefail
if [ -z "${DATABASE_URL:-}${DATA_DIR:-}" ] && [ -r /etc/super-server/env ]; then
  set -a; . /etc/super-server/env; if [ -r /etc/super-server/secrets ]; then . /etc/super-server/secrets; fi; set +a
fi
out=$(realpath -m "${1:-super-server-$(date +%Y%m%d-%H%M%S).backup.tar}")
cd "$(dirname "$0")/.."
exec node --import tsx homeserver/backup/cli.ts backup "$out"
