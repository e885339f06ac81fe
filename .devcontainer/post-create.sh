#!/usr/bin/env bash
# Runs once when the dev container is created: the pinned Rust toolchain, and the Dapr
# runtime of the version tools/daprd pins, slim (no Docker: the scripts start daprd
# themselves), so scripts/run.sh and scripts/test.sh use it instead of building one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dapr_version="$(sed -n 's/^\tgithub.com\/dapr\/dapr v\([0-9.]*\)$/\1/p' tools/daprd/go.mod)"

echo "==> Rust toolchain of rust-toolchain.toml"
rustup show active-toolchain || rustup toolchain install

echo "==> Dapr runtime $dapr_version (slim)"
if [ "$("$HOME/.dapr/bin/daprd" --version 2>/dev/null)" != "$dapr_version" ]; then
  dapr uninstall >/dev/null 2>&1 || true
  dapr init --slim --runtime-version "$dapr_version"
fi

echo "==> Ready: ./scripts/run.sh runs the system, ./scripts/test.sh every test, azd up deploys."
