#!/usr/bin/env bash
# Install the system programs the dev stack and the test-suite need, only those missing:
#   nginx     (nginx-light where the distribution has it) -- mTLS termination, make run, e2e tests
#   haproxy   -- the HAProxy renderer's tests and e2e tests (make run PROXY=haproxy)
#   chromium  -- the admin browser tests
#   ab        (apache2-utils) -- make bench
#   apache2   -- the Apache httpd end-to-end tests and make run PROXY=apache (its own instances on loopback;
#                no system apache2 is started or left enabled)
#   faketime  -- make clockcheck: the suite with a clock that runs ten times too fast
#   caddy     -- the Caddy end-to-end tests and make run PROXY=caddy (certauth.proxyconf.caddy)
#   promtool  (Debian's prometheus package; its prometheus.service is disabled, never left running) -- the
#             metrics alert rules' checks and rule unit tests (tests/test_metrics.py)
#   openssl, easy-rsa, mkcert, certtool (gnutls-bin), cfssl + cfssljson (golang-cfssl) -- the PKI tools whose
#             client certificates tests/test_real_issuers.py and tests/e2e/test_real_issuers.py build
# Idempotent and a fast no-op when everything is present (CI runs it every time).  Installing needs
# root and apt-get (Debian/Ubuntu); otherwise it says what is missing and exits non-zero.
set -euo pipefail

have() {
  local name
  for name in "$@"; do
    command -v "$name" >/dev/null 2>&1 && return 0
    # /usr/sbin is not on a normal user's PATH, and nginx lives there.
    [[ -x /usr/sbin/$name || -x /usr/bin/$name ]] && return 0
  done
  return 1
}

missing=()
have nginx || missing+=(nginx)
have haproxy || missing+=(haproxy)
have chromium chromium-browser || missing+=(chromium)
have ab || missing+=(apache2-utils)
have apache2 httpd || missing+=(apache2)
have faketime || missing+=(faketime)
have caddy || missing+=(caddy)
have promtool || missing+=(prometheus)
have openssl || missing+=(openssl)
# easy-rsa's script is not on PATH: Debian installs it under /usr/share/easy-rsa.
[[ -x /usr/share/easy-rsa/easyrsa ]] || missing+=(easy-rsa)
have mkcert || missing+=(mkcert)
have certtool || missing+=(gnutls-bin)
{ have cfssl && have cfssljson; } || missing+=(golang-cfssl)

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-system-deps: missing: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "install-system-deps: not root, cannot install them. Run: sudo $0   (or install ${missing[*]} yourself)" >&2
  exit 1
fi
if ! have apt-get; then
  echo "install-system-deps: no apt-get on this system; install ${missing[*]} with its package manager" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

packages=()
for item in "${missing[@]}"; do
  if [[ $item == nginx ]]; then
    # nginx-light is the smallest build with the ssl module; newer releases only ship "nginx".
    if apt-cache show nginx-light >/dev/null 2>&1; then packages+=(nginx-light); else packages+=(nginx); fi
  else
    packages+=("$item")
  fi
done

# The nginx package's post-install script would start a system nginx on port 80; the project runs its
# own unprivileged instances on loopback, so forbid service starts for the duration (policy-rc.d
# exit 101 = "action not allowed", the Debian convention) unless the admin already has a policy.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

echo "install-system-deps: apt-get install ${packages[*]}"
apt-get install -y -qq --no-install-recommends "${packages[@]}"

for item in "${missing[@]}"; do
  case $item in
    nginx) have nginx ;;
    haproxy) have haproxy ;;
    chromium) have chromium chromium-browser ;;
    apache2-utils) have ab ;;
    caddy) have caddy ;;
    prometheus) have promtool ;;
    apache2) have apache2 httpd ;;
    easy-rsa) [[ -x /usr/share/easy-rsa/easyrsa ]] ;;
    gnutls-bin) have certtool ;;
    golang-cfssl) have cfssl && have cfssljson ;;
  esac || { echo "install-system-deps: $item still missing after apt-get install" >&2; exit 1; }
done
# Debian's caddy package enables a caddy.service (ports 80 and 443, admin API on 2019) that would start at the
# next boot; policy-rc.d only kept it from starting now.  The project runs its own unprivileged instances on
# loopback, so disable it (and stop it where an admin's own policy let it start).
if [[ " ${missing[*]} " == *" caddy "* ]] && have systemctl; then
  systemctl disable caddy.service >/dev/null 2>&1 || true
  if systemctl is-active --quiet caddy 2>/dev/null; then
    echo "install-system-deps: stopping the system caddy.service the package started"
    systemctl stop caddy.service || true
  fi
fi
if [[ " ${missing[*]} " == *" caddy "* ]] && have ss && ss -Hltnp 2>/dev/null | grep -q '"caddy"'; then
  echo "install-system-deps: a system caddy is listening ($(ss -Hltnp | grep '"caddy"' | awk '{print $4}' | xargs));" \
    "stop it (systemctl disable --now caddy)" >&2
  exit 1
fi
if [[ " ${missing[*]} " == *" prometheus "* ]] && have systemctl; then
  # Only promtool is wanted; the package enables a prometheus.service (port 9090) that policy-rc.d kept from
  # starting now: disable it so it does not start at the next boot either.
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
if [[ " ${missing[*]} " == *" apache2 "* ]]; then
  # The package enables apache2.service (it would listen on port 80 at the next boot); the project runs its own
  # unprivileged instances on loopback only.  policy-rc.d kept it from starting now.
  if have systemctl; then systemctl disable --now apache2 >/dev/null 2>&1 || true; fi
  if have ss && ss -Hltnp '( sport = :80 or sport = :443 )' 2>/dev/null | grep -q '"apache2"'; then
    echo "install-system-deps: a system apache2 is listening (ss -ltnp); stop it: systemctl disable --now apache2" >&2
    exit 1
  fi
fi
echo "install-system-deps: installed ${packages[*]}"
