#!/usr/bin/env bash
# Install the system programs the dev stack and the test-suite need, only those missing:
#   nginx     (nginx-light where the distribution has it) -- mTLS termination, make run, e2e tests
#   chromium  -- the admin browser tests
#   ab        (apache2-utils) -- make bench
#   faketime  -- make clockcheck: the suite with a clock that runs ten times too fast
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
have chromium chromium-browser || missing+=(chromium)
have ab || missing+=(apache2-utils)
have faketime || missing+=(faketime)
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
    chromium) have chromium chromium-browser ;;
    apache2-utils) have ab ;;
    easy-rsa) [[ -x /usr/share/easy-rsa/easyrsa ]] ;;
    gnutls-bin) have certtool ;;
    golang-cfssl) have cfssl && have cfssljson ;;
  esac || { echo "install-system-deps: $item still missing after apt-get install" >&2; exit 1; }
done
echo "install-system-deps: installed ${packages[*]}"
