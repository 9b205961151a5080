# syntax=docker/dockerfile:1
# Multi-stage: build with dev dependencies, run with production dependencies only, as a non-root user.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
# tini as PID 1 forwards SIGTERM to node and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    RELAY_CONFIG=/etc/smtp-graph-relay/relay.yaml \
    RELAY_DEMO_DIR=/var/lib/smtp-graph-relay-demo
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json relay.example.yaml config.schema.json LICENSE CHANGELOG.md ./
# The spool volume, and the demo directory (`docker run ... demo`): /app belongs to root, so demo
# mode's default ./.demo would fail with EACCES for the node user.
RUN mkdir -p /var/spool/smtp-graph-relay /var/lib/smtp-graph-relay-demo \
 && chown node:node /var/spool/smtp-graph-relay /var/lib/smtp-graph-relay-demo
USER node
VOLUME ["/var/spool/smtp-graph-relay"]
EXPOSE 2525
# /healthz on the admin listener that RELAY_CONFIG's admin.listen names (127.0.0.1:9925 in demo
# mode, when that file does not exist).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "/app/dist/main.js", "health"]
# The relay drains for up to 10 s on SIGTERM; give it time with `docker stop -t 30`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/main.js"]
CMD ["serve"]
