# nodemesh: one image for the control plane and the node agent.
# The image runs the bundle of scripts/build.ts (plain JavaScript in dist/), not
# the TypeScript sources: type stripping would cost every node ~17 MiB.
#
# BASE is any image with Node 24 at /usr/local/bin/node and npm beside it:
# node:24-slim by default; `node scripts/image-base.ts` makes one from Debian
# packages where that cannot be pulled (make image BASE=...).
ARG BASE=node:24-slim

FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# npm-ca: the CAs npm must trust beyond Node's own, e.g. those of a TLS-inspecting
# proxy to the registry (make image NPM_CA=<PEM file>); mounted for npm ci only,
# in no layer of the image.
RUN --mount=type=secret,id=npm-ca \
    if [ -f /run/secrets/npm-ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm-ca; fi; \
    npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY proto ./proto
COPY scripts/build.ts ./scripts/
COPY core ./core
COPY controlplane ./controlplane
COPY agent ./agent
COPY daemon ./daemon
COPY cli ./cli
RUN node scripts/build.ts

FROM ${BASE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# koffi is the one dependency left outside the bundle (a native addon per platform).
RUN --mount=type=secret,id=npm-ca \
    if [ -f /run/secrets/npm-ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm-ca; fi; \
    npm ci --omit=dev --no-audit --no-fund

FROM ${BASE}
# iptables-save/-restore program the capture rules, in the node's namespace and
# in pods'; ip (iproute2) the policy routing that brings deliveries' replies back
# to the proxy. A base that has both already (scripts/image-base.ts) is kept as is.
RUN if command -v iptables-restore && command -v iptables-save && command -v ip; then :; else \
      apt-get update \
   && apt-get install -y --no-install-recommends iptables iproute2 \
   && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /app
# Only koffi and its addon for this platform: the bundle carries every other
# dependency (the rest of node_modules would add ~110 MB).
COPY --from=deps /app/node_modules/koffi ./node_modules/koffi
COPY --from=deps /app/node_modules/@koromix ./node_modules/@koromix
COPY package.json ./
COPY proto ./proto
COPY --from=build /src/dist ./dist
# Non-root by default, numeric so runAsNonRoot can verify it: the control plane
# runs as this user. The node DaemonSet overrides it with runAsUser: 0 because
# iptables needs NET_ADMIN/NET_RAW, and Kubernetes grants added capabilities to
# uid 0 only; it drops every other capability.
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/nodemesh.mjs"]
