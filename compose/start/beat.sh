#!/usr/bin/env bash
# Container entry point for Celery beat.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-settings.production}"

# Beat's schedule file only records when each entry last ran; it is disposable, so it lives in
# /tmp and a fresh container starts with none.
# CELERY_LOG_LEVEL, when set, overrides LOG_LEVEL for this process (Celery's --loglevel).
exec celery -A workers beat \
  ${CELERY_LOG_LEVEL:+--loglevel "$CELERY_LOG_LEVEL"} \
  --schedule "${CELERY_BEAT_SCHEDULE_FILE:-/tmp/celerybeat-schedule}"
