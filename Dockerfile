# nodemesh: one image for the control plane and the node agent.
# The image runs the bundle of scripts/build.ts (plain JavaScript in dist/), not
# the TypeScript sources: type stripping would cost every node ~17 MiB.

FROM node:24-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY proto ./proto
COPY scripts ./scripts
COPY core ./core
COPY controlplane ./controlplane
COPY agent ./agent
COPY daemon ./daemon
COPY cli ./cli
RUN node scripts/build.ts

FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# koffi is the one dependency left outside the bundle (a native addon per platform).
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:24-slim
# iptables-restore programs the node's capture rules (nat table).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY proto ./proto
COPY --from=build /src/dist ./dist
# Non-root by default, numeric so runAsNonRoot can verify it: the control plane
# runs as this user. The node DaemonSet overrides it with runAsUser: 0 because
# iptables needs NET_ADMIN/NET_RAW, and Kubernetes grants added capabilities to
# uid 0 only; it drops every other capability.
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/nodemesh.mjs"]
