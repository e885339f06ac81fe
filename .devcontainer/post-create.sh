#!/usr/bin/env bash
# Runs once when the dev container is created: the pinned Rust toolchain, and the Dapr
# runtime of the version tools/daprd pins, slim (no Docker: the scripts start daprd
# themselves), so scripts/run.sh and scripts/test.sh use it instead of building one.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ROOT"

echo "==> Rust toolchain of rust-toolchain.toml"
rustup show active-toolchain || rustup toolchain install

echo "==> Dapr CLI $(dapr_cli_version) (the version tools/dapr-cli/go.mod pins), runtime $DAPR_VERSION (slim)"
if [ "$("$HOME/.dapr/bin/daprd" --version 2>/dev/null)" != "$DAPR_VERSION" ]; then
  dapr uninstall >/dev/null 2>&1 || true
  dapr init --slim --runtime-version "$DAPR_VERSION"
fi

echo "==> Node.js $(node --version) for the npm packages of tools/"
require_node_for tools/markdownlint

echo "==> Ready: ./scripts/run.sh runs the system, ./scripts/test.sh every test, azd up deploys."
