# One image for every Davit service; the service is chosen by the command (docker-compose.yml,
# deploy/base/*.yaml), e.g. `python -m davit_services.watcher`. There is deliberately no default command.
# Build with the release as its version, which deploy/base/kustomization.yaml tags the image with:
#   docker build --build-arg VERSION=0.1.0 -t davit:0.1.0 .
# The base image is pinned to a patch release on a Debian release; a rebuild picks up no other Python.
FROM python:3.11.7-slim-bookworm

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="Davit" \
      org.opencontainers.image.description="Backup, restore and clone for Kubernetes applications" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.7-slim-bookworm"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric UID, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd lookup.
RUN groupadd --system --gid 10001 davit \
 && useradd --system --uid 10001 --gid davit --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin davit

WORKDIR /src

# Dependencies get their own layer, rebuilt only when pyproject.toml changes, not on every code change.
# README.md* rather than README.md: the file is optional to the build (setuptools only warns when the
# `readme` named in pyproject.toml is missing), and a wildcard that matches nothing is not an error.
COPY pyproject.toml README.md* ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --requirement /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself (no dev extras), against the dependencies installed above.
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-deps --no-build-isolation . \
 && pip check \
 && rm -rf /src

WORKDIR /
USER 10001:10001

# No default service: ENTRYPOINT [] also clears the base image's CMD, so a container without a command
# fails at once instead of starting a Python prompt.
ENTRYPOINT []
