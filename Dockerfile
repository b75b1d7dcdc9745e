# nodemesh: one image for the control plane and the node agent.
# Node.js 24 runs the TypeScript sources directly (type stripping): nothing is
# compiled, the image holds the sources and the production node_modules.

FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
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
COPY core ./core
COPY controlplane ./controlplane
COPY agent ./agent
COPY daemon ./daemon
COPY cli ./cli
# Non-root by default, numeric so runAsNonRoot can verify it: the control plane
# runs as this user. The node DaemonSet overrides it with runAsUser: 0 because
# iptables needs NET_ADMIN/NET_RAW, and Kubernetes grants added capabilities to
# uid 0 only; it drops every other capability.
USER 65532:65532
ENTRYPOINT ["node", "/app/cli/nodemesh.ts"]
