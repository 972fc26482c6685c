#!/usr/bin/env bash
# Restores a backup made by backup.sh into an EMPTY database. Stop the workers first.
# Usage: deploy/restore.sh <dump-file>
set -euo pipefail
[ -n "${DATABASE_URL:-}" ] || { set -a; . /etc/super-server/env; set +a; }
pg_restore --no-owner --exit-on-error --dbname="$DATABASE_URL" "$1"
echo "restored $1"
