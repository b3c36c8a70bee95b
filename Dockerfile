# syntax=docker/dockerfile:1
# The wattcap operator image:  docker build -t wattcap/operator:0.1.0 .
# Runs `wattcap operator` by default (the node agent, `wattcap agent`, is in it too:
# the [agent] extra); the Helm chart passes
# `operator --all-namespaces --metrics-port 8080`.

# The full image has the C compiler that builds wattcap.profile (Cython).
FROM python:3.11 AS build
WORKDIR /src
# .dockerignore lets through only pyproject.toml, setup.py, README.md, LICENSE and operator/.
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[agent]'

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 wattcap \
 && useradd --system --uid 10001 --gid wattcap --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin wattcap
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels 'wattcap[agent]' && rm -rf /wheels
# Numeric, so runAsNonRoot can verify it without looking up the name.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["wattcap"]
CMD ["operator"]
