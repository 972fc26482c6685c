#!/usr/bin/env bash
# Restores a backup made by backup.sh / `npm run backup`. Same as `npm run restore -- <file>`.
# The whole archive is checked first (a damaged or truncated one restores nothing); then the
# database, then the media files into DATA_DIR/media and the signing key file (a different key
# file already there is kept as <name>.replaced-<time>).
# Embedded default: stop the server first; the backup replaces DATA_DIR's database only once it
# has been restored completely. DATABASE_URL: it must name a new, empty database (createdb).
# Usage: deploy/restore.sh <backup-file>
set -euo pipefail
if [ -z "${DATABASE_URL:-}${DATA_DIR:-}" ] && [ -r /etc/super-server/env ]; then
  set -a; . /etc/super-server/env; if [ -r /etc/super-server/secrets ]; then . /etc/super-server/secrets; fi; set +a
fi
file=$(realpath "$1")
cd "$(dirname "$0")/.."
exec node --import tsx homeserver/backup/cli.ts restore "$file"
