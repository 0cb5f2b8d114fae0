package sdk

import "embed"

// Source is the SDK's own code, which `perigee wasm init` writes beside a
// new transform so that it builds outside this repository, offline. It is
// the only part of the package a host-side build sees.
//
//go:embed sdk.go imports.go
var Source embed.FS
