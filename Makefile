# mpfeed — two commands on a fresh machine with Python 3.11 and make:
#   make run    set up everything (virtualenv, requirements, database, demo) and start the site,
#               the django-q2 cluster and the sandbox Events API
#   make test   run the whole test suite (what CI runs)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
ADDR ?= 127.0.0.1:8000

.PHONY: run setup demo test lint format bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(PIP) install -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed
	$(PY) manage.py migrate --noinput -v 0

demo: setup
	$(PY) manage.py setup_demo

run: demo
	$(PY) manage.py serve --addr $(ADDR)

test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run -v 0
	bash scripts/check-deploy.sh $(PY)
	bash scripts/chromium.sh
	$(PY) -m pytest $(PYTEST_ARGS)
	bash scripts/test-postgres.sh $(PY)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) var mpfeed.sqlite3 mpfeed.sqlite3-* mpfeed.sqlite3.writes.lock
