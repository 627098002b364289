#!/usr/bin/env bash
# One-shot container job: apply migrations, then create the admin account when a password is given.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-settings.production}"

python manage.py migrate --noinput
# Without a password ensure_admin would generate one and print it to the container log; a
# deployment sets DJANGO_SUPERUSER_PASSWORD (from a secret) or creates accounts another way.
if [[ -n "${DJANGO_SUPERUSER_PASSWORD:-}" ]]; then
  exec python manage.py ensure_admin
fi
