# af-conn developer entry points. `make run` and `make test` are the two commands a newcomer
# needs (see README.md); both do their own set-up.

GO       ?= go
SRC      := src
BUILD    := $(CURDIR)/build
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
GOBUILD  := CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"
# How long each fuzz target runs in `make test`: a count of executions, not a duration. Go 1.26's
# fuzz coordinator can fail a target with a bare "context deadline exceeded" when a duration
# runs out while a worker is busy (go.dev/issue/75804, fixed in Go 1.27; it failed CI once here,
# on a loaded machine, with no crasher). A count has no deadline to race. 50000 executions take
# 1-15 s per target here; a longer run: make fuzz FUZZTIME=5000000x (or a duration, racy on 1.26).
FUZZTIME ?= 50000x
# Tools the tests and `make run` use; `make setup` installs what is missing (Debian).
DEB_PACKAGES := iproute2 nftables iptables ipset conntrack iputils-ping shellcheck busybox radvd
TOOLS := ip nft iptables ipset conntrack ping shellcheck busybox radvd

export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build test unit fuzz check setup cross run clean bench-failover bench-mwan3 bench-standby bench-idle bench-dns bench-dns-hold bench check-opkg check-apk

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

# fuzz runs each FuzzXxx target for FUZZTIME (executions, or a duration).
fuzz:
	@cd $(SRC) && targets=$$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); \
	for f in $$targets; do \
		dir=./$$(dirname $$f); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz: $$dir $$t ($(FUZZTIME))"; \
			$(GO) test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) $$dir || exit 1; \
		done; \
	done

# ---- OpenWrt packages: make cross, make ipk, make size (packaging) -----------------------
# See README "Install on OpenWrt / build with the SDK".
#   make cross [ARCH="a b"]    static connmgr per OpenWrt architecture: build/<arch>/connmgr
#   make ipk [ARCH="a b"]      build/af-conn_<version>_<arch>.ipk, without the OpenWrt SDK
#   make apk [ARCH="a b"]      build/<arch>/af-conn-<version>.apk (APK v3, OpenWrt 25.12)
#   make size [ARCH="a b"]     the binary and package size per architecture (BENCHMARKS.md)
# ARCH defaults to all of IPK_ARCHS. Options: IPK_VERSION, the package's and the binary's
# version (default: the feed's PKG_VERSION-PKG_RELEASE), APK_VERSION, the .apk's version
# (default: PKG_VERSION-rPKG_RELEASE, apk's form), FIREWALL=fw4|fw3|none (default fw4: Depends,
# and the build tags of the feed's GO_PKG_TAGS: the iptables backend only for fw3; its
# GO_PKG_GCFLAGS too),
# WHITELIST=prod|dev (default prod), SOURCE_DATE_EPOCH (default: the last commit's time).
IPK_ARCHS := mipsel_24kc mips_24kc arm_cortex-a7_neon-vfpv4 aarch64_cortex-a53 x86_64
ARCH ?= $(IPK_ARCHS)
FIREWALL ?= fw4
WHITELIST ?= prod
IPK_FEED := openwrt/af-conn
MKIPK := $(BUILD)/mkipk
# Expanded in recipes only, once $(MKIPK) exists.
IPK_VERSION ?= $(shell $(MKIPK) -feed $(IPK_FEED) -print-version)
APK_VERSION ?= $(shell $(MKIPK) -feed $(IPK_FEED) -format apk -print-version)
IPK_EPOCH = $(or $(SOURCE_DATE_EPOCH),$(shell git log -1 --format=%ct 2>/dev/null),0)

.PHONY: ipk apk size
$(if $(filter-out prod dev,$(WHITELIST)),$(error WHITELIST=$(WHITELIST): want prod or dev))

$(MKIPK): FORCE_MKIPK
	cd $(SRC) && $(GO) build -o $(MKIPK) ./cmd/mkipk

.PHONY: FORCE_MKIPK
FORCE_MKIPK:

cross: $(MKIPK)
	@set -e; tags=$$($(MKIPK) -feed $(IPK_FEED) -firewall $(FIREWALL) -print-tags); \
	gcflags=$$($(MKIPK) -feed $(IPK_FEED) -print-gcflags); \
	for arch in $(ARCH); do \
		out=$(BUILD)/$$arch/connmgr; \
		goenv=$$($(MKIPK) -goenv $$arch); \
		env $$goenv $(GO) -C $(SRC) build -trimpath -buildvcs=false -tags "$$tags" -gcflags "$$gcflags" \
			-ldflags "-s -w -X main.version=$(IPK_VERSION)" -o $$out ./cmd/connmgr; \
		printf '%-32s %9d bytes\n' "$$arch/connmgr" "$$(stat -c %s $$out)"; \
	done

ipk: cross
	@set -e; for arch in $(ARCH); do \
		SOURCE_DATE_EPOCH=$(IPK_EPOCH) $(MKIPK) -feed $(IPK_FEED) -arch $$arch -bin $(BUILD)/$$arch/connmgr \
			-out $(BUILD) -version $(IPK_VERSION) -firewall $(FIREWALL) \
			$(if $(filter dev,$(WHITELIST)),-config CONFIG_AF_CONN_WHITELIST_DEV=y); \
	done

# The .apk goes to build/<arch>/ under OpenWrt's name for it, af-conn-<version>.apk, which
# carries no architecture.
apk: cross
	@set -e; for arch in $(ARCH); do \
		SOURCE_DATE_EPOCH=$(IPK_EPOCH) $(MKIPK) -feed $(IPK_FEED) -format apk -arch $$arch -bin $(BUILD)/$$arch/connmgr \
			-out $(BUILD)/$$arch -version $(APK_VERSION) -firewall $(FIREWALL) \
			$(if $(filter dev,$(WHITELIST)),-config CONFIG_AF_CONN_WHITELIST_DEV=y); \
	done

# The budget: the mipsel_24kc package fits in IPK_BUDGET bytes (1.5 MiB, issue 12); make size
# fails past it.
IPK_BUDGET := 1572864

# check-opkg installs each package with the stock opkg into an offline root and removes it again
# (TestStockOpkg in src/cmd/mkipk). AFCONN_STOCK_OPKG names the stock opkg and a skeleton root,
# put together by hand (README, "Install on OpenWrt"); nothing here builds them.
check-opkg: ipk
	@[ -n "$$AFCONN_STOCK_OPKG" ] || { echo "check-opkg: set AFCONN_STOCK_OPKG (see README)"; exit 2; }
	cd $(SRC) && AFCONN_IPK_DIR=$(BUILD) $(GO) test -count=1 -run '^TestStockOpkg$$' -v ./cmd/mkipk/

# check-apk installs, upgrades and removes each .apk with the stock apk-tools 3 in an offline
# root, and compares the package with what the stock `apk mkpkg` writes for the same files
# (TestStockApk in src/cmd/mkipk). AFCONN_STOCK_APK names the stock apk, built by hand from
# alpinelinux/apk-tools, next to a root/ with OpenWrt's base-files scripts (README, "Install on
# OpenWrt"); nothing here builds them.
check-apk: apk
	@[ -n "$$AFCONN_STOCK_APK" ] || { echo "check-apk: set AFCONN_STOCK_APK (see README)"; exit 2; }
	cd $(SRC) && AFCONN_IPK_DIR=$(BUILD) $(GO) test -count=1 -timeout 20m -run '^TestStockApk$$' -v ./cmd/mkipk/

size: ipk apk
	@printf '| architecture | connmgr (stripped) | .ipk | .apk |\n|---|---|---|---|\n'
	@for arch in $(ARCH); do \
		printf '| %s | %s | %s | %s |\n' $$arch $$(stat -c %s $(BUILD)/$$arch/connmgr) \
			$$(stat -c %s $(BUILD)/af-conn_$(IPK_VERSION)_$$arch.ipk) \
			$$(stat -c %s $(BUILD)/$$arch/af-conn-$(APK_VERSION).apk); \
	done
	@for pkg in $(BUILD)/af-conn_$(IPK_VERSION)_mipsel_24kc.ipk $(BUILD)/mipsel_24kc/af-conn-$(APK_VERSION).apk; do \
		if [ -f $$pkg ] && [ $$(stat -c %s $$pkg) -gt $(IPK_BUDGET) ]; then \
			echo "size: $$pkg is over the budget of $(IPK_BUDGET) bytes" >&2; exit 1; \
		fi; \
	done
# ---- end of OpenWrt packages -------------------------------------------------------------

# run builds connmgr and runs it inside a throwaway namespace world (never on the host's own
# network), with the embedded default configuration. Ctrl-C removes everything.
run: setup build
	@[ "$$(id -u)" = 0 ] || { echo "make run needs root to create network namespaces (sudo make run)" >&2; exit 1; }
	cd $(SRC) && $(GOBUILD) -o $(BUILD)/runworld ./internal/testbed/runworld
	$(BUILD)/runworld -connmgr $(BUILD)/connmgr

clean:
	rm -rf $(BUILD)

# bench-failover runs each failover scenario RUNS times in a testbed world with the real binary
# and prints median and p95 of the BENCHMARKS.md figures (root; about RUNS x 40 s + loss periods
# + 3 x BYTES_WINDOW: silent failure idle and with a keepalive flowing, bytes per hour per type),
# on the default configuration (BENCH_CONFIG=-d: firewall off, failover alone); then the same
# scenarios in a dual-stack world, IPv6's figures next to IPv4's, and an IPv6-only wwan0 left as
# the last uplink (about RUNS x 20 s more); then LOAD_RUNS rounds of the daemon's CPU and peak RSS
# at 50,000 packets/s, with the default configuration and with -d (about LOAD_RUNS x 80 s).
# CARRIER_ONLY=1 runs the carrier-loss scenario alone (many runs in minutes, for a quiet machine).
# RUNS=0 or LOAD_RUNS=0 skips a part; BENCH_FAILOVER_RUN=^TestFailoverBenchmarkDualStack$$ runs the
# dual-stack part alone.
RUNS ?= 20
LOAD_RUNS ?= 5
LOSS_PERIOD ?= 60s
CARRIER_ONLY ?=
BENCH_CONFIG ?= default
BYTES_WINDOW ?= 2m
BENCH_FAILOVER_RUN ?= ^TestFailover(Load)?Benchmark(DualStack)?$$
bench-failover: build
	cd $(SRC) && CONNMGR_BIN=$(BUILD)/connmgr AFCONN_BENCH_FAILOVER=$(RUNS) AFCONN_BENCH_LOSS_PERIOD=$(LOSS_PERIOD) AFCONN_BENCH_CONFIG=$(BENCH_CONFIG) \
		AFCONN_BENCH_BYTES_WINDOW=$(BYTES_WINDOW) AFCONN_BENCH_CARRIER_ONLY=$(CARRIER_ONLY) \
		AFCONN_BENCH_LOAD=$(LOAD_RUNS) $(GO) test -count=1 -timeout 90m -run '$(BENCH_FAILOVER_RUN)' -v ./internal/failover/

# bench-mwan3 measures stock mwan3track next to connmgr's figures (BENCHMARKS.md, issue 13): RUNS
# black holes per profile (shipped defaults, tuned fast) and the tracked uplink's bytes per hour
# over BYTES_WINDOW, in a testbed world running stock netifd (wan by DHCP from a busybox udhcpd
# on the uplink's router), ubusd and mwan3track from the root file system MWAN3_ROOT (built by
# hand from the stock sources, never committed; BENCHMARKS.md says what it holds), then the bytes
# of one DHCP lease renewal. Root; about RUNS x 2 minutes + 2 x BYTES_WINDOW + 1 minute.
MWAN3_ROOT ?=
bench-mwan3: build
	@[ -n "$(MWAN3_ROOT)" ] || { echo "bench-mwan3: set MWAN3_ROOT to the stock root file system (BENCHMARKS.md)"; exit 2; }
	cd $(SRC) && CONNMGR_BIN=$(BUILD)/connmgr AFCONN_STOCK_MWAN3=$(MWAN3_ROOT) AFCONN_BENCH_FAILOVER=$(RUNS) \
		AFCONN_BENCH_BYTES_WINDOW=$(BYTES_WINDOW) $(GO) test -count=1 -timeout 90m -run '^(TestMwan3trackBenchmark|TestMwan3DHCPRenewalBytes)$$' -v ./internal/failover/

# bench-standby counts what a cellular standby costs on the wire (BENCHMARKS.md, issue 13): every
# byte on wwan0, both ways, while Ethernet is in use and healthy and the hub idle, for each
# STANDBY_BUDGETS item (probe_budget_standby:rounds) over that many budgeted intervals, next to the
# budget pro rata (root; about 11 minutes per item of the default list; the default budget,
# STANDBY_BUDGETS=1M/month:2, takes 83 minutes: a round every 41 minutes).
STANDBY_BUDGETS ?= 20M/month:5,40M/month:10

bench-standby: build
	cd $(SRC) && CONNMGR_BIN=$(BUILD)/connmgr AFCONN_BENCH_STANDBY=$(STANDBY_BUDGETS) $(GO) test -count=1 -timeout 180m -run '^TestStandbyBytesBenchmark$$' -v ./internal/failover/

# bench-idle measures the daemon's CPU share of one core while idle (all uplinks healthy, no
# traffic but its own probes) over IDLE_FOR, with -d and with the default configuration, each in a
# testbed world with the real binary (root; about 2 x IDLE_FOR + 40 s).
IDLE_FOR ?= 60s

bench-idle: build
	cd $(SRC) && CONNMGR_BIN=$(BUILD)/connmgr AFCONN_BENCH_IDLE=$(IDLE_FOR) $(GO) test -count=1 -timeout 20m -run '^TestIdleCPUBenchmark$$' -v ./internal/failover/

# bench-dns runs the firewall and DNS benchmarks (BENCHMARKS.md "Firewall and DNS"): the real
# binary per firewall backend, DNS_N fresh resolutions per mode, then the trust benchmark (rogue
# resolvers, the hub's lookups under a LAN query flood) (root; about 10 minutes).
DNS_N ?= 1000
DNS_BACKENDS ?= nftables,iptables
bench-dns: build
	cd $(SRC) && CONNMGR_BIN=$(BUILD)/connmgr AFCONN_BENCH=1 AFCONN_BENCH_N=$(DNS_N) AFCONN_BENCH_BACKENDS=$(DNS_BACKENDS) \
		$(GO) test -count=1 -timeout 30m -run '^(TestBenchDNSFirewall|TestBenchDNSTrust)$$' -v ./internal/daemon/

# bench-dns-hold times held DNS replies idle, during `connmgr fw restore` with
# DNS_HOLD_ADDRS addresses, and DNS coming back while connmgr is SIGSTOPped (BENCHMARKS.md
# "DNS hold bound"; root; a few minutes per backend).
DNS_HOLD_ADDRS ?= 65536
bench-dns-hold: build
	cd $(SRC) && CONNMGR_BIN=$(BUILD)/connmgr AFCONN_BENCH=1 AFCONN_BENCH_ADDRS=$(DNS_HOLD_ADDRS) AFCONN_BENCH_BACKENDS=$(DNS_BACKENDS) \
		$(GO) test -count=1 -timeout 30m -run '^TestBenchDNSHold$$' -v ./internal/daemon/

# bench runs every benchmark of BENCHMARKS.md that prints figures (root; about 20 minutes).
bench: bench-failover bench-idle bench-dns bench-dns-hold size
