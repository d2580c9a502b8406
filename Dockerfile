# scaler: the external metrics adapter (`scaler serve`); the same image runs the activator
# (`scaler activator`) and the other sub-commands.
#
# Two stages: the builder turns the project and every dependency into wheels (all of them
# ship binary wheels for CPython 3.11, so no compiler is needed even there); the final stage
# installs those wheels offline into the same pinned slim Python, then removes pip,
# setuptools and wheel, so no build or install tooling remains in the image.
# tests/deploy/test_dockerfile.py checks the structure (no Docker engine in CI).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scaler ./scaler
# The fetch extra (huggingface_hub): the model-file Jobs run `scaler fetch-model` in this image.
RUN pip wheel --wheel-dir /wheels ".[fetch]"

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
