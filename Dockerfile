# syntax=docker/dockerfile:1
# Build wheels in one stage, run from a slim image as a non-root user in the next.
FROM python:3.11-slim AS build
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8080
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin api
WORKDIR /srv
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/* && rm -rf /wheels
COPY app ./app
COPY wsgi.py gunicorn.conf.py ./
# Runs with a read-only root filesystem: gunicorn's heartbeat files go to /dev/shm.
USER 10001
EXPOSE 8080
# Liveness only: a Prometheus outage must not mark the container unhealthy.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/livez' % os.environ.get('PORT', '8080'), timeout=2)"
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
