# kidecar: the sidecar image.
#
#   docker build -t kidecar:0.1.0 .
#   docker build -t kidecar:0.1.0-empty --build-arg KIDECAR_EMPTY=1 .   # SidecarSet hotUpgradeEmptyImage
#
# Runs as root, and kidecar drops every capability but KILL itself at start (before it
# forks anything: bounding, permitted, effective, inheritable and ambient sets, plus
# no_new_privs), as KIDECAR_KEEP_CAPABILITIES below says. That is what signalling a root
# game beside it (the seeds' nginx, shareProcessNamespace: true) needs, with no
# securityContext for kidecar at all: switching is a change of image. A pod
# securityContext can still lower it (runAsUser: the game's UID, or drop ALL); a refused
# signal says what the pod needs in the reply and the log (docs/deploy.md, "Signalling
# the game"). The install steps below are exercised in CI without a Docker engine by
# tools/docker-steps-check (tests/process/test_dockerfile_steps.py), which also checks the
# started kidecar's capabilities: keep RUN steps to what that tool understands (pip
# install, python -m compileall, groupadd/useradd, mkdir, chown, chmod).
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
# kidecar runs under -OO (the ENTRYPOINT): its processes load no docstrings and
# no asserts, 2.6 MiB less for the tree (issue 16, docs/footprint.md). Nothing is
# compiled at run time (PYTHONDONTWRITEBYTECODE), so the interpreter's library and
# the installed packages get their -OO caches here, or every start would compile them
# (test directories are skipped: some of their files do not compile, on purpose)
RUN python -OO -m compileall -q -j 0 -x '/(tests?|idle_test)/' /usr/local/lib/python3.11

WORKDIR /
RUN mkdir -p /var/lib/kidecar /opt/sidecar /opt/kidecar/files \
    && chmod 0700 /var/lib/kidecar

# state (results, journal, control socket): root's own, 0700 (root without
# CAP_DAC_OVERRIDE writes only where the owner bits let it); mount an emptyDir here to
# keep it across container restarts (an emptyDir is 0777: any UID can use it)
ENV KIDECAR_STATE_DIR=/var/lib/kidecar \
    KIDECAR_CONFIG=/opt/sidecar/config.yaml \
    KIDECAR_EMPTY=${KIDECAR_EMPTY}
# root, but only CAP_KILL (to signal a game of another UID); empty keeps none
ENV KIDECAR_KEEP_CAPABILITIES=KILL

WORKDIR /var/lib/kidecar
USER 0:0
EXPOSE 5000
# "kidecar run" with -OO: a console script cannot pass interpreter flags
ENTRYPOINT ["python", "-OO", "-m", "kidecar_supervisor", "run"]
