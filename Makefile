# The README's two commands are `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build run test vet fuzz-seeds bench clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/perigee ./cmd/perigee

run: build
	./bin/perigee serve

vet:
	$(GO) vet ./...

# go test runs every fuzz target's seed corpus (f.Add and testdata/fuzz) as
# ordinary tests, so the race run below covers the fuzz seeds too.
test: vet
	$(GO) test -race -timeout 12m ./...

bench: build
	$(GO) run ./bench/edge

clean:
	rm -rf bin modules/build
