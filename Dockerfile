# Leadbot in webhook mode: `docker build -t leadbot .`, then run it with the settings in the
# environment (docs/deploy.md). The first stage builds the wheel; the image holds the
# installed wheel alone (no tests, no emulator, no dev tools).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY bot bot
COPY funnel funnel
COPY handlers handlers
COPY migrations migrations
COPY scripts scripts
COPY locales locales
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres,redis]"

FROM python:3.11-slim
# No .pyc files written at run time, logs straight to the collector. Two malloc arenas:
# glibc gives each thread its own (SQLite's driver runs one per connection), ~10 MB each.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MALLOC_ARENA_MAX=2
# The bot's user owns only the database's folder; a named volume mounted there starts as a
# copy of it, owner included, so the user can write the SQLite file it holds.
RUN groupadd --system --gid 10001 leadbot \
    && useradd --system --uid 10001 --gid leadbot --home-dir /app --no-create-home leadbot \
    && mkdir -p /app/data && chown leadbot:leadbot /app/data && chmod 700 /app/data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "leadbot[postgres,redis]" \
    && rm -rf /wheels
WORKDIR /app
# DATABASE_URL's default, data/leadbot.sqlite3 from /app: kept apart from the container's
# own layer, so it survives the container (docs/deploy.md mounts a named volume here).
VOLUME /app/data
USER leadbot
# The webhook and /healthz, /metrics (WEBHOOK_LISTEN); TLS is the proxy's in front. Every
# interface of the container: its port mapping decides who reaches it (the bot's own
# default, 127.0.0.1, would be unreachable from outside the container).
ENV WEBHOOK_LISTEN=0.0.0.0:8080
EXPOSE 8080
# /healthz is on METRICS_LISTEN's port when that is set, else on WEBHOOK_LISTEN's.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, sys, urllib.request; port = (os.environ.get('METRICS_LISTEN') or os.environ['WEBHOOK_LISTEN']).rpartition(':')[2]; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"
# SIGTERM drains the updates being handled and the messages on the wire, then exits.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot", "run", "--webhook"]
