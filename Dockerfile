# otameter in a container: the same `pip install` and `otameter serve` the tests run.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /src

RUN useradd --system --create-home --home-dir /var/lib/otameter otameter
USER otameter
WORKDIR /var/lib/otameter
# Made here, owned by otameter, so that a volume mounted on it starts writable.
RUN mkdir -p /var/lib/otameter/data
ENV OTAMETER_DATABASE_URL=sqlite:////var/lib/otameter/otameter.db \
    OTAMETER_DATA_DIR=/var/lib/otameter/data
VOLUME ["/var/lib/otameter"]
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["otameter", "serve", "--host", "0.0.0.0", "--port", "8000", "--log-format", "json"]
