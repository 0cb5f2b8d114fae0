# The README's two commands are `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

# Example Wasm transforms: every Go example, plus the WAT one when wabt's
# wat2wasm is installed.
GO_MODULES := addheader apikey denylist jwt redact rewrite

.PHONY: build run modules test vet bench clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/perigee ./cmd/perigee

# make run FLEET=1 starts a local fleet instead: an aggregator and four
# meshed nodes in two regions.
run: build modules
	./bin/perigee $(if $(FLEET),fleet,serve)

modules: build
	@mkdir -p modules/build
	@for m in $(GO_MODULES); do ./bin/perigee wasm build ./modules/$$m -o modules/build/$$m.wasm || exit 1; done
	@if command -v wat2wasm >/dev/null; then wat2wasm modules/wat/poweredby.wat -o modules/build/poweredby.wasm; \
	 else echo "modules: wat2wasm not found (apt-get install wabt): skipping the WAT example"; fi

# go mod tidy -diff fails when go.mod or go.sum has drifted from the imports.
vet:
	$(GO) mod tidy -diff
	$(GO) vet ./...

# go test runs every fuzz target's seed corpus (f.Add and testdata/fuzz) as
# ordinary tests, so the race run below covers the fuzz seeds too.
test: vet
	$(GO) test -race -timeout 12m ./...

# Benchmarks are not tests: each writes its figures to bench/results/.
# bench/edge needs Debian's caddy, nginx, wrk and nghttp2-client.
BENCH_ARGS ?=
bench: build modules
	$(GO) run ./bench/edge $(BENCH_ARGS)
	$(GO) run ./bench/wasm
	$(GO) run ./bench/policies
	$(GO) run ./bench/geo
	$(GO) run ./bench/mesh
	$(GO) run ./bench/telemetry

clean:
	rm -rf bin modules/build
