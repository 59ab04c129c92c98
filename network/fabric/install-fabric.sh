#!/usr/bin/env bash
# Install the Hyperledger Fabric that fedfabric pins: the Fabric 3.0 development snapshot 695dd57e
# (2023-04-05), the newest Fabric the Go module proxy serves. Its peer, orderer, osnadmin and
# configtxgen are built with `go install`, and its sampleconfig/ is copied to config/, into
#   ${1:-${XDG_CACHE_HOME:-~/.cache}/fedfabric/fabric-3.0-snapshot-695dd57e}/{bin,config}
# Idempotent: when the binaries there already report the pinned commit it exits at once.
#
# FEDFABRIC_FABRIC_HOME set (a release you bring, e.g. the official 3.1.5 tarball unpacked): that
# folder is used as it is. This script then only checks it and reports its version; it never
# builds into, or overwrites, a folder the user supplied.
set -euo pipefail

LABEL="Fabric 3.0 development snapshot 695dd57e (2023-04-05)"
VERSION=3.0.0-snapshot
COMMIT=695dd57e
# Fabric's module path has no /v3 suffix, so a commit is pinned by its Go pseudo-version.
MODULE=github.com/hyperledger/fabric
PSEUDO=v1.4.0-rc1.0.20230405174026-695dd57e01c2
TOOLS=(peer orderer osnadmin configtxgen)
CONFIGS=(core.yaml orderer.yaml)

say() { printf '[install-fabric] %s\n' "$*" >&2; }

missing() {  # the files a release folder $1 lacks
  local t f
  for t in "${TOOLS[@]}"; do [[ -x "$1/bin/$t" ]] || printf ' %s' "$1/bin/$t"; done
  for f in "${CONFIGS[@]}"; do [[ -f "$1/config/$f" ]] || printf ' %s' "$1/config/$f"; done
}

report() {  # the version a release folder's peer reports, on one line
  "$1/bin/peer" version 2>/dev/null | awk -F': *' '/^ Version:/{v=$2} /^ Commit SHA:/{c=$2}
    END {printf "peer version %s, commit %s\n", v, c}'
}

user_release() {
  local home=$FEDFABRIC_FABRIC_HOME lacking
  lacking=$(missing "$home")
  if [[ -n "$lacking" ]]; then
    say "error: FEDFABRIC_FABRIC_HOME=$home is not a Fabric release folder (missing:$lacking)."
    say "Point it at a folder with bin/ and config/ (an unpacked official release), or unset it"
    say "to use the pinned $LABEL that this script builds."
    exit 1
  fi
  say "using the Fabric release in FEDFABRIC_FABRIC_HOME=$home: $(report "$home")"
}

installed() {
  [[ -z "$(missing "$1")" ]] && "$1/bin/peer" version 2>/dev/null | grep -q "Commit SHA: $COMMIT"
}

build() {
  local home=$1 work ldflags i=0 src
  command -v go >/dev/null || { say "error: Go is needed to build Fabric (https://go.dev/doc/install)"; exit 1; }
  work=$(mktemp -d)
  trap "rm -rf '$work'" EXIT
  # A throw-away module that requires exactly the pinned commit; `go install` of the commands
  # from inside it resolves them from that requirement.
  (cd "$work" && go mod init fedfabric-install-fabric >/dev/null 2>&1 &&
    go mod edit -require="$MODULE@$PSEUDO")
  say "[1/6] downloading $MODULE@$PSEUDO from the Go module proxy"
  if ! (cd "$work" && go mod download -x "$MODULE" 2>"$work/download.log"); then
    say "error: the Go module proxy did not serve $MODULE@$PSEUDO:"
    grep -iE "error|forbidden|not available|404|410" "$work/download.log" | tail -3 >&2 || true
    exit 1
  fi
  ldflags="-X $MODULE/common/metadata.Version=$VERSION -X $MODULE/common/metadata.CommitSHA=$COMMIT"
  # Build into a fresh folder and move it into place at the end: an interrupted install never
  # leaves a half-filled release behind.
  rm -rf "$home.partial"
  mkdir -p "$home.partial/bin" "$home.partial/config"
  for t in "${TOOLS[@]}"; do
    i=$((i + 1))
    say "[$((i + 1))/6] go install $MODULE/cmd/$t (the first build takes a minute or two)"
    (cd "$work" && GOFLAGS=-mod=mod GOBIN="$home.partial/bin" go install -ldflags "$ldflags" "$MODULE/cmd/$t")
  done
  say "[6/6] copying the release's sampleconfig to config/"
  src="$(cd "$work" && go list -m -f '{{.Dir}}' "$MODULE")/sampleconfig"
  cp "$src/core.yaml" "$src/orderer.yaml" "$src/configtx.yaml" "$home.partial/config/"
  chmod -R u+w "$home.partial"
  rm -rf "$home"
  mv "$home.partial" "$home"
}

main() {
  if [[ -n "${FEDFABRIC_FABRIC_HOME:-}" ]]; then
    user_release
    return
  fi
  local home=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/fedfabric/fabric-3.0-snapshot-$COMMIT}
  mkdir -p "$(dirname "$home")"
  # One build at a time: a second setup (another checkout, say) waits for the first.
  exec 9>"$home.lock"
  if ! flock -n 9; then
    say "another install of $LABEL is running; waiting for it"
    flock 9
  fi
  if installed "$home"; then
    say "$LABEL already installed in $home"
  else
    say "installing $LABEL into $home"
    build "$home"
    installed "$home" || { say "error: $home/bin/peer does not report commit $COMMIT"; exit 1; }
    say "installed $LABEL in $home"
  fi
  say "$(report "$home")"
}

main "$@"
