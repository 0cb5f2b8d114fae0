package wire

import _ "embed"

//go:generate go run ./dictgen -id 1 -out dict/v1.zdict

// DictID names a zstd dictionary embedded in this binary; frames carry it.
// Node and aggregator are the same binary, so a dictionary ships with it.
// Rule: an id, once released, keeps its bytes forever (the store holds
// frames compressed with it); a new dictionary gets the next id, and
// aggregators are upgraded before nodes start sending it.
type DictID byte

// NewestDict is the dictionary a sealer uses by default.
const NewestDict DictID = 1

//go:embed dict/v1.zdict
var dictV1 []byte

// dictionaries maps every id this binary can decode to its zstd dictionary.
var dictionaries = map[DictID][]byte{1: dictV1}
