package aggregator

// knownPlaces locates common region names on the map (the config's regions
// section adds to and overrides these). Rough city coordinates suffice for
// a dot on a world map.
var knownPlaces = map[string]Coord{
	"us-east":      {38.9, -77.0},
	"us-west":      {37.4, -122.1},
	"us-central":   {41.9, -87.6},
	"ca-central":   {45.5, -73.6},
	"sa-east":      {-23.5, -46.6},
	"eu-west":      {53.3, -6.3},
	"eu-central":   {50.1, 8.7},
	"eu-north":     {59.3, 18.1},
	"eu-south":     {45.5, 9.2},
	"uk-south":     {51.5, -0.1},
	"me-central":   {25.2, 55.3},
	"af-south":     {-33.9, 18.4},
	"ap-south":     {19.1, 72.9},
	"ap-southeast": {1.35, 103.8},
	"ap-northeast": {35.7, 139.7},
	"ap-east":      {22.3, 114.2},
	"au-southeast": {-33.9, 151.2},
}

func placesFor(cfg Config) map[string]Coord {
	out := make(map[string]Coord, len(knownPlaces)+len(cfg.Regions))
	for k, v := range knownPlaces {
		out[k] = v
	}
	for k, v := range cfg.Regions {
		out[k] = v
	}
	return out
}
