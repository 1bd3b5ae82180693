#!/usr/bin/env bash
# Assembles what a FROM-scratch image holds in OUT: OUT/rootfs, with the binaries, the
# shared libraries they link (as `ldd` finds them, the loader included), CA certificates, the
# user `switchyard` (10001:10001) and /tmp; and OUT/data, empty, which the Dockerfile copies
# to /data owned by that user (COPY sets the owner, so the files' owners here do not matter
# and no root is needed). The images are `FROM scratch` plus these (deploy/Dockerfile,
# examples/thumbnail/Dockerfile): nothing has to be pulled from a registry, and an image
# holds nothing it does not run.
#
#   deploy/image/rootfs.sh OUT BINARY...
#
# On a glibc system (Debian's, in the Dockerfiles' build stage). Glibc 2.34 and later
# resolves host names (files and DNS) without NSS plugins, so the libraries `ldd` names are
# all a binary needs; a static binary needs none.
#
# The CA certificates are this machine's bundle (CA_BUNDLE, or the first of the usual places
# that exists): the image trusts what the machine that built it trusts, a company's own CA
# included. Set CA_BUNDLE to another file to choose.
set -euo pipefail
umask 022
[ $# -ge 2 ] || { echo "usage: $0 OUT BINARY..." >&2; exit 2; }
out=$1
shift
rm -rf "$out"
mkdir -p "$out/data"
root=$out/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"

for bin in "$@"; do
  # Debug information is for the build machine; the image gets the code.
  objcopy --strip-debug "$bin" "$root/usr/local/bin/$(basename "$bin")"
  if ! libs=$(ldd "$bin" 2>&1); then
    case "$libs" in
      *"not a dynamic executable"* | *"statically linked"*) continue ;;
      *) echo "ldd $bin: $libs" >&2; exit 1 ;;
    esac
  fi
  if grep -q "not found" <<<"$libs"; then
    echo "$bin needs libraries this machine does not have:" >&2
    grep "not found" <<<"$libs" >&2
    exit 1
  fi
  # Lines are "name => /path (addr)" or "/path (addr)" (the loader); vdso has no file.
  awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$libs" | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done

# The CA bundle https subscribers, S3 and SQS, and Kafka over TLS are checked against (the
# Dockerfiles point OpenSSL at it with SSL_CERT_FILE).
certs=${CA_BUNDLE:-}
if [ -z "$certs" ]; then
  for c in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
    [ -f "$c" ] && { certs=$c; break; }
  done
fi
[ -n "$certs" ] && [ -f "$certs" ] ||
  { echo "no CA bundle: install ca-certificates, or set CA_BUNDLE to one" >&2; exit 1; }
cp "$certs" "$root/etc/ssl/certs/ca-certificates.crt"

printf 'root:x:0:0:root:/root:/sbin/nologin\nswitchyard:x:10001:10001:switchyard:/data:/sbin/nologin\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nswitchyard:x:10001:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
