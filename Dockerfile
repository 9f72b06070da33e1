# The detector image: `detector` as the entrypoint, run as an unprivileged user, only runtime dependencies.
# BASE must provide python3 (3.11+) with venv; the default is the official slim image. Where no registry is
# reachable, scripts/image.sh builds a Debian base with mmdebstrap and passes it here.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/detector
WORKDIR /src
COPY pyproject.toml README.md ./
COPY detector ./detector
# A regular (not editable) install: the runtime stage needs /opt/detector only, never /src.
RUN /opt/detector/bin/pip install --quiet . \
 && /opt/detector/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/detector/bin/python -m compileall -q /opt/detector

FROM ${BASE}
ARG UID=10001
# No adduser in minimal bases: the account is two lines. No home to write to: the root filesystem may be
# read-only, so anything written goes to /tmp (an emptyDir in Kubernetes).
RUN echo "detector:x:${UID}:${UID}:detector:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "detector:x:${UID}:" >> /etc/group
COPY --from=build /opt/detector /opt/detector
ENV PATH=/opt/detector/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER ${UID}:${UID}
WORKDIR /tmp
# 9108: the request worker's metrics, 9109: the send worker's, 8080: `detector serve`.
EXPOSE 8080 9108 9109
ENTRYPOINT ["detector"]
CMD ["--help"]
