# af-conn developer entry points. `make run` and `make test` are the two commands a newcomer
# needs (see README.md); both do their own set-up.

GO       ?= go
SRC      := src
BUILD    := $(CURDIR)/build
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
GOBUILD  := CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"
# Seconds each fuzz target runs in `make test` (make fuzz FUZZTIME=5m for a long run).
FUZZTIME ?= 8s
# Tools the tests and `make run` use; `make setup` installs what is missing (Debian).
DEB_PACKAGES := iproute2 nftables iptables ipset conntrack iputils-ping shellcheck
TOOLS := ip nft iptables ipset conntrack ping shellcheck

export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build test unit fuzz check setup cross run clean bench-failover

all: build

build:
	cd $(SRC) && $(GOBUILD) -o $(BUILD)/connmgr ./cmd/connmgr

# setup installs the Debian packages the tests need when a tool is missing (as root), or says
# what to install.
setup:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "setup: installing $(DEB_PACKAGES) (missing:$$missing)"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES); \
		else \
			echo "setup: missing tools:$$missing; install: apt-get install $(DEB_PACKAGES)" >&2; exit 1; \
		fi; \
	fi
	@cd $(SRC) && $(GO) mod download

# check: formatting and vet, before the tests.
check:
	@cd $(SRC) && out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt: not formatted:"; echo "$$out"; exit 1; fi
	cd $(SRC) && $(GO) vet ./...

# test runs everything: unit tests, the root-only network-namespace tests (they skip with a
# note when not root, and fail under CI=true), and a short run of every fuzz target.
test: setup check build
	@[ "$$(id -u)" = 0 ] || echo "NOTE: not root: the network-namespace tests will be skipped (run as root for the full suite)"
	cd $(SRC) && CONNMGR_BIN=$(BUILD)/connmgr $(GO) test -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory fuzz

# fuzz runs each FuzzXxx target for FUZZTIME.
fuzz:
	@cd $(SRC) && targets=$$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); \
	for f in $$targets; do \
		dir=./$$(dirname $$f); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz: $$dir $$t ($(FUZZTIME))"; \
			$(GO) test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) $$dir || exit 1; \
		done; \
	done

# cross builds the static binary for every router architecture and prints the sizes.
CROSS := linux/mipsle/softfloat linux/mips/softfloat linux/arm/7 linux/arm64/- linux/amd64/-
cross:
	@mkdir -p $(BUILD)/cross
	@cd $(SRC) && for t in $(CROSS); do \
		os=$${t%%/*}; rest=$${t#*/}; arch=$${rest%%/*}; variant=$${rest#*/}; \
		out=$(BUILD)/cross/connmgr-$$arch; env=""; \
		case $$arch in mips|mipsle) env="GOMIPS=$$variant"; out=$$out-$$variant;; arm) env="GOARM=$$variant"; out=$$out-v$$variant;; esac; \
		env GOOS=$$os GOARCH=$$arch $$env CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $$out ./cmd/connmgr || exit 1; \
		printf '%-28s %9d bytes\n' "$$(basename $$out)" "$$(stat -c %s $$out)"; \
	done

# run builds connmgr and runs it inside a throwaway namespace world (never on the host's own
# network), with the embedded default configuration. Ctrl-C removes everything.
run: setup build
	@[ "$$(id -u)" = 0 ] || { echo "make run needs root to create network namespaces (sudo make run)" >&2; exit 1; }
	cd $(SRC) && $(GOBUILD) -o $(BUILD)/runworld ./internal/testbed/runworld
	$(BUILD)/runworld -connmgr $(BUILD)/connmgr

clean:
	rm -rf $(BUILD)

# bench-failover runs each failover scenario RUNS times in a testbed world with the real binary
# and prints median and p95 of the BENCHMARKS.md figures (root; about RUNS x 15 s + loss periods).
RUNS ?= 20
LOSS_PERIOD ?= 60s
bench-failover: build
	cd $(SRC) && CONNMGR_BIN=$(BUILD)/connmgr AFC_BENCH_FAILOVER=$(RUNS) AFC_BENCH_LOSS_PERIOD=$(LOSS_PERIOD) \
		$(GO) test -count=1 -timeout 60m -run '^TestFailoverBenchmark$$' -v ./internal/failover/
