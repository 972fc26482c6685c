#!/usr/bin/env bash
# Backs up the homeserver database (everything the server keeps is in PostgreSQL).
# Usage: deploy/backup.sh [out-file]   (DATABASE_URL from the environment or /etc/super-server/env)
set -euo pipefail
[ -n "${DATABASE_URL:-}" ] || { set -a; . /etc/super-server/env; set +a; }
out=${1:-super-server-$(date +%Y%m%d-%H%M%S).dump}
pg_dump --format=custom --no-owner --dbname="$DATABASE_URL" --file="$out"
echo "wrote $out"
