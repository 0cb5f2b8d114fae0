package sdk

import "embed"

// Source is the SDK's own code, which `perigee wasm init` writes beside a
// new transform so that it builds outside this repository, offline. It and
// the name checks (names.go, which guests' config checks share) are all of
// the package a host-side build sees.
//
//go:embed sdk.go imports.go names.go
var Source embed.FS
