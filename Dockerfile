# scaler: the external metrics adapter and control loop.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scaler ./scaler
COPY policies ./policies
RUN pip install --no-compile . && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin scaler

USER 65532:65532
ENTRYPOINT ["scaler", "serve"]
CMD ["--policies", "/app/policies"]
