#!/usr/bin/env bash
# `manage.py check --deploy` must be clean under production settings, and must refuse development keys.
set -euo pipefail
PY=${1:-.venv/bin/python}
export DEBUG=false ALLOWED_HOSTS=mpfeed.example.com SECRET_KEY="$(head -c 48 /dev/urandom | base64)" \
       FERNET_KEYS="$(head -c 32 /dev/urandom | base64)" MPFEED_ALLOW_SANDBOX=false MPFEED_SITE_URL=https://mpfeed.example.com \
       DATABASE_URL=sqlite:////tmp/mpfeed-check.sqlite3
$PY manage.py check --deploy --fail-level WARNING
if FERNET_KEYS=mpfeed-development-fernet-key-do-not-use-in-production $PY manage.py check --fail-level ERROR >/dev/null 2>&1; then
  echo "check-deploy: the development Fernet key was accepted with DEBUG off" >&2
  exit 1
fi
echo "check-deploy: production settings are clean and development keys are refused"
