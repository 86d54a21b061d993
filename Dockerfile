# kidecar: the sidecar image.
#
#   docker build -t kidecar:0.1.0 .
#   docker build -t kidecar:0.1.0-empty --build-arg KIDECAR_EMPTY=1 .   # SidecarSet hotUpgradeEmptyImage
#
# Runs as the non-root user kidecar, UID/GID 65532, with no capability. Signalling the
# game's process (hot_update/file_sync loadPatchType: signal) needs shareProcessNamespace:
# true in the pod AND either the game's own UID (securityContext.runAsUser) or, beside a
# root game like the seeds' nginx, root with every capability dropped but KILL: the pod
# grants that, `kidecar inject` / `kidecar migrate` render it, and a refused signal says
# so in the reply and the log (docs/deploy.md, "Signalling the game"). The install steps below are exercised in CI without a Docker
# engine by tools/docker-steps-check (tests/process/test_dockerfile_steps.py): keep RUN steps
# to what that tool understands (pip install, groupadd/useradd, mkdir, chown, chmod).
FROM python:3.11-slim-bookworm

ARG KIDECAR_EMPTY=""
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml setup.cfg ./
COPY kidecar_supervisor ./kidecar_supervisor
COPY workers ./workers
# runtime dependencies only (no [test] extra); the source tree is not kept
RUN pip install --no-cache-dir . && rm -rf /build

WORKDIR /
RUN groupadd --gid 65532 kidecar \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin kidecar \
    && mkdir -p /var/lib/kidecar /opt/sidecar /opt/kidecar/files \
    && chown 65532:65532 /var/lib/kidecar

# state (results, journal, control socket): writable by the kidecar user; mount an
# emptyDir here to keep it across container restarts
ENV KIDECAR_STATE_DIR=/var/lib/kidecar \
    KIDECAR_CONFIG=/opt/sidecar/config.yaml \
    KIDECAR_EMPTY=${KIDECAR_EMPTY}

WORKDIR /var/lib/kidecar
USER 65532:65532
EXPOSE 5000
ENTRYPOINT ["kidecar", "run"]
