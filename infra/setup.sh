#!/usr/bin/env bash
# One-command setup: Python venv + package (editable, dev extras) and the JVM jars of infra/pom.xml.
# Idempotent and cached: each step records a stamp named after the hash of its inputs and is skipped
# when the stamp is there, so a second run takes seconds.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
STAMPS=$CACHE/stamps
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
mkdir -p "$STAMPS"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

need() {  # need <command> <what to install>
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install $2 and re-run 'make setup'"
}

need "$PYTHON" "Python 3.11+ (e.g. apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11+ is required, found $("$PYTHON" --version 2>&1): install it and set PYTHON=/path/to/python3.11"
need java "a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless); Spark and Kafka run on it"
need mvn "Apache Maven (e.g. apt-get install maven); it fetches the Delta, Kafka and S3A jars"
java_major=$(java -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')
[ "${java_major%%.*}" -ge 17 ] 2>/dev/null || die "Java 17+ is required (found ${java_major:-unknown}): install openjdk-17"

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# --- chromium: the headless browser of the dq-report test (owned by expectations/report) ---
# Debian's chromium, installed only when missing, and only when asked: `make test` sets
# CRYPTOLAKE_SETUP_CHROMIUM=1, and `bash infra/setup.sh chromium` runs this step alone.
install_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    say "chromium present ($(command -v chromium))"
    return
  fi
  need apt-get "Debian's chromium package by hand (apt-get is missing)"
  local as_root=()
  [ "$(id -u)" -eq 0 ] || { need sudo "chromium as root (apt-get install chromium)"; as_root=(sudo); }
  say "installing Debian's chromium (headless browser of the dq-report test)"
  "${as_root[@]}" apt-get install -y --no-install-recommends chromium \
    || die "apt-get install chromium failed (see above): run 'apt-get update' if the lists are old, then re-run 'make setup'"
}
if [ "${1:-}" = chromium ]; then
  install_chromium
  exit 0
fi
# --- end of the chromium block ---

# --- PostgreSQL and Redis: the optional live-update stores of python -m lake.serve: Debian's
# packages, installed only when missing (apt-get is idempotent; the package's own service start is
# not used, infra.services runs the servers). Debian puts PostgreSQL's server in
# /usr/lib/postgresql/<major>/bin, off PATH: infra/postgres finds it there.
apt_server() {  # apt_server <name> <package> <installed-check command...>
  local name=$1 package=$2
  shift 2
  if "$@" >/dev/null 2>&1; then
    say "$name present"
    return
  fi
  need apt-get "Debian's $package package by hand (apt-get is missing)"
  local as_root=()
  [ "$(id -u)" -eq 0 ] || { need sudo "$package as root (apt-get install $package)"; as_root=(sudo); }
  say "installing Debian's $package (the $name live-update store of python -m lake.serve)"
  # A fresh machine's package lists may be missing or old: refresh them once and try again.
  "${as_root[@]}" apt-get install -y --no-install-recommends "$package" \
    || { "${as_root[@]}" apt-get update && "${as_root[@]}" apt-get install -y --no-install-recommends "$package"; } \
    || die "apt-get install $package failed (see above): check access to Debian's mirrors, then re-run 'bash infra/setup.sh $name'"
}
install_postgres() { apt_server postgres postgresql bash -c 'ls /usr/lib/postgresql/*/bin/postgres || command -v postgres'; }
install_redis() { apt_server redis redis-server command -v redis-server; }

if [ "${1:-}" = postgres ]; then install_postgres; exit 0; fi
if [ "${1:-}" = redis ]; then install_redis; exit 0; fi
# --- end of the live-update stores block ---

# 1. Python virtual environment and the package in editable mode with dev extras.
py_stamp=$STAMPS/python-$(hash_of pyproject.toml)
if [ -x "$VENV/bin/python" ] && [ -f "$py_stamp" ]; then
  say "python env up to date ($VENV)"
else
  say "creating/updating python env in $VENV (first run downloads pyspark, delta-spark, great-expectations ...)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip \
    || die "pip could not reach PyPI: check the network or a PIP_INDEX_URL mirror, then re-run 'make setup'"
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]" \
    || die "installing Python dependencies failed (see above): check access to PyPI, then re-run 'make setup'"
  rm -f "$STAMPS"/python-*
  touch "$py_stamp"
fi

# 2. JVM jars: Spark's (Delta, Kafka source/sink, S3A) and the Kafka broker's, in separate folders.
fetch_jars() {  # fetch_jars <profile>
  local profile=$1 jar_stamp staging
  jar_stamp=$STAMPS/jars-$profile-$(hash_of infra/pom.xml infra/maven-settings.xml)
  if [ -f "$jar_stamp" ] && ls "$CACHE/jars/$profile"/*.jar >/dev/null 2>&1; then
    say "jars for $profile up to date ($CACHE/jars/$profile)"
    return
  fi
  say "fetching $profile jars from Maven Central into $CACHE/jars/$profile"
  # Copy into a staging folder and swap it in, so a running Spark or Kafka never sees a half-filled one.
  staging=$CACHE/jars/.staging
  rm -rf "$staging"
  mvn --batch-mode --quiet -s infra/maven-settings.xml -f infra/pom.xml -P "$profile" \
      -Djars.dir="$staging" dependency:copy-dependencies \
    || die "Maven could not fetch the $profile jars (see above): check access to Maven Central, then re-run 'make setup'"
  rm -rf "$CACHE/jars/$profile.old"
  [ -d "$CACHE/jars/$profile" ] && mv "$CACHE/jars/$profile" "$CACHE/jars/$profile.old"
  mv "$staging/$profile" "$CACHE/jars/$profile"
  rm -rf "$CACHE/jars/$profile.old" "$staging"
  rm -f "$STAMPS"/jars-"$profile"-*
  touch "$jar_stamp"
}

# 3. MinIO (the local S3 of infra/minio), built once with Go, its documented way: a few minutes.
build_minio() {
  local minio_bin=$CACHE/bin/minio
  if [ -x "$minio_bin" ]; then
    say "minio up to date ($minio_bin)"
    return
  fi
  need go "Go 1.24+ (https://go.dev/dl/, or apt-get install golang); it builds the MinIO server"
  say "building MinIO into $CACHE/bin with 'go install github.com/minio/minio@latest' (takes minutes, once)"
  mkdir -p "$CACHE/bin"
  GOBIN=$CACHE/bin go install github.com/minio/minio@latest \
    || die "'go install github.com/minio/minio@latest' failed (see above): check access to the Go module proxy, then re-run 'bash infra/setup.sh minio'"
  [ -x "$minio_bin" ] || die "go install finished but $minio_bin is missing: check GOBIN/GOFLAGS, then re-run 'bash infra/setup.sh minio'"
}

# The local Kafka broker, MinIO, PostgreSQL and Redis are needed only by BUS=kafka, s3a:// lakes, the
# live-update stores, `make infra-up` and the integration tests, so they are installed only when
# asked: CRYPTOLAKE_SETUP_SERVICES=kafka,minio,postgres,redis (`make test` and `make infra-up` set
# it; `make run BUS=kafka` asks for kafka), or `bash infra/setup.sh kafka|minio|postgres|redis`
# runs that step alone.
if [ "${1:-}" = kafka ]; then fetch_jars kafka; exit 0; fi
if [ "${1:-}" = minio ]; then build_minio; exit 0; fi

fetch_jars spark
case ",${CRYPTOLAKE_SETUP_SERVICES:-}," in *,kafka,*) fetch_jars kafka ;; esac
case ",${CRYPTOLAKE_SETUP_SERVICES:-}," in *,minio,*) build_minio ;; esac
case ",${CRYPTOLAKE_SETUP_SERVICES:-}," in *,postgres,*) install_postgres ;; esac
case ",${CRYPTOLAKE_SETUP_SERVICES:-}," in *,redis,*) install_redis ;; esac

# --- web: the page's JavaScript for python -m lake.serve (owned by lake/serve; keep this block apart) ---
# TradingView's lightweight-charts from npm into the git-ignored .cache/web (served by the server,
# never copied into the repo, no CDN at run time). Installed only when missing or of another version.
LWC_VERSION=5.2.1
lwc_pkg=$CACHE/web/node_modules/lightweight-charts/package.json
if [ -f "$lwc_pkg" ] && grep -q "\"version\": \"$LWC_VERSION\"" "$lwc_pkg"; then
  say "lightweight-charts $LWC_VERSION up to date ($CACHE/web)"
else
  need npm "Node.js and npm (e.g. apt-get install npm); the serve page's chart library comes from npm"
  say "installing lightweight-charts@$LWC_VERSION from npm into $CACHE/web"
  npm install --silent --no-audit --no-fund --prefix "$CACHE/web" "lightweight-charts@$LWC_VERSION" \
    || die "npm could not install lightweight-charts@$LWC_VERSION (see above): check access to the npm registry, then re-run 'make setup'"
fi
# --- end of the web block ---

[ "${CRYPTOLAKE_SETUP_CHROMIUM:-0}" = 1 ] && install_chromium

say "ready: $("$VENV/bin/python" --version), jars in $CACHE/jars"
