#!/usr/bin/env bash
# `make run`: migrate, ensure an admin account, then run web + worker + beat in the foreground.
# Ctrl-C (or SIGTERM to the process group) stops all three; honcho forwards the signal and waits
# up to STOP_TIMEOUT seconds (default 30) for a clean exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
export PATH="$root/.venv/bin:$PATH"
# The .env file at the repository root (or TASKPLANE_ENV_FILE), read the way every entry point reads it
# (settings/env.py): variables already in the environment win. It may choose any default below.
dotenv=$(python -m settings.env)  # a separate assignment, so a malformed .env stops the script (set -e)
eval "$dotenv"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-settings.local}"
export TASKPLANE_VAR_DIR="${TASKPLANE_VAR_DIR:-$root/var}"
export HOST="${HOST:-127.0.0.1}" PORT="${PORT:-8000}"
# Where the worker reaches the web's sandbox payment provider when PAYMENTS_URL is unset (settings read
# it; honcho gives every process its own PORT, so the worker cannot derive the web's).
case "$HOST" in 0.0.0.0|::|"[::]") web_host=127.0.0.1 ;; *) web_host=$HOST ;; esac
export PAYMENTS_SANDBOX_URL="${PAYMENTS_SANDBOX_URL:-http://$web_host:$PORT/sandbox/payments}"
# One metrics directory for every process of this run, so the web's /metrics shows workers too.
export PROMETHEUS_MULTIPROC_DIR="$TASKPLANE_VAR_DIR/prometheus"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

python manage.py migrate --noinput
python manage.py ensure_admin
# A catalog to order from (README): created once, never overwriting an operator's price or stock. With no
# PAYMENTS_URL the sandbox provider declines amounts ending in 13 cents, so one GIFT-13 shows a decline.
python manage.py catalog set BOOK-1 --name "A book" --price-cents 1250 --stock 100 --if-missing
python manage.py catalog set PEN-1 --name "A pen" --price-cents 250 --stock 100 --if-missing
python manage.py catalog set GIFT-13 --name "A gift card (declined by the sandbox)" --price-cents 1313 \
  --stock 100 --if-missing

base="http://$HOST:$PORT"
cat <<MSG

Taskplane is starting:
$(python manage.py show_config)
  admin      $base/admin/
  API docs   $base/api/docs/   (schema: $base/api/schema/)
  health     $base/health/
  metrics    $base/metrics
Press Ctrl-C to stop web, worker and beat.

MSG
exec python compose/start/supervise.py "${STOP_TIMEOUT:-30}" \
  --app-root "$root" -f compose/Procfile.local start --port "$PORT"
