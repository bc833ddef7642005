# shellcheck shell=bash
# The servers the search tests run against for real: a PostgreSQL server listening on 127.0.0.1
# only, and a Ray head whose node address is 127.0.0.1 (Ray's own servers listen on every
# interface: Ray has no setting to restrict them). Both live under one temporary folder, with
# their logs. Source it, then:
#
#   source .ci/services.sh; trap stop_services EXIT; start_services
#
# start_services installs what is missing (Ray and psycopg into the venv, PostgreSQL from
# Debian's packages), starts both servers on free ports and exports
#   CAPSLAB_TEST_RAY=127.0.0.1:PORT
#   CAPSLAB_TEST_POSTGRES=postgresql+psycopg://capslab@127.0.0.1:PORT/capslab
# stop_services stops whatever start_services started. Both are idempotent and safe under
# `set -euo pipefail`; a failing step prints the servers' logs and returns non-zero.

CAPSLAB_SERVICES_VENV="${VENV:-.venv}"
CAPSLAB_SERVICES_RAY="${CAPSLAB_SERVICES_RAY:-ray==2.60.*}"
CAPSLAB_SERVICES_PSYCOPG="${CAPSLAB_SERVICES_PSYCOPG:-psycopg[binary]>=3.1}"

_svc_log() { echo "services: $*" >&2; }

# root runs apt and chowns; anyone else needs sudo for those (and only for those)
_svc_sudo() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    _svc_log "need root or sudo for: $*"
    return 1
  fi
}

_svc_free_port() {
  "$CAPSLAB_SERVICES_VENV/bin/python" -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_svc_dump_logs() {
  local f
  [ -n "${CAPSLAB_SERVICES_DIR:-}" ] && [ -d "$CAPSLAB_SERVICES_DIR/logs" ] || return 0
  while IFS= read -r f; do
    echo "----- $f (last 60 lines) -----" >&2
    tail -n 60 "$f" >&2 || true
  done < <(find "$CAPSLAB_SERVICES_DIR/logs" -type f -name '*.log' 2>/dev/null | sort)
}

# Ray and psycopg in the venv, as pyproject.toml's `ray` and `postgres` extras pin them (the
# requirements alone: capslab and torch stay as installed); the pins above for a missing extra.
_svc_python_packages() {
  local py="$CAPSLAB_SERVICES_VENV/bin/python" reqs
  if [ ! -x "$py" ]; then
    make venv >&2 || return 1
  fi
  if "$py" -c 'import ray, psycopg' >/dev/null 2>&1; then
    return 0
  fi
  reqs="$("$py" - "$CAPSLAB_SERVICES_RAY" "$CAPSLAB_SERVICES_PSYCOPG" <<'PY'
import sys, tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"].get("optional-dependencies", {})
for name, fallback in zip(("ray", "postgres"), sys.argv[1:]):
    print("\n".join(extras.get(name) or [fallback]))
PY
)" || return 1
  _svc_log "installing into $CAPSLAB_SERVICES_VENV: $(echo $reqs)"
  # shellcheck disable=SC2086  # one requirement a line, none with spaces
  (set -f; IFS=$'\n'; "$py" -m pip install -q $reqs) >&2 || return 1
  "$py" -c 'import ray, psycopg; print("services: ray", ray.__version__, "psycopg", psycopg.__version__)' >&2
}

# The newest PostgreSQL server binaries (initdb, pg_ctl), from Debian's packages when missing.
_svc_pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    _svc_log "installing PostgreSQL from Debian's packages"
    _svc_sudo apt-get update -q >&2 || return 1
    _svc_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 || return 1
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  fi
  [ -n "$dir" ] && [ -x "$dir/initdb" ] || { _svc_log "no PostgreSQL server binaries found"; return 1; }
  echo "$dir"
}

# initdb refuses root: as root the server runs as the `postgres` user of Debian's package.
_svc_as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_svc_start_postgres() {
  local bindir data port sock log
  bindir="$(_svc_pg_bindir)" || return 1
  data="$CAPSLAB_SERVICES_DIR/pgdata"
  sock="$CAPSLAB_SERVICES_DIR/pgsock"
  log="$CAPSLAB_SERVICES_DIR/logs/postgres.log"
  mkdir -p "$sock" "$data" || return 1
  chmod 700 "$data" || return 1
  touch "$log" || return 1
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { _svc_log "no 'postgres' user to run the server as"; return 1; }
    chown postgres "$sock" "$data" "$log" || return 1
  fi
  _svc_as_pg "$bindir/initdb" -D "$data" -U capslab --auth=trust -E UTF8 --no-locale \
    >"$CAPSLAB_SERVICES_DIR/logs/initdb.log" 2>&1 || return 1
  port="$(_svc_free_port)" || return 1
  echo "$bindir" >"$CAPSLAB_SERVICES_DIR/pg_bindir"  # before the start: stop after a half start
  # loopback only, a socket folder of its own (not /var/run/postgresql)
  _svc_as_pg "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $sock" >>"$CAPSLAB_SERVICES_DIR/logs/pg_ctl.log" 2>&1 \
    || return 1
  _svc_as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U capslab capslab \
    >>"$CAPSLAB_SERVICES_DIR/logs/pg_ctl.log" 2>&1 || return 1
  export CAPSLAB_TEST_POSTGRES="postgresql+psycopg://capslab@127.0.0.1:$port/capslab"
  _svc_log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

_svc_start_ray() {
  local port ray="$CAPSLAB_SERVICES_VENV/bin/ray"
  port="$(_svc_free_port)" || return 1
  # a short temporary folder: Ray's socket paths must stay under the 107-byte limit
  mkdir -p "$CAPSLAB_SERVICES_DIR/ray" || return 1
  touch "$CAPSLAB_SERVICES_DIR/ray.started"  # before the start: stop after a half start
  RAY_USAGE_STATS_ENABLED=0 "$ray" start --head --node-ip-address=127.0.0.1 --port="$port" \
    --num-cpus=2 --include-dashboard=false --disable-usage-stats \
    --object-store-memory=200000000 --temp-dir="$CAPSLAB_SERVICES_DIR/ray" \
    >"$CAPSLAB_SERVICES_DIR/logs/ray-start.log" 2>&1 || return 1
  export CAPSLAB_TEST_RAY="127.0.0.1:$port"
  _svc_log "Ray $("$CAPSLAB_SERVICES_VENV/bin/python" -c 'import ray; print(ray.__version__)') head on $CAPSLAB_TEST_RAY"
}

start_services() {
  if [ -n "${CAPSLAB_SERVICES_DIR:-}" ] && [ -d "$CAPSLAB_SERVICES_DIR" ]; then
    _svc_log "already started (${CAPSLAB_SERVICES_DIR})"
    return 0
  fi
  CAPSLAB_SERVICES_DIR="$(mktemp -d /tmp/capslab-svc.XXXXXX)"
  export CAPSLAB_SERVICES_DIR
  chmod 755 "$CAPSLAB_SERVICES_DIR"  # the postgres user must reach its data folder
  mkdir -p "$CAPSLAB_SERVICES_DIR/logs"
  if _svc_python_packages && _svc_start_postgres && _svc_start_ray; then
    return 0
  fi
  _svc_log "starting the test servers failed; logs:"
  _svc_dump_logs
  stop_services
  return 1
}

stop_services() {
  local dir="${CAPSLAB_SERVICES_DIR:-}" bindir
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  if [ -f "$dir/ray.started" ]; then
    "$CAPSLAB_SERVICES_VENV/bin/ray" stop --force >"$dir/logs/ray-stop.log" 2>&1 \
      || _svc_log "ray stop failed (see $dir/logs/ray-stop.log)"
    rm -f "$dir/ray.started"
  fi
  if [ -f "$dir/pg_bindir" ] && [ -f "$dir/pgdata/postmaster.pid" ]; then
    bindir="$(cat "$dir/pg_bindir")"
    _svc_as_pg "$bindir/pg_ctl" -D "$dir/pgdata" -m immediate -w -t 30 stop \
      >>"$dir/logs/pg_ctl.log" 2>&1 || _svc_log "pg_ctl stop failed (see $dir/logs/pg_ctl.log)"
  fi
  rm -rf "$dir" || true
  unset CAPSLAB_SERVICES_DIR CAPSLAB_TEST_RAY CAPSLAB_TEST_POSTGRES
  return 0
}
