# scaler: the external metrics adapter (`scaler serve`); the same image runs the activator
# (`scaler activator`) and the other sub-commands.
#
# Two stages: the builder turns every dependency into wheels (all of them ship binary wheels
# for CPython 3.11) and the project into a wheel whose decision core is compiled with mypyc
# (setup.py, SCALER_COMPILE_CORE=1: a 1,000-model tick in about half the time); the compiler
# and the build tools stay in the builder. The final stage installs those wheels offline into
# the same pinned slim Python, then removes pip, setuptools and wheel, so no build or install
# tooling remains in the image.
# tests/deploy/test_dockerfile.py checks the structure (no Docker engine in CI).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# mypyc emits C: a compiler and the C library's headers, in this stage only.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY scaler ./scaler
# The dependencies' wheels first (the fetch extra, huggingface_hub: the model-file Jobs run
# `scaler fetch-model` in this image), installed here too because mypyc type-checks what it
# compiles against them; then the pure-Python wheel of the project is replaced by the
# compiled one, so the final stage cannot pick the wrong one.
RUN pip install "mypy>=1.10" wheel "setuptools>=68" \
    && pip wheel --wheel-dir /wheels ".[fetch]" \
    && pip install --no-index --find-links /wheels "scaler[fetch]" \
    && rm /wheels/scaler-*.whl \
    && SCALER_COMPILE_CORE=1 pip wheel --no-build-isolation --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=builder /wheels /tmp/wheels
RUN pip install --no-index --find-links /tmp/wheels "scaler[fetch]" \
    && rm -rf /tmp/wheels \
    && pip uninstall --yes setuptools wheel pip
# Defaults for a plain `docker run`; in the cluster the policies ConfigMap is mounted here.
COPY policies /etc/scaler/policies

# 65532: the conventional "nonroot" uid; no shell account, no home, nothing to own.
USER 65532:65532
EXPOSE 6443
ENTRYPOINT ["scaler", "serve"]
CMD ["--policies", "/etc/scaler/policies"]
