#!/usr/bin/env bash
# Backs up the homeserver's database: everything the server keeps is in PostgreSQL. Works on the
# embedded default (DATA_DIR/pg, PostgreSQL 18, no pg_dump needed) and on DATABASE_URL, while the
# server runs (one consistent snapshot). Same as `npm run backup`.
# Usage: deploy/backup.sh [out-file]   (configuration from the environment or /etc/super-server/env)
set -euo pipefail
if [ -z "${DATABASE_URL:-}${DATA_DIR:-}" ] && [ -r /etc/super-server/env ]; then set -a; . /etc/super-server/env; set +a; fi
out=$(realpath -m "${1:-super-server-$(date +%Y%m%d-%H%M%S).backup.gz}")
cd "$(dirname "$0")/.."
exec node --import tsx homeserver/backup/cli.ts backup "$out"
