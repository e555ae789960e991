# The map of every task. Each target sets up what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup demo test test-postgres lint typecheck check bench bench-report bench-tick bench-delivery bench-delivery-shared bench-cpu bench-burst bench-faults bench-isolation i18n-extract i18n-update i18n-compile run chat emulator clean

help:  ## list the tasks
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# The application with its dev extra, the emulator and the dev tools (the demo, the chat):
# three distributions, so that the application's wheel contains neither of the last two.
$(STAMP): pyproject.toml emulator/pyproject.toml devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./emulator -e ./devtools
	touch $(STAMP)

setup: $(STAMP)  ## create the virtual environment with every dependency

demo: $(STAMP)  ## run the bot offline on the emulator with 200 simulated prospects
	$(BIN)/python -m bot demo

test: $(STAMP)  ## the whole suite on SQLite, then on PostgreSQL and with Redis when they answer on 127.0.0.1
	$(BIN)/python -m tests.engines $(ARGS)

test-postgres: $(STAMP)  ## the whole suite on one PostgreSQL database: TEST_POSTGRES_URL=... (its schema is wiped)
	@test -n "$(TEST_POSTGRES_URL)" || { echo "set TEST_POSTGRES_URL=postgresql+asyncpg://user@host/scratch_db (a database the tests may wipe)"; exit 2; }
	TEST_POSTGRES_URL='$(TEST_POSTGRES_URL)' $(BIN)/python -m pytest tests $(ARGS)

lint: $(STAMP)  ## formatting and lint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)  ## mypy on the application packages, the dev tools and the emulator
	$(BIN)/mypy bot funnel handlers devtools emulator/telegram_emulator

check: lint typecheck test  ## everything CI should be happy with

# The bot's own texts: the code names keys with t("key"), tn("key", n) for counted texts, and
# N_("key") in tables read later with t().
I18N_KEYWORDS := -k t -k tn:1,1 -k N_

i18n-extract: $(STAMP)  ## the keys the code names, as locales/leadbot.pot
	$(BIN)/pybabel extract --no-location --omit-header $(I18N_KEYWORDS) -o locales/leadbot.pot bot funnel handlers

i18n-update: i18n-extract  ## add the new keys to every language's catalog (then write their texts)
	$(BIN)/pybabel update --no-fuzzy-matching -i locales/leadbot.pot -d locales -D leadbot

i18n-compile: $(STAMP)  ## check that every catalog compiles (the bot reads the .po files itself)
	$(BIN)/pybabel compile --statistics -d locales -D leadbot

bench: $(STAMP)  ## every benchmark: a table against the targets, figures in bench/results.json (~20 min)
	$(BIN)/python -m bench.run_all $(ARGS)

bench-report: $(STAMP)  ## funnel report on 1,000,000 leads / 5,000,000 events (target <= 1 s)
	$(BIN)/python -m bench.bench_report

bench-tick: $(STAMP)  ## a scheduler tick with nothing due at 1,000,000 leads (target <= 50 ms)
	$(BIN)/python -m bench.bench_tick

bench-delivery: $(STAMP)  ## a 2,000-touch wave at >= 99% of the rate, zero 429s
	$(BIN)/python -m bench.bench_delivery

bench-delivery-shared: $(STAMP)  ## the same wave shared by two instances (PostgreSQL + Redis)
	$(BIN)/python -m bench.bench_delivery_shared $(ARGS)

bench-cpu: $(STAMP)  ## CPU per update against a bare aiogram bot, same load, same run
	$(BIN)/python -m bench.bench_cpu $(ARGS)

bench-burst: $(STAMP)  ## 10,000 /start at once: each answered once, time to the last reply
	$(BIN)/python -m bench.bench_burst $(ARGS)

bench-isolation: $(STAMP)  ## floods from 10 prospects while 200 talk and 20 pay, polling and webhook
	$(BIN)/python -m bench.bench_isolation $(ARGS)

bench-faults: $(STAMP)  ## kill -9 and SIGTERM under load: nothing doubled, no answer lost (~5 min)
	$(BIN)/python -m bench.bench_faults $(ARGS)

run: $(STAMP)  ## run the bot on Telegram (needs BOT_TOKEN)
	$(BIN)/python -m bot run

chat: $(STAMP)  ## talk to the bot yourself, offline
	$(BIN)/python -m bot chat

emulator: $(STAMP)  ## run the local Telegram Bot API emulator on port 8081
	$(BIN)/python -m telegram_emulator --port 8081

clean:  ## remove the environment and local data
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
