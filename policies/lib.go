package policies

import (
	"embed"
	"io/fs"
	"path"
	"strings"
	"sync"
)

//go:embed lib/*.lua
var libFS embed.FS

// Library returns the helper modules a script may `require`, by name. The
// map is shared: do not modify it.
var Library = sync.OnceValue(func() map[string]string {
	mods := map[string]string{}
	files, _ := fs.Glob(libFS, "lib/*.lua")
	for _, f := range files {
		b, err := libFS.ReadFile(f)
		if err != nil {
			continue
		}
		mods[strings.TrimSuffix(path.Base(f), ".lua")] = string(b)
	}
	return mods
})
