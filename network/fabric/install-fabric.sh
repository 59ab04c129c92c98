#!/usr/bin/env bash
# Install Hyperledger Fabric's own peer, orderer, osnadmin and configtxgen at release 3.1.5,
# built with `go install` from the Go module proxy, plus the release's config/ files, into
#   ${FEDFABRIC_FABRIC_HOME:-${XDG_CACHE_HOME:-~/.cache}/fedfabric/fabric-3.1.5}/{bin,config}
# Idempotent: when the installed binaries already report 3.1.5 at the pinned commit it exits at once.
set -euo pipefail

VERSION=3.1.5
COMMIT=86c1172bec37e6590c6b1ae6f847833df48d65fc
# Fabric's module path has no /v3 suffix, so the release is pinned by its commit, which Go
# writes as this pseudo-version.
MODULE=github.com/hyperledger/fabric
PSEUDO=v1.4.0-rc1.0.20260618074816-86c1172bec37
TOOLS=(peer orderer osnadmin configtxgen)
HOME_DIR=${FEDFABRIC_FABRIC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/fedfabric/fabric-$VERSION}

say() { printf '[install-fabric] %s\n' "$*" >&2; }

installed() {
  local t
  for t in "${TOOLS[@]}"; do [[ -x "$HOME_DIR/bin/$t" ]] || return 1; done
  [[ -f "$HOME_DIR/config/core.yaml" && -f "$HOME_DIR/config/orderer.yaml" ]] || return 1
  "$HOME_DIR/bin/peer" version 2>/dev/null | grep -q "Version: $VERSION" &&
    "$HOME_DIR/bin/peer" version 2>/dev/null | grep -q "Commit SHA: ${COMMIT:0:8}"
}

build() {
  command -v go >/dev/null || { say "error: Go is needed (https://go.dev/doc/install)"; exit 1; }
  local work ldflags i=0
  work=$(mktemp -d)
  trap "rm -rf '$work'" EXIT
  # A throw-away module that requires exactly the pinned Fabric commit; `go install` of the
  # commands from inside it resolves them from that requirement.
  (cd "$work" && go mod init fedfabric-install-fabric >/dev/null 2>&1 &&
    go mod edit -require="$MODULE@$PSEUDO")
  say "downloading $MODULE@$PSEUDO (Fabric $VERSION) from the Go module proxy"
  if ! (cd "$work" && go mod download -x "$MODULE" 2>"$work/download.log"); then
    say "error: the Go module proxy did not serve $MODULE@$PSEUDO:"
    grep -iE "error|forbidden|not available|404|410" "$work/download.log" | tail -3 >&2 || true
    exit 1
  fi
  ldflags="-X $MODULE/common/metadata.Version=$VERSION -X $MODULE/common/metadata.CommitSHA=${COMMIT:0:8}"
  mkdir -p "$HOME_DIR/bin" "$HOME_DIR/config"
  for t in "${TOOLS[@]}"; do
    i=$((i + 1))
    say "[$i/${#TOOLS[@]}] go install $MODULE/cmd/$t (first build takes a few minutes)"
    (cd "$work" && GOFLAGS=-mod=mod GOBIN="$HOME_DIR/bin" go install -ldflags "$ldflags" "$MODULE/cmd/$t")
  done
  local src
  src="$(cd "$work" && go list -m -f '{{.Dir}}' "$MODULE")/sampleconfig"
  cp "$src/core.yaml" "$src/orderer.yaml" "$src/configtx.yaml" "$HOME_DIR/config/"
  chmod -R u+w "$HOME_DIR/config"
}

main() {
  if installed; then
    say "Fabric $VERSION already installed in $HOME_DIR"
  else
    build
    installed || { say "error: $HOME_DIR/bin/peer does not report $VERSION"; exit 1; }
    say "installed Fabric $VERSION in $HOME_DIR"
  fi
  "$HOME_DIR/bin/peer" version | sed -n '1,3p' >&2
}

main "$@"
