#!/usr/bin/env bash
# Build the influxdb-relay .deb and .rpm from a copy of the tree, check them,
# then install the .deb the way a user would into a clean Debian 12 root made
# with debootstrap and run it there with the SysV init script:
#
#   apt-get install ./influxdb-relay_*.deb   (dependencies from Debian)
#   start, write a point to a fake backend on 127.0.0.1, reload, restart, stop
#   remove (config kept), reinstall and upgrade (edited conffile kept)
#   systemd-analyze verify on the installed unit, then boot the root with
#   systemd (systemd-nspawn): the unit starts at boot, writes, reloads, is
#   restarted after a crash, refuses a broken config, stops
#   purge, and nothing is left
#
# Usage: .ci/package.sh [OUTDIR]     (as root; OUTDIR receives the .deb and .rpm)
#
# Build dependencies (Debian 12):
#   apt-get install --no-install-recommends debhelper dh-python gcc python3-all-dev \
#       python3-setuptools lintian rpm debootstrap systemd-container
#
# The repository is left untouched. The debootstrap root is cached as a tarball
# and the downloaded .debs are kept, under /var/cache/influxdb-relay-ci (or
# $PACKAGE_CACHE; PACKAGE_CACHE= disables caching), so a rerun is quicker; from
# nothing it needs only the Debian mirror apt is configured with (or
# $DEBIAN_MIRROR). Every step has a timeout and everything is cleaned up, on
# failure too.

set -Eeuo pipefail

# The whole run is bounded; each step below also has its own timeout.
if [ -z "${_PACKAGE_SH_TIMED:-}" ]; then
	export _PACKAGE_SH_TIMED=1
	exec timeout --foreground -k 30 "${PACKAGE_TIMEOUT:-1800}" "$0" "$@"
fi

START=$(date +%s)
REPO=$(cd "$(dirname "$0")/.." && pwd)
HELPER="$REPO/.ci/package-http.py"
OUTDIR=${1:-}
SUITE=bookworm
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

say() { printf '\n== %s (%ss)\n' "$*" "$(($(date +%s) - START))"; }
fail() { printf 'package.sh: FAIL: %s\n' "$*" >&2; exit 1; }
# grep -q leaves at the first match; under pipefail the writer's SIGPIPE would then
# fail the check at random (it did, on the .rpm's file list). has() reads it all.
has() { grep "$@" >/dev/null; }
t() { local secs=$1; shift; timeout -k 10 "$secs" "$@"; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, chroot and mount need it)"
missing=
for tool in dpkg-buildpackage dh dh_python3 gcc lintian rpmbuild debootstrap systemd-nspawn; do
	command -v "$tool" >/dev/null || missing="$missing $tool"
done
[ -z "$missing" ] || fail "missing:$missing; apt-get install --no-install-recommends" \
	"debhelper dh-python gcc python3-all-dev python3-setuptools lintian rpm debootstrap systemd-container"

WORK=$(mktemp -d /tmp/influxdb-relay-package.XXXXXX)
ROOT="$WORK/root"
BACKEND_PID=
BACKEND2_PID=
NSPAWN_PID=

# Whether a process runs (a zombie, not yet reaped by init, does not).
alive() {
	local state
	state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$state" ] && [ "$state" != Z ]
}

# A process and all its descendants, parents first.
descendants() {
	local kid
	echo "$1"
	for kid in $(awk -v p="$1" '{ sub(/.*\) /, ""); if ($2 == p) print FILENAME }' \
		/proc/[0-9]*/stat 2>/dev/null | cut -d/ -f3); do
		descendants "$kid"
	done
}

# Processes whose root directory is inside the chroot.
chroot_pids() {
	local p
	for p in /proc/[0-9]*; do
		case "$(readlink "$p/root" 2>/dev/null)" in
		"$ROOT"|"$ROOT"/*) echo "${p#/proc/}" ;;
		esac
	done
}

cleanup() {
	local rc=$? pid mnt
	set +e
	trap - EXIT INT TERM ERR
	[ -n "$BACKEND_PID" ] && kill "$BACKEND_PID" 2>/dev/null
	[ -n "$BACKEND2_PID" ] && kill "$BACKEND2_PID" 2>/dev/null
	if [ -n "$NSPAWN_PID" ] && alive "$NSPAWN_PID"; then
		for pid in $(descendants "$NSPAWN_PID"); do kill -KILL "$pid" 2>/dev/null; done
	fi
	if [ -d "$ROOT" ]; then
		for pid in $(chroot_pids); do kill -TERM "$pid" 2>/dev/null; done
		sleep 1
		for pid in $(chroot_pids); do kill -KILL "$pid" 2>/dev/null; done
	fi
	# Unmount in reverse order; never rm -rf while anything is still mounted.
	for mnt in $(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | tac); do
		umount "$mnt" 2>/dev/null || umount -l "$mnt"
	done
	if awk -v w="$WORK/" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
		echo "package.sh: still mounted under $WORK; not removing it" >&2
	else
		rm -rf "$WORK"
	fi
	if [ "$rc" = 0 ]; then
		printf '\npackage.sh: OK in %ss\n' "$(($(date +%s) - START))"
	else
		printf '\npackage.sh: FAILED (exit %s) after %ss\n' "$rc" "$(($(date +%s) - START))" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "package.sh: line $LINENO: exit status $?" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
say "versions"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO/influx_relay/__init__.py")
DEB_VERSION=$(cd "$REPO" && dpkg-parsechangelog -S Version)
RPM_VERSION=$(sed -n 's/^Version: *//p' "$REPO/packaging/influxdb-relay.spec")
# The packages hold the C line scanner: they are built for this machine's architecture.
DEB_ARCH=$(dpkg --print-architecture)
RPM_ARCH=$(rpm --eval '%{_arch}')
echo "influx_relay $VERSION, debian/changelog $DEB_VERSION, spec $RPM_VERSION"
[ "$DEB_VERSION" = "$VERSION" ] ||
	fail "debian/changelog is at $DEB_VERSION, the code at $VERSION: dch -v $VERSION"
[ "$RPM_VERSION" = "$VERSION" ] ||
	fail "packaging/influxdb-relay.spec is at $RPM_VERSION, the code at $VERSION"

# A copy of the tree as git sees it (tracked and new files, nothing ignored),
# so builds never write into the repository.
copy_tree() {
	mkdir -p "$1"
	(cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
		xargs -0 -r sh -c 'for f; do [ -e "$f" ] || [ -L "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf -) | tar -xf - -C "$1"
}
# One snapshot feeds every build, so all packages hold the same files.
PRISTINE="$WORK/pristine/influxdb-relay-$VERSION"
copy_tree "$PRISTINE"
[ -f "$PRISTINE/sample.toml" ] || fail "sample.toml is missing"
SRC="$WORK/build/influxdb-relay-$VERSION"
mkdir -p "$WORK/build" && cp -a "$PRISTINE" "$SRC"
RPMTOP="$WORK/rpmbuild"
mkdir -p "$RPMTOP/SOURCES"
tar -C "$WORK/pristine" -czf "$RPMTOP/SOURCES/influxdb-relay-$VERSION.tar.gz" "influxdb-relay-$VERSION"

# ---------------------------------------------------------------------------
say "dpkg-buildpackage"
(cd "$SRC" && t 600 dpkg-buildpackage -us -uc -b) >"$WORK/deb-build.log" 2>&1 ||
	{ tail -40 "$WORK/deb-build.log"; fail "dpkg-buildpackage"; }
DEB="$WORK/build/influxdb-relay_${VERSION}_${DEB_ARCH}.deb"
[ -f "$DEB" ] || fail "no $(basename "$DEB")"
ls -l "$DEB"
dpkg-deb -f "$DEB" Package Version Architecture Pre-Depends Depends
dpkg-deb -c "$DEB" | awk '{ print $6 }' | sed 's,^\.,,' >"$WORK/deb-files"
for f in /usr/bin/influx-relay /usr/bin/influxdb-relay \
	/usr/lib/python3/dist-packages/influx_relay/cli.py \
	/etc/influxdb-relay/influxdb-relay.conf /etc/init.d/influxdb-relay \
	/lib/systemd/system/influxdb-relay.service /usr/share/man/man1/influx-relay.1.gz \
	/usr/share/man/man1/influxdb-relay.1.gz /usr/share/doc/influxdb-relay/copyright \
	/usr/share/influxdb-relay/grafana-dashboard.json /usr/share/influxdb-relay/prometheus-rules.yml; do
	has -x "$f" "$WORK/deb-files" || fail ".deb lacks $f"
done
# The unit and the init script are packaging/'s, the tree's only copies (the .rpm's too).
dpkg-deb --fsys-tarfile "$DEB" | tar -xOf - ./lib/systemd/system/influxdb-relay.service |
	cmp -s - "$PRISTINE/packaging/influxdb-relay.service" || fail ".deb's unit is not packaging/'s"
dpkg-deb --fsys-tarfile "$DEB" | tar -xOf - ./etc/init.d/influxdb-relay |
	cmp -s - "$PRISTINE/packaging/influxdb-relay.init" || fail ".deb's init script is not packaging/'s"
has '^/usr/lib/python3/dist-packages/influx_relay/_lineprotocol\..*\.so$' "$WORK/deb-files" ||
	fail ".deb lacks the C line scanner"
dpkg-deb --ctrl-tarfile "$DEB" | tar -xOf - ./conffiles | has -x /etc/influxdb-relay/influxdb-relay.conf ||
	fail "the config is not a conffile"
dpkg-deb --fsys-tarfile "$DEB" | tar -xOf - ./etc/influxdb-relay/influxdb-relay.conf |
	has -x 'state-dir = "/var/lib/influxdb-relay"' || fail "the packaged config keeps no gap ledger"
for dep in python3-gevent python3-urllib3 python3-click adduser; do
	dpkg-deb -f "$DEB" Depends | has -w "$dep" || fail ".deb does not depend on $dep"
done

say "lintian"
# No errors allowed; warnings and overrides are shown (see debian/*.lintian-overrides).
t 300 lintian --info --display-level '>=warning' --show-overrides --fail-on error \
	"$WORK/build/influxdb-relay_${VERSION}_"*.changes

# ---------------------------------------------------------------------------
say "rpmbuild"
# --nodeps: Debian has no RPM database to find the build dependencies in.
t 600 rpmbuild --nodeps --define "_topdir $RPMTOP" -bb "$SRC/packaging/influxdb-relay.spec" \
	>"$WORK/rpm-build.log" 2>&1 || { tail -40 "$WORK/rpm-build.log"; fail "rpmbuild"; }
RPM="$RPMTOP/RPMS/$RPM_ARCH/influxdb-relay-$VERSION-1.$RPM_ARCH.rpm"
[ -f "$RPM" ] || fail "no $(basename "$RPM")"
ls -l "$RPM"
echo "-- rpm -qpl"
rpm -qpl "$RPM" | tee "$WORK/rpm-files"
for f in /usr/bin/influx-relay /usr/bin/influxdb-relay /etc/influxdb-relay/influxdb-relay.conf \
	/usr/lib/systemd/system/influxdb-relay.service /var/lib/influxdb-relay \
	/usr/share/influxdb-relay/grafana-dashboard.json /usr/share/influxdb-relay/prometheus-rules.yml; do
	has -x "$f" "$WORK/rpm-files" || fail ".rpm lacks $f"
done
has '/site-packages/influx_relay/cli.py$' "$WORK/rpm-files" || fail ".rpm lacks the package"
has '/site-packages/influx_relay/_lineprotocol\..*\.so$' "$WORK/rpm-files" ||
	fail ".rpm lacks the C line scanner"
has '^/usr/share/man/man1/influx-relay.1' "$WORK/rpm-files" || fail ".rpm lacks the man page"
echo "-- rpm -qpR"
rpm -qpR "$RPM" | tee "$WORK/rpm-requires"
for dep in python3-gevent python3-urllib3 python3-click shadow-utils systemd; do
	has "^$dep\\b" "$WORK/rpm-requires" || fail ".rpm does not require $dep"
done
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" |
	has -x 'cn /etc/influxdb-relay/influxdb-relay.conf' || fail "the config is not %config(noreplace)"
rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' "$RPM" |
	has -x 'drwxr-x--- influxdb-relay:influxdb-relay /var/lib/influxdb-relay' ||
	fail "/var/lib/influxdb-relay is not the relay user's"
rpm -qp --scripts "$RPM" | has 'useradd -r -g influxdb-relay' || fail "%pre does not add the user"
rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' "$RPM" |
	has -x -- '-rw-r----- root:influxdb-relay /etc/influxdb-relay/influxdb-relay.conf' ||
	fail "the config is not 0640 root:influxdb-relay"

# ---------------------------------------------------------------------------
say "a second .deb, one version up, to upgrade to"
UP_VERSION="$VERSION+citest1"
UP_SRC="$WORK/build-up/influxdb-relay-$VERSION"
mkdir -p "$WORK/build-up" && cp -a "$PRISTINE" "$UP_SRC"
{
	printf 'influxdb-relay (%s) unstable; urgency=medium\n\n  * Upgrade test.\n\n' "$UP_VERSION"
	printf ' -- %s  %s\n\n' "$(cd "$REPO" && dpkg-parsechangelog -S Maintainer)" "$(date -R)"
	cat "$UP_SRC/debian/changelog"
} >"$UP_SRC/debian/changelog.new"
mv "$UP_SRC/debian/changelog.new" "$UP_SRC/debian/changelog"
(cd "$UP_SRC" && t 600 dpkg-buildpackage -us -uc -b) >"$WORK/deb-build-up.log" 2>&1 ||
	{ tail -40 "$WORK/deb-build-up.log"; fail "dpkg-buildpackage (upgrade)"; }
UP_DEB="$WORK/build-up/influxdb-relay_${UP_VERSION}_${DEB_ARCH}.deb"
[ -f "$UP_DEB" ] || fail "no $(basename "$UP_DEB")"

if [ -n "$OUTDIR" ]; then
	mkdir -p "$OUTDIR"
	cp "$DEB" "$RPM" "$OUTDIR/"
	echo "copied $(basename "$DEB") and $(basename "$RPM") to $OUTDIR"
fi

# ---------------------------------------------------------------------------
say "a clean Debian 12 root"
# The mirror apt on this machine uses (first Debian URI in its sources).
if [ -z "${DEBIAN_MIRROR:-}" ]; then
	DEBIAN_MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1 == "deb" { for (i = 2; i <= NF; i++)
			if ($i ~ /^(https?|file):.*\/debian\/?$/) { print $i; exit } }' || true)
fi
if [ -z "${DEBIAN_MIRROR:-}" ]; then
	DEBIAN_MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '$1 == "URIs:" && $2 ~ /\/debian\/?$/ { print $2; exit }' || true)
fi
[ -n "${DEBIAN_MIRROR:-}" ] || fail "no Debian mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR"
echo "mirror: $DEBIAN_MIRROR"

CACHE=${PACKAGE_CACHE-/var/cache/influxdb-relay-ci}
if [ -n "$CACHE" ] && [ -d "$(dirname "$CACHE")" ]; then
	mkdir -p "$CACHE/archives/partial"
	# One run at a time may use the cache (apt locks the shared archives).
	exec 9>"$CACHE/lock"
	t 900 flock 9 || fail "the cache $CACHE stayed locked"
else
	CACHE=
fi
ROOTFS_TAR=
if [ -n "$CACHE" ]; then
	key=$(printf '%s %s minbase' "$SUITE" "$DEBIAN_MIRROR" | md5sum | cut -c1-8)
	ROOTFS_TAR="$CACHE/$SUITE-minbase-$key.tar"
	# A month-old base system is made again.
	find "$ROOTFS_TAR" -mtime +30 -delete 2>/dev/null || true
fi
mkdir -p "$ROOT"
if [ -n "$ROOTFS_TAR" ] && [ -f "$ROOTFS_TAR" ]; then
	echo "from the cached $ROOTFS_TAR"
	tar -xpf "$ROOTFS_TAR" -C "$ROOT"
else
	t 900 debootstrap --variant=minbase "$SUITE" "$ROOT" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
		{ tail -40 "$WORK/debootstrap.log"; fail "debootstrap"; }
	if [ -n "$ROOTFS_TAR" ]; then
		tar -cpf "$ROOTFS_TAR.tmp" -C "$ROOT" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
	fi
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
mount -t proc proc "$ROOT/proc"
# A private /dev/pts, for apt's and dpkg's terminal log.
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$ROOT/dev/pts"
mount --bind "$ROOT/dev/pts/ptmx" "$ROOT/dev/ptmx"
if [ -n "$CACHE" ]; then
	mount --bind "$CACHE/archives" "$ROOT/var/cache/apt/archives"
fi
# As in any chroot, package scripts may not start the service (the chroot
# shares this machine's network); they may stop it.
cat >"$ROOT/usr/sbin/policy-rc.d" <<'EOF'
#!/bin/sh
# invoke-rc.d passes the action as "start", or "(start)" when the runlevel
# links would not allow it anyway.
case "$2" in *start*) exit 101 ;; esac
exit 0
EOF
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
mkdir -p "$ROOT/srv/debs"
cp "$DEB" "$UP_DEB" "$ROOT/srv/debs/"

inroot() {
	t "${STEP_TIMEOUT:-120}" chroot "$ROOT" /usr/bin/env -i \
		PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@" </dev/null
}
# apt-get runs in /srv/debs, where the packages are, so ./file.deb works.
apt_get() {
	STEP_TIMEOUT=900 inroot sh -c 'cd /srv/debs && exec apt-get -q -y "$@"' apt-get "$@"
}

say "apt-get install ./influxdb-relay_${VERSION}_${DEB_ARCH}.deb in the clean root"
apt_get update >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log"; fail "apt-get update"; }
apt_get --no-install-recommends install "./influxdb-relay_${VERSION}_${DEB_ARCH}.deb" || fail "apt-get install"

CONF=/etc/influxdb-relay/influxdb-relay.conf
INIT=/etc/init.d/influxdb-relay
PIDFILE=/run/influxdb-relay.pid
RELAY_LOG="$ROOT/var/log/influxdb-relay/influxdb-relay.log"
status_is() { [ "$(dpkg_status)" = "$1" ] || fail "dpkg status is '$(dpkg_status)', not '$1'"; }
dpkg_status() { inroot dpkg-query -W -f='${db:Status-Abbrev}${Version}' influxdb-relay 2>/dev/null | tr -s ' ' ' '; }

say "what the package installed"
status_is "ii $VERSION"
inroot influx-relay --version
inroot influxdb-relay --version | has "$VERSION" || fail "influxdb-relay --version"
impl=$(inroot python3 -c 'from influx_relay import lineprotocol as l; print(l.IMPLEMENTATION, l.PYTHON_REASON)')
echo "line scanner: $impl"
[ "$impl" = "c None" ] || fail "the installed relay does not use the C line scanner: $impl"
inroot getent passwd influxdb-relay | tee "$WORK/passwd"
IFS=: read -r _ _ RELAY_UID RELAY_GID _ RELAY_HOME RELAY_SHELL <"$WORK/passwd"
[ "$RELAY_HOME" = /var/lib/influxdb-relay ] || fail "home is $RELAY_HOME"
[ "$RELAY_SHELL" = /usr/sbin/nologin ] || fail "shell is $RELAY_SHELL"
[ "$RELAY_UID" -lt 1000 ] || fail "uid $RELAY_UID is not a system uid"
inroot getent group influxdb-relay >/dev/null || fail "no group influxdb-relay"
[ "$(inroot stat -c '%U:%G %a' /var/lib/influxdb-relay)" = "influxdb-relay:influxdb-relay 750" ] ||
	fail "/var/lib/influxdb-relay: $(inroot stat -c '%U:%G %a' /var/lib/influxdb-relay)"
[ ! -d "$ROOT/home/influxdb-relay" ] || fail "a home directory was made"
inroot dpkg-query -W -f='${Conffiles}\n' influxdb-relay | has " $CONF " || fail "$CONF is not a conffile"
[ "$(inroot stat -c '%U:%G %a' "$CONF")" = "root:influxdb-relay 640" ] ||
	fail "$CONF: $(inroot stat -c '%U:%G %a' "$CONF") (it may hold credentials)"
ls "$ROOT"/etc/rc2.d/S*influxdb-relay >/dev/null || fail "update-rc.d did not enable the init script"
# The shipped config is valid with Debian 12's libraries and listens on loopback only.
inroot influx-relay check --config "$CONF" | tee "$WORK/check.out"
if grep -E 'listener .* on ' "$WORK/check.out" | grep -vE ' on (127\.0\.0\.1|\[::1\]|localhost):'; then
	fail "the shipped config listens beyond the loopback interface"
fi

say "a broken config fails loudly"
cp "$ROOT$CONF" "$WORK/conf.orig"
printf '[[http]]\nbind-addr = "127.0.0.1:1"\nno-such-key = 1\n' >"$ROOT$CONF"
rc=0; inroot influx-relay check --config "$CONF" 2>"$WORK/check.err" || rc=$?
cat "$WORK/check.err"
[ "$rc" = 2 ] || fail "check exited $rc on a broken config, not 2"
[ "$(wc -l <"$WORK/check.err")" = 1 ] || fail "check did not print exactly one line"
rc=0; inroot "$INIT" start || rc=$?
[ "$rc" != 0 ] || fail "the init script started a broken config"
[ ! -e "$ROOT$PIDFILE" ] || fail "a pid file was left by a failed start"

# ---------------------------------------------------------------------------
say "start with the SysV init script; write through it to a fake backend"
"$PY" "$HELPER" backend "$WORK/backend.port" "$WORK/backend.bodies" 2>"$WORK/backend.log" &
BACKEND_PID=$!
"$PY" "$HELPER" backend "$WORK/backend2.port" "$WORK/backend2.bodies" 2>"$WORK/backend2.log" &
BACKEND2_PID=$!
for _ in $(seq 50); do [ -s "$WORK/backend.port" ] && [ -s "$WORK/backend2.port" ] && break; sleep 0.1; done
BACKEND_PORT=$(cat "$WORK/backend.port") || fail "the fake backend did not start"
BACKEND2_PORT=$(cat "$WORK/backend2.port") || fail "the second fake backend did not start"
RELAY_PORT=$("$PY" "$HELPER" free-port)
# write_conf [NAME PORT]: the admin's config, with one more backend if asked.
write_conf() {
	cat >"$ROOT$CONF" <<CONF
# Edited by .ci/package.sh: an admin's config, kept across remove and upgrade.
[[http]]
name = "ci-http"
bind-addr = "127.0.0.1:$RELAY_PORT"

[[http.output]]
name = "ci-backend"
location = "http://127.0.0.1:$BACKEND_PORT/"
timeout = "5s"
CONF
	if [ $# = 2 ]; then
		printf '\n[[http.output]]\nname = "%s"\nlocation = "http://127.0.0.1:%s/"\n' "$1" "$2" >>"$ROOT$CONF"
	fi
}
write_conf
cp "$ROOT$CONF" "$WORK/conf.edited"
inroot influx-relay check --config "$CONF"
inroot "$INIT" start || { tail -20 "$RELAY_LOG"; fail "start"; }
inroot "$INIT" status || fail "status after start"
PID=$(cat "$ROOT$PIDFILE")
relay_uid=$(awk '/^Uid:/ { print $2 }' "/proc/$PID/status")
[ "$relay_uid" = "$RELAY_UID" ] || fail "the relay runs as uid $relay_uid, not influxdb-relay ($RELAY_UID)"
[ "$(readlink "/proc/$PID/root")" = "$ROOT" ] || fail "pid $PID is not the relay in the chroot"
echo "relay pid $PID, uid $relay_uid, listening on 127.0.0.1:$RELAY_PORT"
write_point() {
	local status
	status=$("$PY" "$HELPER" write "http://127.0.0.1:$RELAY_PORT/write?db=ci" "$1" 20) || true
	[ "$status" = 204 ] || { tail -20 "$RELAY_LOG"; fail "write: $status"; }
	"$PY" "$HELPER" wait-for "$WORK/backend.bodies" "$1" 10 || fail "the point did not reach the backend"
	echo "wrote $1: 204, and the backend has it"
}
write_point "package_sh,step=start value=1i"

say "reload"
# A broken config is refused and leaves the relay running.
printf 'not toml [\n' >"$ROOT$CONF"
rc=0; inroot "$INIT" reload >"$WORK/reload.out" 2>&1 || rc=$?
cat "$WORK/reload.out"
[ "$rc" != 0 ] || fail "reload accepted a broken config"
# The status line ends with "failed!"; the reason follows on a line of its own.
has -x 'Reloading .*: influxdb-relay failed!' "$WORK/reload.out" &&
	grep -A1 'failed!$' "$WORK/reload.out" | tail -1 | has '^influx-relay: .*invalid TOML' ||
	fail "a failed reload does not print 'failed!' and then the error on its own line"
alive "$PID" || fail "a refused reload stopped the relay"
write_conf
# A reload that adds a second backend: the next write reaches both, from the
# same process.
write_conf "ci-backend-2" "$BACKEND2_PORT"
inroot "$INIT" reload || fail "reload"
sleep 2
alive "$PID" || { tail -20 "$RELAY_LOG"; fail "the relay died on SIGHUP"; }
[ "$(cat "$ROOT$PIDFILE")" = "$PID" ] || fail "reload changed the pid"
write_point "package_sh,step=reload value=2i"
"$PY" "$HELPER" wait-for "$WORK/backend2.bodies" "package_sh,step=reload value=2i" 10 ||
	{ tail -20 "$RELAY_LOG"; fail "the reloaded config's new backend got nothing"; }
echo "the backend added by the reload has it too"
write_conf
inroot "$INIT" reload || fail "reload back"

say "restart, stop"
inroot "$INIT" restart || fail "restart"
NEWPID=$(cat "$ROOT$PIDFILE")
[ "$NEWPID" != "$PID" ] || fail "restart kept pid $PID"
! alive "$PID" || fail "restart left the old relay running"
PID=$NEWPID
write_point "package_sh,step=restart value=3i"
inroot "$INIT" stop || fail "stop"
! alive "$PID" || fail "the relay survived stop"
[ ! -e "$ROOT$PIDFILE" ] || fail "stop left the pid file"
rc=0; inroot "$INIT" status || rc=$?
[ "$rc" = 3 ] || fail "status after stop exited $rc, not 3"
inroot "$INIT" stop || fail "stop when stopped"
echo "-- the relay's log:"; tail -5 "$RELAY_LOG" || true

# ---------------------------------------------------------------------------
same_conf() { cmp -s "$ROOT$CONF" "$WORK/conf.edited" || fail "$1 lost the edited config"; }
no_conf_leftovers() {
	! ls "$ROOT"/etc/influxdb-relay/*.dpkg-* 2>/dev/null || fail "$1 left .dpkg-* files"
}

say "remove keeps the edited config, the state and the user (and stops the relay)"
inroot "$INIT" start || fail "start before remove"
PID=$(cat "$ROOT$PIDFILE")
echo keep >"$ROOT/var/lib/influxdb-relay/buffer-state"
apt_get remove influxdb-relay || fail "apt-get remove"
status_is "rc $VERSION"
! alive "$PID" || fail "remove left the relay running"
same_conf remove
[ -f "$ROOT/var/lib/influxdb-relay/buffer-state" ] || fail "remove deleted the state"
inroot getent passwd influxdb-relay >/dev/null || fail "remove deleted the user"
[ ! -e "$ROOT/usr/bin/influx-relay" ] || fail "remove left /usr/bin/influx-relay"
# The init script stays too (a conffile), made non-executable so that no
# init system runs it.
[ -f "$ROOT$INIT" ] && [ ! -x "$ROOT$INIT" ] || fail "remove did not keep $INIT, non-executable"

say "reinstall and upgrade keep the edited config"
apt_get --no-install-recommends install "./influxdb-relay_${VERSION}_${DEB_ARCH}.deb" || fail "install after remove"
status_is "ii $VERSION"
same_conf "install after remove"
[ -x "$ROOT$INIT" ] || fail "install after remove left $INIT non-executable"
apt_get --no-install-recommends install --reinstall "./influxdb-relay_${VERSION}_${DEB_ARCH}.deb" ||
	fail "reinstall"
same_conf reinstall
apt_get --no-install-recommends install "./influxdb-relay_${UP_VERSION}_${DEB_ARCH}.deb" || fail "upgrade"
status_is "ii $UP_VERSION"
same_conf upgrade
no_conf_leftovers upgrade
[ "$(inroot stat -c '%U' /var/lib/influxdb-relay/buffer-state)" = root ] ||
	fail "the upgrade changed the owner of files in /var/lib/influxdb-relay"
inroot "$INIT" start || fail "start after upgrade"
write_point "package_sh,step=upgrade value=4i"
inroot "$INIT" stop || fail "stop after upgrade"

# ---------------------------------------------------------------------------
say "systemd-analyze verify on the installed unit"
apt_get --no-install-recommends install systemd man-db >"$WORK/apt-systemd.log" 2>&1 ||
	{ tail -20 "$WORK/apt-systemd.log"; fail "installing systemd in the chroot"; }
inroot systemd-analyze verify /lib/systemd/system/influxdb-relay.service 2>&1 | tee "$WORK/verify.out"
[ "${PIPESTATUS[0]}" = 0 ] && [ ! -s "$WORK/verify.out" ] || fail "systemd-analyze verify is not clean"
inroot man -w influx-relay && inroot man -w influxdb-relay || fail "no man page"
echo "clean"

# ---------------------------------------------------------------------------
say "boot the root with systemd (systemd-nspawn) and drive the unit"
# The package enabled the unit; it starts at boot with the edited config (the
# fake backend is still listening). A oneshot unit runs the checks, writes
# its transcript to /ci-result and powers the container off.
cat >"$ROOT/usr/local/sbin/ci-systemd-test" <<TEST
#!/bin/sh
set -u
exec >/ci-result 2>&1
fail() { echo "FAIL: \$*"; journalctl -u influxdb-relay --no-pager | tail -20; echo 1 >/ci-status; exit 1; }
active() { systemctl is-active --quiet influxdb-relay; }
mainpid() { systemctl show -p MainPID --value influxdb-relay; }
wait_active() { for i in \$(seq 50); do active && return 0; sleep 0.2; done; return 1; }
# Type=notify: active once it listens (the helper still retries refused connections).
write() { /usr/local/sbin/ci-http write "http://127.0.0.1:$RELAY_PORT/write?db=ci" "\$1" 10; }
systemctl is-enabled influxdb-relay || fail "not enabled"
wait_active || fail "not started at boot"
pid=\$(mainpid)
[ "\$(ps -o user= -p "\$pid")" = influxdb-relay ] || fail "runs as \$(ps -o user= -p "\$pid")"
[ "\$(write 'package_sh,step=systemd value=5i')" = 204 ] || fail "write"
echo "started at boot as influxdb-relay (pid \$pid); a write: 204"
# Type=notify: the status line is the relay's own READY=1 message.
status=\$(systemctl show -p StatusText --value influxdb-relay)
case \$status in *"http listener(s)"*) ;; *) fail "no READY status from the relay: '\$status'" ;; esac
echo "systemd heard the relay: \$status"
systemctl reload influxdb-relay || fail "reload"
sleep 2
active && [ "\$(mainpid)" = "\$pid" ] || fail "reload did not keep the relay running"
[ "\$(write 'package_sh,step=systemd-reload value=6i')" = 204 ] || fail "write after reload"
echo "reloaded, same pid; a write: 204. Now a reload with a broken config (must fail):"
cp $CONF /root/conf.good
echo 'no-such-key = 1' >>$CONF
systemctl reload influxdb-relay && fail "reloaded a broken config"
active && [ "\$(mainpid)" = "\$pid" ] || fail "a refused reload stopped the relay"
cp /root/conf.good $CONF
kill -KILL "\$pid"
sleep 3
wait_active && [ "\$(mainpid)" != "\$pid" ] || fail "not restarted after a crash"
echo "restarted after SIGKILL: \$(systemctl show -p NRestarts influxdb-relay)"
cp $CONF /root/conf.good
echo 'no-such-key = 1' >>$CONF
echo "a restart with a broken config (must fail):"
systemctl restart influxdb-relay && fail "restarted with a broken config"
for i in \$(seq 40); do systemctl is-failed --quiet influxdb-relay && break; sleep 0.5; done
systemctl is-failed --quiet influxdb-relay || fail "not failed with a broken config"
echo "a broken config: \$(systemctl show -p ActiveState,Result,NRestarts influxdb-relay | xargs)"
journalctl -u influxdb-relay --no-pager | grep -q 'no-such-key' || fail "the journal does not say why"
# The journal stamps each line: the relay's own lines carry no timestamp, ExecStartPre's
# check prints nothing for a good config, and each line has the relay's priority.
journalctl -u influxdb-relay -o cat --no-pager >/root/journal.txt
grep -q '^INFO influx_relay' /root/journal.txt || fail "no relay lines in the journal"
grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2} ' /root/journal.txt && fail "relay lines carry a second timestamp"
grep -q 'influxdb-relay.conf: OK' /root/journal.txt && fail "the pre-start check printed into the journal"
journalctl -u influxdb-relay -p notice -o cat --no-pager | grep -q '^INFO ' &&
	fail "INFO lines are not at priority info"
echo "journal: the relay's lines without a second timestamp, at their priority; check quiet"
cp /root/conf.good $CONF
echo "a broken config: ExecStartPre refused it, the journal says why"
systemctl reset-failed influxdb-relay
systemctl start influxdb-relay && wait_active || fail "start with the config restored"
systemctl stop influxdb-relay || fail "stop"
active && fail "still active after stop"
journalctl -u influxdb-relay --no-pager | tail -8
systemd-analyze security influxdb-relay --no-pager | tail -1
echo 0 >/ci-status
TEST
chmod 755 "$ROOT/usr/local/sbin/ci-systemd-test"
install -m 755 "$HELPER" "$ROOT/usr/local/sbin/ci-http"
cat >"$ROOT/etc/systemd/system/ci-systemd-test.service" <<'UNIT'
[Unit]
Description=package.sh checks of influxdb-relay.service
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ci-systemd-test
ExecStopPost=/bin/systemctl --no-block poweroff
UNIT
mkdir -p "$ROOT/etc/systemd/system/default.target.wants"
ln -sf /etc/systemd/system/ci-systemd-test.service "$ROOT/etc/systemd/system/default.target.wants/"
rm -f "$ROOT/ci-result" "$ROOT/ci-status"
# systemd-nspawn brings its own /proc and /dev.
umount "$ROOT/dev/ptmx" "$ROOT/dev/pts" "$ROOT/proc"
timeout -k 10 180 systemd-nspawn --quiet --register=no --keep-unit --directory="$ROOT" --boot \
	>"$WORK/nspawn.log" 2>&1 </dev/null &
NSPAWN_PID=$!
wait "$NSPAWN_PID" || echo "systemd-nspawn exited $?"
NSPAWN_PID=
mount -t proc proc "$ROOT/proc"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$ROOT/dev/pts"
mount --bind "$ROOT/dev/pts/ptmx" "$ROOT/dev/ptmx"
cat "$ROOT/ci-result" 2>/dev/null || { tail -30 "$WORK/nspawn.log"; fail "the systemd checks did not run"; }
[ "$(cat "$ROOT/ci-status" 2>/dev/null)" = 0 ] || fail "the unit under systemd"
"$PY" "$HELPER" wait-for "$WORK/backend.bodies" "package_sh,step=systemd value=5i" 1 ||
	fail "the write under systemd did not reach the backend"
rm -rf "$ROOT/ci-result" "$ROOT/ci-status" "$ROOT/usr/local/sbin/ci-systemd-test" "$ROOT/usr/local/sbin/ci-http" \
	"$ROOT/etc/systemd/system/ci-systemd-test.service" \
	"$ROOT/etc/systemd/system/default.target.wants/ci-systemd-test.service"

# ---------------------------------------------------------------------------
say "purge leaves nothing behind"
apt_get purge influxdb-relay || fail "apt-get purge"
[ -z "$(dpkg_status)" ] || fail "dpkg still knows influxdb-relay: $(dpkg_status)"
for path in /etc/influxdb-relay /var/lib/influxdb-relay /var/log/influxdb-relay "$PIDFILE" \
	"$INIT" /etc/default/influxdb-relay /lib/systemd/system/influxdb-relay.service \
	/usr/lib/python3/dist-packages/influx_relay; do
	[ ! -e "$ROOT$path" ] || fail "purge left $path"
done
! grep -h '^influxdb-relay:' "$ROOT/etc/passwd" "$ROOT/etc/group" "$ROOT/etc/shadow" \
	"$ROOT/etc/gshadow" || fail "purge left the user or group"
# (man-db's own cache of formatted pages is man-db's to expire)
find "$ROOT" -xdev \( -path "$ROOT/srv/debs" -o -path "$ROOT/proc" -o -path "$ROOT/var/cache/man" \) -prune -o \
	\( -iname '*influx*' -o -uid "$RELAY_UID" -o -gid "$RELAY_GID" \) -print >"$WORK/leftovers"
[ ! -s "$WORK/leftovers" ] || { cat "$WORK/leftovers"; fail "purge left files behind"; }
[ -z "$(for p in $(chroot_pids); do awk -v u="$RELAY_UID" '/^Uid:/ && $2 == u' "/proc/$p/status"; done)" ] ||
	fail "a relay process survived"
echo "nothing left"

[ -n "$CACHE" ] && apt_get autoclean >/dev/null 2>&1 || true
