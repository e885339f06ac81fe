// Command daprd is the Dapr sidecar, built from the pinned dapr module with the
// stable components plus the SQLite name resolver, so that every local run can
// keep its app ids to itself instead of sharing them over mDNS.
package main

import (
	"github.com/dapr/components-contrib/nameresolution/sqlite"
	"github.com/dapr/dapr/cmd/daprd/app"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
)

func main() {
	nrLoader.DefaultRegistry.RegisterComponent(sqlite.NewResolver, "sqlite")
	app.Run()
}
