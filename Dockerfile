# The Partune server and Node worker image (docker-compose.yml runs both from it).
# node:20-bookworm has the C toolchain the native BLAS addon builds with; OpenBLAS runs its products.
FROM node:20-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends dataset-fashion-mnist libopenblas0-openmp \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN npm ci --no-audit --no-fund
ENTRYPOINT ["node", "dist/cli/main.js"]
