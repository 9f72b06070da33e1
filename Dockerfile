# The detector image: `detector` as the entrypoint, run as an unprivileged user, only runtime dependencies.
# BASE must provide python3 (3.11+) with venv; the default is the official slim image. Where no registry is
# reachable, scripts/image.sh builds a Debian base with mmdebstrap and passes it here.
#
# The build installs the project's wheel from dist/, which holds the compiled core (Rust): `make wheel` (or
# scripts/image.sh, which runs it) builds it with the host's cargo. It is an abi3 wheel for the host's glibc,
# so BASE must have the same glibc or a newer one (Debian bookworm's, 2.36, here).
#
# Targets: the last stage (the default) is the product. `--target eightbyeight-double` adds the test
# double of 8x8's API and its contract checker, for deploy/compose.yaml only.
ARG BASE=python:3.11-slim
ARG UID=10001

FROM ${BASE} AS build
LABEL org.sms-pumping-detector.image=1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/detector
COPY dist/ /wheels/
# A regular (not editable) install: later stages need /opt/detector only, never /wheels.
RUN /opt/detector/bin/pip install --quiet --find-links /wheels sms-pumping-detector

FROM build AS build-double
RUN /opt/detector/bin/pip install --quiet "openapi-core>=0.19" "jsonschema>=4.21"

FROM build AS build-runtime
RUN /opt/detector/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/detector/bin/python -m compileall -q /opt/detector

FROM ${BASE} AS user
LABEL org.sms-pumping-detector.image=1
ARG UID
# No adduser in minimal bases: the account is two lines. Its home is /tmp: the root filesystem may be
# read-only, so anything written goes to /tmp (an emptyDir in Kubernetes, a tmpfs in compose).
RUN echo "detector:x:${UID}:${UID}:detector:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "detector:x:${UID}:" >> /etc/group
ENV PATH=/opt/detector/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
WORKDIR /tmp

FROM user AS eightbyeight-double
ARG UID
COPY --from=build-double /opt/detector /opt/detector
USER ${UID}:${UID}
# 8x8's OpenAPI documents are mounted at /specs.
ENV DETECTOR_8X8_SPECS=/specs
EXPOSE 8888
ENTRYPOINT ["python3", "-m", "detector.testing.eightbyeight_double"]
CMD ["--port", "8888"]

FROM user
ARG UID
COPY --from=build-runtime /opt/detector /opt/detector
USER ${UID}:${UID}
# 9108: the request worker's metrics, 9109: the send worker's, 8080: `detector serve`.
EXPOSE 8080 9108 9109
ENTRYPOINT ["detector"]
CMD ["--help"]
