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
ENV NODE_ENV=production \
    RELAY_CONFIG=/etc/smtp-graph-relay/relay.yaml
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json relay.example.yaml config.schema.json ./
RUN mkdir -p /var/spool/smtp-graph-relay && chown node:node /var/spool/smtp-graph-relay
USER node
VOLUME ["/var/spool/smtp-graph-relay"]
EXPOSE 2525
# --init-free signal handling: node runs as PID 1 only through tini (docker run --init) or this exec form;
# the relay handles SIGTERM itself and drains within 10 s (use docker stop -t 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/main.js"]
CMD ["serve"]
