#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ answer on localhost: start them when stopped, install them
# (Debian/Ubuntu, as root) when absent; enable RabbitMQ's Prometheus plugin (on 127.0.0.1); install chromium and
# prometheus for the tests when absent, and what the native multi-exponentiation needs (GMP's headers and a C
# compiler to build it, valgrind to test it). Idempotent; used by scripts/test.sh (before `pip install -e .`).
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  command -v apt-get >/dev/null || { log "cannot install $*: no apt-get; install it yourself"; exit 1; }
  [ -n "${_APT_UPDATED:-}" ] || { as_root apt-get update -qq; _APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  command -v pg_ctlcluster >/dev/null || { log "installing PostgreSQL"; apt_install postgresql; }
  version=$(ls /etc/postgresql | sort -V | tail -1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 30); do pg_up && break; sleep 1; done
  pg_up || { log "PostgreSQL did not start"; exit 1; }
fi
# The tests connect as postgres over TCP without a password (trust on localhost, as on CI machines).
if ! psql -h 127.0.0.1 -U postgres -tAc 'select 1' >/dev/null 2>&1; then
  log "enabling trust auth for local TCP connections (test machine only)"
  if [ "$(id -u)" -eq 0 ]; then hba=$(su postgres -c "psql -tAc 'show hba_file'"); else hba=$(sudo -u postgres psql -tAc 'show hba_file'); fi
  as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main reload
fi

rabbit_up() { timeout 20 rabbitmqctl -q await_startup >/dev/null 2>&1; }
if ! rabbit_up; then
  command -v rabbitmq-server >/dev/null || { log "installing RabbitMQ"; apt_install rabbitmq-server; }
  log "starting RabbitMQ"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 60); do rabbit_up && break; sleep 2; done
  rabbit_up || { log "RabbitMQ did not start"; exit 1; }
fi
# The dashboard's queue panels read RabbitMQ's own Prometheus plugin; the tests scrape it on 127.0.0.1:15692.
rabbit_conf=/etc/rabbitmq/rabbitmq.conf
if ! grep -qs '^prometheus.tcp.ip' "$rabbit_conf"; then
  log "binding RabbitMQ's Prometheus endpoint to 127.0.0.1:15692 ($rabbit_conf)"
  printf 'prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = 15692\n' | as_root tee -a "$rabbit_conf" >/dev/null
fi
if ! rabbitmq-plugins -q is_enabled rabbitmq_prometheus >/dev/null 2>&1; then
  log "enabling rabbitmq_prometheus (the dashboard's queue depths)"
  # The running node read its configuration at boot: give the plugin its address before it starts.
  as_root rabbitmqctl -q eval 'application:load(rabbitmq_prometheus),
    application:set_env(rabbitmq_prometheus, tcp_config, [{ip, "127.0.0.1"}, {port, 15692}]).' >/dev/null
  as_root rabbitmq-plugins -q enable rabbitmq_prometheus >/dev/null
fi
# The deployment tests check docker-compose.yml with docker-compose's own validator (no engine needed).
command -v docker-compose >/dev/null || { log "installing docker-compose (to validate docker-compose.yml)"; apt_install docker-compose; }
# The pages' browser tests drive Debian's chromium through Playwright (never a browser Playwright downloads:
# no `playwright install`); Prometheus checks the Grafana dashboard's queries.
command -v chromium >/dev/null || { log "installing chromium (for the browser tests of the board and console)"; apt_install chromium; }
command -v prometheus >/dev/null || { log "installing prometheus (to check the dashboard's queries)"; apt_install prometheus; }
# `pip install -e .` builds compute/_multiexp.c against GMP (compute/multiexp.py); the tests run it under valgrind.
gmp_ok() { printf '#include <gmp.h>\n' | cc -E -x c - >/dev/null 2>&1; }
gmp_ok || { log "installing libgmp-dev and gcc (to build the native multi-exponentiation)"; apt_install libgmp-dev gcc; }
command -v valgrind >/dev/null || { log "installing valgrind (the native multi-exponentiation's memory test)"; apt_install valgrind; }
log "PostgreSQL and RabbitMQ are up"
