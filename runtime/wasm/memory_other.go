//go:build !unix

package wasm

import "github.com/tetratelabs/wazero/experimental"

// memoryAllocator is wazero's own elsewhere.
var memoryAllocator experimental.MemoryAllocator
