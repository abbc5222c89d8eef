#!/usr/bin/env bash
# Start a PostgreSQL server that root can use for the ledger's tests; the last line of stdout is its URL:
#   export KGM_TEST_POSTGRES_URL=$(bash scripts/ci-postgres.sh | tail -1)
# Runs as root on Debian 12: installs Debian's postgresql if missing, starts the Debian cluster
# (PostgreSQL refuses to run as root; pg_ctlcluster runs it as the postgres user), then creates a
# superuser role "root" (peer authentication on the unix socket) and a database. Idempotent: running
# it again on a started server only prints the URL. Quiet on success; on failure says why, exits 1.
# KGM_TEST_POSTGRES_DB picks the database name (kgm_test).
set -euo pipefail

db="${KGM_TEST_POSTGRES_DB:-kgm_test}"
socket_dir=/var/run/postgresql
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

fail() {
  echo "ci-postgres: $*" >&2
  if [ -s "$log" ]; then sed 's/^/  /' "$log" >&2; fi
  exit 1
}

[ "$(id -u)" = 0 ] || fail "run me as root (I install packages and start the Debian cluster)"
case "$db" in *[!a-z0-9_]* | "") fail "KGM_TEST_POSTGRES_DB must be [a-z0-9_]+, not '$db'" ;; esac

# The newest installed server (a client-only install has /usr/lib/postgresql/N/bin/psql but no postgres).
newest_version() {
  local server
  for server in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$server" ] && basename "$(dirname "$(dirname "$server")")"
  done | sort -V | tail -1
}

if [ -z "$(newest_version)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } >"$log" 2>&1 \
    || fail "apt-get install postgresql failed"
fi
version="$(newest_version)"
[ -n "$version" ] || fail "no PostgreSQL server under /usr/lib/postgresql after installing postgresql"

# pg_lsclusters -h: "version cluster port status owner datadir logfile"
cluster_field() { pg_lsclusters -h | awk -v v="$version" -v f="$1" '$1 == v && $2 == "main" { print $f }'; }

if [ -z "$(cluster_field 2)" ]; then
  pg_createcluster "$version" main >"$log" 2>&1 || fail "pg_createcluster $version main failed"
fi
if [ "$(cluster_field 4)" != online ]; then
  pg_ctlcluster "$version" main start >"$log" 2>&1 \
    || fail "pg_ctlcluster $version main start failed (log: $(cluster_field 7))"
fi
port="$(cluster_field 3)"

ready=""
for _ in $(seq 100); do
  if pg_isready -q -h "$socket_dir" -p "$port"; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || fail "the server on $socket_dir port $port is not accepting connections after 10 s"

# As the postgres superuser, from a directory it can read; \gexec runs the statement only when needed.
(cd / && runuser -u postgres -- psql -h "$socket_dir" -p "$port" -X -q -v ON_ERROR_STOP=1 -d postgres) \
  >"$log" 2>&1 <<SQL || fail "creating role root and database $db failed"
SELECT 'CREATE ROLE root SUPERUSER LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root')
\gexec
SELECT 'CREATE DATABASE $db OWNER root' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db')
\gexec
SQL

url="postgresql:///$db?host=$socket_dir"
[ "$port" = 5432 ] || url="$url&port=$port"
psql "$url" -X -q -t -c 'SELECT 1' >"$log" 2>&1 || fail "root cannot connect to $url"
echo "$url"
