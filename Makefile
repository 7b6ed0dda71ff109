# flowplace: traffic- and latency-aware placement for Karmada.
SHELL := /bin/bash
GO ?= go
GOFLAGS_TEST ?= -count=1 -timeout 20m

.PHONY: all build test vet fmt-check generate generate-deps bench-probe bench-agent observe lab clean

all: build

build:
	$(GO) build -o bin/ ./cmd/...

# The tests that need the kernel run as root (CI sets FLOWPLACE_REQUIRE_KERNEL=1
# so that they fail instead of skipping). Packages run one at a time: kernel
# and namespace tests share one machine's CPUs and their timing matters.
# test-deps first installs what the tests use and builds the control plane.
test: fmt-check vet test-deps
	$(GO) test $(GOFLAGS_TEST) -p 1 ./...

# What the suite needs beyond Go: iproute2 (namespace topologies), iptables
# and conntrack (kube-proxy's translation), containerd, runc, the CNI plugins
# and busybox-static (kubelet nodes and their test pods), Debian's Chromium
# (the lab dashboard's headless test), ca-certificates (the CA bundle of
# the released images), installed from Debian's packages when
# missing and this is root with apt; then kube-apiserver, kube-proxy, etcd,
# kubelet, kube-controller-manager, kube-scheduler and kubectl from Go modules
# (about 15 min cold on 2 cores, cached, instant warm), built here rather than
# inside a test's timeout.
.PHONY: test-deps
test-deps:
	@need=(); \
	command -v ip >/dev/null || need+=(iproute2); \
	command -v iptables >/dev/null || need+=(iptables); \
	command -v conntrack >/dev/null || need+=(conntrack); \
	command -v containerd >/dev/null || need+=(containerd); \
	command -v runc >/dev/null || need+=(runc); \
	[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins); \
	[ -x /bin/busybox ] || need+=(busybox-static); \
	command -v chromium >/dev/null || need+=(chromium); \
	command -v cbc >/dev/null || need+=(coinor-cbc); \
	[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates); \
	if (( $${#need[@]} )); then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing $${need[*]} from Debian's packages"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$${need[@]}"; \
		else \
			echo "missing $${need[*]} (not root with apt-get): the tests that need them will skip or fail"; \
		fi; \
	fi
	bash hack/build-controlplane.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# The suite RUNS times (default 5) on a clean clone of HEAD, CI's way, with
# pass/fail per package per run and the slowest packages; no retries.
# PKGS limits it, e.g. make soak RUNS=20 PKGS="./test/e2e/ ./world/wan/".
.PHONY: soak
soak:
	RUNS="$(RUNS)" PKGS="$(PKGS)" bash hack/soak.sh

# Regenerate vmlinux.h and the bpf2go objects. Installs the C toolchain from
# Debian's packages when it is missing; CI never needs it (outputs are committed).
generate: generate-deps
	$(GO) generate ./...

generate-deps:
	@if ! command -v clang >/dev/null || ! command -v bpftool >/dev/null || [ ! -f /usr/include/bpf/bpf_helpers.h ]; then \
		echo "installing clang, llvm, libbpf-dev, bpftool"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends clang llvm libbpf-dev bpftool; \
	fi

# Kernel BPF run-time per program call and connect rate with vs without the
# programs (interleaved). Needs root.
bench-probe:
	$(GO) run ./test/bench/probe

# Connect-time routing: the datapath's BPF time per connection with 1,000
# services x 64 endpoints programmed against the same run's unprobed
# connection cycle, and failover over many backend deaths, by passive
# detection and after an EndpointSlice update (a real API server). Root.
.PHONY: bench-routing
bench-routing:
	$(GO) run ./test/bench/routing

observe:
	$(GO) run ./cmd/flowplace observe

# The whole loop on this machine: clusters, demo app, agents, estimator,
# plugins; before/after report. Needs root.
lab:
	$(GO) run ./cmd/flowplace lab

clean:
	rm -rf bin/

# kube-apiserver, kube-proxy and etcd for world/controlplane, built from the
# tools module into ${FLOWPLACE_CACHE:-~/.cache/flowplace}/controlplane/<key>/
# (a no-op when that key is cached). Tests build them on first use anyway;
# this target only lets CI or a developer pay the ~9 min cold build up front.
.PHONY: controlplane-bin
controlplane-bin:
	bash hack/build-controlplane.sh

# The lab's container images (internal/images): pause, busybox (Debian's
# busybox-static), flowplace-agent, flowplace-estimator and flowplace, built
# from this tree (nothing pulled) as docker-archives for `ctr images import`
# into ${FLOWPLACE_CACHE:-~/.cache/flowplace}/images/; prints name, ref and
# tarball per line. Cached on their inputs: a no-op in ~20 ms when warm.
.PHONY: images lab-images
# Released images, built from scratch without a container daemon
# (internal/images): per component bin/images/<component>.tar (docker load,
# host arch) and the OCI layout bin/images/<component>/ (linux/amd64 and
# arm64 index); prints `image <component> <digest>` (the index digest) per
# image. IMAGES names components; KARMADA_SOURCE=/path/to/karmada adds
# flowplace-karmada-scheduler (never in CI); VERSION overrides
# `git describe`; SOURCE_DATE_EPOCH overrides the commit time.
images:
	@$(GO) run ./hack/images -out bin/images $(if $(KARMADA_SOURCE),-karmada-source '$(KARMADA_SOURCE)') $(if $(VERSION),-version '$(VERSION)') $(IMAGES)

# The lab's images (pause, busybox, agent, estimator, CLI), cached on their
# inputs; prints name, ref and docker-archive per image.
lab-images:
	$(GO) run ./hack/images -lab

# Agent CPU and memory under 2,000 new connections/s to 50 destinations for
# 60 s, OTLP and Prometheus exporters on. Needs root.
bench-agent:
	$(GO) run ./test/bench/agent

# Placement quality: DeathStarBench's social network over five AWS regions
# with finite capacity, Karmada's default ordering vs flowplace's
# LatencyBudget + TrafficLocality, plus an exhaustive optimum on a reduced
# instance; then 300 generated applications in three arrival orders against
# the exhaustive optimum or CBC's (installed from Debian when missing), and
# the plan at 10,000 workloads on 100 clusters. Pure computation over the
# root-module plugin logic, one core, about 14 minutes.
.PHONY: bench-placement bench-plugin
bench-placement:
	@command -v cbc >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coinor-cbc; }
	$(GO) run ./test/bench/placement

# Score and Filter cost per call at 100 clusters and 50 peers.
bench-plugin:
	$(GO) run ./test/bench/plugin

# OTLP ingest of the estimator: 1,000 synthetic agents x 500 series replayed
# through the real gRPC receiver on loopback; sustained points/s and heap
# bytes per active series, against a proto.Unmarshal baseline of the same
# requests. The last line is the result.
.PHONY: bench-estimator
bench-estimator:
	$(GO) run ./test/bench/estimator

# What a fleet with real nodes costs here: machine facts; binaries and images
# ready (warm: cached); fleet.Start of one cluster with two nodes until Ready,
# split as the fleet logs it (3 starts); VmRSS of every kubelet, containerd,
# kube-proxy and of the cluster's API server, controller manager and
# scheduler (etcd shared), with no pods and with PODS busybox pods per node
# (shim + containers per pod). Numbers, no thresholds. Needs root.
.PHONY: bench-fleet
bench-fleet:
	$(GO) run ./test/bench/fleet -pods $(or $(PODS),10)
