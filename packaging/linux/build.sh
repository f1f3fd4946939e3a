#!/usr/bin/env bash
# Build Orchard for Linux x86_64: a PyInstaller one-folder bundle, wrapped as
#   dist/orchard-<version>-linux-x86_64.tar.gz   (unpack anywhere, run ./orchard)
#   dist/orchard_<version>_amd64.deb             (installs to /opt/orchard, /usr/bin/orchard)
# Usage: packaging/linux/build.sh            (from anywhere; uses .venv/bin/python)
#        PY=/path/to/python packaging/linux/build.sh
# Needs: pyinstaller in that Python's environment, dpkg-deb (dpkg), fakeroot is not needed
# (dpkg-deb --root-owner-group), desktop-file-validate if present.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
VERSION="$("$PY" -c 'import core; print(core.__version__)')"
ARCH="$(uname -m)"
[ "$ARCH" = x86_64 ] || { echo "build.sh: builds for x86_64 only, this is $ARCH" >&2; exit 2; }
BUILD="$ROOT/build/packaging/linux"
DIST="$ROOT/dist"
NAME="orchard-$VERSION-linux-x86_64"
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }

rm -rf "$BUILD"
mkdir -p "$BUILD/wheel" "$DIST"

step "Orchard's wheel (the first run installs it into the runtime)"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$BUILD/wheel" "$ROOT"

step "icon"
"$PY" packaging/make_icon.py "$BUILD/orchard.png" 256 >/dev/null

step "PyInstaller (one folder)"
ORCHARD_WHEEL_DIR="$BUILD/wheel" ORCHARD_ICON="$BUILD/orchard.png" QT_QPA_PLATFORM=offscreen \
  "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$BUILD/dist" --workpath "$BUILD/work" packaging/orchard.spec
BUNDLE="$BUILD/dist/orchard"

step "checking that the bundle holds no torch"
"$PY" packaging/check_bundle.py "$BUNDLE"
"$BUNDLE/orchard" --version

step "tar.gz"
STAGE="$BUILD/tar/$NAME"
mkdir -p "$STAGE"
cp -a "$BUNDLE/." "$STAGE/"
cp packaging/linux/orchard.desktop "$BUILD/orchard.png" "$STAGE/"
cat >"$STAGE/README.txt" <<TXT
Orchard $VERSION for Linux x86_64.

Run ./orchard (the app), or ./orchard --help (the command line). On first run Orchard sets
up its GPU runtime (PyTorch, diffusers) in ~/.local/share/orchard/runtime; it needs python3
(3.10 to 3.14) with venv: on Debian or Ubuntu, sudo apt install python3-venv.
Check the machine with ./orchard doctor.

To add Orchard to the desktop's menu: copy orchard.desktop to ~/.local/share/applications/
(edit its Exec= line to this folder's orchard) and orchard.png to
~/.local/share/icons/hicolor/256x256/apps/.
TXT
rm -f "$DIST/$NAME.tar.gz"
tar -C "$BUILD/tar" -czf "$DIST/$NAME.tar.gz" "$NAME"

step ".deb"
DEB="$BUILD/deb"
mkdir -p "$DEB/DEBIAN" "$DEB/opt" "$DEB/usr/bin" "$DEB/usr/share/applications" \
  "$DEB/usr/share/icons/hicolor/256x256/apps" "$DEB/usr/share/icons/hicolor/scalable/apps" \
  "$DEB/usr/share/doc/orchard"
cp -a "$BUNDLE" "$DEB/opt/orchard"
ln -s ../../opt/orchard/orchard "$DEB/usr/bin/orchard"
install -m 644 packaging/linux/orchard.desktop "$DEB/usr/share/applications/orchard.desktop"
install -m 644 "$BUILD/orchard.png" "$DEB/usr/share/icons/hicolor/256x256/apps/orchard.png"
if [ -f resources/icons/orchard.svg ]; then
  install -m 644 resources/icons/orchard.svg "$DEB/usr/share/icons/hicolor/scalable/apps/"
else
  rmdir "$DEB/usr/share/icons/hicolor/scalable/apps"
fi
cat >"$DEB/usr/share/doc/orchard/copyright" <<TXT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: orchard
License: MIT
Comment: /opt/orchard/_internal holds third-party libraries (Qt/PySide6 under the LGPL-3.0,
 Python under the PSF licence, and others), each under its own licence.
TXT
chmod -R u+rwX,go+rX,go-w "$DEB"
SIZE_KB="$(du -sk --exclude=DEBIAN "$DEB" | cut -f1)"
sed -e "s/@VERSION@/$VERSION/" -e "s/@SIZE_KB@/$SIZE_KB/" packaging/linux/control.in \
  >"$DEB/DEBIAN/control"
if command -v desktop-file-validate >/dev/null; then
  desktop-file-validate "$DEB/usr/share/applications/orchard.desktop"
fi
rm -f "$DIST/orchard_${VERSION}_amd64.deb"
dpkg-deb --root-owner-group -Zgzip --build "$DEB" "$DIST/orchard_${VERSION}_amd64.deb" >/dev/null

step "done"
ls -l "$DIST/$NAME.tar.gz" "$DIST/orchard_${VERSION}_amd64.deb"
du -sh "$BUNDLE"
