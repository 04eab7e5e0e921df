# Local stand-in for python:3.11-slim, from Debian's packages (bookworm's Python is 3.11), for hosts that
# reach no container registry. Built by scripts/stack_images.sh on the base it imports from debootstrap.
ARG DEBIAN_IMAGE=autoft-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# `python`: the healthchecks and the app Dockerfile call it by that name, as in the official image.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
