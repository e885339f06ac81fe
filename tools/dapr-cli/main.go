// Command dapr is the Dapr CLI, built from the pinned github.com/dapr/cli module, for
// `dapr run -f .` with the repository's dapr.yaml. It does what the CLI's own main
// package does: run the root command with the CLI version and the runtime API version.
package main

import "github.com/dapr/cli/cmd"

// dapr_cli_path in scripts/lib.sh sets version to the pinned one with
// -ldflags "-X main.version=..."; "edge" is what the CLI's Makefile uses for other builds.
var (
	version    = "edge"
	apiVersion = "1.0"
)

func main() {
	cmd.Execute(version, apiVersion)
}
