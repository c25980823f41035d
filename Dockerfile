# syntax=docker/dockerfile:1
# The Sternway worker image: `sternway worker` on a pinned Python, as an unprivileged user, with
# the runtime package only (no test extras). docker-compose.yml runs N of these; any Temporal
# cluster works, configured through Temporal's own environment variables (TEMPORAL_ADDRESS,
# TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*). See docs/operations.md.
#
#   docker build -t sternway-worker:0.1.0 .
#   docker run --rm -e TEMPORAL_ADDRESS=temporal.example.com:7233 sternway-worker:0.1.0
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Jobs run shell commands: never as root. The home and working directory is the only place
# the worker may write; data/ is where docker-compose.yml mounts the volume all workers share
# (a new volume takes this folder's owner).
RUN groupadd --system --gid 10001 sternway \
 && useradd --system --uid 10001 --gid sternway --create-home --home-dir /var/lib/sternway \
        --shell /usr/sbin/nologin sternway \
 && install -d -o sternway -g sternway /var/lib/sternway/data

# Sources first and one `pip install .`: the image holds the installed package, not the
# checkout, with every dependency at the version the tests ran with (constraints.txt, `make
# constraints`) and without the dev server (the `dev` extra). The shipped YAML runbooks are
# package data (sternway/actions); /opt/sternway/actions, the folder STERNWAY_ACTIONS_PATH names
# and docs/operations.md builds on, is a link to them.
WORKDIR /opt/sternway/src
COPY pyproject.toml README.md worker.py constraints.txt ./
COPY sternway ./sternway
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
COPY actions ./actions
RUN pip install --constraint constraints.txt . \
 && cd / && rm -rf /opt/sternway/src \
 && ln -s "$(python -c 'import sternway, pathlib; print(pathlib.Path(sternway.__file__).parent)')/actions" \
        /opt/sternway/actions

# Defaults the compose file repeats; `docker run -e` overrides any of them.
# STERNWAY_WAIT_FOR_SERVER: a worker started together with its server waits for it (seconds).
ENV STERNWAY_ACTIONS_PATH=/opt/sternway/actions \
    STERNWAY_METRICS_PORT=9464 \
    STERNWAY_WAIT_FOR_SERVER=120 \
    STERNWAY_GRACE=30s

WORKDIR /var/lib/sternway
USER sternway
EXPOSE 9464
ENTRYPOINT ["sternway", "worker"]
