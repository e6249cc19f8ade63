# Sourced by the scripts that need a Debian package (scripts/bench-http,
# scripts/count-instructions); they define `say` and `die` first.

# Installs the Debian package $2 when the command $1 is missing (as root, or with sudo).
need() { # command debian-package
  command -v "$1" >/dev/null && return 0
  say "installing $2 from Debian"
  local sudo_=""
  [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get install -y "$2" >/dev/null 2>&1 \
    || { $sudo_ apt-get update >/dev/null && $sudo_ apt-get install -y "$2" >/dev/null; } \
    || die "cannot install $2 (apt-get install -y $2)"
}
