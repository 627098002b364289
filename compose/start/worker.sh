#!/usr/bin/env bash
# Container entry point for a Celery worker consuming every Taskplane queue.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-settings.production}"

# Prefork children write their metrics here and the worker's metrics server (WORKER_METRICS_PORT)
# collects them; an earlier run's files would be counted again, so start from an empty directory.
if [[ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db
fi

# WORKER_QUEUES (comma-separated) limits the queues, e.g. "outbox" for a dedicated relay worker.
# CELERY_LOG_LEVEL, when set, overrides LOG_LEVEL for this process (Celery's --loglevel).
# Arguments pass on to `celery worker`, e.g. --disable-prefetch (platform/k8s, Redis broker only).
exec celery -A workers worker \
  ${CELERY_LOG_LEVEL:+--loglevel "$CELERY_LOG_LEVEL"} \
  --concurrency "${WORKER_CONCURRENCY:-2}" \
  ${WORKER_QUEUES:+--queues "$WORKER_QUEUES"} \
  "$@"
