# The processor as a container: `processor run` with the config mounted at /app/config.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PROCESSOR__METRICS__HOST=0.0.0.0
WORKDIR /app

COPY pyproject.toml README.md ./
COPY processor ./processor
RUN pip install . && useradd --system --uid 10001 --no-create-home processor

# schemas and transforms are resolved against the working directory; mount your own over these
COPY schemas ./schemas
COPY examples ./examples
COPY config ./config

USER processor
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2); sys.exit(0)"]
ENTRYPOINT ["processor", "run"]
CMD ["-c", "/app/config/example.yaml"]
