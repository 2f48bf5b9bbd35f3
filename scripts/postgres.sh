#!/usr/bin/env bash
# Make a local PostgreSQL server available for the tests: install Debian's package if missing (as root),
# start the cluster, create the mpfeed role and database. Prints the DATABASE_URL on its last line.
# Exits 1 when PostgreSQL cannot be had (CI treats that as a failure; elsewhere the caller may skip).
set -euo pipefail
log() { echo "postgres.sh: $*" >&2; }

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  if [ "$(id -u)" != 0 ]; then log "PostgreSQL is not installed and we are not root"; exit 1; fi
  log "installing postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main"' | grep -q .; then
  log "creating cluster $version/main"
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" && $4=="online"' | grep -q .; then
  log "starting cluster $version/main"
  pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')

for _ in $(seq 1 30); do
  if su postgres -c "psql -p $port -Atqc 'select 1'" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -q" >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mpfeed') THEN
    CREATE ROLE mpfeed LOGIN PASSWORD 'mpfeed' CREATEDB;
  END IF;
END \$\$;
SQL
if ! su postgres -c "psql -p $port -Atqc \"select 1 from pg_database where datname='mpfeed'\"" | grep -q 1; then
  su postgres -c "createdb -p $port -O mpfeed mpfeed" >&2
fi
echo "postgres://mpfeed:mpfeed@127.0.0.1:$port/mpfeed"
