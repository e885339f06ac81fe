#!/usr/bin/env bash
# Measures, without Docker, how long the two cargo steps of each image's build take when
# nothing is cached (what ACR Tasks does on a first `azd up`): the dependency build with
# stand-in sources, then the build of the real sources, as src/*/Dockerfile runs them
# (release, --locked, the workspace's release profile), in a copy of the build context
# with a target directory of its own. Crates are taken from cargo's local cache, so the
# download ACR Tasks also makes is not counted. Prints one line per step and a total per
# service; docs/azure.md gives the figures of this machine.
#
#   scripts/checks/image-build-time.sh                   # both services
#   scripts/checks/image-build-time.sh order-processor   # one
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SERVICES=("$@")
[ ${#SERVICES[@]} -gt 0 ] || SERVICES=(order-processor batch)
MEMBERS=(src/common src/batch src/order-processor tests/testkit tools/bench)

seconds() { date +%s; }
# cargo's warnings about the stand-in sources are noise here: shown only when a build fails.
build() {
  (cd "$work" && SQLX_OFFLINE=true cargo build --release --locked -q -p "$1" 2>"$work.log") || {
    cat "$work.log" >&2
    exit 1
  }
}

for service in "${SERVICES[@]}"; do
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  cp Cargo.toml Cargo.lock rust-toolchain.toml "$work/"
  for member in "${MEMBERS[@]}"; do
    mkdir -p "$work/$member/src"
    cp "$member/Cargo.toml" "$work/$member/"
    echo 'fn main() {}' >"$work/$member/src/main.rs"
    touch "$work/$member/src/lib.rs"
  done
  start="$(seconds)"
  build "$service"
  deps=$(($(seconds) - start))
  for member in "${MEMBERS[@]}"; do rm -rf "${work:?}/$member/src"; done
  cp -r .sqlx "$work/"
  git ls-files -z src tests/testkit tools/bench | xargs -0 -I{} cp --parents {} "$work/"
  find "$work/src" "$work/tests" "$work/tools" -type f -exec touch {} +
  start="$(seconds)"
  build "$service"
  app=$(($(seconds) - start))
  printf '%s: dependencies %d s, the service %d s, in all %d s (%s cores)\n' \
    "$service" "$deps" "$app" $((deps + app)) "$(nproc)"
  rm -rf "$work" "$work.log"
  trap - EXIT
done
