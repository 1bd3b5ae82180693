# A local S3 + SQS for the thumbnail bundle (compose.yaml): moto's server on 0.0.0.0:4566,
# with examples/thumbnail/s3.py beside it (the buckets, the queue and the notification, which
# the bundle's `s3` service makes as it starts). From the repository root:
#
#   docker build -f deploy/thumbnail/moto.Dockerfile -t switchyard-moto .
#
# BASE is any Debian-like image with Python 3 and its venv module; without a registry,
# deploy/thumbnail/build.sh --local-base makes one with debootstrap.
ARG BASE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE}
RUN python3 -m venv /opt/moto \
    && /opt/moto/bin/pip install --no-cache-dir --disable-pip-version-check 'moto[server]==5.2.1'
COPY examples/thumbnail/s3.py /opt/moto/s3.py
EXPOSE 4566
ENTRYPOINT ["/opt/moto/bin/python", "-m", "moto.server", "-H", "0.0.0.0", "-p", "4566"]
