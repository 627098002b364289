#!/usr/bin/env bash
# Container entry point for the web process: gunicorn serving settings.wsgi on 0.0.0.0:$PORT.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-settings.production}"

# prometheus_client's multi-process mode shares one directory between the gunicorn workers;
# files left by an earlier run would be counted again, so start from an empty one.
if [[ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db
fi

# Heartbeat files go to /dev/shm: on an overlay filesystem their writes can stall a worker.
exec gunicorn settings.wsgi --config compose/gunicorn.conf.py \
  --bind "0.0.0.0:${PORT:-8000}" \
  --workers "${WEB_CONCURRENCY:-2}" \
  --threads "${WEB_THREADS:-4}" \
  --worker-tmp-dir /dev/shm \
  --access-logfile - \
  --graceful-timeout "${WEB_GRACEFUL_TIMEOUT:-30}"
