#!/usr/bin/env bash
# Makes sure the services the tests need answer: PostgreSQL on 127.0.0.1:5432 (user postgres, no
# password over TCP) and Redis on 127.0.0.1:6379. Installs (Debian packages) and starts them if
# needed. Idempotent and quiet when everything is already up. Used by .ci/run; run it by hand too.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
say() { echo "services: $*" >&2; }

apt_install() {
  say "installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

wait_for() { # wait_for <description> <command...>: up to 30 s
  local what=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "$what did not come up"; return 1
}

# ---- PostgreSQL ---------------------------------------------------------------------------------
pg_answers() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
pg_tcp_trust() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -w -Atqc 'SELECT 1' >/dev/null 2>&1; }
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -1; }

if ! pg_answers; then
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(pg_version)" ]; then apt_install postgresql; fi
  ver=$(pg_version)
  if [ -z "$ver" ]; then # packages present but no cluster (create_main_cluster = false)
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    $SUDO pg_createcluster "$ver" main >/dev/null
  fi
  if ! pg_answers; then
    say "starting PostgreSQL $ver"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  fi
  wait_for "PostgreSQL" pg_answers
fi

command -v psql >/dev/null || apt_install postgresql-client
if ! pg_tcp_trust; then
  # A fresh Debian cluster asks for a scram password over TCP; the tests connect as postgres without one.
  ver=$(pg_version)
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  if [ -z "$ver" ] || [ ! -f "$hba" ]; then say "cannot find pg_hba.conf to allow TCP logins"; exit 1; fi
  if ! $SUDO grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    say "allowing passwordless TCP logins from localhost in $hba"
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
  wait_for "PostgreSQL (TCP login as postgres)" pg_tcp_trust
fi

# ---- Redis --------------------------------------------------------------------------------------
redis_answers() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then apt_install redis-server; fi
if ! redis_answers; then
  say "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for "Redis" redis_answers
fi

# ---- openssl (issue 11: the federation tests make a local CA and certificates with it) ----------
command -v openssl >/dev/null || apt_install openssl
