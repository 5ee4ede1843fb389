#!/usr/bin/env bash
# Start Debian's PostgreSQL and give the tracking server (python -m harness.serve) a role and a
# database. Usage: postgres.sh PASSFILE [ROLE] [DATABASE]. Run as root.
# PASSFILE is libpq's password file (mode 0600): made with a random password when absent, kept
# otherwise, so running again changes nothing. The role may create databases (the tests make
# one per test). Prints the URL to give to `harness.serve --database` (no password in it: libpq
# reads PASSFILE when PGPASSFILE names it, or ~/.pgpass).
set -euo pipefail

PASSFILE="${1:?usage: postgres.sh PASSFILE [ROLE] [DATABASE]}"
ROLE="${2:-randsac}"
DB="${3:-mlflow}"
HOST=127.0.0.1
PORT=5432

log() { echo "[postgres] $*" >&2; }
die() { echo "[postgres] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
[[ "$ROLE" =~ ^[a-z_][a-z0-9_]*$ && "$DB" =~ ^[a-z_][a-z0-9_]*$ ]] || die "role and database: lower-case letters, digits, _"
if ! command -v pg_lsclusters >/dev/null; then
    log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends postgresql >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends postgresql >&2; }
fi

read -r VERSION NAME CPORT STATUS _ < <(pg_lsclusters -h | head -1) || die "no PostgreSQL cluster (pg_createcluster)"
[ "$CPORT" = "$PORT" ] || die "cluster $VERSION/$NAME listens on port $CPORT, not $PORT"
if [ "$STATUS" != online ]; then
    log "starting cluster $VERSION/$NAME"
    # to stderr: stdout is the URL alone (URL=$(postgres.sh ...)), and after a crash this says
    # "Removed stale pid file."; not fd 3 or the like, which the server would inherit and hold open
    pg_ctlcluster "$VERSION" "$NAME" start >&2
fi
for ((i = 0; i < 60; i++)); do pg_isready -q -h "$HOST" -p "$PORT" && break; sleep 0.5; done
pg_isready -q -h "$HOST" -p "$PORT" || die "PostgreSQL does not answer on $HOST:$PORT"

if [ ! -s "$PASSFILE" ]; then
    (umask 077 && mkdir -p "$(dirname "$PASSFILE")" \
        && printf '%s:%s:*:%s:%s\n' "$HOST" "$PORT" "$ROLE" "$(head -c 24 /dev/urandom | base64 | tr -d '+/=')" > "$PASSFILE")
    log "wrote $PASSFILE"
fi
chmod 600 "$PASSFILE"
if [ -n "${SUDO_USER:-}" ]; then chown "$SUDO_USER": "$PASSFILE"; fi  # sudo ... ~/.pgpass: the user's file
PASSWORD=$(awk -F: -v r="$ROLE" '$4 == r {print $5; exit}' "$PASSFILE")
[ -n "$PASSWORD" ] || die "$PASSFILE has no line for role $ROLE"

# SQL on stdin, not in psql's argv: the password never shows in `ps`
runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
SELECT format('CREATE ROLE %I LOGIN CREATEDB', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE')\gexec
ALTER ROLE "$ROLE" LOGIN CREATEDB PASSWORD '$PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$DB', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB')\gexec
SQL
PGPASSFILE="$PASSFILE" psql -q -h "$HOST" -p "$PORT" -U "$ROLE" -d "$DB" -c "SELECT 1" >/dev/null \
    || die "role $ROLE cannot log in to $DB with the password in $PASSFILE"
log "PostgreSQL $VERSION/$NAME is up: role $ROLE, database $DB"
echo "postgresql://$ROLE@$HOST:$PORT/$DB"
