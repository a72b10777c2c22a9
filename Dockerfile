# The Partune server and Node worker image (docker-compose.yml runs both from it).
FROM node:20-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends dataset-fashion-mnist && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
COPY tsconfig.json tsconfig.build.json ./
COPY engine engine
COPY storage storage
COPY schema schema
COPY server server
COPY worker worker
COPY cli cli
COPY bench bench
COPY tests/platform-helpers.ts tests/platform-helpers.ts
RUN npm ci --no-audit --no-fund && npm run build
ENTRYPOINT ["node", "dist/cli/main.js"]
