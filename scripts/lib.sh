# Shared helpers for scripts/run.sh and scripts/test.sh (sourced, not run).

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# ensure_venv REQUIREMENTS_FILE: create the virtualenv and install when the requirements changed.
ensure_venv() {
  local requirements=$1
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv in $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$(basename "$requirements")"
  local digest
  digest=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "==> installing $requirements"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$requirements"
    echo "$digest" > "$stamp"
  fi
}

# apt_install PACKAGE...: install Debian packages (needs root, as on CI and the dev machines).
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: $* not installed and not root to apt-get install it" >&2
    return 1
  fi
  echo "==> apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

free_port() {
  "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
