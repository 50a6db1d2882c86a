# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS   ?=

.PHONY: demo test lint format bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/citygw demo $(ARGS)

# Debian packages the tests drive for real: mosquitto (broker, and mosquitto_passwd), openssl
# (a CA and certificates for the MQTT TLS tests), ffmpeg (H.264 files), GStreamer's RTSP
# server with the headers PyGObject builds against (live RTSP cameras), and chromium (the
# operations console's browser test drives /usr/bin/chromium through Playwright).
DEBS := mosquitto openssl ffmpeg pkg-config libgirepository1.0-dev libcairo2-dev \
        gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
        gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad chromium
# docker-compose checks docker-compose.yml (`config -q`) in the tests; it needs no engine.
DEBS += docker-compose
# The cluster's parts, run for real on loopback by the tests: PostgreSQL (partition leases)
# and nats-server (JetStream with its MQTT listener: partitioned ingest).
DEBS += postgresql nats-server
system-deps:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
		| grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# The RTSP server's Python bindings build against the Debian headers above.
RTSP_STAMP := $(VENV)/.rtsp-stamp
$(RTSP_STAMP): $(STAMP) | system-deps
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,rtsp]'
	touch $(RTSP_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) system-deps $(RTSP_STAMP) lint
	$(BIN)/python -m pytest $(ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) system-deps $(RTSP_STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/video.py
	$(BIN)/python bench/junk.py
	$(BIN)/python bench/fuzz.py
	$(BIN)/python bench/backtest.py
	$(BIN)/python bench/cluster.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
