# Shared by scripts/run.sh and scripts/test.sh: installing and starting what the project
# needs on a Debian machine (PostgreSQL, daprd) and stopping it again. Source it, don't run it.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${STATE_DIR:-$ROOT/.local}"
DAPR_VERSION="$(sed -n 's/^\tgithub.com\/dapr\/dapr v\([0-9.]*\)$/\1/p' "$ROOT/tools/daprd/go.mod")"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/dapr-rust-aca"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages that are missing.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Prints the directory of the newest installed PostgreSQL server, installing it if needed.
pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$dir" ] || [ ! -x "$dir/postgres" ]; then
    apt_install postgresql postgresql-client >&2
    dir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  # The package starts a cluster of its own on port 5432; we never use it.
  printf '%s\n' "$dir"
}

# Runs a PostgreSQL server program. The server refuses to run as root, so as root it
# runs as the `postgres` user that Debian's package creates.
pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_start DATA_DIR PORT: creates (once) and starts a throwaway cluster that listens on
# 127.0.0.1:PORT only, with password authentication, and prints its admin URL.
pg_start() {
  local data="$1" port="$2" bin
  bin="$(pg_bindir)"
  mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$data"; fi
  chmod 700 "$data"
  if [ ! -s "$data/PG_VERSION" ]; then
    say "creating a PostgreSQL cluster in ${data#"$ROOT"/}"
    local pwfile="$data.password"
    [ -s "$pwfile" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$pwfile"
    chmod 644 "$pwfile"
    pg_as_owner "$bin/initdb" -D "$data" -U postgres --pwfile="$pwfile" \
      --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    chmod 600 "$pwfile"
  fi
  if pg_as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    port="$(sed -n '4p' "$data/postmaster.pid")"
  else
    say "starting PostgreSQL on 127.0.0.1:$port"
    pg_as_owner "$bin/pg_ctl" -D "$data" -w -t 60 -l "$data/server.log" \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off" start >/dev/null ||
      { tail -n 20 "$data/server.log" >&2; die "PostgreSQL did not start (log above)"; }
  fi
  printf 'postgres://postgres:%s@127.0.0.1:%s/postgres\n' "$(cat "$data.password")" "$port"
}

# pg_stop DATA_DIR: stops the cluster if it runs.
pg_stop() {
  local data="$1" bin
  bin="$(pg_bindir)"
  if [ -s "$data/postmaster.pid" ]; then
    say "stopping PostgreSQL (${data#"$ROOT"/})"
    pg_as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

# Prints the path of a daprd of the pinned version: $DAPRD, ~/.dapr/bin/daprd or one on
# PATH when their version matches, else our own build from tools/daprd (cached outside
# the repository, built once per version; the first build takes several minutes).
daprd_path() {
  local candidate
  for candidate in "${DAPRD:-}" "$HOME/.dapr/bin/daprd" "$(command -v daprd || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if [ -n "${DAPRD:-}" ] && [ "$candidate" = "$DAPRD" ]; then
      printf '%s\n' "$candidate"; return 0
    fi
    if [ "$("$candidate" --version 2>/dev/null)" = "$DAPR_VERSION" ]; then
      printf '%s\n' "$candidate"; return 0
    fi
  done
  local cached="$CACHE_DIR/daprd-$DAPR_VERSION/daprd"
  if [ -x "$cached" ] && [ "$("$cached" --version 2>/dev/null)" = "$DAPR_VERSION" ]; then
    printf '%s\n' "$cached"; return 0
  fi
  command -v go >/dev/null || die "daprd $DAPR_VERSION is needed: install Go 1.26 or newer to build it, or set DAPRD"
  say "building daprd $DAPR_VERSION from Go modules into ${cached} (once; about 10 minutes on 2 cores)"
  local started=$SECONDS tmp
  tmp="$(mktemp "$CACHE_DIR.daprd.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE_DIR"; mktemp "$CACHE_DIR/daprd.XXXXXX"; })"
  (
    cd "$ROOT/tools/daprd"
    CGO_ENABLED=0 go build -mod=readonly -tags stablecomponents -trimpath \
      -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_VERSION" \
      -o "$tmp" .
  ) >&2 || { rm -f "$tmp"; die "building daprd failed"; }
  mkdir -p "$(dirname "$cached")"
  mv "$tmp" "$cached"
  say "daprd $DAPR_VERSION built in $((SECONDS - started)) s"
  printf '%s\n' "$cached"
}
